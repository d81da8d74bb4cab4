//! The state port: everything the engine keeps (runs, stage transitions, decisions, environment
//! locks, log exemptions, the hash-chained audit trail) behind one interface, [`Backend`], with a
//! change feed ([`Store::subscribe`]) that wakes whoever waits for a write.
//!
//! [`Store`] is what the rest of promote holds: a cheap handle over one backend
//! ([`sqlite::SqliteBackend`], or [`postgres::PgBackend`] for replicas sharing a database) and its
//! feed. Only backends know a database (only they import
//! sqlx); the records ([`records`]), the writes, the chain's hash ([`chain`]) and the feed are
//! shared by all. Every write is acknowledged only once it is durable; a backend may group the
//! writes of many callers into one transaction (SQLite does: group commit).

mod batch;
pub mod chain;
pub mod dora;
mod feed;
pub mod postgres;
mod records;
mod schema;
pub mod seals;
mod sql;
pub mod sqlite;
pub mod texts;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Notify;

pub use chain::{Entry, Tamper, Verdict};
pub use feed::{Change, Subscription, Woken};
/// The run of a trail entry that belongs to no run (a drift, a sign-in, a rollback by hand), as
/// stored and shown: the store's API says `None` for it.
pub const NO_RUN: &str = "-";

pub use records::{
    Claim, Decision, Delivery, Denials, DriftFilter, DriftRecord, DriftState, EntryKind, Event, Exemption, Happening, Lease, LockState, PromotionRecord,
    QueueStep, Queued, RunRecord, RunState, SessionRecord, StageOf, StageRecord, StageState, StageWrite, Transition, ViolationDecision, ViolationFilter,
    ViolationRecord, ViolationState, WatchFilter, WatchRecord, WatchState, Write, Written,
};

/// What a backend's operations return.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A place where the state is kept. Every operation the engine needs, and nothing of how: a
/// backend owns its schema, its migrations, its transactions and how it sees other processes'
/// writes.
pub trait Backend: Send + Sync + 'static {
    /// Where the state is, for messages (a file path, a database URL without its password).
    fn path(&self) -> &str;
    /// The key the backend chains and seals with.
    fn key(&self) -> &crate::seal::Key;
    /// The state's own id (made when it was created; `None`: it was removed).
    fn state_id(&self) -> Fut<'_, Option<String>>;
    /// The schema version in use.
    fn schema_version(&self) -> Fut<'_, i64>;
    /// Applies a write durably (possibly in one transaction with others) and says what it gave.
    fn write(&self, write: Write) -> Fut<'_, Written>;
    /// One run by id.
    fn run<'a>(&'a self, id: &'a str) -> Fut<'a, Option<RunRecord>>;
    /// The newest runs first.
    fn runs(&self, limit: i64) -> Fut<'_, Vec<RunRecord>>;
    /// A run's stages, in file order.
    fn stages<'a>(&'a self, run: &'a str) -> Fut<'a, Vec<StageRecord>>;
    /// The decisions on a stage, oldest first.
    fn decisions<'a>(&'a self, run: &'a str, stage: &'a str) -> Fut<'a, Vec<Decision>>;
    /// The drifts recorded that `filter` names, newest first (at most 1,000).
    fn drifts<'a>(&'a self, filter: DriftFilter<'a>) -> Fut<'a, Vec<DriftRecord>>;
    /// The trail's entries between two times (Unix ms) of the kinds a report's timeline shows,
    /// oldest first, at most `limit`.
    fn happenings(&self, from: i64, to: i64, limit: i64) -> Fut<'_, Vec<Happening>>;
    /// The promotions written between two times (Unix ms), oldest first, at most `limit`.
    fn promotions_between(&self, from: i64, to: i64, limit: i64) -> Fut<'_, Vec<PromotionRecord>>;
    /// The compliance violations that `filter` names, newest first (at most 1,000).
    fn violations<'a>(&'a self, filter: ViolationFilter<'a>) -> Fut<'a, Vec<ViolationRecord>>;
    /// The watches `filter` names: newest first (at most 1,000), or with `due`, the due ones
    /// soonest first (at most 10,000).
    fn watches<'a>(&'a self, filter: WatchFilter<'a>) -> Fut<'a, Vec<WatchRecord>>;
    /// Every running run with a stage waiting (of those in `only`, when given), and all its
    /// stages (file order) without their message and output (`None`), oldest run first.
    fn waiting_runs<'a>(&'a self, only: Option<&'a [String]>) -> Fut<'a, Vec<(RunRecord, Vec<StageRecord>)>>;
    /// The id of a run's newest entry in the trail (0: none).
    fn last_change_of<'a>(&'a self, run: &'a str) -> Fut<'a, i64>;
    /// The stages of several runs (file order within each), each with its run's id.
    fn stages_of_runs<'a>(&'a self, runs: &'a [String]) -> Fut<'a, Vec<(String, StageRecord)>>;
    /// The decisions on the stages of several runs, oldest first: (run, stage, decision).
    fn decisions_of_runs<'a>(&'a self, runs: &'a [String]) -> Fut<'a, Vec<(String, String, Decision)>>;
    /// Every stage of `kind` (any kind: `None`) in `state` (any: `None`), with its run, oldest
    /// run first.
    fn stages_where<'a>(&'a self, kind: Option<&'a str>, state: Option<StageState>) -> Fut<'a, Vec<StageOf>>;
    /// The DORA figures kept with the writes, by (pipeline, environment) (those with deployments).
    fn dora(&self) -> Fut<'_, Vec<((String, String), dora::Dora)>>;
    /// Every waiting stage: its pipeline, its kind, and since when it waits (its start, else its
    /// run's), read through the index of waiting stages.
    fn waiting_stages(&self) -> Fut<'_, Vec<(String, String, i64)>>;
    /// Every environment lock: the environment, its run, its lease's end.
    fn env_locks(&self) -> Fut<'_, Vec<Lease>>;
    /// Every run queued for an environment, by environment, oldest first.
    fn env_queue(&self) -> Fut<'_, Vec<(String, Queued)>>;
    /// Running runs whose driver's lease lapsed before `now` (or that have none), oldest first,
    /// at most `limit`.
    fn orphans(&self, now: i64, limit: i64) -> Fut<'_, Vec<String>>;
    /// The newest promotion of a pipeline into an environment not rolled back: (run, version).
    fn last_promotion<'a>(&'a self, pipeline: &'a str, environment: &'a str) -> Fut<'a, Option<(String, String)>>;
    /// The refs a trigger's source had when last polled; `None` before its first poll.
    fn polled<'a>(&'a self, source: &'a str) -> Fut<'a, Option<Vec<(String, String)>>>;
    /// A web session by the hash of its cookie.
    fn session<'a>(&'a self, id_hash: &'a str) -> Fut<'a, Option<SessionRecord>>;
    /// Who drives a run, by lease, if anyone took it.
    fn driver<'a>(&'a self, run: &'a str) -> Fut<'a, Option<Lease>>;
    /// The log templates marked "not a risk" for a pipeline.
    fn exempt_templates<'a>(&'a self, pipeline: &'a str) -> Fut<'a, Vec<Exemption>>;
    /// The newest `n` entries of a run (oldest of them first) and how many it has in all.
    fn last_events<'a>(&'a self, run: &'a str, n: i64) -> Fut<'a, (Vec<Event>, i64)>;
    /// A run's entries, oldest first.
    fn events<'a>(&'a self, run: &'a str) -> Fut<'a, Vec<Event>>;
    /// The id of the last entry of the trail (0: none).
    fn last_change(&self) -> Fut<'_, i64>;
    /// The entries after `after`, oldest first, at most `limit`.
    fn changes_after(&self, after: i64, limit: i64) -> Fut<'_, Vec<Change>>;
    /// Starts telling `poke` of other processes' writes; what it returns keeps that going while
    /// it lives. `None`: it cannot, and the feed looks every second instead.
    fn watch(&self, poke: Arc<Notify>) -> Option<Box<dyn std::any::Any + Send + Sync>>;
    /// Checks the whole trail.
    fn verify_audit(&self) -> Fut<'_, Verdict>;
    /// The entry whose hash is `hash`, if any.
    fn audit_entry_with_hash<'a>(&'a self, hash: &'a str) -> Fut<'a, Option<i64>>;
    /// The trail, oldest first, optionally of one run; `after` and `limit` page through it.
    fn audit_entries<'a>(&'a self, run: Option<&'a str>, after: i64, limit: i64) -> Fut<'a, Vec<Entry>>;
    /// Runs SQL as it is (benchmarks and tools that fill or repair a state; never user input).
    fn raw_sql<'a>(&'a self, sql: &'a str) -> Fut<'a, ()>;
    /// Closes the backend.
    fn close(&self) -> Fut<'_, ()>;
}

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not a SQLite database.
    #[error("{path}: not a promote state file (not SQLite: corrupt, or another kind of file); nothing was changed: move it away or pass --state")]
    NotSqlite {
        /// The file.
        path: String,
    },
    /// A SQLite database that some other program made.
    #[error("{path}: a SQLite database, but not promote's (application id {found:#x}); nothing was changed: pass --state with another path")]
    Foreign {
        /// The file.
        path: String,
        /// Its application id.
        found: i64,
    },
    /// Written by a newer promote.
    #[error("{path}: written by a newer promote (schema {found}, this one knows up to {known}); nothing was changed: upgrade promote")]
    Newer {
        /// The file.
        path: String,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        known: usize,
    },
    /// No run has this id.
    #[error("no run `{id}` in {path}{hint}")]
    UnknownRun {
        /// The id asked for.
        id: String,
        /// The state file.
        path: String,
        /// The most recent runs, for a person.
        hint: String,
    },
    /// A write of a run's driver refused: another process took the run over (its lease lapsed,
    /// the process was paused or cut off), or the run ended. The driver stops; nothing was written.
    #[error("run {run}: this process no longer drives it (another process took it over, or it ended): its write was refused")]
    Fenced {
        /// The run.
        run: String,
    },
    /// The database failed.
    #[error("{path}: {message}")]
    Db {
        /// The state file (or database).
        path: String,
        /// What the database said.
        message: String,
        /// The database's own error code, when it gave one (SQLite `5` is "busy").
        code: Option<String>,
    },
    /// A record does not carry the seal promote gives what it writes: it was inserted or changed
    /// outside promote, and is not acted on.
    #[error(
        "{path}: {what} does not carry promote's seal: it was written or changed outside promote (with a SQL shell?), so promote will not act on it; `promote audit verify` says what else changed"
    )]
    Forged {
        /// The state.
        path: String,
        /// The record, for a person.
        what: String,
    },
    /// The sealing key cannot be had.
    #[error(transparent)]
    Key(#[from] crate::seal::SealError),
    /// `PROMOTE_DATABASE_URL_FILE` names a file that cannot give the URL.
    #[error("PROMOTE_DATABASE_URL_FILE {file}: {why}")]
    DatabaseUrlFile {
        /// The file.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// The database did not answer within the time given to wait for it at start.
    #[error("{path}: the database did not answer for {waited_s} s (PROMOTE_DATABASE_WAIT): {message}")]
    Unreachable {
        /// The database, without its password.
        path: String,
        /// How long promote waited.
        waited_s: u64,
        /// The last attempt's error.
        message: String,
    },
    /// The store was closed while a write waited.
    #[error("{path}: the state was closed before the write was done")]
    Closed {
        /// The state file.
        path: String,
    },
}

/// The state: a handle on one backend and its change feed; clones share both.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    feed: Arc<feed::Feed>,
    /// This handle's name as a lease holder (one per open store: a process).
    holder: Arc<str>,
    lease: std::time::Duration,
    /// The runs this process took the lease of driving: their transitions and their end are
    /// fenced by it (refused once another process took the run over, or it ended).
    driving: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The driven runs whose end this process wrote under its lease: that write also removed the
    /// lease (`FinishRun` deletes the run's driver), so giving it back writes nothing.
    ended: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The last read of [`Store::waiting_runs`], with the trail's last entry before it was read.
    waiting: Arc<std::sync::Mutex<Option<(i64, Waiting)>>>,
    /// The last few reads of [`Store::stages_kept`]: run, its newest entry then, its stages.
    kept_stages: Arc<std::sync::Mutex<std::collections::VecDeque<KeptStages>>>,
}

/// Every running run with a stage waiting, oldest first, each with its stages' names, kinds and
/// states (see [`Store::waiting_runs`]); shared: a read is kept while nothing is written.
pub type Waiting = Arc<Vec<WaitingRun>>;

/// A run's stages as read, with the run and its newest entry then.
type KeptStages = (String, i64, Arc<Vec<StageRecord>>);

/// A waiting run and its stages, shared.
pub type WaitingRun = (Arc<RunRecord>, Arc<Vec<StageRecord>>);

/// The PostgreSQL database the state is in, when one is named: `PROMOTE_DATABASE_URL` (set and
/// not empty), else the contents of the file `PROMOTE_DATABASE_URL_FILE` names (a mounted Secret,
/// so that the password is in no process's environment for git, ssh or gpg to inherit). A file
/// named but unreadable or empty is an error, never a quiet fall back to a SQLite state.
pub fn database_url() -> Result<Option<String>, StoreError> {
    if let Some(url) = std::env::var("PROMOTE_DATABASE_URL").ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
        return Ok(Some(url));
    }
    let Some(file) = std::env::var_os("PROMOTE_DATABASE_URL_FILE").filter(|f| !f.is_empty()) else { return Ok(None) };
    let path = Path::new(&file);
    let err = |why: String| StoreError::DatabaseUrlFile { file: path.display().to_string(), why };
    let text = crate::files::read_text(path, crate::files::MAX_SMALL).map_err(|e| err(e.why))?;
    let url = text.trim().to_string();
    if url.is_empty() {
        return Err(err("it is empty (it should hold postgres://USER:PASSWORD@HOST:PORT/DATABASE)".into()));
    }
    if let Some(pw) = url::Url::parse(&url).ok().and_then(|u| u.password().map(String::from)) {
        let _ = crate::secret::Secret::new(pw);
    }
    Ok(Some(url))
}

/// Whether the state is in a database (`PROMOTE_DATABASE_URL`, `PROMOTE_DATABASE_URL_FILE`, or a
/// `postgres://` state location) rather than a SQLite file.
pub fn in_database(state: &Path) -> bool {
    !matches!(database_url(), Ok(None)) || postgres::is_url(&state.to_string_lossy())
}

/// How long a lease (an environment lock, the driving of a run) lasts unless renewed: 10 s, or
/// `PROMOTE_LEASE_MS` (200 ms to 10 min). Its holder renews it every third of that.
pub fn lease_duration() -> std::time::Duration {
    let ms = std::env::var("PROMOTE_LEASE_MS").ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(10_000);
    std::time::Duration::from_millis(ms.clamp(200, 600_000))
}

impl Store {
    /// Opens (creating, or migrating from an older version) the SQLite state file at `path`,
    /// sealed with the key of [`crate::seal::Key::default_path`]. A file that is not promote's is
    /// refused untouched.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_key(path, crate::seal::Key::load_default()?).await
    }

    /// [`Store::open`] with a given key. `PROMOTE_DATABASE_URL=postgres://...` (or a path that is
    /// such a URL) opens that PostgreSQL database instead, the state several replicas share.
    pub async fn open_with_key(path: &Path, key: crate::seal::Key) -> Result<Store, StoreError> {
        let location = database_url()?.unwrap_or_else(|| path.to_string_lossy().into_owned());
        if postgres::is_url(&location) {
            return Store::open_url(&location, key).await;
        }
        Ok(Store::over(Arc::new(sqlite::SqliteBackend::open(path, key).await?)))
    }

    /// Opens the PostgreSQL database at `url` (migrating it if needed), sealed with `key`.
    pub async fn open_url(url: &str, key: crate::seal::Key) -> Result<Store, StoreError> {
        Ok(Store::over(Arc::new(postgres::PgBackend::open(url, key).await?)))
    }

    /// A store over any backend.
    pub fn over(backend: Arc<dyn Backend>) -> Store {
        let holder = format!("{}@{}:{}", ulid::Ulid::new(), hostname(), std::process::id());
        Store {
            backend,
            feed: Arc::new(feed::Feed::new()),
            holder: holder.into(),
            lease: lease_duration(),
            driving: Default::default(),
            ended: Default::default(),
            waiting: Default::default(),
            kept_stages: Default::default(),
        }
    }

    /// Where the state is.
    pub fn path(&self) -> &str {
        self.backend.path()
    }

    /// The key this state is sealed with.
    pub fn key(&self) -> &crate::seal::Key {
        self.backend.key()
    }

    /// The state's own id (`None`: it was removed from the state).
    pub async fn state_id(&self) -> Result<Option<String>, StoreError> {
        self.backend.state_id().await
    }

    fn forged(&self, what: String) -> StoreError {
        StoreError::Forged { path: self.path().to_string(), what }
    }

    /// The change feed from now on: every entry committed after this returns (by this process or
    /// another) is announced to the subscription.
    pub async fn subscribe(&self) -> Result<Subscription, StoreError> {
        self.feed.subscribe(&self.backend).await
    }

    /// The schema version in use.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.backend.schema_version().await
    }

    /// Applies a write, durably, and wakes the feed. Its texts are redacted first
    /// ([`Write::redacted`]).
    pub async fn write(&self, write: Write) -> Result<Written, StoreError> {
        // The one pass everything stored goes through: no secret reaches the state, so none
        // reaches `status`, the audit log or a notification built from them.
        let done = self.backend.write(write.redacted()).await;
        self.feed.poke();
        done
    }

    /// Records a new run and its stages (all pending), in one transaction.
    pub async fn create_run(&self, run: &RunRecord, stages: &[(&str, &str)]) -> Result<(), StoreError> {
        self.create_delivered_run(run, stages, None, false).await.map(|_| ())
    }

    /// Records a run started by a webhook delivery, with the delivery, in one transaction:
    /// `Ok(None)` when recorded; `Ok(Some(run))` when the delivery, or a run of the same pipeline
    /// and version, was recorded before (`run`: the run it started, if any), and nothing was.
    /// `driven`: this process drives it at once, and takes the lease of driving it in the same
    /// transaction (as [`take_drive`](Self::take_drive) would, without a claim of its own).
    pub async fn create_delivered_run(
        &self,
        run: &RunRecord,
        stages: &[(&str, &str)],
        delivery: Option<Delivery>,
        driven: bool,
    ) -> Result<Option<Option<String>>, StoreError> {
        let stages = stages.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect();
        let driver = driven.then(|| (self.holder.to_string(), self.lease_end()));
        match self.write(Write::CreateRun { run: Box::new(run.clone()), stages, delivery, driver }).await? {
            Written::Duplicate(r) => Ok(Some(r)),
            _ => {
                if driven {
                    self.driving.lock().unwrap_or_else(|e| e.into_inner()).insert(run.id.clone());
                }
                Ok(None)
            }
        }
    }

    /// One run by id; refused when its record does not carry its seal.
    pub async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        if let Some(r) = self.backend.run(id).await? {
            let want = seals::run(self.key(), &r.id, &r.pipeline, &r.file, &r.source, &r.version, &r.triggered_by, r.authenticated, r.created_at);
            if !self.key().verify_hex(&want, r.seal.as_deref()) {
                return Err(self.forged(format!("run {id} (its pipeline source, version or starter)")));
            }
            return Ok(r);
        }
        let recent = self.runs(5).await?;
        let hint = if recent.is_empty() {
            " (it has no runs yet)".to_string()
        } else {
            format!("; recent runs: {}", recent.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "))
        };
        Err(StoreError::UnknownRun { id: id.into(), path: self.path().to_string(), hint })
    }

    /// The newest runs first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        self.backend.runs(limit).await
    }

    /// A run's stages, in file order; refused when one's state does not carry its seal.
    pub async fn stages(&self, run: &str) -> Result<Vec<StageRecord>, StoreError> {
        let stages = self.backend.stages(run).await?;
        for s in &stages {
            if !self.key().verify_hex(&seals::stage(self.key(), run, &s.name, s.state.as_str()), s.seal.as_deref()) {
                return Err(self.forged(format!("stage `{}` of run {run} (state {})", s.name, s.state)));
            }
        }
        Ok(stages)
    }

    /// A run's stages as [`Store::stages`] gives them, kept for the last few runs asked and given
    /// again while the run's newest entry in the trail is the same (every transition of a stage
    /// appends one naming its run, in its transaction): a page of a 5,000-stage run shown again
    /// costs one indexed look, not 5,000 rows and their seals.
    pub async fn stages_kept(&self, run: &str) -> Result<Arc<Vec<StageRecord>>, StoreError> {
        /// How many runs' stages are kept.
        const KEPT: usize = 8;
        // The mark is taken before the read: a transition in between makes the next call read.
        let mark = self.backend.last_change_of(run).await?;
        {
            let kept = self.kept_stages.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, stages)) = kept.iter().find(|(r, at, _)| r == run && *at == mark) {
                return Ok(stages.clone());
            }
        }
        let stages = Arc::new(self.stages(run).await?);
        let mut kept = self.kept_stages.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|(r, _, _)| r != run);
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back((run.to_string(), mark, stages.clone()));
        Ok(stages)
    }

    /// Applies a stage transition and records its entry, atomically.
    pub async fn transition(&self, run: &str, stage: &str, t: Transition, event: &str) -> Result<(), StoreError> {
        let item = StageWrite { stage: stage.to_string(), transition: t, event: event.to_string() };
        self.transitions(run, vec![item]).await
    }

    /// Several transitions of one run in one transaction: all durable, or none. The walker writes a
    /// stage's result together with the starts it allows, so a stage whose needs are met is
    /// recorded running by the same commit.
    ///
    /// When this process drives the run, the write is fenced by its lease: refused with
    /// [`StoreError::Fenced`] once another process took the run over or the run ended, so a
    /// driver that was paused past its lease writes nothing after the new driver began.
    pub async fn transitions(&self, run: &str, items: Vec<StageWrite>) -> Result<(), StoreError> {
        let w = Write::Transitions { run: run.to_string(), items, fence: self.fence(run) };
        self.fenced(run, w).await
    }

    /// Ends a run (its environment locks are released with it); fenced as [`Store::transitions`].
    pub async fn finish_run(&self, run: &str, state: RunState, message: Option<&str>) -> Result<(), StoreError> {
        let fence = self.fence(run);
        let driven = fence.is_some();
        let w = Write::FinishRun { run: run.to_string(), fence, state, message: message.map(String::from), at: crate::clock::now_ms() };
        self.fenced(run, w).await?;
        if driven {
            self.ended.lock().unwrap_or_else(|e| e.into_inner()).insert(run.to_string());
        }
        Ok(())
    }

    /// Whether this process took the lease of driving `run` (with the run, or by a claim).
    pub fn holds_drive(&self, run: &str) -> bool {
        self.fence(run).is_some()
    }

    /// This process's holder name when it drives `run` (its writes then need its lease).
    fn fence(&self, run: &str) -> Option<String> {
        self.driving.lock().unwrap_or_else(|e| e.into_inner()).contains(run).then(|| self.holder.to_string())
    }

    /// A write that may be fenced: [`Written::Fenced`] as [`StoreError::Fenced`].
    async fn fenced(&self, run: &str, w: Write) -> Result<(), StoreError> {
        match self.write(w).await? {
            // (The run stays among those driven until the driver gives it back: every later
            // write of it from this process is refused too.)
            Written::Fenced => Err(StoreError::Fenced { run: run.to_string() }),
            _ => Ok(()),
        }
    }

    /// Records an approval decision, once per person (see [`Store::decide_as`]).
    pub async fn decide(&self, run: &str, stage: &str, user: &str, approve: bool, comment: Option<&str>) -> Result<bool, StoreError> {
        self.decide_as(run, stage, user, approve, comment, EntryKind::Decision, None).await
    }

    /// Records a decision whose audit entry is of `kind` (`decision`, `break-glass`, `callback`),
    /// once per person and stage: `false` when they had decided already and nothing was written.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_as(
        &self,
        run: &str,
        stage: &str,
        user: &str,
        approve: bool,
        comment: Option<&str>,
        kind: EntryKind,
        via: Option<&str>,
    ) -> Result<bool, StoreError> {
        let w = Write::Decide {
            run: run.to_string(),
            stage: stage.to_string(),
            user: user.to_string(),
            approve,
            comment: comment.map(String::from),
            kind,
            at: crate::clock::now_ms(),
            via: via.map(String::from),
        };
        Ok(!matches!(self.write(w).await?, Written::Duplicate(_)))
    }

    /// Marks a log template "not a risk" for a pipeline's `logs` stages, with who and why; an
    /// entry of `run` records it.
    /// `Some(who)` when the template was marked already (never replaced) and nothing was written.
    pub async fn exempt_template(
        &self,
        run: &str,
        pipeline: &str,
        template: &str,
        user: &str,
        reason: &str,
        via: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let w = Write::Exempt {
            run: run.to_string(),
            pipeline: pipeline.to_string(),
            template: template.to_string(),
            user: user.to_string(),
            reason: reason.to_string(),
            at: crate::clock::now_ms(),
            via: via.map(String::from),
        };
        match self.write(w).await? {
            Written::Duplicate(by) => Ok(Some(by.unwrap_or_default())),
            _ => Ok(None),
        }
    }

    /// The log templates marked "not a risk" for a pipeline; refused when one does not carry its
    /// seal.
    pub async fn exempt_templates(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        let all = self.backend.exempt_templates(pipeline).await?;
        for e in &all {
            if !self.key().verify_hex(&seals::exemption(self.key(), pipeline, &e.template, &e.user, &e.reason, e.at), e.seal.as_deref()) {
                return Err(self.forged(format!("the \"not a risk\" mark of `{}` for pipeline {pipeline}", e.template)));
            }
        }
        Ok(all.into_iter().map(|e| e.template).collect())
    }

    /// The decisions on an approval stage, oldest first; refused when one does not carry its seal.
    pub async fn decisions(&self, run: &str, stage: &str) -> Result<Vec<Decision>, StoreError> {
        let all = self.backend.decisions(run, stage).await?;
        for d in &all {
            if !self.key().verify_hex(&seals::decision(self.key(), run, stage, &d.user, d.approve, d.comment.as_deref(), d.at), d.seal.as_deref()) {
                return Err(self.forged(format!("the decision of {} on stage `{stage}` of run {run}", d.user)));
            }
        }
        Ok(all)
    }

    /// This handle with leases of `lease` (its environment locks and the runs it drives) instead of
    /// [`lease_duration`]'s.
    pub fn with_lease(mut self, lease: std::time::Duration) -> Store {
        self.lease = lease;
        self
    }

    /// The lease's length.
    pub fn lease(&self) -> std::time::Duration {
        self.lease
    }

    /// This handle's name as a lease holder.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn lease_end(&self) -> i64 {
        crate::clock::now_ms() + self.lease.as_millis() as i64
    }

    /// Takes the environment for `run` of `pipeline` (or renews it) in the environment's queue's
    /// order, taking it over from a run whose lease lapsed; with `supersede`, older runs of the
    /// pipeline queued for it are superseded ([`Write::Lock`]).
    pub async fn lock_environment(&self, environment: &str, pipeline: &str, run: &str, supersede: bool) -> Result<LockState, StoreError> {
        let w = Write::Lock {
            environment: environment.to_string(),
            pipeline: pipeline.to_string(),
            run: run.to_string(),
            supersede,
            at: crate::clock::now_ms(),
            expires_at: self.lease_end(),
        };
        match self.write(w).await? {
            Written::Lock(state) => Ok(state),
            other => unreachable!("a backend answered a lock with {other:?}"),
        }
    }

    /// Gives `environment` back before `run` ends (the stages of `stage`'s run that judge it are
    /// done); the runs queued for it are woken. Nothing when the run does not hold it.
    pub async fn unlock_environment(&self, environment: &str, run: &str, stage: &str) -> Result<(), StoreError> {
        let w = Write::Unlock { environment: environment.to_string(), run: run.to_string(), stage: stage.to_string(), at: crate::clock::now_ms() };
        self.write(w).await.map(|_| ())
    }

    /// Records that `run` promoted `version` into `environment` (or, with `rolled_back`, rolled
    /// that back); fenced as [`Store::transitions`].
    pub async fn promoted(&self, pipeline: &str, environment: &str, run: &str, version: &str, rolled_back: bool) -> Result<(), StoreError> {
        self.promotion(pipeline, environment, run, version, rolled_back, crate::clock::now_ms()).await
    }

    /// Records a promotion that happened at `at` (a commit found on the branch after its driver
    /// died, beneath a newer one): it takes its place in the order by that time.
    pub async fn promoted_at(&self, pipeline: &str, environment: &str, run: &str, version: &str, at: i64) -> Result<(), StoreError> {
        self.promotion(pipeline, environment, run, version, false, at).await
    }

    async fn promotion(&self, pipeline: &str, environment: &str, run: &str, version: &str, rolled_back: bool, at: i64) -> Result<(), StoreError> {
        let w = Write::Promoted {
            pipeline: pipeline.to_string(),
            environment: environment.to_string(),
            run: run.to_string(),
            version: version.to_string(),
            rolled_back,
            at,
            fence: self.fence(run),
        };
        self.fenced(run, w).await
    }

    /// Every run queued for an environment (environment, the run), by environment, oldest first.
    pub async fn env_queue(&self) -> Result<Vec<(String, Queued)>, StoreError> {
        self.backend.env_queue().await
    }

    /// Running runs nobody drives (their driver's lease lapsed before `now`, or they have none),
    /// oldest first, at most `limit`: what a server takes over, found by one query.
    pub async fn orphans(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        self.backend.orphans(now, limit).await
    }

    /// The newest promotion of `pipeline` into `environment` not rolled back: (run, version).
    pub async fn last_promotion(&self, pipeline: &str, environment: &str) -> Result<Option<(String, String)>, StoreError> {
        self.backend.last_promotion(pipeline, environment).await
    }

    /// Takes the lease of driving `run`, taking it over from a driver whose lease lapsed;
    /// `Some((holder, lease end))` when another live process drives it.
    pub async fn take_drive(&self, run: &str) -> Result<Option<(String, i64)>, StoreError> {
        let mut at = crate::clock::now_ms();
        loop {
            let w = Write::Drive { run: run.to_string(), holder: self.holder.to_string(), at, expires_at: self.lease_end() };
            match self.write(w).await? {
                // A driver of this machine that no longer exists (killed) holds nothing: taken
                // over at once instead of after its lease.
                Written::Holder(Some((holder, until))) if at <= until && is_dead_here(&holder) => at = until + 1,
                Written::Holder(h) => {
                    if h.is_none() {
                        self.driving.lock().unwrap_or_else(|e| e.into_inner()).insert(run.to_string());
                        self.ended.lock().unwrap_or_else(|e| e.into_inner()).remove(run);
                    }
                    return Ok(h);
                }
                other => unreachable!("a backend answered a drive with {other:?}"),
            }
        }
    }

    /// Renews this process's lease on `run` and its environment locks; `false` when the lease
    /// is no longer ours (it lapsed and another process took it).
    pub async fn renew(&self, run: &str) -> Result<bool, StoreError> {
        match self.backend.write(Write::Renew { run: run.to_string(), holder: self.holder.to_string(), expires_at: self.lease_end() }).await? {
            Written::Renewed(ours) => Ok(ours),
            other => unreachable!("a backend answered a renewal with {other:?}"),
        }
    }

    /// Gives back this process's lease on `run` (nothing to write when this process ended the
    /// run under it: the end removed the lease).
    pub async fn release_drive(&self, run: &str) -> Result<(), StoreError> {
        self.driving.lock().unwrap_or_else(|e| e.into_inner()).remove(run);
        if self.ended.lock().unwrap_or_else(|e| e.into_inner()).remove(run) {
            return Ok(());
        }
        self.backend.write(Write::Release { run: run.to_string(), holder: self.holder.to_string() }).await.map(|_| ())
    }

    /// The refs a trigger's source had when last polled; `None` before its first poll.
    pub async fn polled(&self, source: &str) -> Result<Option<Vec<(String, String)>>, StoreError> {
        self.backend.polled(source).await
    }

    /// Keeps the refs a trigger's source has now.
    pub async fn set_polled(&self, source: &str, refs: Vec<(String, String)>) -> Result<(), StoreError> {
        self.backend.write(Write::Polled { source: source.to_string(), refs }).await.map(|_| ())
    }

    /// Every environment lock and its lease.
    /// The drifts recorded that `filter` names, newest first; refused when one does not carry
    /// its seal (an accepted drift is the state the next promotion builds on).
    pub async fn drifts(&self, filter: DriftFilter<'_>) -> Result<Vec<DriftRecord>, StoreError> {
        let all = self.backend.drifts(filter).await?;
        for d in &all {
            let want = seals::drift(self.key(), &d.id, &d.pipeline, &d.environment, &d.head, d.baseline.as_deref(), d.state.as_str(), d.decided_by.as_deref());
            if !self.key().verify_hex(&want, d.seal.as_deref()) {
                return Err(self.forged(format!("drift {} ({} in {})", d.id, d.state, d.environment)));
            }
        }
        Ok(all)
    }

    /// Records a drift (with its entry); `Some(id)` of the one recorded before for the same head.
    pub async fn record_drift(&self, drift: DriftRecord) -> Result<Option<String>, StoreError> {
        match self.write(Write::RecordDrift { drift: Box::new(drift) }).await? {
            Written::Duplicate(first) => Ok(Some(first.unwrap_or_default())),
            _ => Ok(None),
        }
    }

    /// One drift, by id.
    pub async fn drift(&self, id: &str) -> Result<Option<DriftRecord>, StoreError> {
        Ok(self.drifts(DriftFilter { id: Some(id), ..Default::default() }).await?.pop())
    }

    /// Records a drift's decision (with its entry) if it is still in state `from`: `false` when it
    /// was not (decided by a concurrent or an earlier request) and nothing was written.
    pub async fn decide_drift(
        &self,
        id: &str,
        from: DriftState,
        state: DriftState,
        user: &str,
        reason: Option<&str>,
        via: Option<&str>,
    ) -> Result<bool, StoreError> {
        let w = Write::DecideDrift {
            id: id.to_string(),
            from,
            state,
            user: user.to_string(),
            reason: reason.map(String::from),
            at: crate::clock::now_ms(),
            via: via.map(String::from),
        };
        Ok(!matches!(self.write(w).await?, Written::Duplicate(_)))
    }

    /// The compliance violations `filter` names, newest first; refused when one does not carry its
    /// seal (an accepted one is an exception to the policies).
    pub async fn violations(&self, filter: ViolationFilter<'_>) -> Result<Vec<ViolationRecord>, StoreError> {
        let all = self.backend.violations(filter).await?;
        for v in &all {
            if !self.key().verify_hex(&seals::violation(self.key(), v), v.seal.as_deref()) {
                return Err(self.forged(format!("compliance violation {} ({} in {})", v.id, v.state, v.environment)));
            }
        }
        Ok(all)
    }

    /// The trail's entries between `from` and `to` (Unix ms) that a report's timeline shows
    /// (ends, rollbacks, drifts, compliance, watches, decisions), oldest first, at most `limit`.
    pub async fn happenings(&self, from: i64, to: i64, limit: i64) -> Result<Vec<Happening>, StoreError> {
        self.backend.happenings(from, to, limit).await
    }

    /// Every pipeline's promotions between `from` and `to` (Unix ms), oldest first, at most `limit`.
    pub async fn promotions_between(&self, from: i64, to: i64, limit: i64) -> Result<Vec<PromotionRecord>, StoreError> {
        self.backend.promotions_between(from, to, limit).await
    }

    /// One compliance violation, by id.
    pub async fn violation(&self, id: &str) -> Result<Option<ViolationRecord>, StoreError> {
        Ok(self.violations(ViolationFilter { id: Some(id), ..Default::default() }).await?.pop())
    }

    /// Records a compliance violation (with its entry); `Some(id)` of the one recorded before for
    /// the same head and policies.
    pub async fn record_violation(&self, violation: ViolationRecord) -> Result<Option<String>, StoreError> {
        match self.write(Write::RecordViolation { violation: Box::new(violation) }).await? {
            Written::Duplicate(first) => Ok(Some(first.unwrap_or_default())),
            _ => Ok(None),
        }
    }

    /// Records a violation's decision (with its entry) if it is still in state `from`: `false`
    /// when it was not (decided by a concurrent or an earlier request) and nothing was written.
    pub async fn decide_violation(&self, id: &str, from: ViolationState, to: ViolationDecision<'_>) -> Result<bool, StoreError> {
        let w = Write::DecideViolation {
            id: id.to_string(),
            from: from.as_str().to_string(),
            state: to.state,
            user: to.user.to_string(),
            reason: to.reason.map(String::from),
            until: to.until,
            revert_to: to.revert_to.map(String::from),
            at: crate::clock::now_ms(),
            via: to.via.map(String::from),
        };
        Ok(!matches!(self.write(w).await?, Written::Duplicate(_)))
    }

    /// The watches `filter` names; refused when one does not carry its seal (a failed watch holds
    /// its version, a passed one makes its commit the state a revert goes back to).
    pub async fn watches(&self, filter: WatchFilter<'_>) -> Result<Vec<WatchRecord>, StoreError> {
        let all = self.backend.watches(filter).await?;
        for w in &all {
            if !self.key().verify_hex(&seals::watch(self.key(), w), w.seal.as_deref()) {
                return Err(self.forged(format!("watch {} ({} of {} in {})", w.id, w.state, w.version, w.environment)));
            }
        }
        Ok(all)
    }

    /// One watch, by id.
    pub async fn watch(&self, id: &str) -> Result<Option<WatchRecord>, StoreError> {
        Ok(self.watches(WatchFilter { id: Some(id), ..Default::default() }).await?.pop())
    }

    /// The watch that holds `version` of `pipeline` from being promoted, if one does.
    pub async fn held(&self, pipeline: &str, version: &str) -> Result<Option<WatchRecord>, StoreError> {
        let f = WatchFilter { pipeline: Some(pipeline), version: Some(version), state: Some(WatchState::Failed), ..Default::default() };
        Ok(self.watches(f).await?.into_iter().find(WatchRecord::holds))
    }

    /// Begins a watch (with its entry; the older active ones of its environment are superseded);
    /// `Some(id)` of the one the run's stage already has.
    pub async fn begin_watch(&self, watch: WatchRecord) -> Result<Option<String>, StoreError> {
        match self.write(Write::BeginWatch { watch: Box::new(watch) }).await? {
            Written::Duplicate(first) => Ok(Some(first.unwrap_or_default())),
            _ => Ok(None),
        }
    }

    /// Takes the look at a polled source due now (its next one at `next_at`); false when another
    /// process's look is not yet over (its next look is later than now).
    pub async fn claim_poll(&self, source: &str, next_at: i64) -> Result<bool, StoreError> {
        let w = Write::ClaimPoll { source: source.into(), holder: self.holder.to_string(), now: crate::clock::now_ms(), next_at };
        Ok(self.backend.write(w).await? == Written::Renewed(true))
    }

    /// Takes note `seq` of kind `kind` (`approval-reminder`, `approval-escalation`) of the
    /// approval `stage` of `run` waiting since `since`, writing `detail` to the trail: false when
    /// it, or a later one, was taken before (by this process before a restart, or a replica).
    pub async fn claim_note(&self, run: &str, stage: &str, since: i64, kind: EntryKind, seq: i64, detail: &str) -> Result<bool, StoreError> {
        let w = Write::ClaimNote { run: run.into(), stage: stage.into(), since, kind, seq, detail: detail.into(), at: crate::clock::now_ms() };
        Ok(self.write(w).await? == Written::Renewed(true))
    }

    /// Moves the next look at a source this process claimed, for every replica.
    pub async fn defer_poll(&self, source: &str, next_at: i64) -> Result<(), StoreError> {
        self.backend.write(Write::DeferPoll { source: source.into(), holder: self.holder.to_string(), next_at }).await.map(|_| ())
    }

    /// Ends the active watches of an environment as superseded by `by` (in words).
    pub async fn supersede_watches(&self, pipeline: &str, environment: &str, by: &str) -> Result<(), StoreError> {
        let w = Write::SupersedeWatches { pipeline: pipeline.into(), environment: environment.into(), by: by.into(), except: None, at: crate::clock::now_ms() };
        self.write(w).await.map(|_| ())
    }

    /// Takes the look of watch `id` due at `due` (moving its next look to `next_at`); false when
    /// another process took it.
    pub async fn claim_watch(&self, id: &str, due: i64, next_at: i64) -> Result<bool, StoreError> {
        Ok(self.write(Write::ClaimWatch { id: id.into(), due, next_at }).await? == Written::Renewed(true))
    }

    /// Records what a look found.
    pub async fn watch_looked(
        &self,
        id: &str,
        failed: bool,
        errored: bool,
        passed: bool,
        message: &str,
        evidence: serde_json::Value,
    ) -> Result<(), StoreError> {
        let w = Write::WatchLooked { id: id.into(), failed, errored, passed, message: message.into(), evidence };
        self.write(w).await.map(|_| ())
    }

    /// Ends a watch (or marks it reverting), with its entry; `reverted` marks its run reverted.
    pub async fn end_watch(&self, id: &str, state: WatchState, message: &str, reverted_to: Option<&str>, reverted: bool) -> Result<(), StoreError> {
        let w =
            Write::EndWatch { id: id.into(), state, message: message.into(), reverted_to: reverted_to.map(String::from), reverted, at: crate::clock::now_ms() };
        self.write(w).await.map(|_| ())
    }

    /// Clears the hold of a failed watch on its version, once: `Some(who)` when it was cleared
    /// already (by a concurrent or an earlier request) and nothing was written.
    pub async fn clear_watch(&self, id: &str, user: &str, reason: &str, via: Option<&str>) -> Result<Option<String>, StoreError> {
        let w = Write::ClearWatch { id: id.into(), user: user.into(), reason: reason.into(), at: crate::clock::now_ms(), via: via.map(String::from) };
        match self.write(w).await? {
            Written::Duplicate(by) => Ok(Some(by.unwrap_or_default())),
            _ => Ok(None),
        }
    }

    /// Opens a web session (with its `sign-in` entry).
    pub async fn open_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.write(Write::OpenSession { session: Box::new(session) }).await.map(|_| ())
    }

    /// A web session by the hash of its cookie (ended ones too: the caller decides).
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.backend.session(id_hash).await
    }

    /// Marks a session seen in use now.
    pub async fn seen_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.write(Write::SeenSession { id_hash: id_hash.into(), at: crate::clock::now_ms() }).await.map(|_| ())
    }

    /// Ends one session (by its hash) or every open session of a login, with one entry of `kind`
    /// by `by`; whether any was open.
    pub async fn end_sessions(&self, id_hash: Option<&str>, login: Option<&str>, kind: EntryKind, by: &str, detail: &str) -> Result<bool, StoreError> {
        let w = Write::EndSessions {
            id_hash: id_hash.map(String::from),
            login: login.map(String::from),
            kind,
            by: by.into(),
            detail: detail.into(),
            at: crate::clock::now_ms(),
        };
        Ok(matches!(self.write(w).await?, Written::Renewed(true)))
    }

    /// Every running run with a stage waiting, with its stages, oldest first; refused when a run
    /// or stage does not carry its seal (what people decide on is read from it).
    /// Every running run with a stage waiting, oldest first, with its stages' names, kinds and
    /// states (no message, no output: read [`Store::stages_of_runs`] for those); each checked
    /// against its seal when read.
    ///
    /// The read is kept: every write that changes a run, a stage or a decision appends an entry
    /// naming its run in the same transaction, and entries become visible in the order of their
    /// ids (one chain, appended under its head's lock). While the trail's last entry is the same
    /// the read is given again (one indexed `max(id)`); after a few entries only the runs they
    /// name are read again; after many, everything. The inbox of 1,000 waiting decisions on a
    /// busy server then reads the runs that moved, not 4,000 rows.
    pub async fn waiting_runs(&self) -> Result<Waiting, StoreError> {
        /// At most this many entries since the kept read are followed run by run; more, and
        /// everything is read again.
        const FOLLOW: i64 = 512;
        // The mark is taken before the read: a write in between makes the next call look again.
        let mark = self.backend.last_change().await?;
        let kept = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let read: Waiting = match kept {
            Some((at, kept)) if at == mark => return Ok(kept),
            // A few entries since: only the runs they name are read again.
            Some((at, kept)) if at < mark && mark - at <= FOLLOW => {
                let changes = self.backend.changes_after(at, FOLLOW).await?;
                let covered = changes.len() < FOLLOW as usize || changes.last().is_some_and(|c| c.id >= mark);
                if covered {
                    let mut ids: Vec<String> = changes.into_iter().map(|c| c.run).filter(|r| r != NO_RUN).collect();
                    ids.sort();
                    ids.dedup();
                    if ids.is_empty() {
                        kept
                    } else {
                        let fresh = self.checked(self.backend.waiting_runs(Some(&ids)).await?)?;
                        let mut all: Vec<_> = kept.iter().filter(|(r, _)| ids.binary_search(&r.id).is_err()).cloned().chain(fresh).collect();
                        all.sort_by(|(a, _), (b, _)| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                        Arc::new(all)
                    }
                } else {
                    Arc::new(self.checked(self.backend.waiting_runs(None).await?)?)
                }
            }
            _ => Arc::new(self.checked(self.backend.waiting_runs(None).await?)?),
        };
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some((mark, read.clone()));
        Ok(read)
    }

    /// Waiting runs as read, each checked against its seal, shared.
    fn checked(&self, all: Vec<(RunRecord, Vec<StageRecord>)>) -> Result<Vec<WaitingRun>, StoreError> {
        let key = self.key();
        for (r, stages) in &all {
            let want = seals::run(key, &r.id, &r.pipeline, &r.file, &r.source, &r.version, &r.triggered_by, r.authenticated, r.created_at);
            if !key.verify_hex(&want, r.seal.as_deref()) {
                return Err(self.forged(format!("run {} (its pipeline source, version or starter)", r.id)));
            }
            for s in stages {
                if !key.verify_hex(&seals::stage(key, &r.id, &s.name, s.state.as_str()), s.seal.as_deref()) {
                    return Err(self.forged(format!("stage `{}` of run {} (state {})", s.name, r.id, s.state)));
                }
            }
        }
        Ok(all.into_iter().map(|(r, s)| (Arc::new(r), Arc::new(s))).collect())
    }

    /// The stages of several runs (file order), by run; refused when one's state does not carry
    /// its seal. One read however many runs (the inbox's page of cards).
    pub async fn stages_of_runs(&self, runs: &[String]) -> Result<std::collections::HashMap<String, Vec<StageRecord>>, StoreError> {
        let mut out: std::collections::HashMap<String, Vec<StageRecord>> = std::collections::HashMap::new();
        if runs.is_empty() {
            return Ok(out);
        }
        let key = self.key();
        for (run, s) in self.backend.stages_of_runs(runs).await? {
            if !key.verify_hex(&seals::stage(key, &run, &s.name, s.state.as_str()), s.seal.as_deref()) {
                return Err(self.forged(format!("stage `{}` of run {run} (state {})", s.name, s.state)));
            }
            out.entry(run).or_default().push(s);
        }
        Ok(out)
    }

    /// The decisions on the stages of several runs, oldest first, by (run, stage); refused when
    /// one does not carry its seal. One read however many runs.
    pub async fn decisions_of_runs(&self, runs: &[String]) -> Result<std::collections::HashMap<(String, String), Vec<Decision>>, StoreError> {
        let mut out: std::collections::HashMap<(String, String), Vec<Decision>> = std::collections::HashMap::new();
        if runs.is_empty() {
            return Ok(out);
        }
        let key = self.key();
        for (run, stage, d) in self.backend.decisions_of_runs(runs).await? {
            if !key.verify_hex(&seals::decision(key, &run, &stage, &d.user, d.approve, d.comment.as_deref(), d.at), d.seal.as_deref()) {
                return Err(self.forged(format!("the decision of {} on stage `{stage}` of run {run}", d.user)));
            }
            out.entry((run, stage)).or_default().push(d);
        }
        Ok(out)
    }

    /// Every stage of `kind` in `state` (`None`: any) with its run, for figures across runs. Not
    /// checked against its seal: nothing is acted on from it.
    pub async fn stages_where(&self, kind: Option<&str>, state: Option<StageState>) -> Result<Vec<StageOf>, StoreError> {
        self.backend.stages_where(kind, state).await
    }

    /// The DORA figures kept with the writes, by (pipeline, environment).
    pub async fn dora(&self) -> Result<Vec<((String, String), dora::Dora)>, StoreError> {
        self.backend.dora().await
    }

    /// Every waiting stage: (pipeline, kind, waiting since).
    pub async fn waiting_stages(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.backend.waiting_stages().await
    }

    pub async fn env_locks(&self) -> Result<Vec<Lease>, StoreError> {
        self.backend.env_locks().await
    }

    /// Who drives `run`, if a process took its lease.
    pub async fn driver(&self, run: &str) -> Result<Option<Lease>, StoreError> {
        self.backend.driver(run).await
    }

    /// A run's events, oldest first.
    pub async fn events(&self, run: &str) -> Result<Vec<Event>, StoreError> {
        self.backend.events(run).await
    }

    /// The newest `n` entries of a run (oldest of them first) and how many it has in all.
    pub async fn last_events(&self, run: &str, n: i64) -> Result<(Vec<Event>, i64), StoreError> {
        self.backend.last_events(run, n).await
    }

    /// Appends an entry to the audit trail (a policy decision, a break-glass, a rollback, an
    /// undelivered notification).
    pub async fn audit(&self, run: Option<&str>, stage: Option<&str>, kind: EntryKind, actor: &str, detail: &str) -> Result<(), StoreError> {
        let w = Write::Audit {
            run: run.map(String::from),
            stage: stage.map(String::from),
            kind,
            actor: actor.to_string(),
            detail: detail.to_string(),
            at: crate::clock::now_ms(),
        };
        self.write(w).await.map(|_| ())
    }

    /// Checks the whole trail: every hash recomputed and every link compared; the first bad entry
    /// is looked at closely to say what happened to it.
    pub async fn verify_audit(&self) -> Result<Verdict, StoreError> {
        self.backend.verify_audit().await
    }

    /// The entry whose hash is `hash`, if any (a head kept elsewhere must still be in the trail).
    pub async fn audit_entry_with_hash(&self, hash: &str) -> Result<Option<i64>, StoreError> {
        self.backend.audit_entry_with_hash(hash).await
    }

    /// The number of the trail's last entry (0: empty).
    pub async fn last_entry(&self) -> Result<i64, StoreError> {
        self.backend.last_change().await
    }

    /// The trail, oldest first, optionally of one run; `after` and `limit` page through it.
    pub async fn audit_entries(&self, run: Option<&str>, after: i64, limit: i64) -> Result<Vec<Entry>, StoreError> {
        self.backend.audit_entries(run, after, limit).await
    }

    /// Runs SQL as it is, on a connection that has promote's functions (benchmarks and tools that
    /// fill or repair a state file; never for user input).
    pub async fn raw_sql(&self, sql: &str) -> Result<(), StoreError> {
        self.backend.raw_sql(sql).await
    }

    /// Closes the backend (SQLite: checkpointing the WAL).
    pub async fn close(&self) {
        let _ = self.backend.close().await;
    }
}

/// This machine's name, as lease holders carry it.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `len` bytes into the buffer it is given.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether a lease holder (`ULID@HOST:PID`) is a process of this machine that no longer exists.
fn is_dead_here(holder: &str) -> bool {
    let Some((host, pid)) = holder.split_once('@').and_then(|(_, rest)| rest.rsplit_once(':')) else { return false };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if host != hostname() || pid <= 0 || pid == std::process::id() as i32 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; it only says whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The default state file: `.promote/state.db` in the current folder.
pub fn default_path() -> PathBuf {
    PathBuf::from(".promote/state.db")
}
