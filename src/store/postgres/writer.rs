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
use crate::store::{Claim, LockState, QueueStep, Queued, StageState, StageWrite, Write, Written, seals, texts};

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

/// One transaction for every job, committed before anything is returned.
async fn apply_all(conn: &mut PgConnection, jobs: &[Job], key: &Key) -> Result<Vec<Written>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let row = sqlx::query("SELECT id, hash FROM audit_head WHERE one = 1 FOR UPDATE").fetch_one(&mut *tx).await?;
    let mut head = Head { id: row.get(0), hash: row.get(1), key: key.clone() };
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(apply(&mut tx, &job.write, &mut head).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// A stage's UPDATE and its entry, one statement.
const UPDATE_STAGE: &str = "WITH s AS (
       UPDATE stages SET state = coalesce($1, state), attempt = coalesce($2, attempt), started_at = coalesce($3, started_at),
         finished_at = CASE WHEN $4::BIGINT IS NOT NULL THEN $4 WHEN $1 = 'running' THEN NULL ELSE finished_at END,
         message = CASE WHEN $5::TEXT IS NULL THEN message WHEN $5 = '' THEN NULL ELSE $5 END, output = coalesce($6, output),
         seal = coalesce($7, seal)
       WHERE run_id = $8 AND name = $9 RETURNING 1)
     INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash) VALUES ($10, $8, $9, $11, 'stage', 'promote', $12, $13, $14)";

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

async fn transition(conn: &mut PgConnection, run: &str, item: &StageWrite, head: &mut Head) -> Result<(), sqlx::Error> {
    let now = crate::clock::now_ms();
    let t = &item.transition;
    let (id, prev, hash) = head.append(run, Some(&item.stage), now, "stage", "promote", &item.event);
    let seal = t.state.map(|s| seals::stage(&head.key, run, &item.stage, s.as_str()));
    sqlx::query(UPDATE_STAGE)
        .bind(t.state.map(StageState::as_str))
        .bind(t.attempt)
        .bind(t.started_at)
        .bind(t.finished_at)
        .bind(t.message.as_deref())
        .bind(t.output.as_ref().map(|o| o.to_string()))
        .bind(seal)
        .bind(run)
        .bind(item.stage.as_str())
        .bind(id)
        .bind(now)
        .bind(item.event.as_str())
        .bind(prev)
        .bind(hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One write's statements, inside the open transaction.
async fn apply(conn: &mut PgConnection, write: &Write, head: &mut Head) -> Result<Written, sqlx::Error> {
    match write {
        Write::Transitions { run, items, fence } => {
            if let Some(holder) = fence
                && !drives(conn, run, holder).await?
            {
                return Ok(Written::Fenced);
            }
            for item in items {
                transition(conn, run, item, head).await?;
                // The DORA figures of a deployment it made or changed.
                if crate::store::dora::may_change(&item.transition) {
                    dora_stage(conn, run, &item.stage).await?;
                }
            }
            Ok(Written::Done)
        }
        other => apply_common(conn, other, head).await,
    }
}

crate::store::sql::common_writes!(PgConnection, " FOR UPDATE");
crate::store::dora::dora_writes!(PgConnection);

/// The end of the chain inside the open transaction, read under the head row's lock and moved by
/// every entry (the database's trigger moves the row with it and checks each link).
pub(super) struct Head {
    pub(super) id: i64,
    pub(super) hash: String,
    pub(super) key: Key,
}

impl Head {
    /// The next entry's (id, previous hash, hash).
    pub(super) fn append(&mut self, run: &str, stage: Option<&str>, at: i64, kind: &str, actor: &str, detail: &str) -> (i64, String, String) {
        let id = self.id + 1;
        let hash = entry_hash(&self.key, &self.hash, id, run, stage, at, kind, actor, detail);
        let prev = std::mem::replace(&mut self.hash, hash.clone());
        self.id = id;
        (id, prev, hash)
    }
}
