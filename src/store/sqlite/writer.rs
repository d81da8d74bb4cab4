//! Group commit: one task owns SQLite's one writer connection; every write asked for meanwhile, by
//! any run, goes into the same transaction, and each caller hears back only after the commit.
//! Each entry of the trail is chained here, in Rust ([`entry_hash`]), as it is appended.
//!
//! SQLite takes one writer at a time. With a connection per caller, a thousand runs queue on the
//! file lock (and sleep in the busy handler); here they queue in memory, and a commit carries all
//! of them. A write that fails (a constraint) does not sink the others: the batch is rolled back
//! and each of its writes is done again in a transaction of its own.

use sqlx::Row;
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::seal::Key;
use crate::store::chain::entry_hash;
use crate::store::{Claim, LockState, QueueStep, Queued, StageState, StageWrite, Write, Written, seals, texts};

/// The most writes one transaction carries.
const MAX_BATCH: usize = 1024;
/// The queue in front of the writer (callers wait when it is full).
pub(super) const QUEUE: usize = 8192;

/// A write and who waits for it.
pub(super) struct Job {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<Written, sqlx::Error>>,
}

/// The writer's loop: takes what is queued, commits it together, answers each. Ends when every
/// sender is gone (the store closed or dropped), closing its connection.
pub(super) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>, key: Key) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match apply_all(&mut conn, &batch, &key).await {
            Ok(results) => {
                for (job, r) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(_) if batch.len() > 1 => {
                for job in batch.drain(..) {
                    let r = apply_all(&mut conn, std::slice::from_ref(&job), &key).await.map(|mut v| v.remove(0));
                    let _ = job.reply.send(r);
                }
            }
            // A batch of one: its caller gets the database's own error (with its code).
            Err(e) => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
    use sqlx::Connection;
    let _ = conn.close().await;
}

/// One transaction for every job, committed before anything is returned.
async fn apply_all(conn: &mut SqliteConnection, jobs: &[Job], key: &Key) -> Result<Vec<Written>, sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let done = match Head::read(conn, key).await {
        Ok(mut head) => match apply_in_transaction(conn, jobs, &mut head).await {
            Ok(out) => head.write(conn).await.map(|_| out),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let done = match done {
        Ok(out) => sqlx::query("COMMIT").execute(&mut *conn).await.map(|_| out),
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    done
}

/// Every job's statements: the batch's stage transitions first, all together (most of what the
/// engine writes: their fences read by one query, their statements sent [`CHUNKS`]`[0]` at a
/// time, one round trip to sqlx's worker thread each), then the other writes in their order.
/// The batch's writes were all asked for at once, none after another's answer, so any order of
/// them is one they could have had.
async fn apply_in_transaction(conn: &mut SqliteConnection, jobs: &[Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let mut out: Vec<Option<Written>> = vec![None; jobs.len()];
    let moves: Vec<(usize, &str, &Option<String>, &Vec<StageWrite>)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, j)| match &j.write {
            Write::Transitions { run, items, fence } => Some((i, run.as_str(), fence, items)),
            _ => None,
        })
        .collect();
    if !moves.is_empty() {
        let fenced: Vec<&str> = moves.iter().filter(|m| m.2.is_some()).map(|m| m.1).collect();
        let driving = if fenced.is_empty() { Default::default() } else { drivers_of(conn, &fenced).await? };
        let mut items: Vec<(&str, &StageWrite)> = Vec::new();
        for (i, run, fence, mine) in moves {
            if let Some(holder) = fence
                && !driving.contains(&(run.to_string(), holder.clone()))
            {
                out[i] = Some(Written::Fenced);
                continue;
            }
            items.extend(mine.iter().map(|m| (run, m)));
            out[i] = Some(Written::Done);
        }
        if !items.is_empty() {
            update_stages(conn, &items, head).await?;
        }
    }
    for (i, job) in jobs.iter().enumerate() {
        if out[i].is_none() {
            out[i] = Some(apply(conn, &job.write, head).await?);
        }
    }
    Ok(out.into_iter().map(|w| w.expect("every job answered")).collect())
}

/// (run, holder) for each of `runs` that is running, by one query.
async fn drivers_of(conn: &mut SqliteConnection, runs: &[&str]) -> Result<std::collections::HashSet<(String, String)>, sqlx::Error> {
    let runs = serde_json::to_string(runs).expect("strings serialize");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.run_id, d.holder FROM drivers d JOIN runs r ON r.id = d.run_id WHERE d.run_id IN (SELECT value FROM json_each(?)) AND r.state = 'running'",
    )
    .bind(runs)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Whether `holder` still drives `run` and the run is running: what a fenced write needs.
async fn drives(conn: &mut SqliteConnection, run: &str, holder: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM drivers d JOIN runs r ON r.id = d.run_id WHERE d.run_id = ? AND d.holder = ? AND r.state = 'running'")
            .bind(run)
            .bind(holder)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

/// How many transitions one statement list carries: the longest that fits first. Few sizes, so
/// that sqlx's statement cache holds every list.
const CHUNKS: [usize; 3] = [64, 8, 1];

/// The stage UPDATE and its entry.
const UPDATE_STAGE: &str = "UPDATE stages SET state = coalesce(?, state), attempt = coalesce(?, attempt), started_at = coalesce(?, started_at),
     finished_at = CASE WHEN ? IS NOT NULL THEN ? WHEN ? = 'running' THEN NULL ELSE finished_at END,
     message = CASE WHEN ? IS NULL THEN message WHEN ? = '' THEN NULL ELSE ? END, output = coalesce(?, output),
     seal = coalesce(?, seal)
     WHERE run_id = ? AND name = ?;
     INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash) VALUES (?, ?, ?, ?, 'stage', 'promote', ?, ?, ?);";

/// Transitions in order, each an UPDATE and its entry, sent in chunks.
async fn update_stages(conn: &mut SqliteConnection, items: &[(&str, &StageWrite)], head: &mut Head) -> Result<(), sqlx::Error> {
    let now = crate::clock::now_ms();
    let mut at = 0;
    while at < items.len() {
        let n = CHUNKS.into_iter().find(|&c| c <= items.len() - at).unwrap_or(1);
        let sql = UPDATE_STAGE.repeat(n);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (run, item) in &items[at..at + n] {
            let t = &item.transition;
            let (id, prev, hash) = head.append(run, Some(&item.stage), now, crate::store::EntryKind::Stage.as_str(), "promote", &item.event);
            let seal = t.state.map(|s| seals::stage(&head.key, run, &item.stage, s.as_str()));
            q = q
                .bind(t.state.map(StageState::as_str))
                .bind(t.attempt)
                .bind(t.started_at)
                .bind(t.finished_at)
                .bind(t.finished_at)
                .bind(t.state.map(StageState::as_str))
                .bind(t.message.as_deref())
                .bind(t.message.as_deref())
                .bind(t.message.as_deref())
                .bind(t.output.as_ref().map(|o| o.to_string()))
                .bind(seal)
                .bind(*run)
                .bind(item.stage.as_str())
                .bind(id)
                .bind(*run)
                .bind(item.stage.as_str())
                .bind(now)
                .bind(item.event.as_str())
                .bind(prev)
                .bind(hash);
        }
        q.execute(&mut *conn).await?;
        at += n;
    }
    // The DORA figures of the deployments these transitions made or changed.
    for (run, item) in items.iter().filter(|(_, i)| crate::store::dora::may_change(&i.transition)) {
        dora_stage(conn, run, &item.stage).await?;
    }
    Ok(())
}

/// One write's statements, inside the open transaction.
async fn apply(conn: &mut SqliteConnection, write: &Write, head: &mut Head) -> Result<Written, sqlx::Error> {
    match write {
        Write::Transitions { .. } => unreachable!("transitions are written together by update_stages"),
        other => apply_common(conn, other, head).await,
    }
}

crate::store::sql::common_writes!(SqliteConnection, "");
crate::store::dora::dora_writes!(SqliteConnection);

/// The end of the chain inside the open transaction: read at its start (under the write lock, so
/// no other process appends meanwhile), moved by every entry, written back before the commit.
struct Head {
    id: i64,
    hash: String,
    moved: bool,
    key: Key,
}

impl Head {
    async fn read(conn: &mut SqliteConnection, key: &Key) -> Result<Head, sqlx::Error> {
        let row = sqlx::query("SELECT coalesce((SELECT id FROM audit_head), (SELECT max(id) FROM events), 0), coalesce((SELECT hash FROM audit_head), '')")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Head { id: row.get(0), hash: row.get(1), moved: false, key: key.clone() })
    }

    /// The next entry's (id, previous hash, hash).
    fn append(&mut self, run: &str, stage: Option<&str>, at: i64, kind: &str, actor: &str, detail: &str) -> (i64, String, String) {
        let id = self.id + 1;
        let hash = entry_hash(&self.key, &self.hash, id, run, stage, at, kind, actor, detail);
        let prev = std::mem::replace(&mut self.hash, hash.clone());
        self.id = id;
        self.moved = true;
        (id, prev, hash)
    }

    /// Appends an entry and writes it.
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &mut self,
        conn: &mut SqliteConnection,
        run: &str,
        stage: Option<&str>,
        at: i64,
        kind: crate::store::EntryKind,
        actor: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        let (id, prev, hash) = self.append(run, stage, at, kind.as_str(), actor, detail);
        sqlx::query("INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(id)
            .bind(run)
            .bind(stage)
            .bind(at)
            .bind(kind.as_str())
            .bind(actor)
            .bind(detail)
            .bind(prev)
            .bind(hash)
            .execute(conn)
            .await
            .map(|_| ())
    }

    async fn write(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.moved {
            sqlx::query("INSERT OR REPLACE INTO audit_head (one, id, hash) VALUES (1, ?, ?)").bind(self.id).bind(&self.hash).execute(conn).await?;
        }
        Ok(())
    }
}
