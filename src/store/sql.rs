//! Each write's SQL, said once for both backends: the statements are PostgreSQL's dialect that
//! SQLite (3.24 or later; its writer needs 3.45 for `jsonb_each` and `->>`, and sqlx bundles 3.51) reads as well (`$N` placeholders, `ON CONFLICT ... DO`, `TRUE`), and
//! the one difference, PostgreSQL's row locks (`FOR UPDATE`), is a parameter. What a backend keeps
//! to itself is what truly differs: how the trail's head is read, locked and moved
//! (`Head`; `Head::insert` keeps the entry for the transaction's end on both), how the frequent
//! writes' rows ([`super::batch`]) are sent (arrays or JSON), the fencing read's `FOR SHARE`, and
//! how other processes' writes are seen.
//!
//! The macro expands, in each backend's writer module, to `apply_common(conn, write, head)`: every
//! [`Write`](super::Write) but the grouped ones ([`super::batch::Group`]; a new run with a
//! delivery is written here, checked for a duplicate first). Names it calls
//! (`Head::insert`, `drives`, `supersede`, `super::read_watch`, `super::read_drift`) are the
//! backend's own, with the same signatures.

/// Running runs whose driver's lease lapsed before `$1` (or that have none), oldest first, at
/// most `$2`.
pub(crate) const ORPHANS: &str = "SELECT r.id FROM runs r LEFT JOIN drivers d ON d.run_id = r.id
                 WHERE r.state = 'running' AND (d.expires_at IS NULL OR d.expires_at < $1) ORDER BY r.created_at, r.id LIMIT $2";

/// The DORA sums of each (pipeline, environment) with deployments, and its newest deployment's
/// commit (`store::dora`): one row each, whatever the history's length.
pub(crate) const DORA: &str = "SELECT d.pipeline, d.environment, d.deployments, d.failed, d.lead_sum_ms, d.restore_count, d.restore_sum_ms,
       (SELECT max(x.committed_at) FROM dora_deployments x WHERE x.pipeline = d.pipeline AND x.environment = d.environment)
     FROM dora d WHERE d.deployments > 0 ORDER BY d.pipeline, d.environment";

/// Every waiting stage's pipeline, kind and start (else its run's): the `state = 'waiting'`
/// written out, so that both databases use the partial index `stages_waiting`.
pub(crate) const WAITING_STAGES: &str = "SELECT r.pipeline, s.kind, coalesce(s.started_at, r.created_at) FROM stages s JOIN runs r ON r.id = s.run_id
     WHERE s.state = 'waiting'";

/// Every run queued for an environment: environment, run, pipeline, lease's end, superseded by.
pub(crate) const ENV_QUEUE: &str = "SELECT environment, run_id, pipeline, expires_at, superseded_by FROM env_queue ORDER BY environment, run_id";

/// The columns of a `watches` row, in the order both backends write and read them.
pub(crate) const WATCH_COLUMNS: &str = "id, run_id, stage, pipeline, environment, version, commit_id, value, started_at, ends_at, interval_ms, next_at, state, looks, failures, errors, passes, message, evidence, marks, reverted_to, ended_at, cleared_by, cleared_at, seal, deployed_at, previous";

/// The trail's entries between `$1` and `$2` (Unix ms) of the kinds a report's timeline shows,
/// oldest first, at most `$3`.
pub const HAPPENINGS: &str = "SELECT id, run_id, stage, at, kind, actor, detail FROM events
     WHERE at >= $1 AND at <= $2 AND kind IN ('run', 'rollback', 'drift', 'drift-decision', 'compliance', 'compliance-decision', 'watch', 'watch-clear', 'superseded', 'decision', 'break-glass')
     ORDER BY at, id LIMIT $3";

/// The promotions between `$1` and `$2` (Unix ms), oldest first, at most `$3`.
pub const PROMOTIONS_BETWEEN: &str =
    "SELECT pipeline, environment, run_id, version, at, rolled_back FROM promotions WHERE at >= $1 AND at <= $2 ORDER BY at LIMIT $3";

/// The drifts a [`super::DriftFilter`] names, newest first (`$1` pipeline, `$2` environment, `$3`
/// state, `$4` id; each NULL: any), in both dialects.
pub const DRIFTS: &str =
    "SELECT id, pipeline, environment, head, baseline, commits, diff, rewritten, state, decided_by, reason, at, decided_at, seal FROM drifts
     WHERE (CAST($1 AS TEXT) IS NULL OR pipeline = $1) AND (CAST($2 AS TEXT) IS NULL OR environment = $2)
       AND (CAST($3 AS TEXT) IS NULL OR state = $3) AND (CAST($4 AS TEXT) IS NULL OR id = $4)
     ORDER BY at DESC, id DESC LIMIT 1000";

/// The columns of a [`super::ViolationRecord`], in its fields' order (it derives `FromRow`).
pub const VIOLATION_COLUMNS: &str = "id, pipeline, environment, head, policies, deny, state, decided_by, reason, until, revert_to, at, decided_at, seal";

/// The violations a [`super::ViolationFilter`] names, newest first (`$1` pipeline, `$2`
/// environment, `$3` state, `$4` id; each NULL: any), in both dialects.
pub const VIOLATIONS: &str =
    "SELECT id, pipeline, environment, head, policies, deny, state, decided_by, reason, until, revert_to, at, decided_at, seal FROM violations
     WHERE (CAST($1 AS TEXT) IS NULL OR pipeline = $1) AND (CAST($2 AS TEXT) IS NULL OR environment = $2)
       AND (CAST($3 AS TEXT) IS NULL OR state = $3) AND (CAST($4 AS TEXT) IS NULL OR id = $4)
     ORDER BY at DESC, id DESC LIMIT 1000";

/// The most stages one INSERT of a run's stages carries (4 parameters each, and the run's id).
pub(crate) const STAGE_ROWS: usize = 500;

/// `INSERT INTO stages` of `rows` pending stages of run `$1`: each row's name, kind, position
/// and seal.
pub(crate) fn insert_stages(rows: usize) -> String {
    let values: Vec<String> = (0..rows).map(|i| format!("($1, ${}, ${}, ${}, 'pending', ${})", 4 * i + 2, 4 * i + 3, 4 * i + 4, 4 * i + 5)).collect();
    format!("INSERT INTO stages (run_id, name, kind, position, state, seal) VALUES {}", values.join(", "))
}

/// `apply_common` for connection type `$Conn`; `$lock` follows a read whose rows the write
/// then changes (`" FOR UPDATE"` on PostgreSQL, `""` on SQLite, whose writer holds the database).
macro_rules! common_writes {
    ($Conn:ty, $lock:literal) => {
async fn apply_common(conn: &mut $Conn, write: &Write, head: &mut Head) -> Result<Written, sqlx::Error> {
    match write {
        Write::Transitions { .. } => unreachable!("each backend writes transitions itself"),
        Write::CreateRun { run, stages, delivery, driver } => {
            if let Some(d) = delivery {
                let inserted = sqlx::query(
                    "INSERT INTO deliveries (provider, delivery_id, body_hash, pipeline, version, run_id, at, origin_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT DO NOTHING",
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
                        "SELECT run_id FROM deliveries WHERE (provider = $1 AND delivery_id = $2 AND pipeline = $3) OR (pipeline = $3 AND version = $4) ORDER BY at LIMIT 1",
                    )
                    .bind(&d.provider)
                    .bind(&d.id)
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
                "INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at, authenticated, seal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            // Every stage in one statement (up to STAGE_ROWS a statement): one round trip to the
            // database, not one a stage.
            for (c, chunk) in stages.chunks(crate::store::sql::STAGE_ROWS).enumerate() {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(crate::store::sql::insert_stages(chunk.len()))).bind(&run.id);
                for (j, (name, kind)) in chunk.iter().enumerate() {
                    q = q
                        .bind(name)
                        .bind(kind)
                        .bind((c * crate::store::sql::STAGE_ROWS + j) as i64)
                        .bind(seals::stage(&head.key, &run.id, name, StageState::Pending.as_str()));
                }
                q.execute(&mut *conn).await?;
            }
            if let Some((holder, expires_at)) = driver {
                sqlx::query("INSERT INTO drivers (run_id, holder, expires_at) VALUES ($1, $2, $3)").bind(&run.id).bind(holder).bind(expires_at).execute(&mut *conn).await?;
            }
            head.insert(conn, &run.id, None, run.created_at, $crate::store::EntryKind::Trigger, &run.triggered_by, &texts::run_started(run)).await?;
            Ok(Written::Done)
        }
        // Written together, a batch's at a time, by each backend (`store::batch`).
        Write::FinishRun { .. } | Write::Drive { .. } => unreachable!("runs' ends and drivers' claims are grouped"),
        Write::Decide { run, stage, user, approve, comment, kind, at, via } => {
            let decided = sqlx::query(
                "INSERT INTO decisions (run_id, stage, \"user\", approve, comment, at, seal) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (run_id, stage, \"user\") DO NOTHING",
            )
            .bind(run)
            .bind(stage)
            .bind(user)
            .bind(approve)
            .bind(comment)
            .bind(at)
            .bind(seals::decision(&head.key, run, stage, user, *approve, comment.as_deref(), *at))
            .execute(&mut *conn)
            .await?;
            if decided.rows_affected() == 0 {
                return Ok(Written::Duplicate(None));
            }
            let detail = texts::vouched(texts::decided(kind.as_str(), *approve, user, comment.as_deref()), via.as_deref());
            head.insert(conn, run, Some(stage), *at, *kind, user, &detail).await?;
            Ok(Written::Done)
        }
        Write::Exempt { run, pipeline, template, user, reason, at, via } => {
            let marked: Option<String> = sqlx::query_scalar("SELECT by_user FROM log_exemptions WHERE pipeline = $1 AND template = $2")
                .bind(pipeline)
                .bind(template)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(by) = marked {
                return Ok(Written::Duplicate(Some(by)));
            }
            sqlx::query(
                "INSERT INTO log_exemptions (pipeline, template, by_user, reason, at, seal) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (pipeline, template) DO NOTHING",
            )
            .bind(pipeline)
            .bind(template)
            .bind(user)
            .bind(reason)
            .bind(at)
            .bind(seals::exemption(&head.key, pipeline, template, user, reason, *at))
            .execute(&mut *conn)
            .await?;
            head.insert(conn, run, None, *at, $crate::store::EntryKind::LogExemption, user, &texts::vouched(texts::exempted(template, user, reason), via.as_deref())).await?;
            Ok(Written::Done)
        }
        Write::RecordDrift { drift: d } => {
            let commits = serde_json::to_string(&d.commits).unwrap_or_else(|_| "[]".into());
            let seal = seals::drift(&head.key, &d.id, &d.pipeline, &d.environment, &d.head, d.baseline.as_deref(), d.state.as_str(), d.decided_by.as_deref());
            let inserted = sqlx::query(
                "INSERT INTO drifts (id, pipeline, environment, head, baseline, commits, diff, rewritten, state, decided_by, reason, at, decided_at, seal)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
            )
            .bind(&d.id)
            .bind(&d.pipeline)
            .bind(&d.environment)
            .bind(&d.head)
            .bind(&d.baseline)
            .bind(commits)
            .bind(&d.diff)
            .bind(d.rewritten)
            .bind(d.state.as_str())
            .bind(&d.decided_by)
            .bind(&d.reason)
            .bind(d.at)
            .bind(d.decided_at)
            .bind(seal)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 0 {
                let first: Option<String> = sqlx::query_scalar("SELECT id FROM drifts WHERE pipeline = $1 AND environment = $2 AND head = $3")
                    .bind(&d.pipeline)
                    .bind(&d.environment)
                    .bind(&d.head)
                    .fetch_optional(&mut *conn)
                    .await?;
                return Ok(Written::Duplicate(first));
            }
            let detail = texts::drift_recorded(d);
            head.insert(conn, $crate::store::NO_RUN, None, d.at, $crate::store::EntryKind::Drift, "promote", &detail).await?;
            Ok(Written::Done)
        }
        Write::DecideDrift { id, from, state, user, reason, at, via } => {
            let row: Option<(String, String, String, Option<String>)> =
                sqlx::query_as(concat!("SELECT pipeline, environment, head, baseline FROM drifts WHERE id = $1 AND state = $2", $lock))
                    .bind(id)
                    .bind(from.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some((pipeline, environment, drift_head, baseline)) = row else { return Ok(Written::Duplicate(None)) };
            let seal = seals::drift(&head.key, id, &pipeline, &environment, &drift_head, baseline.as_deref(), state.as_str(), Some(user));
            sqlx::query("UPDATE drifts SET state = $1, decided_by = $2, reason = $3, decided_at = $4, seal = $5 WHERE id = $6")
                .bind(state.as_str())
                .bind(user)
                .bind(reason)
                .bind(at)
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let detail = texts::vouched(texts::drift_decided(&pipeline, id, &environment, state.as_str(), user, reason.as_deref()), via.as_deref());
            head.insert(conn, $crate::store::NO_RUN, None, *at, $crate::store::EntryKind::DriftDecision, user, &detail).await?;
            Ok(Written::Done)
        }
        Write::RecordViolation { violation: v } => {
            let seal = seals::violation(&head.key, v);
            let inserted = sqlx::query(
                "INSERT INTO violations (id, pipeline, environment, head, policies, deny, state, decided_by, reason, until, revert_to, at, decided_at, seal)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
            )
            .bind(&v.id)
            .bind(&v.pipeline)
            .bind(&v.environment)
            .bind(&v.head)
            .bind(&v.policies)
            .bind(serde_json::to_string(&v.deny).unwrap_or_else(|_| "[]".into()))
            .bind(v.state.as_str())
            .bind(&v.decided_by)
            .bind(&v.reason)
            .bind(v.until)
            .bind(&v.revert_to)
            .bind(v.at)
            .bind(v.decided_at)
            .bind(seal)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 0 {
                let first: Option<String> = sqlx::query_scalar("SELECT id FROM violations WHERE pipeline = $1 AND environment = $2 AND head = $3 AND policies = $4")
                    .bind(&v.pipeline)
                    .bind(&v.environment)
                    .bind(&v.head)
                    .bind(&v.policies)
                    .fetch_optional(&mut *conn)
                    .await?;
                return Ok(Written::Duplicate(first));
            }
            head.insert(conn, $crate::store::NO_RUN, None, v.at, $crate::store::EntryKind::Compliance, "promote", &texts::violation_recorded(v)).await?;
            Ok(Written::Done)
        }
        Write::DecideViolation { id, from, state, user, reason, until, revert_to, at, via } => {
            let found: Option<$crate::store::ViolationRecord> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {} FROM violations WHERE id = $1 AND state = $2{}", $crate::store::sql::VIOLATION_COLUMNS, $lock)))
                    .bind(id)
                    .bind(from)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some(mut v) = found else { return Ok(Written::Duplicate(None)) };
            v.state = *state;
            v.decided_by = Some(user.clone());
            v.reason = reason.clone();
            v.until = *until;
            v.revert_to = revert_to.clone().or(v.revert_to);
            v.decided_at = Some(*at);
            let seal = seals::violation(&head.key, &v);
            sqlx::query("UPDATE violations SET state = $1, decided_by = $2, reason = $3, until = $4, revert_to = $5, decided_at = $6, seal = $7 WHERE id = $8")
                .bind(state.as_str())
                .bind(user)
                .bind(reason)
                .bind(until)
                .bind(&v.revert_to)
                .bind(at)
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let detail = texts::vouched(texts::violation_decided(&v.pipeline, id, &v.environment, state.as_str(), user, *until, reason.as_deref()), via.as_deref());
            head.insert(conn, $crate::store::NO_RUN, None, *at, $crate::store::EntryKind::ComplianceDecision, user, &detail).await?;
            Ok(Written::Done)
        }
        Write::BeginWatch { watch: w } => {
            let mut w = (**w).clone();
            w.seal = Some(seals::watch(&head.key, &w));
            let placeholders: Vec<String> = (1..=27).map(|i| format!("${i}")).collect();
            // (Only constants are formatted in.)
            let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO watches ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                $crate::store::sql::WATCH_COLUMNS,
                placeholders.join(", ")
            )))
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
            .bind(w.state.as_str())
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
                let first: Option<String> = sqlx::query_scalar("SELECT id FROM watches WHERE run_id = $1 AND stage = $2")
                    .bind(&w.run)
                    .bind(&w.stage)
                    .fetch_optional(&mut *conn)
                    .await?;
                return Ok(Written::Duplicate(first));
            }
            let by = format!("the promotion of {} by run {}", w.version, w.run);
            supersede(conn, head, &w.pipeline, &w.environment, &by, Some(&w.id), w.started_at).await?;
            let detail = texts::watch_begun(&w);
            head.insert(conn, &w.run, Some(&w.stage), w.started_at, $crate::store::EntryKind::Watch, "promote", &detail).await?;
            Ok(Written::Done)
        }
        Write::SupersedeWatches { pipeline, environment, by, except, at } => {
            supersede(conn, head, pipeline, environment, by, except.as_deref(), *at).await?;
            Ok(Written::Done)
        }
        Write::ClaimWatch { id, due, next_at } => {
            let taken = sqlx::query("UPDATE watches SET next_at = $1 WHERE id = $2 AND next_at = $3 AND state IN ('watching', 'reverting')")
                .bind(next_at)
                .bind(id)
                .bind(due)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(Written::Renewed(taken == 1))
        }
        Write::WatchLooked { id, failed, errored, passed, message, evidence } => {
            let Some(mut w) = read_watch(conn, id).await? else { return Ok(Written::Duplicate(None)) };
            w.looks += 1;
            w.failures += i64::from(*failed);
            w.errors = if *errored { w.errors + 1 } else { 0 };
            w.passes += i64::from(*passed);
            let seal = seals::watch(&head.key, &w);
            sqlx::query("UPDATE watches SET looks = $1, failures = $2, errors = $3, passes = $4, message = $5, evidence = $6, seal = $7 WHERE id = $8")
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
            let Some(mut w) = read_watch(conn, id).await? else { return Ok(Written::Duplicate(None)) };
            w.state = state.clone();
            let seal = seals::watch(&head.key, &w);
            let ended = (*state != $crate::store::WatchState::Reverting).then_some(*at);
            sqlx::query("UPDATE watches SET state = $1, message = $2, reverted_to = coalesce($3, reverted_to), ended_at = $4, seal = $5 WHERE id = $6")
                .bind(state.as_str())
                .bind(message)
                .bind(reverted_to)
                .bind(ended)
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            if *reverted {
                sqlx::query("UPDATE runs SET state = 'reverted', message = $1 WHERE id = $2").bind(message).bind(&w.run).execute(&mut *conn).await?;
                head.insert(conn, &w.run, None, *at, $crate::store::EntryKind::Run, "promote", &format!("run reverted: {message}")).await?;
            }
            let detail = texts::watch_ended(&w, state.as_str(), message);
            head.insert(conn, &w.run, Some(&w.stage), *at, $crate::store::EntryKind::Watch, "promote", &detail).await?;
            Ok(Written::Done)
        }
        Write::ClearWatch { id, user, reason, at, via } => {
            let Some(mut w) = read_watch(conn, id).await? else { return Ok(Written::Duplicate(None)) };
            if w.cleared_by.is_some() {
                return Ok(Written::Duplicate(w.cleared_by.clone()));
            }
            w.cleared_by = Some(user.clone());
            let seal = seals::watch(&head.key, &w);
            sqlx::query("UPDATE watches SET cleared_by = $1, cleared_at = $2, clear_reason = $3, seal = $4 WHERE id = $5")
                .bind(user)
                .bind(at)
                .bind(reason)
                .bind(seal)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let detail = texts::vouched(texts::watch_cleared(&w, user, reason), via.as_deref());
            head.insert(conn, &w.run, Some(&w.stage), *at, $crate::store::EntryKind::WatchClear, user, &detail).await?;
            Ok(Written::Done)
        }
        Write::Lock { environment, pipeline, run, supersede, at, expires_at } => {
            // The head row's lock already serialises every writer; the row locks make it plain.
            let held: Option<(String, i64)> = sqlx::query_as(concat!("SELECT run_id, expires_at FROM env_locks WHERE environment = $1", $lock))
                .bind(environment)
                .fetch_optional(&mut *conn)
                .await?;
            let queue: Vec<(String, String, i64, Option<String>)> =
                sqlx::query_as(concat!("SELECT run_id, pipeline, expires_at, superseded_by FROM env_queue WHERE environment = $1", $lock))
                    .bind(environment)
                    .fetch_all(&mut *conn)
                    .await?;
            let queue: Vec<Queued> =
                queue.into_iter().map(|(run, pipeline, expires_at, superseded_by)| Queued { run, pipeline, expires_at, superseded_by }).collect();
            let step = QueueStep::of(held, &queue, run, pipeline, *supersede, *at);
            for older in &step.supersedes {
                sqlx::query("UPDATE env_queue SET superseded_by = $1 WHERE environment = $2 AND run_id = $3")
                    .bind(run)
                    .bind(environment)
                    .bind(older)
                    .execute(&mut *conn)
                    .await?;
                head.insert(conn, older, None, *at, $crate::store::EntryKind::Superseded, "promote", &texts::superseded_in_queue(environment, run)).await?;
            }
            if step.queued {
                sqlx::query(
                    "INSERT INTO env_queue (environment, run_id, pipeline, since, expires_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (environment, run_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                )
                .bind(environment)
                .bind(run)
                .bind(pipeline)
                .bind(at)
                .bind(expires_at)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query("DELETE FROM env_queue WHERE environment = $1 AND run_id = $2").bind(environment).bind(run).execute(&mut *conn).await?;
            }
            if let Some((holder, until)) = &step.took_over {
                head.insert(conn, run, None, *at, $crate::store::EntryKind::LockTakeover, "promote", &texts::lock_taken_over(environment, holder, *until)).await?;
            }
            if step.state == LockState::Taken {
                sqlx::query(
                    "INSERT INTO env_locks (environment, run_id, at, expires_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (environment) DO UPDATE SET run_id = EXCLUDED.run_id, at = EXCLUDED.at, expires_at = EXCLUDED.expires_at",
                )
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
            let gone = sqlx::query("DELETE FROM env_locks WHERE environment = $1 AND run_id = $2")
                .bind(environment)
                .bind(run)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if gone == 1 {
                head.insert(conn, run, Some(stage), *at, $crate::store::EntryKind::Release, "promote", &texts::released(environment)).await?;
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
                sqlx::query("UPDATE promotions SET rolled_back = TRUE WHERE pipeline = $1 AND environment = $2 AND run_id = $3")
                    .bind(pipeline)
                    .bind(environment)
                    .bind(run)
                    .execute(&mut *conn)
                    .await?;
            } else {
                sqlx::query("INSERT INTO promotions (pipeline, environment, run_id, version, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
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
        Write::Renew { run, holder, expires_at } => {
            let ours = sqlx::query("UPDATE drivers SET expires_at = $1 WHERE run_id = $2 AND holder = $3")
                .bind(expires_at)
                .bind(run)
                .bind(holder)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                == 1;
            if ours {
                sqlx::query("UPDATE env_locks SET expires_at = $1 WHERE run_id = $2").bind(expires_at).bind(run).execute(&mut *conn).await?;
                sqlx::query("UPDATE env_queue SET expires_at = $1 WHERE run_id = $2").bind(expires_at).bind(run).execute(&mut *conn).await?;
            }
            Ok(Written::Renewed(ours))
        }
        Write::ClaimPoll { source, holder, now, next_at } => {
            let taken = sqlx::query(
                "INSERT INTO poll_claims (source, holder, next_at) VALUES ($1, $2, $3) ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, next_at = excluded.next_at WHERE poll_claims.next_at <= $4",
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
            sqlx::query("UPDATE poll_claims SET next_at = $1 WHERE source = $2 AND holder = $3")
                .bind(next_at)
                .bind(source)
                .bind(holder)
                .execute(&mut *conn)
                .await?;
            Ok(Written::Done)
        }
        Write::Polled { source, refs } => {
            sqlx::query("DELETE FROM polled WHERE source = $1").bind(source).execute(&mut *conn).await?;
            for (r, oid) in std::iter::once(&(String::new(), String::new())).chain(refs) {
                sqlx::query("INSERT INTO polled (source, ref, oid) VALUES ($1, $2, $3)").bind(source).bind(r).bind(oid).execute(&mut *conn).await?;
            }
            Ok(Written::Done)
        }
        Write::Release { run, holder } => {
            sqlx::query("DELETE FROM drivers WHERE run_id = $1 AND holder = $2").bind(run).bind(holder).execute(&mut *conn).await?;
            Ok(Written::Done)
        }
        Write::OpenSession { session: x } => {
            sqlx::query(
                "INSERT INTO sessions (id_hash, login, via, token_hash, groups, created_at, seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
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
            head.insert(conn, $crate::store::NO_RUN, None, x.created_at, $crate::store::EntryKind::SignIn, &x.login, &x.detail).await?;
            Ok(Written::Done)
        }
        Write::SeenSession { id_hash, at } => {
            sqlx::query("UPDATE sessions SET seen_at = $1 WHERE id_hash = $2 AND ended_at IS NULL").bind(at).bind(id_hash).execute(&mut *conn).await?;
            Ok(Written::Done)
        }
        Write::EndSessions { id_hash, login, kind, by, detail, at } => {
            let ended = sqlx::query("UPDATE sessions SET ended_at = $1 WHERE ended_at IS NULL AND (id_hash = $2 OR login = $3)")
                .bind(at)
                .bind(id_hash)
                .bind(login)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if ended > 0 {
                head.insert(conn, $crate::store::NO_RUN, None, *at, *kind, by, detail).await?;
            }
            Ok(Written::Renewed(ended > 0))
        }
        Write::ClaimNote { run, stage, since, kind, seq, detail, at } => {
            let taken = sqlx::query(
                "INSERT INTO approval_notes (run_id, stage, since, kind, seq, at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, stage, since, kind) DO UPDATE SET seq = excluded.seq, at = excluded.at WHERE approval_notes.seq < excluded.seq",
            )
            .bind(run)
            .bind(stage)
            .bind(since)
            .bind(kind.as_str())
            .bind(seq)
            .bind(at)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if taken {
                head.insert(conn, run, Some(stage), *at, *kind, "promote", detail).await?;
            }
            Ok(Written::Renewed(taken))
        }
        Write::Audit { run, stage, kind, actor, detail, at } => {
            head.insert(conn, run.as_deref().unwrap_or($crate::store::NO_RUN), stage.as_deref(), *at, *kind, actor, detail).await?;
            // A rollback by hand that committed: the deployment it undid failed (the DORA figures).
            if run.is_none()
                && *kind == $crate::store::EntryKind::Rollback
                && let Some((pipeline, environment)) = $crate::store::dora::rollback_target(detail)
            {
                dora_rollback(conn, pipeline, environment, *at).await?;
            }
            Ok(Written::Done)
        }
    }
}

/// One watch, inside the writer's transaction (its row locked).
async fn read_watch(conn: &mut $Conn, id: &str) -> Result<Option<$crate::store::WatchRecord>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {}, clear_reason FROM watches WHERE id = $1{}", $crate::store::sql::WATCH_COLUMNS, $lock)))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.as_ref().map(super::watch_of))
}

/// Ends the active watches of an environment (but `except`) as `superseded`, each with its entry.
async fn supersede(
    conn: &mut $Conn,
    head: &mut Head,
    pipeline: &str,
    environment: &str,
    by: &str,
    except: Option<&str>,
    at: i64,
) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM watches WHERE pipeline = $1 AND environment = $2 AND state IN ('watching', 'reverting') AND id <> coalesce($3, '') ORDER BY started_at",
    )
    .bind(pipeline)
    .bind(environment)
    .bind(except)
    .fetch_all(&mut *conn)
    .await?;
    for id in ids {
        let Some(mut w) = read_watch(conn, &id).await? else { continue };
        w.state = crate::store::WatchState::Superseded;
        let (message, detail) = texts::watch_superseded(&w, by);
        sqlx::query("UPDATE watches SET state = 'superseded', message = $1, ended_at = $2, seal = $3 WHERE id = $4")
            .bind(&message)
            .bind(at)
            .bind(seals::watch(&head.key, &w))
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        head.insert(conn, &w.run, Some(&w.stage), at, $crate::store::EntryKind::Watch, "promote", &detail).await?;
    }
    Ok(())
}

    };
}
pub(crate) use common_writes;

/// The backend's reads that are the same SQL on both (`$N` placeholders, `CAST($1 AS TEXT)` for a
/// NULL test, `FALSE`), as associated items of `impl Backend for ...`; `self.pool` and
/// `self.db()` (the error's mapping) are each backend's own.
macro_rules! common_reads {
    () => {
        fn last_change_of<'a>(&'a self, run: &'a str) -> $crate::store::Fut<'a, i64> {
            Box::pin(async move {
                sqlx::query_scalar("SELECT CAST(coalesce(max(id), 0) AS BIGINT) FROM events WHERE run_id = $1").bind(run).fetch_one(&self.pool).await.map_err(self.db())
            })
        }

        fn violations<'a>(&'a self, f: $crate::store::ViolationFilter<'a>) -> $crate::store::Fut<'a, Vec<$crate::store::ViolationRecord>> {
            Box::pin(async move {
                sqlx::query_as($crate::store::sql::VIOLATIONS)
                    .bind(f.pipeline)
                    .bind(f.environment)
                    .bind(f.state.map(|s| s.as_str()))
                    .bind(f.id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(self.db())
            })
        }

        fn happenings(&self, from: i64, to: i64, limit: i64) -> $crate::store::Fut<'_, Vec<$crate::store::Happening>> {
            Box::pin(async move { sqlx::query_as($crate::store::sql::HAPPENINGS).bind(from).bind(to).bind(limit).fetch_all(&self.pool).await.map_err(self.db()) })
        }

        fn promotions_between(&self, from: i64, to: i64, limit: i64) -> $crate::store::Fut<'_, Vec<$crate::store::PromotionRecord>> {
            Box::pin(async move {
                sqlx::query_as($crate::store::sql::PROMOTIONS_BETWEEN).bind(from).bind(to).bind(limit).fetch_all(&self.pool).await.map_err(self.db())
            })
        }

        fn drifts<'a>(&'a self, f: $crate::store::DriftFilter<'a>) -> $crate::store::Fut<'a, Vec<$crate::store::DriftRecord>> {
            Box::pin(async move {
                sqlx::query_as($crate::store::sql::DRIFTS).bind(f.pipeline).bind(f.environment).bind(f.state.map(|s| s.as_str())).bind(f.id).fetch_all(&self.pool).await.map_err(self.db())
            })
        }

        fn dora(&self) -> $crate::store::Fut<'_, Vec<((String, String), $crate::store::dora::Dora)>> {
            Box::pin(async move {
                let rows: Vec<(String, String, i64, i64, i64, i64, i64, Option<i64>)> = sqlx::query_as($crate::store::sql::DORA).fetch_all(&self.pool).await.map_err(self.db())?;
                let buckets: Vec<(String, String, String, i64, i64)> =
                    sqlx::query_as("SELECT pipeline, environment, metric, bucket, n FROM dora_buckets WHERE n <> 0").fetch_all(&self.pool).await.map_err(self.db())?;
                let mut out: std::collections::BTreeMap<(String, String), $crate::store::dora::Dora> = std::collections::BTreeMap::new();
                for (pipeline, environment, deployments, failed, lead_sum_ms, restore_count, restore_sum_ms, last) in rows {
                    let d = out.entry((pipeline, environment)).or_default();
                    d.deployments = deployments as u64;
                    d.failed = failed as u64;
                    d.lead_time.count = deployments as u64;
                    d.lead_time.sum_ms = lead_sum_ms;
                    d.time_to_restore.count = restore_count as u64;
                    d.time_to_restore.sum_ms = restore_sum_ms;
                    d.last_deployment = last;
                }
                for (pipeline, environment, metric, bucket, n) in buckets {
                    let Some(d) = out.get_mut(&(pipeline, environment)) else { continue };
                    let h = if metric == "lead" { &mut d.lead_time } else { &mut d.time_to_restore };
                    if let Some(b) = h.buckets.get_mut(bucket as usize) {
                        *b = n as u64;
                    }
                }
                Ok(out.into_iter().collect())
            })
        }

        fn waiting_stages(&self) -> $crate::store::Fut<'_, Vec<(String, String, i64)>> {
            Box::pin(async move { sqlx::query_as($crate::store::sql::WAITING_STAGES).fetch_all(&self.pool).await.map_err(self.db()) })
        }

        fn env_locks(&self) -> $crate::store::Fut<'_, Vec<$crate::store::Lease>> {
            Box::pin(async move {
                let rows: Vec<(String, String, i64)> =
                    sqlx::query_as("SELECT environment, run_id, expires_at FROM env_locks ORDER BY environment").fetch_all(&self.pool).await.map_err(self.db())?;
                Ok(rows.into_iter().map(|(what, holder, expires_at)| $crate::store::Lease { what, holder, expires_at }).collect())
            })
        }

        fn env_queue(&self) -> $crate::store::Fut<'_, Vec<(String, $crate::store::Queued)>> {
            Box::pin(async move {
                let rows: Vec<(String, String, String, i64, Option<String>)> =
                    sqlx::query_as($crate::store::sql::ENV_QUEUE).fetch_all(&self.pool).await.map_err(self.db())?;
                Ok(rows
                    .into_iter()
                    .map(|(e, run, pipeline, expires_at, superseded_by)| (e, $crate::store::Queued { run, pipeline, expires_at, superseded_by }))
                    .collect())
            })
        }

        fn orphans(&self, now: i64, limit: i64) -> $crate::store::Fut<'_, Vec<String>> {
            Box::pin(async move { sqlx::query_scalar($crate::store::sql::ORPHANS).bind(now).bind(limit).fetch_all(&self.pool).await.map_err(self.db()) })
        }

        fn last_promotion<'a>(&'a self, pipeline: &'a str, environment: &'a str) -> $crate::store::Fut<'a, Option<(String, String)>> {
            Box::pin(async move {
                sqlx::query_as("SELECT run_id, version FROM promotions WHERE pipeline = $1 AND environment = $2 AND rolled_back = FALSE ORDER BY at DESC, run_id DESC LIMIT 1")
                    .bind(pipeline)
                    .bind(environment)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(self.db())
            })
        }

        fn polled<'a>(&'a self, source: &'a str) -> $crate::store::Fut<'a, Option<Vec<(String, String)>>> {
            Box::pin(async move {
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT ref, oid FROM polled WHERE source = $1 ORDER BY ref").bind(source).fetch_all(&self.pool).await.map_err(self.db())?;
                // The empty ref marks a source polled once, even when it had no refs.
                Ok((!rows.is_empty()).then(|| rows.into_iter().filter(|(r, _)| !r.is_empty()).collect()))
            })
        }

        fn session<'a>(&'a self, id_hash: &'a str) -> $crate::store::Fut<'a, Option<$crate::store::SessionRecord>> {
            Box::pin(async move {
                let row: Option<$crate::store::records::SessionRow> =
                    sqlx::query_as("SELECT id_hash, login, via, token_hash, groups, created_at, seen_at, expires_at, ended_at FROM sessions WHERE id_hash = $1")
                        .bind(id_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(self.db())?;
                Ok(row.map($crate::store::SessionRecord::from))
            })
        }

        fn driver<'a>(&'a self, run: &'a str) -> $crate::store::Fut<'a, Option<$crate::store::Lease>> {
            Box::pin(async move {
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT holder, expires_at FROM drivers WHERE run_id = $1").bind(run).fetch_optional(&self.pool).await.map_err(self.db())?;
                Ok(row.map(|(holder, expires_at)| $crate::store::Lease { what: run.to_string(), holder, expires_at }))
            })
        }

        fn exempt_templates<'a>(&'a self, pipeline: &'a str) -> $crate::store::Fut<'a, Vec<$crate::store::Exemption>> {
            Box::pin(async move {
                let rows: Vec<(String, String, String, i64, Option<String>)> =
                    sqlx::query_as("SELECT template, by_user, reason, at, seal FROM log_exemptions WHERE pipeline = $1 ORDER BY at")
                        .bind(pipeline)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(self.db())?;
                Ok(rows.into_iter().map(|(template, user, reason, at, seal)| $crate::store::Exemption { template, user, reason, at, seal }).collect())
            })
        }
    };
}

/// The readers of the rows both backends read alike, for row type `$Row`: `stage_row`, `run_of`,
/// `watch_of`.
macro_rules! row_readers {
    ($Row:ty) => {
        fn stage_row(r: &$Row, at: usize) -> $crate::store::StageRecord {
            $crate::store::StageRecord {
                name: r.get(at),
                kind: r.get(at + 1),
                state: r.get::<String, _>(at + 2).parse().unwrap_or($crate::store::StageState::Pending),
                attempt: r.get(at + 3),
                started_at: r.get(at + 4),
                finished_at: r.get(at + 5),
                message: r.get(at + 6),
                output: r.get::<Option<String>, _>(at + 7).and_then(|s| serde_json::from_str(&s).ok()),
                seal: r.get(at + 8),
            }
        }

        fn run_of(r: &$Row) -> $crate::store::RunRecord {
            $crate::store::RunRecord {
                id: r.get(0),
                pipeline: r.get(1),
                file: r.get(2),
                source: r.get(3),
                version: r.get(4),
                state: r.get::<String, _>(5).parse().unwrap_or($crate::store::RunState::Running),
                triggered_by: r.get(6),
                created_at: r.get(7),
                finished_at: r.get(8),
                message: r.get(9),
                authenticated: r.get(10),
                seal: r.get(11),
            }
        }

        /// A `watches` row read with [`WATCH_COLUMNS`]($crate::store::sql::WATCH_COLUMNS) and `clear_reason`.
        fn watch_of(r: &$Row) -> $crate::store::WatchRecord {
            let json = |i: usize| r.get::<Option<String>, _>(i).and_then(|t| serde_json::from_str(&t).ok());
            $crate::store::WatchRecord {
                id: r.get(0),
                run: r.get(1),
                stage: r.get(2),
                pipeline: r.get(3),
                environment: r.get(4),
                version: r.get(5),
                commit: r.get(6),
                value: r.get(7),
                started_at: r.get(8),
                ends_at: r.get(9),
                interval_ms: r.get(10),
                next_at: r.get(11),
                // A state this version does not know reads as `error` (its seal, over the stored name, then fails).
                state: r.get::<String, _>(12).parse().unwrap_or($crate::store::WatchState::Error),
                looks: r.get(13),
                failures: r.get(14),
                errors: r.get(15),
                passes: r.get(16),
                message: r.get(17),
                evidence: json(18),
                marks: json(19),
                reverted_to: r.get(20),
                ended_at: r.get(21),
                cleared_by: r.get(22),
                cleared_at: r.get(23),
                seal: r.get(24),
                deployed_at: r.get(25),
                previous: r.get(26),
                clear_reason: r.get(27),
            }
        }
    };
}
pub(crate) use common_reads;
pub(crate) use row_readers;
