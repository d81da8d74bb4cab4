//! Group commit: one task owns SQLite's one writer connection; every write asked for meanwhile, by
//! any run, goes into the same transaction, and each caller hears back only after the commit.
//! The writes most runs make are judged together ([`batch`]) and sent as JSON arrays, made JSONB
//! once (`jsonb_each(jsonb(?))`: each row's `->>` then reads the binary form instead of parsing
//! the row's text again for every field) in one statement list for all of them: each statement is a trip to sqlx's SQLite
//! thread, and those trips, not the rows, were most of the writer's time. The trail's entries are
//! chained at the transaction's end ([`batch::Entries::chain`]) and inserted by one statement.
//!
//! SQLite takes one writer at a time. With a connection per caller, a thousand runs queue on the
//! file lock (and sleep in the busy handler); here they queue in memory, and a commit carries all
//! of them. A write that fails (a constraint) does not sink the others: the batch is rolled back
//! and each of its writes is done again in a transaction of its own.

use sqlx::Row;
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::seal::Key;
use std::collections::{HashMap, HashSet};

use crate::store::batch::{self, Group};
use crate::store::{LockState, QueueStep, Queued, StageState, Write, Written, seals, texts};

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

/// One transaction for every job, committed before anything is returned. Four trips to sqlx's
/// SQLite thread whatever the batch holds, when it holds only the frequent writes: the
/// transaction begun and the head read; the leases read; the grouped writes sent; the entries
/// inserted, the head moved and the commit.
async fn apply_all(conn: &mut SqliteConnection, jobs: &[Job], key: &Key) -> Result<Vec<Written>, sqlx::Error> {
    let done = match begin(conn, key).await {
        Ok(mut head) => match apply_in_transaction(conn, jobs, &mut head).await {
            Ok(out) => head.commit(conn).await.map(|_| out),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    done
}

/// Begins the transaction (taking the database's write lock, so no other process appends
/// meanwhile) and reads the end of the chain.
async fn begin(conn: &mut SqliteConnection, key: &Key) -> Result<Head, sqlx::Error> {
    let row = sqlx::query(
        "BEGIN IMMEDIATE;
         SELECT coalesce((SELECT id FROM audit_head), (SELECT max(id) FROM events), 0), coalesce((SELECT hash FROM audit_head), '')",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Head { id: row.get(0), hash: row.get(1), key: key.clone(), entries: batch::Entries::default() })
}

/// The grouped writes, one statement list, a JSON array each (stages moved, new runs, their
/// stages, leases taken, then runs ended for each of the last four statements): as the rows of
/// [`batch`] serialize. (Plain `?`s, bound in order: sqlx binds a statement list's numbered
/// parameters by position within each statement, and stops at the first beyond the arguments.)
/// Each array is made JSONB once: with `json_each`, each row's `value` was text that every `->>`
/// parsed again (the exec bench: 16,000–17,400 transitions a second with text, 19,000–20,100
/// with JSONB).
const GROUPED: &str = "UPDATE stages AS s SET state = coalesce(u.state, s.state), attempt = coalesce(u.attempt, s.attempt),
       started_at = coalesce(u.started_at, s.started_at),
       finished_at = CASE u.finished_mode WHEN 1 THEN u.finished_at WHEN 2 THEN NULL ELSE s.finished_at END,
       message = CASE u.message_mode WHEN 1 THEN u.message WHEN 2 THEN NULL ELSE s.message END,
       output = coalesce(u.output, s.output), seal = coalesce(u.seal, s.seal)
     FROM (SELECT value->>'run' AS run_id, value->>'name' AS name, value->>'state' AS state, value->>'attempt' AS attempt,
             value->>'started_at' AS started_at, value->>'finished_mode' AS finished_mode, value->>'finished_at' AS finished_at,
             value->>'message_mode' AS message_mode, value->>'message' AS message, value->>'output' AS output, value->>'seal' AS seal
           FROM jsonb_each(jsonb(?))) AS u
     WHERE s.run_id = u.run_id AND s.name = u.name;
     INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at, authenticated, seal)
       SELECT value->>'id', value->>'pipeline', value->>'file', value->>'source', value->>'version', value->>'state', value->>'triggered_by',
              value->>'created_at', value->>'authenticated', value->>'seal' FROM jsonb_each(jsonb(?));
     INSERT INTO stages (run_id, name, kind, position, state, seal)
       SELECT value->>'run', value->>'name', value->>'kind', value->>'position', 'pending', value->>'seal' FROM jsonb_each(jsonb(?));
     INSERT INTO drivers (run_id, holder, expires_at) SELECT value->>'run', value->>'holder', value->>'expires_at' FROM jsonb_each(jsonb(?)) WHERE TRUE
       ON CONFLICT (run_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at;
     UPDATE runs AS r SET state = u.state, finished_at = u.at, message = u.message
       FROM (SELECT value->>'run' AS id, value->>'state' AS state, value->>'at' AS at, value->>'message' AS message FROM jsonb_each(jsonb(?))) AS u
       WHERE r.id = u.id;
     DELETE FROM env_locks WHERE run_id IN (SELECT value->>'run' FROM jsonb_each(jsonb(?)));
     DELETE FROM env_queue WHERE run_id IN (SELECT value->>'run' FROM jsonb_each(jsonb(?)));
     DELETE FROM drivers WHERE run_id IN (SELECT value->>'run' FROM jsonb_each(jsonb(?)));";

/// Every job's statements: the writes most runs make ([`batch::Group`]) judged together against
/// one read of the leases they need, in the order claims, transitions, new runs, ends (each
/// judged on what the ones before left), and sent by one statement list; then DORA's figures of
/// the deployments moved, then the other writes in their order. The batch's writes were all asked
/// for at once, none after another's answer, so any order of them is one they could have had.
async fn apply_in_transaction(conn: &mut SqliteConnection, jobs: &[Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let mut out: Vec<Option<Written>> = vec![None; jobs.len()];
    let mut groups: [(Vec<&Write>, Vec<usize>); 4] = Default::default();
    let mut others = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let k = match Group::of(&job.write) {
            Some(Group::Claims) => 0,
            Some(Group::Transitions) => 1,
            Some(Group::NewRuns) => 2,
            Some(Group::Ends) => 3,
            None => {
                others.push(i);
                continue;
            }
        };
        groups[k].0.push(&job.write);
        groups[k].1.push(i);
    }
    let [(claims, claims_at), (moves, moves_at), (creates, creates_at), (ends, ends_at)] = &groups;
    if !(claims.is_empty() && moves.is_empty() && creates.is_empty() && ends.is_empty()) {
        // The leases of every run claimed or fenced, by one query.
        let fenced: Vec<(&str, &str)> = batch::fenced(moves).into_iter().chain(batch::fenced(ends)).collect();
        let mut runs: Vec<&str> = batch::claimed(claims).into_iter().chain(fenced.iter().map(|f| f.0)).collect();
        runs.sort_unstable();
        runs.dedup();
        let (mut held, running) = leases(conn, &runs).await?;
        let mut claimed = batch::claims(claims, &mut held, &mut head.entries);
        let driving: HashSet<(String, String)> = held.into_iter().filter(|(run, _)| running.contains(run)).map(|(run, (holder, _))| (run, holder)).collect();
        let moved = batch::transitions(moves, &driving, &head.key, crate::clock::now_ms(), &mut head.entries);
        let created = batch::new_runs(creates, &head.key, &mut head.entries);
        // The new runs' leases go in with the claims' (after the runs, in the statement list).
        claimed.taken.extend(created.leases);
        let (ended_out, ended) = batch::ends(ends, &driving, &mut head.entries);
        let json = |v: serde_json::Result<String>| v.expect("rows serialize");
        let ended = json(serde_json::to_string(&ended));
        sqlx::query(GROUPED)
            .bind(json(serde_json::to_string(&moved.rows)))
            .bind(json(serde_json::to_string(&created.runs)))
            .bind(json(serde_json::to_string(&created.stages)))
            .bind(json(serde_json::to_string(&claimed.taken)))
            .bind(&ended)
            .bind(&ended)
            .bind(&ended)
            .bind(&ended)
            .execute(&mut *conn)
            .await?;
        let answers = [(claimed.out, claims_at), (moved.out, moves_at), (ended_out, ends_at)];
        for (written, at) in answers {
            for (w, &i) in written.into_iter().zip(at.iter()) {
                out[i] = Some(w);
            }
        }
        for &i in creates_at {
            out[i] = Some(Written::Done);
        }
        // The DORA figures of the deployments these transitions made or changed.
        for (run, stage) in &moved.dora {
            dora_stage(conn, run, stage).await?;
        }
    }
    for i in others {
        out[i] = Some(apply_common(conn, &jobs[i].write, head).await?);
    }
    Ok(out.into_iter().map(|w| w.expect("every job answered")).collect())
}

/// The lease of each of `runs` that has one (run -> holder, end), and which of them are running.
#[allow(clippy::type_complexity)]
async fn leases(conn: &mut SqliteConnection, runs: &[&str]) -> Result<(HashMap<String, (String, i64)>, HashSet<String>), sqlx::Error> {
    if runs.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
        "SELECT d.run_id, d.holder, d.expires_at, r.state = 'running' FROM drivers d JOIN runs r ON r.id = d.run_id
         WHERE d.run_id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(runs).expect("strings serialize"))
    .fetch_all(&mut *conn)
    .await?;
    let running = rows.iter().filter(|r| r.3).map(|r| r.0.clone()).collect();
    Ok((rows.into_iter().map(|(run, holder, end, _)| (run, (holder, end))).collect(), running))
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

crate::store::sql::common_writes!(SqliteConnection, "");
crate::store::dora::dora_writes!(SqliteConnection);

/// The end of the chain inside the open transaction: read at its start (under the write lock, so
/// no other process appends meanwhile); the transaction's entries wait here and are chained and
/// inserted at its end, by one statement.
struct Head {
    id: i64,
    hash: String,
    key: Key,
    entries: batch::Entries,
}

impl Head {
    /// Appends an entry, to be inserted with the transaction's others.
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &mut self,
        _conn: &mut SqliteConnection,
        run: &str,
        stage: Option<&str>,
        at: i64,
        kind: crate::store::EntryKind,
        actor: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        self.entries.push(run, stage, at, kind, actor, detail);
        Ok(())
    }

    /// Chains the entries, inserts them in their order and moves the head, then commits: one
    /// statement list.
    async fn commit(&mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.entries.is_empty() {
            return sqlx::query("COMMIT").execute(conn).await.map(|_| ());
        }
        let rows = self.entries.chain(&self.key, &mut self.id, &mut self.hash);
        sqlx::query(
            "INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash)
               SELECT value->>'id', value->>'run', value->>'stage', value->>'at', value->>'kind', value->>'actor', value->>'detail',
                      value->>'prev', value->>'hash' FROM jsonb_each(jsonb(?)) ORDER BY key;
             INSERT OR REPLACE INTO audit_head (one, id, hash) VALUES (1, ?, ?);
             COMMIT;",
        )
        .bind(serde_json::to_string(&rows).expect("entries serialize"))
        .bind(self.id)
        .bind(&self.hash)
        .execute(conn)
        .await
        .map(|_| ())
    }
}
