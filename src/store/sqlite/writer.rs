//! Group commit: one task owns SQLite's one writer connection; every write asked for meanwhile, by
//! any run, goes into the same transaction, and each caller hears back only after the commit.
//!
//! SQLite takes one writer at a time. With a connection per caller, a thousand runs queue on the
//! file lock (and sleep in the busy handler); here they queue in memory, and a commit carries all
//! of them. A write that fails (a constraint) does not sink the others: the batch is rolled back
//! and each of its writes is done again in a transaction of its own.

use sqlx::Row;
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::store::{StageState, Transition, Write, Written};

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
pub(super) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match apply_all(&mut conn, &batch).await {
            Ok(results) => {
                for (job, r) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(_) if batch.len() > 1 => {
                for job in batch.drain(..) {
                    let r = apply_all(&mut conn, std::slice::from_ref(&job)).await.map(|mut v| v.remove(0));
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(clone_error(&e)));
                }
            }
        }
    }
    use sqlx::Connection;
    let _ = conn.close().await;
}

/// sqlx errors are not `Clone`: the same words for every caller of a failed commit.
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

/// One transaction for every job, committed before anything is returned.
async fn apply_all(conn: &mut SqliteConnection, jobs: &[Job]) -> Result<Vec<Written>, sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        match apply(conn, &job.write).await {
            Ok(w) => out.push(w),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        }
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e);
    }
    Ok(out)
}

/// One write's statements, inside the open transaction.
async fn apply(conn: &mut SqliteConnection, write: &Write) -> Result<Written, sqlx::Error> {
    match write {
        Write::CreateRun { run, stages } => {
            sqlx::query("INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&run.id)
                .bind(&run.pipeline)
                .bind(&run.file)
                .bind(&run.source)
                .bind(&run.version)
                .bind(run.state.as_str())
                .bind(&run.triggered_by)
                .bind(run.created_at)
                .execute(&mut *conn)
                .await?;
            for (i, (name, kind)) in stages.iter().enumerate() {
                sqlx::query("INSERT INTO stages (run_id, name, kind, position, state) VALUES (?, ?, ?, ?, 'pending')")
                    .bind(&run.id)
                    .bind(name)
                    .bind(kind)
                    .bind(i as i64)
                    .execute(&mut *conn)
                    .await?;
            }
            let detail = format!("run started: {} {} by {}", run.pipeline, run.version, run.triggered_by);
            insert_event(conn, &run.id, None, run.created_at, "trigger", &run.triggered_by, &detail).await?;
            Ok(Written::Done)
        }
        Write::Transitions { run, items } => {
            let mut starts = Vec::with_capacity(items.len());
            for item in items {
                starts.push(update_stage(conn, run, &item.stage, &item.transition, &item.event).await?);
            }
            Ok(Written::Starts(starts))
        }
        Write::FinishRun { run, state, message, at } => {
            sqlx::query("UPDATE runs SET state = ?, finished_at = ?, message = ? WHERE id = ?")
                .bind(state.as_str())
                .bind(at)
                .bind(message)
                .bind(run)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM env_locks WHERE run_id = ?").bind(run).execute(&mut *conn).await?;
            let detail = format!("run {state}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default());
            insert_event(conn, run, None, *at, "run", "promote", &detail).await?;
            Ok(Written::Done)
        }
        Write::Decide { run, stage, user, approve, comment, kind, at } => {
            sqlx::query("INSERT OR REPLACE INTO decisions (run_id, stage, user, approve, comment, at) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(run)
                .bind(stage)
                .bind(user)
                .bind(approve)
                .bind(comment)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            let what = match (kind.as_str(), approve) {
                ("break-glass", _) => "freeze overridden (break-glass)",
                (_, true) => "approved",
                (_, false) => "rejected",
            };
            let detail = format!("{what} by {user}{}", comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default());
            insert_event(conn, run, Some(stage), *at, kind, user, &detail).await?;
            Ok(Written::Done)
        }
        Write::Exempt { run, pipeline, template, user, reason, at } => {
            sqlx::query("INSERT OR REPLACE INTO log_exemptions (pipeline, template, by_user, reason, at) VALUES (?, ?, ?, ?, ?)")
                .bind(pipeline)
                .bind(template)
                .bind(user)
                .bind(reason)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            insert_event(conn, run, None, *at, "log-exemption", user, &format!("`{template}` marked not a risk by {user}: {reason}")).await?;
            Ok(Written::Done)
        }
        Write::Lock { environment, run, at } => {
            sqlx::query("INSERT OR IGNORE INTO env_locks (environment, run_id, at) VALUES (?, ?, ?)")
                .bind(environment)
                .bind(run)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            let holder: String = sqlx::query_scalar("SELECT run_id FROM env_locks WHERE environment = ?").bind(environment).fetch_one(&mut *conn).await?;
            Ok(Written::Holder((holder != *run).then_some(holder)))
        }
        Write::Audit { run, stage, kind, actor, detail, at } => {
            insert_event(conn, run, stage.as_deref(), *at, kind, actor, detail).await?;
            Ok(Written::Done)
        }
    }
}

/// One stage transition: one UPDATE (its event row comes from the `stage_event` trigger, chained
/// by `events_chain`). Returns the stage's start time after it.
async fn update_stage(conn: &mut SqliteConnection, run: &str, stage: &str, t: &Transition, event: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE stages SET state = coalesce(?, state), attempt = coalesce(?, attempt), started_at = coalesce(?, started_at),
             finished_at = CASE WHEN ? IS NOT NULL THEN ? WHEN ? = 'running' THEN NULL ELSE finished_at END,
             message = CASE WHEN ? IS NULL THEN message WHEN ? = '' THEN NULL ELSE ? END, output = coalesce(?, output), event = ?
             WHERE run_id = ? AND name = ? RETURNING started_at",
    )
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
    .bind(event)
    .bind(run)
    .bind(stage)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| r.get::<Option<i64>, _>(0)))
}

async fn insert_event(conn: &mut SqliteConnection, run: &str, stage: Option<&str>, at: i64, kind: &str, actor: &str, detail: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (run_id, stage, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(run)
        .bind(stage)
        .bind(at)
        .bind(kind)
        .bind(actor)
        .bind(detail)
        .execute(conn)
        .await
        .map(|_| ())
}
