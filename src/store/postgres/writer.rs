//! Group commit on PostgreSQL, as on SQLite: one task per replica takes every write queued
//! meanwhile into one transaction and answers each caller after the commit. The transaction
//! first locks the trail's head row (`FOR UPDATE`): replicas take turns at the chain, so each
//! entry follows the one before it whoever wrote it; the other tables' rows are claimed by
//! conditional statements inside the same transaction (a lease taken only when free or lapsed).

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::seal::Key;
use crate::store::chain::entry_hash;
use crate::store::{Claim, LockState, QueueStep, Queued, StageState, Write, Written, seals, texts};

/// The most writes one transaction carries.
const MAX_BATCH: usize = 512;
/// The queue in front of the writer (callers wait when it is full).
pub(super) const QUEUE: usize = 8192;

/// A write and who waits for it.
pub(super) struct Job {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<Written, sqlx::Error>>,
}

/// How the writer gets a connection (again, after the database went away).
pub(super) type Connect = Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<PgConnection, sqlx::Error>> + Send + Sync>;

/// The writer's loop. A connection lost (the database restarted) fails the batch in hand, whose
/// callers retry as after any transient error, and is made again for the next one.
pub(super) async fn run(connect: Connect, mut rx: mpsc::Receiver<Job>, key: Key) {
    let mut conn: Option<PgConnection> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if conn.is_none() {
            match connect().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    let msg = e.to_string();
                    for job in batch.drain(..) {
                        let _ = job.reply.send(Err(sqlx::Error::Protocol(format!("cannot reach the database: {msg}"))));
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match apply_all(c, &batch, &key).await {
            Ok(results) => {
                for (job, r) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(e) if lost(&e) => {
                conn = None;
                let msg = e.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(sqlx::Error::Protocol(format!("the database connection was lost: {msg}"))));
                }
            }
            Err(_) if batch.len() > 1 => {
                for job in batch.drain(..) {
                    let r = apply_all(c, std::slice::from_ref(&job), &key).await.map(|mut v| v.remove(0));
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

/// Whether an error means the connection is gone (not that a statement was refused).
fn lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// One transaction for every job, committed before anything is returned. Consecutive
/// transitions go together (their fences in one query, their stages in one statement), and the
/// transaction's trail entries are inserted by one statement before the commit: the chain's head
/// row moves once per transaction, however many entries it carries.
async fn apply_all(conn: &mut PgConnection, jobs: &[Job], key: &Key) -> Result<Vec<Written>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let row = sqlx::query("SELECT id, hash FROM audit_head WHERE one = 1 FOR UPDATE").fetch_one(&mut *tx).await?;
    let mut head = Head { id: row.get(0), hash: row.get(1), key: key.clone(), pending: Entries::default() };
    let mut out = Vec::with_capacity(jobs.len());
    let mut at = 0;
    while at < jobs.len() {
        let n = jobs[at..].iter().take_while(|j| matches!(j.write, Write::Transitions { .. })).count();
        if n > 0 {
            out.extend(transitions(&mut tx, &jobs[at..at + n], &mut head).await?);
            at += n;
        } else {
            out.push(apply_common(&mut tx, &jobs[at].write, &mut head).await?);
            at += 1;
        }
    }
    head.flush(&mut tx).await?;
    tx.commit().await?;
    Ok(out)
}

/// The stages' UPDATE, one row of arrays per stage: a `*_mode` says keep (0), set (1) or clear
/// (2) where a transition can clear a column.
const UPDATE_STAGES: &str = "UPDATE stages s SET state = coalesce(u.state, s.state), attempt = coalesce(u.attempt, s.attempt),
       started_at = coalesce(u.started_at, s.started_at),
       finished_at = CASE u.finished_mode WHEN 1 THEN u.finished_at WHEN 2 THEN NULL ELSE s.finished_at END,
       message = CASE u.message_mode WHEN 1 THEN u.message WHEN 2 THEN NULL ELSE s.message END,
       output = coalesce(u.output, s.output), seal = coalesce(u.seal, s.seal)
     FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::SMALLINT[], $7::BIGINT[], $8::SMALLINT[], $9::TEXT[], $10::TEXT[], $11::TEXT[])
       AS u(run_id, name, state, attempt, started_at, finished_mode, finished_at, message_mode, message, output, seal)
     WHERE s.run_id = u.run_id AND s.name = u.name";

/// A column a transition may keep, set or clear.
enum Change<T> {
    Keep,
    Set(T),
    Clear,
}

impl<T> Change<T> {
    fn mode(&self) -> i16 {
        match self {
            Change::Keep => 0,
            Change::Set(_) => 1,
            Change::Clear => 2,
        }
    }

    fn value(self) -> Option<T> {
        match self {
            Change::Set(v) => Some(v),
            _ => None,
        }
    }
}

/// Every transition of one stage in the batch, folded in order into one row of the UPDATE.
struct Folded {
    run: String,
    stage: String,
    state: Option<&'static str>,
    attempt: Option<i64>,
    started_at: Option<i64>,
    finished_at: Change<i64>,
    message: Change<String>,
    output: Option<String>,
    seal: Option<String>,
}

impl Folded {
    fn new(run: &str, stage: &str) -> Folded {
        Folded {
            run: run.to_string(),
            stage: stage.to_string(),
            state: None,
            attempt: None,
            started_at: None,
            finished_at: Change::Keep,
            message: Change::Keep,
            output: None,
            seal: None,
        }
    }

    /// What `t` does on top of what came before it (the single statement's meaning, in order).
    fn then(&mut self, t: &crate::store::Transition, seal: Option<String>) {
        self.state = t.state.map(StageState::as_str).or(self.state);
        self.attempt = t.attempt.or(self.attempt);
        self.started_at = t.started_at.or(self.started_at);
        match (t.finished_at, t.state) {
            (Some(f), _) => self.finished_at = Change::Set(f),
            (None, Some(StageState::Running)) => self.finished_at = Change::Clear,
            (None, _) => {}
        }
        match t.message.as_deref() {
            None => {}
            Some("") => self.message = Change::Clear,
            Some(m) => self.message = Change::Set(m.to_string()),
        }
        if let Some(o) = &t.output {
            self.output = Some(o.to_string());
        }
        if seal.is_some() {
            self.seal = seal;
        }
    }
}

/// Consecutive transition writes: each fenced one checked (one query for all), every stage's
/// transitions folded into one row of one UPDATE, an entry each.
async fn transitions(conn: &mut PgConnection, jobs: &[Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let fenced: Vec<&str> = jobs
        .iter()
        .filter_map(|j| match &j.write {
            Write::Transitions { run, fence: Some(_), .. } => Some(run.as_str()),
            _ => None,
        })
        .collect();
    // Whether each holder still drives its run and the run is running; the drivers' rows are
    // locked until the commit, so a takeover waits for the writes it fences.
    let driving: std::collections::HashSet<(String, String)> = if fenced.is_empty() {
        Default::default()
    } else {
        sqlx::query_as(
            "SELECT d.run_id, d.holder FROM drivers d JOIN runs r ON r.id = d.run_id WHERE d.run_id = ANY($1) AND r.state = 'running' FOR SHARE OF d",
        )
        .bind(&fenced)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    let now = crate::clock::now_ms();
    let mut out = Vec::with_capacity(jobs.len());
    let mut folded: Vec<Folded> = Vec::new();
    let mut index: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
    let mut dora: Vec<(&str, &str)> = Vec::new();
    for job in jobs {
        let Write::Transitions { run, items, fence } = &job.write else { unreachable!("only transitions are grouped") };
        if let Some(holder) = fence
            && !driving.contains(&(run.clone(), holder.clone()))
        {
            out.push(Written::Fenced);
            continue;
        }
        for item in items {
            let t = &item.transition;
            head.push(run, Some(&item.stage), now, crate::store::EntryKind::Stage.as_str(), "promote", &item.event);
            let seal = t.state.map(|s| seals::stage(&head.key, run, &item.stage, s.as_str()));
            let i = *index.entry((run.as_str(), item.stage.as_str())).or_insert_with(|| {
                folded.push(Folded::new(run, &item.stage));
                folded.len() - 1
            });
            folded[i].then(t, seal);
            // The DORA figures of a deployment it made or changed (counted once, at its last state).
            if crate::store::dora::may_change(t) && !dora.contains(&(run.as_str(), item.stage.as_str())) {
                dora.push((run.as_str(), item.stage.as_str()));
            }
        }
        out.push(Written::Done);
    }
    if !folded.is_empty() {
        let mut cols = StageColumns::default();
        for f in folded {
            cols.run.push(f.run);
            cols.name.push(f.stage);
            cols.state.push(f.state);
            cols.attempt.push(f.attempt);
            cols.started_at.push(f.started_at);
            cols.finished_mode.push(f.finished_at.mode());
            cols.finished_at.push(f.finished_at.value());
            cols.message_mode.push(f.message.mode());
            cols.message.push(f.message.value());
            cols.output.push(f.output);
            cols.seal.push(f.seal);
        }
        sqlx::query(UPDATE_STAGES)
            .bind(cols.run)
            .bind(cols.name)
            .bind(cols.state)
            .bind(cols.attempt)
            .bind(cols.started_at)
            .bind(cols.finished_mode)
            .bind(cols.finished_at)
            .bind(cols.message_mode)
            .bind(cols.message)
            .bind(cols.output)
            .bind(cols.seal)
            .execute(&mut *conn)
            .await?;
    }
    for (run, stage) in dora {
        dora_stage(conn, run, stage).await?;
    }
    Ok(out)
}

/// The UPDATE's arrays, a row per stage.
#[derive(Default)]
struct StageColumns {
    run: Vec<String>,
    name: Vec<String>,
    state: Vec<Option<&'static str>>,
    attempt: Vec<Option<i64>>,
    started_at: Vec<Option<i64>>,
    finished_mode: Vec<i16>,
    finished_at: Vec<Option<i64>>,
    message_mode: Vec<i16>,
    message: Vec<Option<String>>,
    output: Vec<Option<String>>,
    seal: Vec<Option<String>>,
}

crate::store::sql::common_writes!(PgConnection, " FOR UPDATE");
crate::store::dora::dora_writes!(PgConnection);

/// Whether `holder` still drives `run` and the run is running: what a fenced write needs. The
/// driver's row is locked until the commit, so a takeover waits for the write it fences.
async fn drives(conn: &mut PgConnection, run: &str, holder: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM drivers d JOIN runs r ON r.id = d.run_id WHERE d.run_id = $1 AND d.holder = $2 AND r.state = 'running' FOR SHARE OF d",
    )
    .bind(run)
    .bind(holder)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}

/// The end of the chain inside the open transaction, read under the head row's lock and moved by
/// every entry; the entries wait in `pending` until the transaction's end, when one statement
/// inserts them all (the database's trigger checks each link and moves the head row once).
pub(super) struct Head {
    pub(super) id: i64,
    pub(super) hash: String,
    pub(super) key: Key,
    pending: Entries,
}

/// Entries appended in this transaction and not yet inserted, as the INSERT's arrays.
#[derive(Default)]
struct Entries {
    id: Vec<i64>,
    run: Vec<String>,
    stage: Vec<Option<String>>,
    at: Vec<i64>,
    kind: Vec<String>,
    actor: Vec<String>,
    detail: Vec<String>,
    prev: Vec<String>,
    hash: Vec<String>,
}

impl Head {
    /// Links and hashes the next entry, to be inserted with the transaction's others.
    fn push(&mut self, run: &str, stage: Option<&str>, at: i64, kind: &str, actor: &str, detail: &str) {
        let id = self.id + 1;
        let hash = entry_hash(&self.key, &self.hash, id, run, stage, at, kind, actor, detail);
        let prev = std::mem::replace(&mut self.hash, hash.clone());
        self.id = id;
        let p = &mut self.pending;
        p.id.push(id);
        p.run.push(run.to_string());
        p.stage.push(stage.map(str::to_string));
        p.at.push(at);
        p.kind.push(kind.to_string());
        p.actor.push(actor.to_string());
        p.detail.push(detail.to_string());
        p.prev.push(prev);
        p.hash.push(hash);
    }

    /// As [`Head::push`]; the connection is the SQLite backend's need, not this one's.
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &mut self,
        _conn: &mut PgConnection,
        run: &str,
        stage: Option<&str>,
        at: i64,
        kind: crate::store::EntryKind,
        actor: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        self.push(run, stage, at, kind.as_str(), actor, detail);
        Ok(())
    }

    /// Inserts the pending entries, in their order, by one statement.
    async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.pending.id.is_empty() {
            return Ok(());
        }
        let p = std::mem::take(&mut self.pending);
        sqlx::query(
            "INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[]) ORDER BY 1",
        )
        .bind(p.id)
        .bind(p.run)
        .bind(p.stage)
        .bind(p.at)
        .bind(p.kind)
        .bind(p.actor)
        .bind(p.detail)
        .bind(p.prev)
        .bind(p.hash)
        .execute(conn)
        .await
        .map(|_| ())
    }
}
