//! What the state holds, as every backend reads and writes it: runs, stages, decisions, entries,
//! and the writes the engine asks for.

/// How a run stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::Display, strum::EnumString, strum::IntoStaticStr, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum RunState {
    /// Stages are running or waiting (or the process stopped: `promote resume`).
    Running,
    /// Every stage succeeded or was skipped by its `if`.
    Succeeded,
    /// A stage failed.
    Failed,
    /// It succeeded, then its watch judged the release bad and reverted it.
    Reverted,
    /// It ended before promoting an environment that a newer run of its pipeline had promoted
    /// already (or would, while it was still queued): environments never go backwards.
    Superseded,
}

/// How a stage stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, strum::Display, strum::EnumString, strum::IntoStaticStr, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum StageState {
    /// Not started.
    Pending,
    /// Working.
    Running,
    /// Waiting for a person or a lock.
    Waiting,
    /// Done, well.
    Succeeded,
    /// Done, badly (after its retries).
    Failed,
    /// Not run: an upstream stage failed, or its `if` was false.
    Skipped,
    /// Stopped because another stage failed.
    Cancelled,
    /// A deploy reverted by the run's rollback.
    RolledBack,
}

impl RunState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl StageState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the stage will not change any more (in this run).
    pub fn is_final(self) -> bool {
        !matches!(self, StageState::Pending | StageState::Running | StageState::Waiting)
    }
}

/// A run as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// ULID.
    pub id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file as given.
    pub file: String,
    /// The file's text when the run started (a resumed run uses this, not today's file).
    #[serde(skip)]
    pub source: String,
    /// The version promoted.
    pub version: String,
    /// Its state.
    pub state: RunState,
    /// Who started it.
    pub triggered_by: String,
    /// Whether `triggered_by` proved who they are (a token of the users file); a run started
    /// without proof can never satisfy separation of duties.
    pub authenticated: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    /// Why it failed.
    pub message: Option<String>,
    /// The seal over what the run was started with ([`super::seals::run`]); `None` when written.
    #[serde(skip)]
    pub seal: Option<String>,
}

/// A stage of a run as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageRecord {
    /// The stage's name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its state.
    pub state: StageState,
    /// Attempts started so far.
    pub attempt: i64,
    /// Unix milliseconds of the current attempt's start.
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    /// Why it failed, or what it waits for.
    pub message: Option<String>,
    /// What it produced (JSON): a deploy's commit, an approval's approvers.
    pub output: Option<serde_json::Value>,
    /// The seal over its state ([`super::seals::stage`]).
    #[serde(skip)]
    pub seal: Option<String>,
}

/// An approval decision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    /// Who.
    pub user: String,
    /// Approve (true) or reject.
    pub approve: bool,
    /// Comment or reason.
    pub comment: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// The seal over the decision ([`super::seals::decision`]).
    #[serde(skip)]
    pub seal: Option<String>,
}

/// A web session, as stored: the cookie itself never is, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the cookie's value, hex.
    pub id_hash: String,
    /// The person's login in the directory.
    pub login: String,
    /// Who vouched for them ([`crate::ops::access::Via::encode`]'s form).
    pub via: String,
    /// The directory token's stored hash it was opened with (a changed token ends it).
    pub token_hash: Option<String>,
    /// The identity provider's groups at sign-in (JSON list).
    pub groups: String,
    /// Opened, Unix milliseconds.
    pub created_at: i64,
    /// Last seen in use.
    pub seen_at: i64,
    /// Its absolute end.
    pub expires_at: i64,
    /// When it was ended (sign-out, revoke).
    pub ended_at: Option<i64>,
    /// The `sign-in` entry's text.
    pub detail: String,
}

/// A session's row, as both backends select it (`id_hash, login, via, token_hash, groups,
/// created_at, seen_at, expires_at, ended_at`).
pub type SessionRow = (String, String, String, Option<String>, String, i64, i64, i64, Option<i64>);

impl From<SessionRow> for SessionRecord {
    fn from((id_hash, login, via, token_hash, groups, created_at, seen_at, expires_at, ended_at): SessionRow) -> SessionRecord {
        SessionRecord { id_hash, login, via, token_hash, groups, created_at, seen_at, expires_at, ended_at, detail: String::new() }
    }
}

/// A log template marked "not a risk", as stored.
#[derive(Debug, Clone)]
pub struct Exemption {
    /// The template.
    pub template: String,
    /// Who.
    pub user: String,
    /// Why.
    pub reason: String,
    /// Unix milliseconds.
    pub at: i64,
    /// The seal over it ([`super::seals::exemption`]).
    pub seal: Option<String>,
}

/// An event of a run's history.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Increasing.
    pub id: i64,
    /// The stage, if any.
    pub stage: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// `trigger`, `run`, `stage`, `decision`, `policy`, `break-glass`, `rollback`, ...
    pub kind: String,
    /// Who did it (`promote` for the runner itself).
    pub actor: String,
    /// What happened.
    pub detail: String,
}

/// An entry of the trail about what changed an environment or decided something (a run's end, a
/// rollback, a drift, a compliance violation, a watch, a decision), read by time for a report's
/// timeline.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Happening {
    /// Its number in the trail.
    pub id: i64,
    /// The run it belongs to (`-`: none).
    pub run_id: String,
    /// The stage, if any.
    pub stage: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// Its kind.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// What happened.
    pub detail: String,
}

/// A promotion written into an environment (any pipeline's), read by time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRecord {
    /// The pipeline.
    pub pipeline: String,
    /// The environment.
    pub environment: String,
    /// The run.
    pub run_id: String,
    /// The version.
    pub version: String,
    /// Unix milliseconds.
    pub at: i64,
    /// Whether its run rolled it back.
    pub rolled_back: bool,
}

/// A transition of one stage; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Transition {
    /// The new state.
    pub state: Option<StageState>,
    /// Set the attempt counter.
    pub attempt: Option<i64>,
    /// Set the start time.
    pub started_at: Option<i64>,
    /// Set the end time.
    pub finished_at: Option<i64>,
    /// Set the message (empty string clears it).
    pub message: Option<String>,
    /// Set the output.
    pub output: Option<serde_json::Value>,
}

/// One stage's transition and the trail entry that records it.
#[derive(Debug, Clone)]
pub struct StageWrite {
    /// The stage.
    pub stage: String,
    /// What changes.
    pub transition: Transition,
    /// The entry's text (`started (attempt 1)`, `failed: ...`).
    pub event: String,
}

/// A write the engine asks a backend for. The backend may group writes from many callers into one
/// transaction (group commit); each is acknowledged only once it is durable.
#[derive(Debug, Clone)]
pub enum Write {
    /// A new run and its stages (pending), with its trigger entry; with a webhook delivery, in
    /// the same transaction as the delivery's record, and only if neither the delivery nor a run
    /// of this pipeline and version was recorded before ([`Written::Duplicate`] then).
    CreateRun {
        /// The run (boxed: the other writes are small).
        run: Box<RunRecord>,
        /// (name, kind) of each stage, in file order.
        stages: Vec<(String, String)>,
        /// The delivery that started it, if a webhook did.
        delivery: Option<Delivery>,
        /// The lease of the process that drives it at once, `(holder, expires_at)`, taken with it:
        /// nobody can have claimed a run not yet recorded, so its driver starts without a claim
        /// of its own (and without reading back what it has just written).
        driver: Option<(String, i64)>,
    },
    /// Transitions of one run's stages, all or none.
    Transitions {
        /// The run.
        run: String,
        /// The transitions.
        items: Vec<StageWrite>,
        /// The driver whose lease the write needs: refused ([`Written::Fenced`]) unless that holder
        /// still drives the run and the run is running. `None`: a write of no driver (a watch's).
        fence: Option<String>,
    },
    /// A run's end: its state, its entry, its environment locks released.
    FinishRun {
        /// The run.
        run: String,
        /// As for [`Write::Transitions`].
        fence: Option<String>,
        /// How it ended.
        state: RunState,
        /// Why it failed.
        message: Option<String>,
        /// When.
        at: i64,
    },
    /// A person's decision on a stage, once: a person who decided already is
    /// [`Written::Duplicate`] and nothing is written (of concurrent votes by one person, or
    /// concurrent verdicts of one callback, exactly one is taken).
    Decide {
        /// The run.
        run: String,
        /// The stage.
        stage: String,
        /// Who.
        user: String,
        /// Approve or reject.
        approve: bool,
        /// Comment or reason.
        comment: Option<String>,
        /// `decision` or `break-glass`.
        kind: EntryKind,
        /// When.
        at: i64,
        /// Who vouched for the person (the server's identity source), said in the entry.
        via: Option<String>,
    },
    /// A log template marked "not a risk" for a pipeline, once: a template marked already is
    /// [`Written::Duplicate`] (an earlier mark is never replaced).
    Exempt {
        /// The run it was seen in.
        run: String,
        /// The pipeline.
        pipeline: String,
        /// The template.
        template: String,
        /// Who.
        user: String,
        /// Why.
        reason: String,
        /// When.
        at: i64,
        /// Who vouched for the person (the server's identity source), said in the entry.
        via: Option<String>,
    },
    /// A drift found in an environment branch, with its entry, unless one was recorded for the
    /// same head before ([`Written::Duplicate`] with its id).
    RecordDrift {
        /// The drift.
        drift: Box<DriftRecord>,
    },
    /// A drift decided (accepted, rejected, reverted) by someone, with its entry, only if it is
    /// still in state `from` ([`Written::Duplicate`] otherwise: of concurrent decisions one wins).
    DecideDrift {
        /// The drift's id.
        id: String,
        /// The state it must be in (`open`; `rejecting` while a rejection reverts it).
        from: DriftState,
        /// The state it goes to.
        state: DriftState,
        /// Who (`promote` for an automatic revert).
        user: String,
        /// Why, or what was done.
        reason: Option<String>,
        /// When.
        at: i64,
        /// Who vouched for the person (the server's identity source), said in the entry.
        via: Option<String>,
    },
    /// A compliance violation found in an environment's current files, with its entry, unless one
    /// was recorded for the same head and policies before ([`Written::Duplicate`] with its id).
    RecordViolation {
        /// The violation.
        violation: Box<ViolationRecord>,
    },
    /// A violation decided (accepted as an exception, reverted, expired, resolved) with its entry,
    /// only if it is still in state `from` ([`Written::Duplicate`] otherwise: of concurrent
    /// decisions one wins).
    DecideViolation {
        /// The violation's id.
        id: String,
        /// The state it must be in.
        from: String,
        /// The state it goes to.
        state: ViolationState,
        /// Who (`promote` for what promote did by itself).
        user: String,
        /// Why, or what was done.
        reason: Option<String>,
        /// An exception's end (Unix ms).
        until: Option<i64>,
        /// The commit a revert restored the files of.
        revert_to: Option<String>,
        /// When.
        at: i64,
        /// Who vouched for the person (the server's identity source), said in the entry.
        via: Option<String>,
    },
    /// A watch begun (with its entry), unless the run's stage has one ([`Written::Duplicate`]);
    /// the older active watches of its environment end `superseded`.
    BeginWatch {
        /// The watch.
        watch: Box<WatchRecord>,
    },
    /// The active watches of an environment end `superseded` (a newer promotion, a rollback, a
    /// revert), each with its entry.
    SupersedeWatches {
        /// The pipeline.
        pipeline: String,
        /// The environment.
        environment: String,
        /// What superseded them, in words.
        by: String,
        /// Not this one (the watch of the promotion that supersedes).
        except: Option<String>,
        /// When.
        at: i64,
    },
    /// Takes a watch's look due at `due` by moving it to `next_at`, if nobody took it first
    /// ([`Written::Renewed`] says whether this did).
    ClaimWatch {
        /// The watch.
        id: String,
        /// The due time read.
        due: i64,
        /// The next look's time.
        next_at: i64,
    },
    /// What a look found (no entry: the watch's row keeps its last look).
    WatchLooked {
        /// The watch.
        id: String,
        /// Failed by this look.
        failed: bool,
        /// Judged nothing (an error) by this look.
        errored: bool,
        /// Had data and passed.
        passed: bool,
        /// The look's summary.
        message: String,
        /// Its evidence.
        evidence: serde_json::Value,
    },
    /// A watch ends (or begins reverting), with its entry; `reverted` marks its run `reverted`.
    EndWatch {
        /// The watch.
        id: String,
        /// How it ends (or `reverting`).
        state: WatchState,
        /// Why, in words.
        message: String,
        /// The revert commit.
        reverted_to: Option<String>,
        /// Whether the run is marked `reverted`.
        reverted: bool,
        /// When.
        at: i64,
    },
    /// A held version cleared by a person, with its entry.
    /// Clears a failed watch's hold, once ([`Written::Duplicate`] when it was cleared already).
    ClearWatch {
        /// The watch.
        id: String,
        /// Who.
        user: String,
        /// Why.
        reason: String,
        /// When.
        at: i64,
        /// Who vouched for the person (the server's identity source), said in the entry.
        via: Option<String>,
    },
    /// A web session opened, with its `sign-in` entry.
    OpenSession {
        /// The session (boxed: the other writes are small).
        session: Box<SessionRecord>,
    },
    /// A session seen in use at `at` (its idle expiry moves), unless it ended.
    SeenSession {
        /// The hash of its cookie.
        id_hash: String,
        /// When.
        at: i64,
    },
    /// Ends sessions, with one entry: one (sign-out, by its hash) or every session of a person
    /// (an admin's revoke). [`Written::Renewed`] says whether any was open.
    EndSessions {
        /// One session, by the hash of its cookie.
        id_hash: Option<String>,
        /// Every open session of this login.
        login: Option<String>,
        /// The entry's kind (`sign-out`, `sessions-revoked`).
        kind: EntryKind,
        /// Who ends them (the entry's actor).
        by: String,
        /// The entry's text.
        detail: String,
        /// When.
        at: i64,
    },
    /// Takes (or renews) an environment for a run, in its queue's order: free (or its holder's
    /// lease lapsed: taken over, with an entry naming the holder) and no live run queued ahead of
    /// it. Otherwise the run joins the queue ([`Written::Lock`] says what it found).
    Lock {
        /// The environment.
        environment: String,
        /// The run's pipeline.
        pipeline: String,
        /// The run.
        run: String,
        /// Whether older runs of the pipeline queued for the environment are superseded by this
        /// one (each with an entry, which wakes it).
        supersede: bool,
        /// When.
        at: i64,
        /// The lease's end.
        expires_at: i64,
    },
    /// Gives an environment back before the run's end (the stages that judge it are done), with
    /// an entry that wakes the runs queued for it; nothing when the run does not hold it.
    Unlock {
        /// The environment.
        environment: String,
        /// The run.
        run: String,
        /// The stage whose end let it go.
        stage: String,
        /// When.
        at: i64,
    },
    /// A run's promotion into an environment (the newest one not rolled back is what the
    /// environment holds), or (`rolled_back`) its rollback.
    Promoted {
        /// The pipeline.
        pipeline: String,
        /// The environment.
        environment: String,
        /// The run.
        run: String,
        /// The version it promoted.
        version: String,
        /// Whether the run rolled it back.
        rolled_back: bool,
        /// When.
        at: i64,
        /// As for [`Write::Transitions`].
        fence: Option<String>,
    },
    /// Takes the lease of driving a run for `holder` (a process), if nobody's lease is alive.
    Drive {
        /// The run.
        run: String,
        /// Who drives.
        holder: String,
        /// When; a lease ending before this has lapsed (later than now when its holder is known
        /// to be dead: a process of this machine that no longer exists).
        at: i64,
        /// The lease's end.
        expires_at: i64,
    },
    /// Renews a driver's lease and the environment locks of its run.
    Renew {
        /// The run.
        run: String,
        /// Who drives.
        holder: String,
        /// The lease's new end.
        expires_at: i64,
    },
    /// The refs a trigger's source had when it was last polled (replacing what was kept).
    Polled {
        /// The source: the pipeline and the URL polled.
        source: String,
        /// (ref, commit) pairs.
        refs: Vec<(String, String)>,
    },
    /// Takes the look at a polled source (a registry repository) due now: moves its next look
    /// to `next_at` if no process's look is still due later ([`Written::Renewed`] says whether
    /// this one took it): of several replicas, one looks each time.
    ClaimPoll {
        /// The source: the pipeline and the repository polled.
        source: String,
        /// Who looks.
        holder: String,
        /// Now: a claim whose next look is after this is another process's.
        now: i64,
        /// When the next look is due.
        next_at: i64,
    },
    /// Moves the next look at a source this process claimed (a registry that asked to be left
    /// alone: every replica waits).
    DeferPoll {
        /// The source.
        source: String,
        /// Who claimed it.
        holder: String,
        /// When the next look is due.
        next_at: i64,
    },
    /// Takes note `seq` of an approval waiting since `since` (its reminder `seq`, or its
    /// escalation: `seq` 1), with its entry, unless that note or a later one of the same kind was
    /// taken ([`Written::Renewed`] says whether this write took it): of several replicas, or a
    /// process and the one restarted after it, one sends each note.
    ClaimNote {
        /// The run.
        run: String,
        /// The approval stage.
        stage: String,
        /// When its wait began (the attempt's start).
        since: i64,
        /// `approval-reminder`, `approval-escalation`, or the note of a wait (the entry's kind).
        kind: EntryKind,
        /// The note's number: reminders count from 1, one per `remindEvery` since `since`.
        seq: i64,
        /// The entry's text: what was sent to whom.
        detail: String,
        /// When.
        at: i64,
    },
    /// Gives a driver's lease back.
    Release {
        /// The run.
        run: String,
        /// Who drove.
        holder: String,
    },
    /// An entry of the audit trail.
    Audit {
        /// The run.
        run: Option<String>,
        /// The stage, if any.
        stage: Option<String>,
        /// What kind of entry.
        kind: EntryKind,
        /// Who.
        actor: String,
        /// What happened.
        detail: String,
        /// When.
        at: i64,
    },
}

impl Write {
    /// The write with every text a person wrote or a system answered (messages, outputs, entries,
    /// comments) passed through [`crate::redact`]; a run's source stays as written (a resumed run
    /// reads it).
    pub fn redacted(mut self) -> Write {
        use crate::redact::{json, string};
        match &mut self {
            Write::CreateRun { run, .. } => {
                if let Some(m) = &mut run.message {
                    string(m);
                }
            }
            Write::Transitions { items, .. } => {
                for i in items {
                    string(&mut i.event);
                    if let Some(m) = &mut i.transition.message {
                        string(m);
                    }
                    if let Some(o) = &mut i.transition.output {
                        json(o);
                    }
                }
            }
            Write::FinishRun { message, .. } => {
                if let Some(m) = message {
                    string(m);
                }
            }
            Write::Decide { comment, .. } => {
                if let Some(c) = comment {
                    string(c);
                }
            }
            Write::Exempt { reason, .. } => string(reason),
            Write::RecordDrift { drift } => string(&mut drift.diff),
            Write::BeginWatch { .. } | Write::SupersedeWatches { .. } | Write::ClaimWatch { .. } => {}
            Write::WatchLooked { message, evidence, .. } => {
                string(message);
                json(evidence);
            }
            Write::EndWatch { message, .. } => string(message),
            Write::ClearWatch { reason, .. } => string(reason),
            Write::DecideDrift { reason, .. } | Write::DecideViolation { reason, .. } => {
                if let Some(r) = reason {
                    string(r);
                }
            }
            Write::RecordViolation { violation } => violation.deny.0.iter_mut().for_each(string),
            Write::Audit { detail, .. } | Write::ClaimNote { detail, .. } => string(detail),
            Write::EndSessions { detail, .. } => string(detail),
            Write::OpenSession { .. } | Write::SeenSession { .. } => {}
            Write::Lock { .. } | Write::Unlock { .. } | Write::Promoted { .. } => {}
            Write::Drive { .. } | Write::Renew { .. } | Write::Release { .. } | Write::Polled { .. } => {}
            Write::ClaimPoll { .. } | Write::DeferPoll { .. } => {}
        }
        self
    }
}

/// What a write gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Nothing to say.
    Done,
    /// The environment's or the run's lease holder and its lease's end, when another one holds it.
    Holder(Option<(String, i64)>),
    /// Whether a renewed lease was still the driver's.
    Renewed(bool),
    /// What a claim of an environment found.
    Lock(LockState),
    /// Refused: the write needed a driver's lease that moved to another process, or the run ended.
    Fenced,
    /// The delivery, or a run of the same pipeline and version, was recorded before: this run
    /// (if any) is the one that delivery started.
    Duplicate(Option<String>),
}

/// A webhook delivery, as recorded before it is answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `github`, `gitlab`, ...
    pub provider: String,
    /// The provider's delivery id (or the body's hash when it gives none).
    pub id: String,
    /// SHA-256 of the body, hex.
    pub body_hash: String,
    /// Unix milliseconds of what it announces (the commit's time, the image's push), when the
    /// event says: where the lead time is counted from.
    pub origin_at: Option<i64>,
}

/// A stage with the run it belongs to (for figures across runs: DORA, waiting decisions).
#[derive(Debug, Clone)]
pub struct StageOf {
    /// The run.
    pub run: String,
    /// The run's pipeline.
    pub pipeline: String,
    /// The run's version.
    pub version: String,
    /// Unix milliseconds of the run's start.
    pub run_created_at: i64,
    /// Unix milliseconds of what its webhook delivery announced, if it was started by one that said.
    pub origin_at: Option<i64>,
    /// The stage.
    pub stage: StageRecord,
}

/// A change in an environment branch promote did not make, as recorded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftRecord {
    /// `d-` and a ULID.
    pub id: String,
    /// The pipeline whose environment drifted.
    pub pipeline: String,
    /// The environment.
    pub environment: String,
    /// The branch's head when it was seen.
    pub head: String,
    /// The last approved state it is on top of.
    pub baseline: Option<String>,
    /// Its commits, newest first.
    pub commits: Vec<crate::git::DriftCommit>,
    /// The diff from the baseline to the head (capped).
    pub diff: String,
    /// Whether the branch's history was rewritten.
    pub rewritten: bool,
    /// Where it stands.
    pub state: DriftState,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Why, or what was done.
    pub reason: Option<String>,
    /// Unix milliseconds when it was seen.
    pub at: i64,
    /// Unix milliseconds when it was decided.
    pub decided_at: Option<i64>,
    /// The seal over what it is and its decision ([`super::seals::drift`]).
    #[serde(skip)]
    pub seal: Option<String>,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for DriftRecord
where
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    /// Both backends' rows (the commits are stored as JSON text).
    fn from_row(r: &'r R) -> Result<Self, sqlx::Error> {
        Ok(DriftRecord {
            id: r.try_get("id")?,
            pipeline: r.try_get("pipeline")?,
            environment: r.try_get("environment")?,
            head: r.try_get("head")?,
            baseline: r.try_get("baseline")?,
            commits: serde_json::from_str(&r.try_get::<String, _>("commits")?).unwrap_or_default(),
            diff: r.try_get("diff")?,
            rewritten: r.try_get("rewritten")?,
            state: r.try_get::<String, _>("state")?.parse().map_err(|e: strum::ParseError| sqlx::Error::Decode(Box::new(e)))?,
            decided_by: r.try_get("decided_by")?,
            reason: r.try_get("reason")?,
            at: r.try_get("at")?,
            decided_at: r.try_get("decided_at")?,
            seal: r.try_get("seal")?,
        })
    }
}

/// A release kept being judged after its run: one per deploy whose environment (or itself) has a
/// `watch`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchRecord {
    /// `w-` and a ULID.
    pub id: String,
    /// The run that promoted the release.
    pub run: String,
    /// Its deploy stage.
    pub stage: String,
    /// The pipeline.
    pub pipeline: String,
    /// The environment.
    pub environment: String,
    /// The version promoted.
    pub version: String,
    /// The promotion commit.
    pub commit: String,
    /// The value it wrote.
    pub value: String,
    /// When the release was deployed (its commit), Unix ms: where the judged windows start.
    pub deployed_at: i64,
    /// The value the environment held before (a `previousVersion` log baseline).
    pub previous: Option<String>,
    /// When the watch began (the run's end), Unix ms.
    pub started_at: i64,
    /// When it ends clean if nothing fails.
    pub ends_at: i64,
    /// Time between looks, ms.
    pub interval_ms: i64,
    /// When the next look is due.
    pub next_at: i64,
    /// Where it stands.
    pub state: WatchState,
    /// Looks made.
    pub looks: i64,
    /// Looks that failed.
    pub failures: i64,
    /// Looks that could not judge (a provider down) in a row.
    pub errors: i64,
    /// Looks that had data and passed.
    pub passes: i64,
    /// The last look's summary, or how the watch ended.
    pub message: Option<String>,
    /// The last look's evidence.
    pub evidence: Option<serde_json::Value>,
    /// What the logs judge noted when the watch began (file lengths).
    pub marks: Option<serde_json::Value>,
    /// The revert commit, when it reverted.
    pub reverted_to: Option<String>,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// Who cleared the held version.
    pub cleared_by: Option<String>,
    /// When.
    pub cleared_at: Option<i64>,
    /// Why.
    pub clear_reason: Option<String>,
    /// The seal over what it is and how it stands ([`super::seals::watch`]).
    #[serde(skip)]
    pub seal: Option<String>,
}

impl WatchRecord {
    /// Whether it holds its version from being promoted (failed and not cleared).
    pub fn holds(&self) -> bool {
        self.state == WatchState::Failed && self.cleared_by.is_none()
    }

    /// Whether it still looks.
    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }
}

/// Which watches to read (each `None`: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchFilter<'a> {
    /// Of this pipeline.
    pub pipeline: Option<&'a str>,
    /// Of this environment.
    pub environment: Option<&'a str>,
    /// Of this version.
    pub version: Option<&'a str>,
    /// Of this run.
    pub run: Option<&'a str>,
    /// In this state.
    pub state: Option<WatchState>,
    /// Active (`watching`, `reverting`) with a look due at or before this time (Unix ms).
    pub due: Option<i64>,
    /// This one.
    pub id: Option<&'a str>,
}

/// What a trail entry records: its `kind`, as stored and shown (`promote audit`). Entries read back
/// keep the stored text (an entry an older or newer version wrote may name another kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumString, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum EntryKind {
    /// A run started (the trigger as actor).
    Trigger,
    /// A run ended, or was reverted.
    Run,
    /// A stage's transition.
    Stage,
    /// A person approved or rejected a stage.
    Decision,
    /// A person broke the glass of a frozen environment for one deploy.
    BreakGlass,
    /// A log template marked not a risk.
    LogExemption,
    /// A drift seen.
    Drift,
    /// A drift decided.
    DriftDecision,
    /// A compliance violation seen.
    Compliance,
    /// A compliance violation decided.
    ComplianceDecision,
    /// A watch began, looked or ended.
    Watch,
    /// A failed watch's hold cleared.
    WatchClear,
    /// A queued run superseded by a newer one.
    Superseded,
    /// An environment's lock taken from a run whose lease lapsed.
    LockTakeover,
    /// A run let an environment go.
    Release,
    /// A run's driving taken over from a process whose lease lapsed.
    DriverTakeover,
    /// A person signed in to the pages.
    SignIn,
    /// A person signed out.
    SignOut,
    /// A person's sessions ended by an admin.
    SessionsRevoked,
    /// A sign-in refused.
    SignInRefused,
    /// An action refused to a person.
    Refused,
    /// A policy's verdict, or why it could not judge.
    Policy,
    /// A note not delivered, or notifications off.
    Notification,
    /// A rollback by hand.
    Rollback,
    /// A rewritten environment history accepted by a person.
    AcceptRewrite,
    /// A pull request a deploy opened, merged or closed.
    PullRequest,
    /// A pull-request webhook event received.
    PullRequestEvent,
    /// What a logs stage read or could not read.
    Logs,
    /// An environment's history found rewritten.
    HistoryRewrite,
    /// A webhook stage's call.
    WebhookCall,
    /// A webhook stage's verdict called back.
    Callback,
    /// The note that an approval waits (sent once).
    ApprovalPending,
    /// The note that a deploy waits for a freeze's end (sent once).
    Freeze,
    /// An approval's reminder.
    ApprovalReminder,
    /// An approval's escalation.
    ApprovalEscalation,
}

impl EntryKind {
    /// Its name, as stored.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a watch stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema, strum::EnumString, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum WatchState {
    /// Looking, one look every interval.
    Watching,
    /// A failure seen; the revert is under way.
    Reverting,
    /// Reverted; the version is held until a person clears it.
    Failed,
    /// Its time ran out with every look passed.
    Passed,
    /// Its time ran out and no look had data.
    Inconclusive,
    /// Ended by a newer promotion, a rollback or a revert.
    Superseded,
    /// The look itself kept failing.
    Error,
}

impl WatchState {
    /// Its name, as stored.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    /// Whether it still looks (or reverts).
    pub fn is_active(self) -> bool {
        matches!(self, WatchState::Watching | WatchState::Reverting)
    }
}

/// Where a drift stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema, strum::EnumString, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DriftState {
    /// Seen, waiting for a decision.
    Open,
    /// Approved by a person (or adopted by promote): the environment's approved state.
    Accepted,
    /// Rejected, its revert being written (claimed, so that two deciders never both revert).
    Rejecting,
    /// Rejected by a person and reverted.
    Rejected,
    /// Reverted at once, by its `drift.action` or because a policy denied it.
    Reverted,
}

impl DriftState {
    /// Its name, as stored.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a compliance violation stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema, strum::EnumString, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ViolationState {
    /// Found, waiting for a decision (or for its action's revert).
    Open,
    /// Kept as an exception until its `until`; it opens again then.
    Accepted,
    /// A revert is being written (claimed, so that two deciders never both revert).
    Reverting,
    /// A new commit restored the files of the newest commit the policies allowed.
    Reverted,
    /// The environment moved on to files the policies allow (a promotion, a revert by hand).
    Resolved,
}

impl ViolationState {
    /// Its name, as stored.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    /// Whether it still needs someone (open, or an exception being reverted).
    pub fn is_open(self) -> bool {
        matches!(self, ViolationState::Open | ViolationState::Reverting)
    }
}

/// An environment's current files that the pipeline's policies deny: one per (environment, head,
/// policies), raised like a drift and decided like one.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ViolationRecord {
    /// `c-` and a ULID.
    pub id: String,
    /// The pipeline whose policies deny it.
    pub pipeline: String,
    /// The environment.
    pub environment: String,
    /// The branch's head that was judged.
    pub head: String,
    /// A digest of the policies that judged it (a policy change judges again).
    pub policies: String,
    /// What the policies denied.
    #[sqlx(try_from = "String")]
    pub deny: Denials,
    /// Where it stands.
    #[sqlx(try_from = "String")]
    pub state: ViolationState,
    /// Who decided last.
    pub decided_by: Option<String>,
    /// Why, or what was done.
    pub reason: Option<String>,
    /// An exception's end (Unix ms).
    pub until: Option<i64>,
    /// The commit a revert restored the files of.
    pub revert_to: Option<String>,
    /// Unix milliseconds when it was found.
    pub at: i64,
    /// Unix milliseconds of its last decision.
    pub decided_at: Option<i64>,
    /// The seal over what it is and its decision ([`super::seals::violation`]).
    #[serde(skip)]
    pub seal: Option<String>,
}

/// What the policies denied, stored as a JSON array.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Denials(pub Vec<String>);

impl TryFrom<String> for Denials {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s).map(Denials)
    }
}

impl TryFrom<String> for ViolationState {
    type Error = strum::ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl ViolationRecord {
    /// `prod (head 1a2b3c4d5e): denied: LoadBalancer services are not allowed in prod`.
    pub fn describe(&self) -> String {
        format!("{} (head {}): denied: {}", self.environment, &self.head[..self.head.len().min(10)], self.deny.0.join("; "))
    }
}

/// A violation's decision, as [`super::Store::decide_violation`] records it.
#[derive(Debug, Clone, Copy)]
pub struct ViolationDecision<'a> {
    /// The state it goes to.
    pub state: ViolationState,
    /// Who (`promote` for what promote did by itself).
    pub user: &'a str,
    /// Why, or what was done.
    pub reason: Option<&'a str>,
    /// An exception's end (Unix ms).
    pub until: Option<i64>,
    /// The commit a revert restored the files of.
    pub revert_to: Option<&'a str>,
    /// Who vouched for the person.
    pub via: Option<&'a str>,
}

/// Which violations to read (each `None`: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct ViolationFilter<'a> {
    /// Of this pipeline.
    pub pipeline: Option<&'a str>,
    /// Of this environment.
    pub environment: Option<&'a str>,
    /// In this state.
    pub state: Option<ViolationState>,
    /// This one.
    pub id: Option<&'a str>,
}

/// Which drifts to read (each `None`: any).
#[derive(Debug, Clone, Copy, Default)]
pub struct DriftFilter<'a> {
    /// Of this pipeline.
    pub pipeline: Option<&'a str>,
    /// Of this environment.
    pub environment: Option<&'a str>,
    /// In this state.
    pub state: Option<DriftState>,
    /// This one.
    pub id: Option<&'a str>,
}

impl DriftRecord {
    /// `2 commit(s) promote did not make, by Dev <dev@example.com>: "hotfix" ...`.
    pub fn describe(&self) -> String {
        let short = |id: &str| id[..id.len().min(10)].to_string();
        if self.commits.is_empty() && !self.rewritten && self.baseline.is_none() {
            return format!(
                "head {} adopted as the approved state{}",
                short(&self.head),
                self.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            );
        }
        if self.rewritten {
            return format!(
                "the history was rewritten (head {}; promote had seen {})",
                short(&self.head),
                self.baseline.as_deref().map(short).unwrap_or("?".into())
            );
        }
        let authors: std::collections::BTreeSet<&str> = self.commits.iter().map(|c| c.author.as_str()).collect();
        let subjects: Vec<String> = self.commits.iter().take(3).map(|c| format!("\"{}\"", crate::diag::printable(&c.summary))).collect();
        format!(
            "{} commit(s) promote did not make, by {}: {}{}",
            self.commits.len(),
            authors.into_iter().collect::<Vec<_>>().join(", "),
            subjects.join(", "),
            if self.commits.len() > 3 { ", ..." } else { "" }
        )
    }
}

/// A lease someone holds: an environment's lock or a run's driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// What is held: an environment, or a run.
    pub what: String,
    /// Who holds it: a run (for an environment), a process (for a run).
    pub holder: String,
    /// Unix milliseconds when it lapses unless renewed.
    pub expires_at: i64,
}

/// What a claim of a lease (an environment lock, the driving of a run) does, given who holds it
/// now: the one rule every backend applies inside its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Someone else holds it and its lease runs: (holder, lease's end).
    Held(String, i64),
    /// Taken: free, already ours, or (`Some`) taken over from a holder whose lease lapsed.
    Take(Option<(String, i64)>),
}

impl Claim {
    /// The claim of `me` at `at`, the lease being `held` (holder, lease's end) or free.
    pub fn of(held: Option<(String, i64)>, me: &str, at: i64) -> Claim {
        match held {
            Some((holder, until)) if holder != me && until >= at => Claim::Held(holder, until),
            Some((holder, until)) if holder != me => Claim::Take(Some((holder, until))),
            _ => Claim::Take(None),
        }
    }
}

/// What a run that asked for an environment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// It holds the environment.
    Taken,
    /// It waits in the environment's queue: `next` (the holder, or the live run first in line
    /// when the environment is free) goes before it, and its lease ends at `until`; `ahead` runs
    /// are queued before it.
    Queued {
        /// The run that goes next.
        next: String,
        /// That run's lease's end.
        until: i64,
        /// How many queued runs go before this one.
        ahead: usize,
    },
    /// A newer run of its pipeline superseded it while it was queued.
    Superseded {
        /// The newer run.
        by: String,
    },
}

/// A run queued for an environment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The run.
    pub run: String,
    /// Its pipeline.
    pub pipeline: String,
    /// Its driver's lease's end (renewed with the lease): a run whose driver died is passed over.
    pub expires_at: i64,
    /// The newer run that superseded it.
    pub superseded_by: Option<String>,
}

/// What a claim of an environment does, given its holder and its queue: the one rule every
/// backend applies inside its transaction (see [`Write::Lock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStep {
    /// The answer.
    pub state: LockState,
    /// The holder whose lapsed lease is taken over (with an entry).
    pub took_over: Option<(String, i64)>,
    /// Whether the run is (still) queued: its row is written (kept, lease renewed), else deleted.
    pub queued: bool,
    /// The older queued runs this one supersedes now (each marked, with an entry).
    pub supersedes: Vec<String>,
}

impl QueueStep {
    /// The claim of run `me` (of `pipeline`) at `at`; runs go in the order of their ids (ULIDs:
    /// the order promote heard their triggers).
    pub fn of(held: Option<(String, i64)>, queue: &[Queued], me: &str, pipeline: &str, supersede: bool, at: i64) -> QueueStep {
        if let Some(by) = queue.iter().find(|q| q.run == me).and_then(|q| q.superseded_by.clone()) {
            return QueueStep { state: LockState::Superseded { by }, took_over: None, queued: false, supersedes: vec![] };
        }
        // Already ours: kept (renewed), whoever queued since.
        if held.as_ref().is_some_and(|(h, _)| h == me) {
            return QueueStep { state: LockState::Taken, took_over: None, queued: false, supersedes: vec![] };
        }
        let supersedes: Vec<String> = if supersede {
            queue.iter().filter(|q| q.pipeline == pipeline && q.run.as_str() < me && q.superseded_by.is_none()).map(|q| q.run.clone()).collect()
        } else {
            vec![]
        };
        let mut ahead: Vec<&Queued> =
            queue.iter().filter(|q| q.run.as_str() < me && q.superseded_by.is_none() && q.expires_at >= at && !supersedes.contains(&q.run)).collect();
        ahead.sort_by(|a, b| a.run.cmp(&b.run));
        match Claim::of(held, me, at) {
            Claim::Held(next, until) => QueueStep { state: LockState::Queued { next, until, ahead: ahead.len() }, took_over: None, queued: true, supersedes },
            Claim::Take(took_over) => match ahead.first() {
                None => QueueStep { state: LockState::Taken, took_over, queued: false, supersedes },
                Some(first) => QueueStep {
                    state: LockState::Queued { next: first.run.clone(), until: first.expires_at, ahead: ahead.len() },
                    took_over: None,
                    queued: true,
                    supersedes,
                },
            },
        }
    }
}

#[cfg(test)]
mod claim_tests {
    #[test]
    fn an_entry_kind_is_stored_under_the_name_earlier_versions_wrote() {
        use super::EntryKind::*;
        // The trail is history: these names are in stored entries and in what reads them.
        for (kind, name) in [
            (Trigger, "trigger"),
            (Stage, "stage"),
            (BreakGlass, "break-glass"),
            (LogExemption, "log-exemption"),
            (DriftDecision, "drift-decision"),
            (ComplianceDecision, "compliance-decision"),
            (WatchClear, "watch-clear"),
            (LockTakeover, "lock-takeover"),
            (DriverTakeover, "driver-takeover"),
            (SignInRefused, "sign-in-refused"),
            (SessionsRevoked, "sessions-revoked"),
            (AcceptRewrite, "accept-rewrite"),
            (PullRequestEvent, "pull-request-event"),
            (HistoryRewrite, "history-rewrite"),
            (WebhookCall, "webhook-call"),
            (ApprovalPending, "approval-pending"),
            (ApprovalEscalation, "approval-escalation"),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(name.parse::<super::EntryKind>(), Ok(kind));
        }
    }

    use super::Claim;

    #[test]
    fn a_lease_is_taken_when_free_ours_or_lapsed_and_never_from_a_live_holder() {
        assert_eq!(Claim::of(None, "a", 100), Claim::Take(None));
        assert_eq!(Claim::of(Some(("a".into(), 50)), "a", 100), Claim::Take(None), "ours, even lapsed");
        assert_eq!(Claim::of(Some(("b".into(), 100)), "a", 100), Claim::Held("b".into(), 100), "live until its end");
        assert_eq!(Claim::of(Some(("b".into(), 99)), "a", 100), Claim::Take(Some(("b".into(), 99))), "lapsed: taken over");
    }

    fn q(run: &str, pipeline: &str, expires_at: i64, by: Option<&str>) -> super::Queued {
        super::Queued { run: run.into(), pipeline: pipeline.into(), expires_at, superseded_by: by.map(Into::into) }
    }

    #[test]
    fn an_environment_goes_to_the_oldest_live_run_queued_for_it() {
        use super::{LockState, QueueStep};
        // Free, nobody queued: taken.
        assert_eq!(QueueStep::of(None, &[], "b", "p", false, 100).state, LockState::Taken);
        // Free, an older live run queued: it goes first; this one queues behind it.
        let s = QueueStep::of(None, &[q("a", "p", 200, None), q("b", "p", 200, None)], "b", "p", false, 100);
        assert_eq!(s.state, LockState::Queued { next: "a".into(), until: 200, ahead: 1 });
        assert!(s.queued);
        // The older one's driver died (its lease lapsed): passed over.
        assert_eq!(QueueStep::of(None, &[q("a", "p", 50, None)], "b", "p", false, 100).state, LockState::Taken);
        // Ours already: kept, whoever queued since.
        assert_eq!(QueueStep::of(Some(("b".into(), 90)), &[q("a", "p", 200, None)], "b", "p", false, 100).state, LockState::Taken);
        // A younger run queued does not go first.
        assert_eq!(QueueStep::of(None, &[q("c", "p", 200, None)], "b", "p", false, 100).state, LockState::Taken);
        // Held: queued behind the holder, counting the older ones.
        let s = QueueStep::of(Some(("h".into(), 300)), &[q("a", "p", 200, None)], "b", "p", false, 100);
        assert_eq!(s.state, LockState::Queued { next: "h".into(), until: 300, ahead: 1 });
    }

    #[test]
    fn a_newer_run_supersedes_the_older_runs_of_its_pipeline_queued_for_the_environment() {
        use super::{LockState, QueueStep};
        let queue = [q("a", "p", 200, None), q("b", "other", 200, None), q("d", "p", 200, None)];
        let s = QueueStep::of(Some(("h".into(), 300)), &queue, "c", "p", true, 100);
        assert_eq!(s.supersedes, vec!["a".to_string()], "only older runs, only of its pipeline");
        assert_eq!(s.state, LockState::Queued { next: "h".into(), until: 300, ahead: 1 }, "the other pipeline's run stays ahead");
        // A superseded run is told so, and leaves the queue.
        let s = QueueStep::of(None, &[q("a", "p", 200, Some("c"))], "a", "p", true, 100);
        assert_eq!(s.state, LockState::Superseded { by: "c".into() });
        assert!(!s.queued);
    }
}
