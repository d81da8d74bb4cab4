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

/// Every job's statements. Stage transitions, most of what the engine writes, go to SQLite many
/// statements at a time (one round trip to sqlx's worker thread for up to [`CHUNKS`]`[0]`).
async fn apply_in_transaction(conn: &mut SqliteConnection, jobs: &[Job], head: &mut Head) -> Result<Vec<Written>, sqlx::Error> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut items: Vec<(&str, &StageWrite)> = Vec::new();
    for job in jobs {
        match &job.write {
            Write::Transitions { run, items: mine, fence } => {
                if let Some(holder) = fence
                    && !drives(conn, run, holder).await?
                {
                    out.push(Written::Fenced);
                    continue;
                }
                items.extend(mine.iter().map(|i| (run.as_str(), i)));
                out.push(Written::Done);
            }
            other => {
                // A change of driver or a run's end comes after the transitions before it (so a
                // transition checked against its lease is written before the lease moves).
                if matches!(other, Write::Drive { .. } | Write::FinishRun { .. }) && !items.is_empty() {
                    update_stages(conn, &items, head).await?;
                    items.clear();
                }
                out.push(apply(conn, other, head).await?)
            }
        }
    }
    if !items.is_empty() {
        update_stages(conn, &items, head).await?;
    }
    Ok(out)
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
            let (id, prev, hash) = head.append(run, Some(&item.stage), now, "stage", "promote", &item.event);
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
    Ok(())
}

/// One write's statements, inside the open transaction.
async fn apply(conn: &mut SqliteConnection, write: &Write, head: &mut Head) -> Result<Written, sqlx::Error> {
    match write {
        Write::CreateRun { run, stages, delivery } => {
            if let Some(d) = delivery {
                let inserted = sqlx::query(
                    "INSERT OR IGNORE INTO deliveries (provider, delivery_id, body_hash, pipeline, version, run_id, at, origin_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&d.provider)
                .bind(&d.id)
                .bind(&d.body_hash)
                .bind(&run.pipeline)
                .bind(&run.version)
                .bind(&run.id)
                .bind(run.created_at)
                .bind(d.origin_at)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if inserted == 0 {
                    let first: Option<String> = sqlx::query_scalar(
                        "SELECT run_id FROM deliveries WHERE (provider = ? AND delivery_id = ? AND pipeline = ?) OR (pipeline = ? AND version = ?) ORDER BY at LIMIT 1",
                    )
                    .bind(&d.provider)
                    .bind(&d.id)
                    .bind(&run.pipeline)
                    .bind(&run.pipeline)
                    .bind(&run.version)
                    .fetch_optional(&mut *conn)
                    .await?;
                    return Ok(Written::Duplicate(first));
                }
            }
            let seal =
                seals::run(&head.key, &run.id, &run.pipeline, &run.file, &run.source, &run.version, &run.triggered_by, run.authenticated, run.created_at);
            sqlx::query(
                "INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at, authenticated, seal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&run.id)
                .bind(&run.pipeline)
                .bind(&run.file)
                .bind(&run.source)
                .bind(&run.version)
                .bind(run.state.as_str())
                .bind(&run.triggered_by)
                .bind(run.created_at)
                .bind(run.authenticated)
                .bind(seal)
                .execute(&mut *conn)
                .await?;
            for (i, (name, kind)) in stages.iter().enumerate() {
                sqlx::query("INSERT INTO stages (run_id, name, kind, position, state, seal) VALUES (?, ?, ?, ?, 'pending', ?)")
                    .bind(&run.id)
                    .bind(name)
                    .bind(kind)
                    .bind(i as i64)
                    .bind(seals::stage(&head.key, &run.id, name, StageState::Pending.as_str()))
                    .execute(&mut *conn)
                    .await?;
            }
            insert_event(conn, head, &run.id, None, run.created_at, "trigger", &run.triggered_by, &texts::run_started(run)).await?;
            Ok(Written::Done)
        }
        Write::Transitions { .. } => unreachable!("transitions are written together by update_stages"),
        Write::FinishRun { run, fence, state, message, at } => {
            if let Some(holder) = fence
                && !drives(conn, run, holder).await?
            {
                return Ok(Written::Fenced);
            }
            sqlx::query("UPDATE runs SET state = ?, finished_at = ?, message = ? WHERE id = ?")
                .bind(state.as_str())
                .bind(at)
                .bind(message)
                .bind(run)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM env_locks WHERE run_id = ?").bind(run).execute(&mut *conn).await?;
            sqlx::query("DELETE FROM env_queue WHERE run_id = ?").bind(run).execute(&mut *conn).await?;
            sqlx::query("DELETE FROM drivers WHERE run_id = ?").bind(run).execute(&mut *conn).await?;
            insert_event(conn, head, run, None, *at, "run", "promote", &texts::run_finished(*state, message.as_deref())).await?;
            Ok(Written::Done)
        }
        Write::Decide { run, stage, user, approve, comment, kind, at, via } => {
            let decided: Option<i64> = sqlx::query_scalar("SELECT 1 FROM decisions WHERE run_id = ? AND stage = ? AND user = ?")
                .bind(run)
                .bind(stage)
                .bind(user)
                .fetch_optional(&mut *conn)
                .await?;
            if decided.is_some() {
                return Ok(Written::Duplicate(None));
            }
            sqlx::query("INSERT OR REPLACE INTO decisions (run_id, stage, user, approve, comment, at, seal) VALUES (?, ?, ?, ?, ?, ?, ?)")
                .bind(run)
                .bind(stage)
                .bind(user)
                .bind(approve)
                .bind(comment)
                .bind(at)
                .bind(seals::decision(&head.key, run, stage, user, *approve, comment.as_deref(), *at))
                .execute(&mut *conn)
                .await?;
            let detail = texts::vouched(texts::decided(kind, *approve, user, comment.as_deref()), via.as_deref());
            insert_event(conn, head, run, Some(stage), *at, kind, user, &detail).await?;
            Ok(Written::Done)
        }
        Write::Exempt { run, pipeline, template, user, reason, at, via } => {
            let marked: Option<String> = sqlx::query_scalar("SELECT by_user FROM log_exemptions WHERE pipeline = ? AND template = ?")
                .bind(pipeline)
                .bind(template)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(by) = marked {
                return Ok(Written::Duplicate(Some(by)));
            }
            sqlx::query("INSERT OR REPLACE INTO log_exemptions (pipeline, template, by_user, reason, at, seal) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(pipeline)
                .bind(template)
                .bind(user)
                .bind(reason)
                .bind(at)
                .bind(seals::exemption(&head.key, pipeline, template, user, reason, *at))
                .execute(&mut *conn)
                .await?;
            insert_event(conn, head, run, None, *at, "log-exemption", user, &texts::vouched(texts::exempted(template, user, reason), via.as_deref())).await?;
            Ok(Written::Done)
        }
        Write::RecordDrift { drift: d } => {
            let commits = serde_json::to_string(&d.commits).unwrap_or_else(|_| "[]".into());
            let seal = seals::drift(&head.key, &d.id, &d.pipeline, &d.environment, &d.head, d.baseline.as_deref(), &d.state, d.decided_by.as_deref());
            let inserted = sqlx::query(
                "INSERT OR IGNORE INTO drifts (id, pipeline, environment, head, baseline, commits, diff, rewritten, state, decided_by, reason, at, decided_at, seal)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&d.id)
            .bind(&d.pipeline)
            .bind(&d.environment)
            .bind(&d.head)
            .bind(&d.baseline)
            .bind(commits)
            .bind(&d.diff)
            .bind(d.rewritten)
            .bind(&d.state)
            .bind(&d.decided_by)
            .bind(&d.reason)
            .bind(d.at)
            .bind(d.decided_at)
            .bind(seal)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 0 {
                let first: Option<String> = sqlx::query_scalar("SELECT id FROM drifts WHERE pipeline = ? AND environment = ? AND head = ?")
                    .bind(&d.pipeline)
                    .bind(&d.environment)
                    .bind(&d.head)
                    .fetch_optional(&mut *conn)
                    .await?;
                return Ok(Written::Duplicate(first));
            }
            let detail = texts::drift_recorded(d);
            insert_event(conn, head, "-", None, d.at, "drift", "promote", &detail).await?;
            Ok(Written::Done)
        }
        Write::DecideDrift { id, from, state, user, reason, at, via } => {
            let row: Option<(String, String, String, Option<String>)> =
                sqlx::query_as("SELECT pipeline, environment, head, baseline FROM drifts WHERE id = ? AND state = ?")
                    .bind(id)
                    .bind(from)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some((pipeline, environment, drift_head, baseline)) = row else { return Ok(Written::Duplicate(None)) };
            let seal = seals::drift(&head.key, id, &pipeline, &environment, &drift_head, baseline.as_deref(), state, Some(user));
            sqlx::query("UPDATE drifts SET state = ?, decided_by = ?, reason = ?, decided_at = ?, seal = ? WHERE id = ?")
                .bind(state)
                .bind(user)
                .bind(reason)
                .bind(at)
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let detail = texts::vouched(texts::drift_decided(&pipeline, id, &environment, state, user, reason.as_deref()), via.as_deref());
            insert_event(conn, head, "-", None, *at, "drift-decision", user, &detail).await?;
            Ok(Written::Done)
        }
        Write::BeginWatch { watch: w } => {
            let mut w = (**w).clone();
            w.seal = Some(seals::watch(&head.key, &w));
            let inserted = // (Only constants are formatted in.)
            sqlx::query(sqlx::AssertSqlSafe(format!("INSERT OR IGNORE INTO watches ({WATCH_COLUMNS}) VALUES ({})", ["?"; 27].join(", "))))
                .bind(&w.id)
                .bind(&w.run)
                .bind(&w.stage)
                .bind(&w.pipeline)
                .bind(&w.environment)
                .bind(&w.version)
                .bind(&w.commit)
                .bind(&w.value)
                .bind(w.started_at)
                .bind(w.ends_at)
                .bind(w.interval_ms)
                .bind(w.next_at)
                .bind(&w.state)
                .bind(w.looks)
                .bind(w.failures)
                .bind(w.errors)
                .bind(w.passes)
                .bind(&w.message)
                .bind(w.evidence.as_ref().map(|e| e.to_string()))
                .bind(w.marks.as_ref().map(|e| e.to_string()))
                .bind(&w.reverted_to)
                .bind(w.ended_at)
                .bind(&w.cleared_by)
                .bind(w.cleared_at)
                .bind(&w.seal)
                .bind(w.deployed_at)
                .bind(&w.previous)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if inserted == 0 {
                let first: Option<String> =
                    sqlx::query_scalar("SELECT id FROM watches WHERE run_id = ? AND stage = ?").bind(&w.run).bind(&w.stage).fetch_optional(&mut *conn).await?;
                return Ok(Written::Duplicate(first));
            }
            let by = format!("the promotion of {} by run {}", w.version, w.run);
            supersede(conn, head, &w.pipeline, &w.environment, &by, Some(&w.id), w.started_at).await?;
            let detail = texts::watch_begun(&w);
            insert_event(conn, head, &w.run, Some(&w.stage), w.started_at, "watch", "promote", &detail).await?;
            Ok(Written::Done)
        }
        Write::SupersedeWatches { pipeline, environment, by, except, at } => {
            supersede(conn, head, pipeline, environment, by, except.as_deref(), *at).await?;
            Ok(Written::Done)
        }
        Write::ClaimWatch { id, due, next_at } => {
            let taken = sqlx::query("UPDATE watches SET next_at = ? WHERE id = ? AND next_at = ? AND state IN ('watching', 'reverting')")
                .bind(next_at)
                .bind(id)
                .bind(due)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(Written::Renewed(taken == 1))
        }
        Write::WatchLooked { id, failed, errored, passed, message, evidence } => {
            let Some(mut w) = super::read_watch(conn, id).await? else { return Ok(Written::Duplicate(None)) };
            w.looks += 1;
            w.failures += i64::from(*failed);
            w.errors = if *errored { w.errors + 1 } else { 0 };
            w.passes += i64::from(*passed);
            let seal = seals::watch(&head.key, &w);
            sqlx::query("UPDATE watches SET looks = ?, failures = ?, errors = ?, passes = ?, message = ?, evidence = ?, seal = ? WHERE id = ?")
                .bind(w.looks)
                .bind(w.failures)
                .bind(w.errors)
                .bind(w.passes)
                .bind(message)
                .bind(evidence.to_string())
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(Written::Done)
        }
        Write::EndWatch { id, state, message, reverted_to, reverted, at } => {
            let Some(mut w) = super::read_watch(conn, id).await? else { return Ok(Written::Duplicate(None)) };
            w.state = state.clone();
            let seal = seals::watch(&head.key, &w);
            let ended = (state != "reverting").then_some(*at);
            sqlx::query("UPDATE watches SET state = ?, message = ?, reverted_to = coalesce(?, reverted_to), ended_at = ?, seal = ? WHERE id = ?")
                .bind(state)
                .bind(message)
                .bind(reverted_to)
                .bind(ended)
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            if *reverted {
                sqlx::query("UPDATE runs SET state = 'reverted', message = ? WHERE id = ?").bind(message).bind(&w.run).execute(&mut *conn).await?;
                insert_event(conn, head, &w.run, None, *at, "run", "promote", &format!("run reverted: {message}")).await?;
            }
            let detail = texts::watch_ended(&w, state, message);
            insert_event(conn, head, &w.run, Some(&w.stage), *at, "watch", "promote", &detail).await?;
            Ok(Written::Done)
        }
        Write::ClearWatch { id, user, reason, at, via } => {
            let Some(mut w) = super::read_watch(conn, id).await? else { return Ok(Written::Duplicate(None)) };
            if w.cleared_by.is_some() {
                return Ok(Written::Duplicate(w.cleared_by.clone()));
            }
            w.cleared_by = Some(user.clone());
            let seal = seals::watch(&head.key, &w);
            sqlx::query("UPDATE watches SET cleared_by = ?, cleared_at = ?, clear_reason = ?, seal = ? WHERE id = ?")
                .bind(user)
                .bind(at)
                .bind(reason)
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let detail = texts::vouched(texts::watch_cleared(&w, user, reason), via.as_deref());
            insert_event(conn, head, &w.run, Some(&w.stage), *at, "watch-clear", user, &detail).await?;
            Ok(Written::Done)
        }
        Write::Lock { environment, pipeline, run, supersede, at, expires_at } => {
            let held: Option<(String, i64)> =
                sqlx::query_as("SELECT run_id, expires_at FROM env_locks WHERE environment = ?").bind(environment).fetch_optional(&mut *conn).await?;
            let queue: Vec<(String, String, i64, Option<String>)> =
                sqlx::query_as("SELECT run_id, pipeline, expires_at, superseded_by FROM env_queue WHERE environment = ?")
                    .bind(environment)
                    .fetch_all(&mut *conn)
                    .await?;
            let queue: Vec<Queued> =
                queue.into_iter().map(|(run, pipeline, expires_at, superseded_by)| Queued { run, pipeline, expires_at, superseded_by }).collect();
            let step = QueueStep::of(held, &queue, run, pipeline, *supersede, *at);
            for older in &step.supersedes {
                sqlx::query("UPDATE env_queue SET superseded_by = ? WHERE environment = ? AND run_id = ?")
                    .bind(run)
                    .bind(environment)
                    .bind(older)
                    .execute(&mut *conn)
                    .await?;
                insert_event(conn, head, older, None, *at, "superseded", "promote", &texts::superseded_in_queue(environment, run)).await?;
            }
            if step.queued {
                sqlx::query(
                    "INSERT INTO env_queue (environment, run_id, pipeline, since, expires_at) VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (environment, run_id) DO UPDATE SET expires_at = excluded.expires_at",
                )
                .bind(environment)
                .bind(run)
                .bind(pipeline)
                .bind(at)
                .bind(expires_at)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query("DELETE FROM env_queue WHERE environment = ? AND run_id = ?").bind(environment).bind(run).execute(&mut *conn).await?;
            }
            if let Some((holder, until)) = &step.took_over {
                insert_event(conn, head, run, None, *at, "lock-takeover", "promote", &texts::lock_taken_over(environment, holder, *until)).await?;
            }
            if step.state == LockState::Taken {
                sqlx::query("INSERT OR REPLACE INTO env_locks (environment, run_id, at, expires_at) VALUES (?, ?, ?, ?)")
                    .bind(environment)
                    .bind(run)
                    .bind(at)
                    .bind(expires_at)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Written::Lock(step.state))
        }
        Write::Unlock { environment, run, stage, at } => {
            let gone = sqlx::query("DELETE FROM env_locks WHERE environment = ? AND run_id = ?")
                .bind(environment)
                .bind(run)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if gone == 1 {
                insert_event(conn, head, run, Some(stage), *at, "release", "promote", &texts::released(environment)).await?;
            }
            Ok(Written::Done)
        }
        Write::Promoted { pipeline, environment, run, version, rolled_back, at, fence } => {
            if let Some(holder) = fence
                && !drives(conn, run, holder).await?
            {
                return Ok(Written::Fenced);
            }
            if *rolled_back {
                sqlx::query("UPDATE promotions SET rolled_back = 1 WHERE pipeline = ? AND environment = ? AND run_id = ?")
                    .bind(pipeline)
                    .bind(environment)
                    .bind(run)
                    .execute(&mut *conn)
                    .await?;
            } else {
                sqlx::query("INSERT OR IGNORE INTO promotions (pipeline, environment, run_id, version, at) VALUES (?, ?, ?, ?, ?)")
                    .bind(pipeline)
                    .bind(environment)
                    .bind(run)
                    .bind(version)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Written::Done)
        }
        Write::Drive { run, holder, at, expires_at } => {
            let held: Option<(String, i64)> =
                sqlx::query_as("SELECT holder, expires_at FROM drivers WHERE run_id = ?").bind(run).fetch_optional(&mut *conn).await?;
            match Claim::of(held, holder, *at) {
                Claim::Held(other, until) => return Ok(Written::Holder(Some((other, until)))),
                Claim::Take(Some((other, until))) => {
                    let detail = texts::driver_taken_over(&other, until);
                    insert_event(conn, head, run, None, *at, "driver-takeover", "promote", &detail).await?;
                }
                Claim::Take(None) => {}
            }
            sqlx::query("INSERT OR REPLACE INTO drivers (run_id, holder, expires_at) VALUES (?, ?, ?)")
                .bind(run)
                .bind(holder)
                .bind(expires_at)
                .execute(&mut *conn)
                .await?;
            Ok(Written::Holder(None))
        }
        Write::Renew { run, holder, expires_at } => {
            let ours = sqlx::query("UPDATE drivers SET expires_at = ? WHERE run_id = ? AND holder = ?")
                .bind(expires_at)
                .bind(run)
                .bind(holder)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                == 1;
            if ours {
                sqlx::query("UPDATE env_locks SET expires_at = ? WHERE run_id = ?").bind(expires_at).bind(run).execute(&mut *conn).await?;
                sqlx::query("UPDATE env_queue SET expires_at = ? WHERE run_id = ?").bind(expires_at).bind(run).execute(&mut *conn).await?;
            }
            Ok(Written::Renewed(ours))
        }
        Write::ClaimPoll { source, holder, now, next_at } => {
            let taken = sqlx::query(
                "INSERT INTO poll_claims (source, holder, next_at) VALUES (?, ?, ?) ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, next_at = excluded.next_at WHERE poll_claims.next_at <= ?",
            )
            .bind(source)
            .bind(holder)
            .bind(next_at)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(Written::Renewed(taken == 1))
        }
        Write::DeferPoll { source, holder, next_at } => {
            sqlx::query("UPDATE poll_claims SET next_at = ? WHERE source = ? AND holder = ?")
                .bind(next_at)
                .bind(source)
                .bind(holder)
                .execute(&mut *conn)
                .await?;
            Ok(Written::Done)
        }
        Write::Polled { source, refs } => {
            sqlx::query("DELETE FROM polled WHERE source = ?").bind(source).execute(&mut *conn).await?;
            for (r, oid) in std::iter::once(&(String::new(), String::new())).chain(refs) {
                sqlx::query("INSERT INTO polled (source, ref, oid) VALUES (?, ?, ?)").bind(source).bind(r).bind(oid).execute(&mut *conn).await?;
            }
            Ok(Written::Done)
        }
        Write::Release { run, holder } => {
            sqlx::query("DELETE FROM drivers WHERE run_id = ? AND holder = ?").bind(run).bind(holder).execute(&mut *conn).await?;
            Ok(Written::Done)
        }
        Write::OpenSession { session: x } => {
            sqlx::query("INSERT INTO sessions (id_hash, login, via, token_hash, groups, created_at, seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&x.id_hash)
                .bind(&x.login)
                .bind(&x.via)
                .bind(&x.token_hash)
                .bind(&x.groups)
                .bind(x.created_at)
                .bind(x.seen_at)
                .bind(x.expires_at)
                .execute(&mut *conn)
                .await?;
            insert_event(conn, head, "-", None, x.created_at, "sign-in", &x.login, &x.detail).await?;
            Ok(Written::Done)
        }
        Write::SeenSession { id_hash, at } => {
            sqlx::query("UPDATE sessions SET seen_at = ? WHERE id_hash = ? AND ended_at IS NULL").bind(at).bind(id_hash).execute(&mut *conn).await?;
            Ok(Written::Done)
        }
        Write::EndSessions { id_hash, login, kind, by, detail, at } => {
            let ended = sqlx::query("UPDATE sessions SET ended_at = ? WHERE ended_at IS NULL AND (id_hash = ? OR login = ?)")
                .bind(at)
                .bind(id_hash)
                .bind(login)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if ended > 0 {
                insert_event(conn, head, "-", None, *at, kind, by, detail).await?;
            }
            Ok(Written::Renewed(ended > 0))
        }
        Write::ClaimNote { run, stage, since, kind, seq, detail, at } => {
            let taken = sqlx::query(
                "INSERT INTO approval_notes (run_id, stage, since, kind, seq, at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, stage, since, kind) DO UPDATE SET seq = excluded.seq, at = excluded.at WHERE approval_notes.seq < excluded.seq",
            )
            .bind(run)
            .bind(stage)
            .bind(since)
            .bind(kind)
            .bind(seq)
            .bind(at)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if taken {
                insert_event(conn, head, run, Some(stage), *at, kind, "promote", detail).await?;
            }
            Ok(Written::Renewed(taken))
        }
        Write::Audit { run, stage, kind, actor, detail, at } => {
            insert_event(conn, head, run, stage.as_deref(), *at, kind, actor, detail).await?;
            Ok(Written::Done)
        }
    }
}

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

    async fn write(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.moved {
            sqlx::query("INSERT OR REPLACE INTO audit_head (one, id, hash) VALUES (1, ?, ?)").bind(self.id).bind(&self.hash).execute(conn).await?;
        }
        Ok(())
    }
}

/// The columns of `watches`, in [`super::watch_of`]'s order.
pub(super) const WATCH_COLUMNS: &str = "id, run_id, stage, pipeline, environment, version, commit_id, value, started_at, ends_at, interval_ms, next_at, state, looks, failures, errors, passes, message, evidence, marks, reverted_to, ended_at, cleared_by, cleared_at, seal, deployed_at, previous";

/// Ends the active watches of an environment (but `except`) as `superseded`, each with its entry.
async fn supersede(
    conn: &mut SqliteConnection,
    head: &mut Head,
    pipeline: &str,
    environment: &str,
    by: &str,
    except: Option<&str>,
    at: i64,
) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM watches WHERE pipeline = ? AND environment = ? AND state IN ('watching', 'reverting') AND id != coalesce(?, '') ORDER BY started_at",
    )
    .bind(pipeline)
    .bind(environment)
    .bind(except)
    .fetch_all(&mut *conn)
    .await?;
    for id in ids {
        let Some(mut w) = super::read_watch(conn, &id).await? else { continue };
        w.state = "superseded".into();
        let (message, detail) = texts::watch_superseded(&w, by);
        sqlx::query("UPDATE watches SET state = 'superseded', message = ?, ended_at = ?, seal = ? WHERE id = ?")
            .bind(&message)
            .bind(at)
            .bind(seals::watch(&head.key, &w))
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        insert_event(conn, head, &w.run, Some(&w.stage), at, "watch", "promote", &detail).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_event(
    conn: &mut SqliteConnection,
    head: &mut Head,
    run: &str,
    stage: Option<&str>,
    at: i64,
    kind: &str,
    actor: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    let (id, prev, hash) = head.append(run, stage, at, kind, actor, detail);
    sqlx::query("INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(id)
        .bind(run)
        .bind(stage)
        .bind(at)
        .bind(kind)
        .bind(actor)
        .bind(detail)
        .bind(prev)
        .bind(hash)
        .execute(conn)
        .await
        .map(|_| ())
}
