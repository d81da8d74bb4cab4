//! Group commit on PostgreSQL, as on SQLite: one task per replica takes every write queued
//! meanwhile into one transaction and answers each caller after the commit.
//!
//! Replicas write at the same time and meet at two points only:
//! - **the chain**: a transaction's entries are chained at its end ([`Head::flush`]), under the
//!   trail's head row locked (`FOR UPDATE`) from there to the commit; so entries are numbered and
//!   committed in the order of the chain whoever wrote them, and the lock is held for two
//!   statements and the commit, not for the whole transaction;
//! - **the turn** ([`in_turn`]): writes that read rows and write by what they read where the rows
//!   may be missing or are others than those written (an environment's lock and queue, DORA's
//!   figures, watches, drift, violations, decisions), and a run's end or renewal when the run
//!   holds or waits for an environment, first take one advisory lock, so they run one at a time
//!   across replicas, as every write did when the head was locked first.
//!
//! The writes most runs make (transitions, new runs, drivers' leases, runs' ends) claim their rows
//! by themselves (rows locked, conditional statements, unique keys) and each kind goes by a few
//! statements per batch. A transaction takes the turn (if it needs it) before any row and the
//! head after every row, and the head's holder waits for nothing but its commit: no wait can
//! close a cycle through them. Rows two transactions out of turn may share (leases) are locked
//! in the order of their runs, and a fenced write locks only the leases that are still its own.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::{mpsc, oneshot};

use crate::seal::Key;
use crate::store::batch::{self, Group};
use crate::store::{LockState, QueueStep, Queued, StageState, Write, Written, seals, texts};

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
/// callers retry as after any transient error, and is made again for the next one. (One writer:
/// two, each with its own transaction, were measured no faster with one server and slower with
/// three, on 2 cores; docs/benchmarks.md.)
pub(super) async fn run(connect: Connect, mut rx: mpsc::Receiver<Job>, key: Key) {
    let key = &key;
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
        match apply_all(c, &batch, key).await {
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
                    let r = apply_all(c, std::slice::from_ref(&job), key).await.map(|mut v| v.remove(0));
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

/// The advisory lock of the writes that take turns ([`in_turn`]): a constant of promote's.
const TURN: i64 = 0x0070_726f_6d6f_7465;

/// Whether a write must not run beside another replica's (or another writer's) of its kind: it
/// reads rows and then writes by what it read where the rows may be missing (a free lease, an
/// empty queue) or are others than those it writes. The others are single conditional
/// statements, or locks on rows that exist, or inserts under unique keys.
fn in_turn(write: &Write) -> bool {
    match write {
        // Fenced by the drivers' rows (locked for share), each run's stages its own rows; the
        // DORA figures of a deployment read the environment's other deployments.
        Write::Transitions { items, .. } => items.iter().any(|i| crate::store::dora::may_change(&i.transition)),
        // New rows under unique keys (a delivery by `ON CONFLICT DO NOTHING`, waiting for the
        // other insert's commit); an end fenced like a transition (and in turn when its run holds
        // or waits for an environment: [`takes_turn`]); a lease taken by a locked row or, when there
        // is none, by an insert that yields to a concurrent one.
        Write::CreateRun { .. } | Write::FinishRun { .. } | Write::Drive { .. } => false,
        // One conditional statement each (a renewal in turn as a run's end).
        Write::Release { .. } | Write::Renew { .. } | Write::ClaimPoll { .. } | Write::DeferPoll { .. } => false,
        _ => true,
    }
}

/// Whether the transaction of `jobs` takes the turn first: a job is [`in_turn`], or a run's end
/// or renewal among them changes environment locks or queue places (rows that `Lock`s, in turn,
/// lock in their own order), found by one read that locks nothing. Only a run's own driver adds
/// such rows, through this writer, so none appears between this read and the writes.
async fn takes_turn(conn: &mut PgConnection, jobs: &[Job]) -> Result<bool, sqlx::Error> {
    if jobs.iter().any(|j| in_turn(&j.write)) {
        return Ok(true);
    }
    let theirs: Vec<&str> = jobs
        .iter()
        .filter_map(|j| match &j.write {
            Write::FinishRun { run, .. } | Write::Renew { run, .. } => Some(run.as_str()),
            _ => None,
        })
        .collect();
    if theirs.is_empty() {
        return Ok(false);
    }
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM env_locks WHERE run_id = ANY($1)) OR EXISTS (SELECT 1 FROM env_queue WHERE run_id = ANY($1))")
        .bind(&theirs)
        .fetch_one(conn)
        .await
}

/// One transaction for every job, committed before anything is returned: the turn first if a
/// job needs it, then the jobs (the frequent kinds together), then the trail's entries chained
/// and inserted by one statement (the head row locked and moved once), then the commit.
async fn apply_all(conn: &mut PgConnection, jobs: &[Job], key: &Key) -> Result<Vec<Written>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    if takes_turn(&mut tx, jobs).await? {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(TURN).execute(&mut *tx).await?;
    }
    let mut head = Head { key: key.clone(), entries: batch::Entries::default() };
    // The writes of a kind that most runs make go together, each kind by a few statements
    // whatever their number (transitions, new runs, drivers' leases, runs' ends); then the other
    // writes in their order. The batch's writes were all asked for at once, none after another's
    // answer, so any order of them is one they could have had.
    // (Transitions, new runs, claims, ends: a transaction's row locks in one order.)
    const ORDER: [Group; 4] = [Group::Transitions, Group::NewRuns, Group::Claims, Group::Ends];
    let mut groups: [(Vec<&Job>, Vec<usize>); 4] = Default::default();
    let mut others = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match Group::of(&job.write) {
            Some(g) => {
                let k = ORDER.iter().position(|o| *o == g).expect("every group is in the order");
                groups[k].0.push(job);
                groups[k].1.push(i);
            }
            None => others.push(i),
        }
    }
    let mut out: Vec<Option<Written>> = vec![None; jobs.len()];
    for (g, (group, at)) in ORDER.into_iter().zip(&groups) {
        if group.is_empty() {
            continue;
        }
        let done = match g {
            Group::Transitions => transitions(&mut tx, group, &mut head).await?,
            Group::NewRuns => creates(&mut tx, group, &mut head).await?,
            Group::Claims => drives_taken(&mut tx, group, &mut head).await?,
            Group::Ends => finishes(&mut tx, group, &mut head).await?,
        };
        for (&i, w) in at.iter().zip(done) {
            out[i] = Some(w);
        }
    }
    for i in others {
        out[i] = Some(apply_common(&mut tx, &jobs[i].write, &mut head).await?);
    }
    let out: Vec<Written> = out.into_iter().map(|w| w.expect("every job answered")).collect();
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

/// The batch's transition writes: each fenced one checked (one query for all), every stage's
/// transitions folded into one row of one UPDATE ([`batch::transitions`]), an entry each.
async fn transitions(conn: &mut PgConnection, jobs: &[&Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let writes: Vec<&Write> = jobs.iter().map(|j| &j.write).collect();
    // Whether each holder still drives its run and the run is running; the drivers' rows are
    // locked until the commit, so a takeover waits for the writes it fences.
    let driving = drivers_of(conn, &batch::fenced(&writes)).await?;
    let moved = batch::transitions(&writes, &driving, &head.key, crate::clock::now_ms(), &mut head.entries);
    if !moved.rows.is_empty() {
        let rows = &moved.rows;
        sqlx::query(UPDATE_STAGES)
            .bind(column(rows, |r| r.run.as_str()))
            .bind(column(rows, |r| r.name.as_str()))
            .bind(column(rows, |r| r.state))
            .bind(column(rows, |r| r.attempt))
            .bind(column(rows, |r| r.started_at))
            .bind(column(rows, |r| r.finished_mode))
            .bind(column(rows, |r| r.finished_at))
            .bind(column(rows, |r| r.message_mode))
            .bind(column(rows, |r| r.message.as_deref()))
            .bind(column(rows, |r| r.output.as_deref()))
            .bind(column(rows, |r| r.seal.as_deref()))
            .execute(&mut *conn)
            .await?;
    }
    for (run, stage) in &moved.dora {
        dora_stage(conn, run, stage).await?;
    }
    Ok(moved.out)
}

/// One column of `rows`, as an array to bind (`UNNEST`).
fn column<'a, T: 'a, U>(rows: impl IntoIterator<Item = &'a T>, f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.into_iter().map(f).collect()
}

/// Which of the `fenced` (run, holder) pairs hold: the holder drives the run and it is running,
/// by one query. Only those rows are locked (for share, until the commit, so a takeover waits
/// for the writes they fence), in the order of their runs: a lease another process took over is
/// not waited for, and two transactions lock the rows they share in the same order.
async fn drivers_of(conn: &mut PgConnection, fenced: &[(&str, &str)]) -> Result<std::collections::HashSet<(String, String)>, sqlx::Error> {
    if fenced.is_empty() {
        return Ok(Default::default());
    }
    let (runs, holders): (Vec<&str>, Vec<&str>) = fenced.iter().copied().unzip();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.run_id, d.holder FROM drivers d JOIN runs r ON r.id = d.run_id
           JOIN UNNEST($1::TEXT[], $2::TEXT[]) AS u(run_id, holder) ON d.run_id = u.run_id AND d.holder = u.holder
         WHERE r.state = 'running' ORDER BY d.run_id FOR SHARE OF d",
    )
    .bind(runs)
    .bind(holders)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// New runs (without a delivery: those are checked for duplicates one by one, in
/// `apply_common`): the runs, all their stages and the leases of those whose drivers start at
/// once, by one statement (one trip to the database instead of three: the stages' reference to
/// their run is checked at the statement's end, when the runs are in), an entry each.
async fn creates(conn: &mut PgConnection, jobs: &[&Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let writes: Vec<&Write> = jobs.iter().map(|j| &j.write).collect();
    let batch::NewRuns { runs, stages, leases } = batch::new_runs(&writes, &head.key, &mut head.entries);
    // The leases are of new runs, so no other lease exists.
    sqlx::query(
        "WITH new_runs AS (
           INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at, authenticated, seal)
           SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BOOLEAN[], $10::TEXT[])
         ), new_stages AS (
           INSERT INTO stages (run_id, name, kind, position, state, seal)
           SELECT r, n, k, p, 'pending', s FROM UNNEST($11::TEXT[], $12::TEXT[], $13::TEXT[], $14::BIGINT[], $15::TEXT[]) AS u(r, n, k, p, s)
         )
         INSERT INTO drivers (run_id, holder, expires_at) SELECT * FROM UNNEST($16::TEXT[], $17::TEXT[], $18::BIGINT[]) ORDER BY 1",
    )
    .bind(column(&runs, |r| r.id))
    .bind(column(&runs, |r| r.pipeline))
    .bind(column(&runs, |r| r.file))
    .bind(column(&runs, |r| r.source))
    .bind(column(&runs, |r| r.version))
    .bind(column(&runs, |r| r.state))
    .bind(column(&runs, |r| r.triggered_by))
    .bind(column(&runs, |r| r.created_at))
    .bind(column(&runs, |r| r.authenticated))
    .bind(column(&runs, |r| r.seal.as_str()))
    .bind(column(&stages, |s| s.run))
    .bind(column(&stages, |s| s.name))
    .bind(column(&stages, |s| s.kind))
    .bind(column(&stages, |s| s.position))
    .bind(column(&stages, |s| s.seal.as_str()))
    .bind(column(&leases, |l| l.run.as_str()))
    .bind(column(&leases, |l| l.holder.as_str()))
    .bind(column(&leases, |l| l.expires_at))
    .execute(&mut *conn)
    .await?;
    Ok(jobs.iter().map(|_| Written::Done).collect())
}

/// Drivers' claims on runs: the leases read (and locked) by one query, each claim judged in
/// order against what the ones before it left ([`batch::claims`]), the leases taken written by
/// two statements. A run with no lease yet has no row to lock: its lease is inserted only if no
/// other writer inserted one meanwhile (waiting for that one's commit); if one did, that writer
/// holds it.
async fn drives_taken(conn: &mut PgConnection, jobs: &[&Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let writes: Vec<&Write> = jobs.iter().map(|j| &j.write).collect();
    let runs = batch::claimed(&writes);
    let rows: Vec<(String, String, i64)> = sqlx::query_as("SELECT run_id, holder, expires_at FROM drivers WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE")
        .bind(&runs)
        .fetch_all(&mut *conn)
        .await?;
    let mut held: std::collections::HashMap<String, (String, i64)> = rows.into_iter().map(|(r, h, e)| (r, (h, e))).collect();
    let existed: std::collections::HashSet<String> = held.keys().cloned().collect();
    let batch::Claimed { mut out, taken } = batch::claims(&writes, &mut held, &mut head.entries);
    // (In the order of their runs, as the read above: two transactions claiming the same new runs
    // wait for each other's inserts in the same order.)
    let (locked, fresh): (Vec<batch::LeaseRow>, Vec<batch::LeaseRow>) = taken.into_iter().partition(|l| existed.contains(&l.run));
    if !locked.is_empty() {
        sqlx::query("UPDATE drivers d SET holder = u.holder, expires_at = u.expires_at FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS u(run_id, holder, expires_at) WHERE d.run_id = u.run_id")
            .bind(column(&locked, |l| l.run.as_str()))
            .bind(column(&locked, |l| l.holder.as_str()))
            .bind(column(&locked, |l| l.expires_at))
            .execute(&mut *conn)
            .await?;
    }
    if !fresh.is_empty() {
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO drivers (run_id, holder, expires_at) SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) ORDER BY 1
             ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
        )
        .bind(column(&fresh, |l| l.run.as_str()))
        .bind(column(&fresh, |l| l.holder.as_str()))
        .bind(column(&fresh, |l| l.expires_at))
        .fetch_all(&mut *conn)
        .await?;
        let lost: Vec<&str> = fresh.iter().map(|l| l.run.as_str()).filter(|r| !inserted.iter().any(|i| i == r)).collect();
        if !lost.is_empty() {
            let theirs: std::collections::HashMap<String, (String, i64)> =
                sqlx::query_as::<_, (String, String, i64)>("SELECT run_id, holder, expires_at FROM drivers WHERE run_id = ANY($1)")
                    .bind(&lost)
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .map(|(r, h, e)| (r, (h, e)))
                    .collect();
            for (write, w) in writes.iter().zip(out.iter_mut()) {
                if let (Write::Drive { run, .. }, Written::Holder(None)) = (write, &w)
                    && lost.contains(&run.as_str())
                {
                    // Its lease gone again meanwhile (that driver let go or ended it): not ours
                    // either; the run, if still running, is an orphan a replica takes over.
                    let other = theirs.get(run).cloned().unwrap_or_else(|| ("another replica".to_string(), 0));
                    *w = Written::Holder(Some(other));
                }
            }
        }
    }
    Ok(out)
}

/// Runs' ends: the fenced ones checked by one query; the runs, and their environments' locks,
/// places in queues and drivers, by one statement ([`batch::ends`]: in the order of their runs,
/// so the rows are locked in one order by whoever ends them); an entry each.
async fn finishes(conn: &mut PgConnection, jobs: &[&Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let writes: Vec<&Write> = jobs.iter().map(|j| &j.write).collect();
    let driving = drivers_of(conn, &batch::fenced(&writes)).await?;
    let (out, ended) = batch::ends(&writes, &driving, &mut head.entries);
    if !ended.is_empty() {
        sqlx::query(
            "WITH ended AS (UPDATE runs r SET state = u.state, finished_at = u.at, message = u.message
                            FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[]) AS u(id, state, at, message) WHERE r.id = u.id),
                  locks AS (DELETE FROM env_locks WHERE run_id = ANY($1)),
                  queued AS (DELETE FROM env_queue WHERE run_id = ANY($1))
             DELETE FROM drivers WHERE run_id = ANY($1)",
        )
        .bind(column(&ended, |e| e.run))
        .bind(column(&ended, |e| e.state))
        .bind(column(&ended, |e| e.at))
        .bind(column(&ended, |e| e.message))
        .execute(&mut *conn)
        .await?;
    }
    Ok(out)
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

/// The transaction's trail entries: kept in order as they are appended, and chained at its end
/// ([`Head::flush`]) under the head row's lock, taken there and held only to the commit.
pub(super) struct Head {
    pub(super) key: Key,
    entries: batch::Entries,
}

impl Head {
    /// Appends an entry, to be chained and inserted with the transaction's others (the
    /// connection is the SQLite backend's need, not this one's).
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
        self.entries.push(run, stage, at, kind, actor, detail);
        Ok(())
    }

    /// Chains the pending entries after the head (its row locked here, until the commit) and
    /// inserts them, in their order, by one statement.
    async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let (mut id, mut hash): (i64, String) = sqlx::query_as("SELECT id, hash FROM audit_head WHERE one = 1 FOR UPDATE").fetch_one(&mut *conn).await?;
        let rows = self.entries.chain(&self.key, &mut id, &mut hash);
        sqlx::query(
            "INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[]) ORDER BY 1",
        )
        .bind(column(&rows, |e| e.id))
        .bind(column(&rows, |e| e.run.as_str()))
        .bind(column(&rows, |e| e.stage.as_deref()))
        .bind(column(&rows, |e| e.at))
        .bind(column(&rows, |e| e.kind))
        .bind(column(&rows, |e| e.actor.as_str()))
        .bind(column(&rows, |e| e.detail.as_str()))
        .bind(column(&rows, |e| e.prev.as_str()))
        .bind(column(&rows, |e| e.hash.as_str()))
        .execute(conn)
        .await
        .map(|_| ())
    }
}
