//! The PostgreSQL backend of the state port, for several `promote serve` replicas on one
//! database: the schema migrated by whichever replica starts first (`schema`), writes grouped
//! by one writer task per replica, each transaction chaining its entries at its end under the
//! trail's head row (`writer`), reads on a pool, and other replicas' commits heard through LISTEN/NOTIFY.

pub mod schema;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use tokio::sync::{Notify, mpsc, oneshot};

use super::chain::{Entry, Tamper, Verdict};
use super::{Backend, Change, Decision, Event, Fut, RunRecord, StageOf, StageRecord, StageState, StoreError, WatchFilter, WatchRecord, Write, Written};

use crate::store::sql::WATCH_COLUMNS;
const RUN_COLUMNS: &str = "id, pipeline, file, source, version, state, triggered_by, created_at, finished_at, message, authenticated, seal";
const STAGE_COLUMNS: &str = "name, kind, state, attempt, started_at, finished_at, message, output, seal";
/// The stage's columns without its message and output (read as `None`).
const STAGE_COLUMNS_LIGHT: &str = "name, kind, state, attempt, started_at, finished_at, CAST(NULL AS TEXT), CAST(NULL AS TEXT), seal";
const ENTRY_COLUMNS: &str = "id, run_id, stage, at, kind, actor, detail, prev_hash, hash";

/// The channel every replica listens on (the trigger on `events` notifies it at each commit).
pub const CHANNEL: &str = "promote_changes";

/// Whether a state location names a PostgreSQL database.
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// A database URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "postgres://(unparsable URL)".to_string(),
    }
}

fn db(path: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError::db(path, e)
}

/// How long a start waits for a database that does not answer yet (a pod that comes up before
/// its database, a database restarting): `PROMOTE_DATABASE_WAIT` seconds, default 60; `0` tries
/// once.
pub fn wait() -> Duration {
    let s = std::env::var("PROMOTE_DATABASE_WAIT").ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(60);
    Duration::from_secs(s.min(3600))
}

/// Whether a failed connection may succeed later: the database is not reachable (refused, no
/// route, its name not resolved yet) or is starting up, shutting down or recovering; not a
/// refused password or a missing database.
fn not_answering(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// Connects once, trying again with backoff (0.25 s doubling to 5 s) while the database does not
/// answer, for up to `wait`, saying so in the log at each try.
async fn wait_for(options: &PgConnectOptions, path: &str, wait: Duration) -> Result<(), StoreError> {
    use sqlx::Connection;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = wait.saturating_sub(started.elapsed());
        let attempt = tokio::time::timeout(left.max(Duration::from_secs(1)).min(Duration::from_secs(10)), PgConnection::connect_with(options)).await;
        let e = match attempt {
            Ok(Ok(c)) => {
                let _ = c.close().await;
                if tries > 1 {
                    tracing::warn!(database = %path, waited_ms = started.elapsed().as_millis() as u64, "the database answers: starting");
                }
                return Ok(());
            }
            Ok(Err(e)) if not_answering(&e) => e.to_string(),
            Ok(Err(e)) => return Err(StoreError::db(path, e)),
            Err(_) => "no answer to the connection".to_string(),
        };
        let waited = started.elapsed();
        if waited + delay > wait {
            return Err(StoreError::Unreachable { path: path.to_string(), waited_s: waited.as_secs(), message: crate::redact::text(&e).into_owned() });
        }
        tracing::warn!(
            database = %path,
            error = %crate::redact::text(&e),
            "waiting for the database: it does not answer yet; trying again in {} (giving up {} s after the start, PROMOTE_DATABASE_WAIT)",
            crate::clock::humanize(delay),
            wait.as_secs()
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A promote state in a PostgreSQL database.
pub struct PgBackend {
    pool: PgPool,
    options: PgConnectOptions,
    /// The URL without its password.
    path: String,
    key: crate::seal::Key,
    writes: std::sync::RwLock<Option<mpsc::Sender<writer::Job>>>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PgBackend {
    /// Connects to the database at `url`, migrating it to the current schema (once, whichever
    /// replica comes first), and starts this replica's writer. Chains and seals with `key`.
    pub async fn open(url: &str, key: crate::seal::Key) -> Result<PgBackend, StoreError> {
        let path = redacted(url);
        // Its password is a secret like any other: scrubbed from whatever a driver error says.
        if let Some(pw) = url::Url::parse(url).ok().and_then(|u| u.password().map(String::from)) {
            let _ = crate::secret::Secret::new(pw);
        }
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| StoreError::Db { path: path.clone(), message: e.to_string(), code: None })?;
        // A process paused or cut off in the middle of a transaction (SIGSTOP, a stalled VM) would
        // hold the trail's head, and with it every replica's writes, for as long as it stays so:
        // the server ends such a session after a lease (the process's lease lapses then anyway).
        let stall = super::lease_duration().as_millis().to_string();
        let options = options.options([("idle_in_transaction_session_timeout", stall.as_str())]);
        wait_for(&options, &path, wait()).await?;
        let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect_with(options.clone()).await.map_err(db(&path))?;
        schema::migrate(&pool, &path).await?;
        let (writes, rx) = mpsc::channel(writer::QUEUE);
        let for_writer = options.clone();
        let connect: writer::Connect = Box::new(move || {
            let o = for_writer.clone();
            Box::pin(async move {
                use sqlx::Connection;
                PgConnection::connect_with(&o).await
            })
        });
        let task = tokio::spawn(writer::run(connect, rx, key.clone()));
        Ok(PgBackend { pool, options, path, key, writes: std::sync::RwLock::new(Some(writes)), writer: std::sync::Mutex::new(Some(task)) })
    }

    async fn write_one(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, rx) = oneshot::channel();
        let closed = || StoreError::Closed { path: self.path.clone() };
        let writes = self.writes.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(closed)?;
        writes.send(writer::Job { write, reply }).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?.map_err(db(&self.path))
    }

    async fn runs_where(&self, sql: &str, bind: Option<&str>, limit: Option<i64>) -> Result<Vec<RunRecord>, StoreError> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        if let Some(b) = bind {
            q = q.bind(b);
        }
        if let Some(l) = limit {
            q = q.bind(l);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db(&self.path))?;
        Ok(rows.iter().map(run_of).collect())
    }

    async fn watches_of(&self, f: WatchFilter<'_>) -> Result<Vec<WatchRecord>, StoreError> {
        let (order, limit) = if f.due.is_some() { ("next_at, id", 10_000) } else { ("started_at DESC, id DESC", 1000) };
        // (Only constants are formatted in.)
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WATCH_COLUMNS}, clear_reason FROM watches
             WHERE ($1::TEXT IS NULL OR pipeline = $1) AND ($2::TEXT IS NULL OR environment = $2) AND ($3::TEXT IS NULL OR version = $3) AND ($4::TEXT IS NULL OR run_id = $4)
               AND ($5::TEXT IS NULL OR state = $5) AND ($6::BIGINT IS NULL OR (state IN ('watching', 'reverting') AND next_at <= $6)) AND ($7::TEXT IS NULL OR id = $7)
             ORDER BY {order} LIMIT {limit}"
        )))
        .bind(f.pipeline)
        .bind(f.environment)
        .bind(f.version)
        .bind(f.run)
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.due)
        .bind(f.id)
        .fetch_all(&self.pool)
        .await
        .map_err(db(&self.path))?;
        Ok(rows.iter().map(watch_of).collect())
    }

    async fn waiting_runs_of(&self, only: Option<&[String]>) -> Result<Vec<(RunRecord, Vec<StageRecord>)>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND id IN (SELECT run_id FROM stages WHERE state = 'waiting')
               AND ($1::TEXT[] IS NULL OR id = ANY($1)) ORDER BY created_at, id"
        )))
        .bind(only)
        .fetch_all(&self.pool)
        .await
        .map_err(db(&self.path))?;
        let runs: Vec<RunRecord> = rows.iter().map(run_of).collect();
        let stages = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STAGE_COLUMNS_LIGHT}, run_id FROM stages WHERE run_id IN (SELECT run_id FROM stages WHERE state = 'waiting')
               AND ($1::TEXT[] IS NULL OR run_id = ANY($1)) ORDER BY run_id, position"
        )))
        .bind(only)
        .fetch_all(&self.pool)
        .await
        .map_err(db(&self.path))?;
        let mut by_run: std::collections::HashMap<String, Vec<StageRecord>> = std::collections::HashMap::new();
        for r in &stages {
            by_run.entry(r.get(9)).or_default().push(stage_row(r, 0));
        }
        Ok(runs
            .into_iter()
            .map(|r| {
                let s = by_run.remove(&r.id).unwrap_or_default();
                (r, s)
            })
            .collect())
    }

    async fn stages_where_of(&self, kind: Option<&str>, state: Option<StageState>) -> Result<Vec<StageOf>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.name, s.kind, s.state, s.attempt, s.started_at, s.finished_at, s.message, s.output, s.seal,
                    r.id, r.pipeline, r.version, r.created_at, d.origin_at
             FROM stages s JOIN runs r ON r.id = s.run_id LEFT JOIN deliveries d ON d.run_id = r.id
             WHERE ($1::TEXT IS NULL OR s.kind = $1) AND ($2::TEXT IS NULL OR s.state = $2)
             ORDER BY r.created_at, r.id, s.position",
        )
        .bind(kind)
        .bind(state.map(|s| s.as_str()))
        .fetch_all(&self.pool)
        .await
        .map_err(db(&self.path))?;
        Ok(rows
            .iter()
            .map(|r| StageOf {
                stage: stage_row(r, 0),
                run: r.get(9),
                pipeline: r.get(10),
                version: r.get(11),
                run_created_at: r.get(12),
                origin_at: r.get(13),
            })
            .collect())
    }

    /// How a database error of this state is said.
    fn db(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        db(&self.path)
    }

    async fn events_where(&self, sql: &str, run: &str, n: Option<i64>) -> Result<Vec<Event>, StoreError> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).bind(run);
        if let Some(n) = n {
            q = q.bind(n);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db(&self.path))?;
        Ok(rows.iter().map(|r| Event { id: r.get(0), stage: r.get(1), at: r.get(2), kind: r.get(3), actor: r.get(4), detail: r.get(5) }).collect())
    }

    /// Checks the whole trail, a page at a time: every hash recomputed with the key and every
    /// link compared; then the head row against the last entry (a cut tail). The head, the last
    /// id and the count are read first, by one statement (one snapshot: a commit moves the head
    /// with its entries), and the entries checked are those up to that head: replicas appending
    /// meanwhile are not taken for a trail extended or cut.
    async fn verify(&self) -> Result<Verdict, StoreError> {
        let (head_id, head_hash, max_id, entries): (i64, String, i64, i64) = sqlx::query_as(
            "SELECT h.id, h.hash, (SELECT CAST(coalesce(max(id), 0) AS BIGINT) FROM events), (SELECT count(*) FROM events)
             FROM audit_head h WHERE one = 1",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db(&self.path))?;
        let mut prev = String::new();
        let mut after = 0i64;
        let mut last: Option<(i64, Option<String>)> = None;
        loop {
            let mut page = self.entries(None, after, 10_000).await?;
            page.retain(|e| e.seq <= head_id.max(max_id));
            if page.is_empty() {
                break;
            }
            for e in &page {
                let (Some(hash), Some(p)) = (&e.hash, &e.prev_hash) else {
                    return Ok(Verdict { entries, head: None, tamper: Some(Tamper::Unhashed { seq: e.seq }), kept: Vec::new() });
                };
                let expected_seq = last.as_ref().map_or(1, |l| l.0 + 1);
                let tamper = if e.expected_hash(&self.key, p) != *hash {
                    Some(Tamper::Altered { seq: e.seq })
                } else if *p != prev {
                    let after_seq = last.as_ref().map_or(0, |l| l.0);
                    if e.seq > expected_seq {
                        Some(Tamper::Removed { seq: e.seq, after: after_seq })
                    } else {
                        Some(Tamper::Reordered { seq: e.seq, after: after_seq })
                    }
                } else {
                    None
                };
                if let Some(t) = tamper {
                    return Ok(Verdict { entries, head: None, tamper: Some(t), kept: Vec::new() });
                }
                prev = hash.clone();
                last = Some((e.seq, Some(hash.clone())));
            }
            after = page.last().map_or(after, |e| e.seq);
        }
        let head = last.as_ref().and_then(|l| l.1.clone());
        let written = (head_id, head_hash);
        let tamper = match &last {
            Some((lid, lhash)) if written.0 != *lid || Some(&written.1) != lhash.as_ref() => Some(Tamper::TailCut { head: written.0, last: *lid }),
            None if written.0 > 0 => Some(Tamper::TailCut { head: written.0, last: 0 }),
            _ => None,
        };
        Ok(Verdict { entries, head, tamper, kept: Vec::new() })
    }

    async fn entries(&self, run: Option<&str>, after: i64, limit: i64) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM events WHERE id > $1 AND ($2::TEXT IS NULL OR run_id = $2) ORDER BY id LIMIT $3"
        )))
        .bind(after)
        .bind(run)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db(&self.path))?;
        Ok(rows.iter().map(entry_of).collect())
    }
}

impl Backend for PgBackend {
    crate::store::sql::common_reads!();

    fn path(&self) -> &str {
        &self.path
    }

    fn key(&self) -> &crate::seal::Key {
        &self.key
    }

    fn state_id(&self) -> Fut<'_, Option<String>> {
        Box::pin(async move { sqlx::query_scalar("SELECT state_id FROM meta").fetch_optional(&self.pool).await.map_err(db(&self.path)) })
    }

    fn schema_version(&self) -> Fut<'_, i64> {
        Box::pin(schema::version(&self.pool, &self.path))
    }

    fn write(&self, write: Write) -> Fut<'_, Written> {
        Box::pin(self.write_one(write))
    }

    fn run<'a>(&'a self, id: &'a str) -> Fut<'a, Option<RunRecord>> {
        Box::pin(async move { Ok(self.runs_where(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"), Some(id), None).await?.pop()) })
    }

    fn runs(&self, limit: i64) -> Fut<'_, Vec<RunRecord>> {
        Box::pin(async move { self.runs_where(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC LIMIT $1"), None, Some(limit)).await })
    }

    fn stages<'a>(&'a self, run: &'a str) -> Fut<'a, Vec<StageRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {STAGE_COLUMNS} FROM stages WHERE run_id = $1 ORDER BY position")))
                .bind(run)
                .fetch_all(&self.pool)
                .await
                .map_err(db(&self.path))?;
            Ok(rows.iter().map(|r| stage_row(r, 0)).collect())
        })
    }

    fn decisions<'a>(&'a self, run: &'a str, stage: &'a str) -> Fut<'a, Vec<Decision>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT \"user\", approve, comment, at, seal FROM decisions WHERE run_id = $1 AND stage = $2 ORDER BY at, \"user\"")
                .bind(run)
                .bind(stage)
                .fetch_all(&self.pool)
                .await
                .map_err(db(&self.path))?;
            Ok(rows.iter().map(|r| Decision { user: r.get(0), approve: r.get(1), comment: r.get(2), at: r.get(3), seal: r.get(4) }).collect())
        })
    }

    fn watches<'a>(&'a self, filter: WatchFilter<'a>) -> Fut<'a, Vec<WatchRecord>> {
        Box::pin(self.watches_of(filter))
    }

    fn waiting_runs<'a>(&'a self, only: Option<&'a [String]>) -> Fut<'a, Vec<(RunRecord, Vec<StageRecord>)>> {
        Box::pin(self.waiting_runs_of(only))
    }

    fn stages_of_runs<'a>(&'a self, runs: &'a [String]) -> Fut<'a, Vec<(String, StageRecord)>> {
        Box::pin(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {STAGE_COLUMNS}, run_id FROM stages WHERE run_id = ANY($1) ORDER BY run_id, position")))
                .bind(runs)
                .fetch_all(&self.pool)
                .await
                .map_err(db(&self.path))?;
            Ok(rows.iter().map(|r| (r.get(9), stage_row(r, 0))).collect())
        })
    }

    fn decisions_of_runs<'a>(&'a self, runs: &'a [String]) -> Fut<'a, Vec<(String, String, Decision)>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT \"user\", approve, comment, at, seal, run_id, stage FROM decisions WHERE run_id = ANY($1) ORDER BY at, \"user\"")
                .bind(runs)
                .fetch_all(&self.pool)
                .await
                .map_err(db(&self.path))?;
            Ok(rows
                .iter()
                .map(|r| (r.get(5), r.get(6), Decision { user: r.get(0), approve: r.get(1), comment: r.get(2), at: r.get(3), seal: r.get(4) }))
                .collect())
        })
    }

    fn stages_where<'a>(&'a self, kind: Option<&'a str>, state: Option<StageState>) -> Fut<'a, Vec<StageOf>> {
        Box::pin(self.stages_where_of(kind, state))
    }

    fn last_events<'a>(&'a self, run: &'a str, n: i64) -> Fut<'a, (Vec<Event>, i64)> {
        Box::pin(async move {
            let events = self
                .events_where(
                    "SELECT id, stage, at, kind, actor, detail FROM (SELECT * FROM events WHERE run_id = $1 ORDER BY id DESC LIMIT $2) last ORDER BY id",
                    run,
                    Some(n),
                )
                .await?;
            let total: i64 =
                sqlx::query_scalar("SELECT count(*) FROM events WHERE run_id = $1").bind(run).fetch_one(&self.pool).await.map_err(db(&self.path))?;
            Ok((events, total))
        })
    }

    fn events<'a>(&'a self, run: &'a str) -> Fut<'a, Vec<Event>> {
        Box::pin(self.events_where("SELECT id, stage, at, kind, actor, detail FROM events WHERE run_id = $1 ORDER BY id", run, None))
    }

    fn last_change(&self) -> Fut<'_, i64> {
        Box::pin(async move { sqlx::query_scalar("SELECT coalesce(max(id), 0)::BIGINT FROM events").fetch_one(&self.pool).await.map_err(db(&self.path)) })
    }

    fn changes_after(&self, after: i64, limit: i64) -> Fut<'_, Vec<Change>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT id, run_id, stage, kind FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(db(&self.path))?;
            Ok(rows.iter().map(|r| Change { id: r.get(0), run: r.get(1), stage: r.get(2), kind: r.get(3) }).collect())
        })
    }

    fn watch(&self, poke: Arc<Notify>) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        let options = self.options.clone();
        let task = tokio::spawn(listen(options, poke));
        Some(Box::new(AbortOnDrop(task)))
    }

    fn verify_audit(&self) -> Fut<'_, Verdict> {
        Box::pin(self.verify())
    }

    fn audit_entry_with_hash<'a>(&'a self, hash: &'a str) -> Fut<'a, Option<i64>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT id FROM events WHERE hash = $1")
                .bind(hash.trim().to_ascii_lowercase())
                .fetch_optional(&self.pool)
                .await
                .map_err(db(&self.path))
        })
    }

    fn audit_entries<'a>(&'a self, run: Option<&'a str>, after: i64, limit: i64) -> Fut<'a, Vec<Entry>> {
        Box::pin(self.entries(run, after, limit))
    }

    fn raw_sql<'a>(&'a self, sql: &'a str) -> Fut<'a, ()> {
        Box::pin(async move { sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool).await.map(|_| ()).map_err(db(&self.path)) })
    }

    fn close(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            drop(self.writes.write().unwrap_or_else(|e| e.into_inner()).take());
            let task = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(t) = task {
                let _ = t.await;
            }
            self.pool.close().await;
            Ok(())
        })
    }
}

/// A task stopped when its handle goes (the change feed's listener lives with its subscription).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// LISTENs on [`CHANNEL`] and pokes the feed at each notification (each commit of any replica);
/// a lost connection is made again (and the feed poked, since commits may have been missed).
async fn listen(options: PgConnectOptions, poke: Arc<Notify>) {
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&PgPool::connect_lazy_with(options.clone())).await?;
            l.listen(CHANNEL).await?;
            poke.notify_one();
            loop {
                l.recv().await?;
                poke.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = listener.await {
            tracing::warn!(error = %e, "the change feed lost the database; listening again in 1 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn entry_of(r: &PgRow) -> Entry {
    let at: i64 = r.get(3);
    Entry {
        seq: r.get(0),
        run: r.get(1),
        stage: r.get(2),
        at,
        time: crate::clock::rfc3339(at),
        kind: r.get(4),
        actor: r.get(5),
        detail: r.get(6),
        prev_hash: r.get(7),
        hash: r.get(8),
    }
}

crate::store::sql::row_readers!(PgRow);
