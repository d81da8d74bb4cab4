//! The SQLite backend of the state port: one file in WAL mode through sqlx; reads on a small pool,
//! writes grouped by one writer task (`writer`), the chain computed inside SQLite (`chain`), the
//! schema migrated on open (`schema`), other processes' commits seen through the file system.

mod chain;
mod schema;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Notify, mpsc, oneshot};

use super::chain::{Entry, Verdict};
use super::{Backend, Change, Decision, Event, Fut, RunRecord, StageOf, StageRecord, StageState, StoreError, WatchFilter, WatchRecord, Write, Written};

/// A promote state file.
pub struct SqliteBackend {
    pool: SqlitePool,
    path: String,
    key: crate::seal::Key,
    /// The writer task's queue; taken away by `close`.
    writes: std::sync::RwLock<Option<mpsc::Sender<writer::Job>>>,
    /// The writer task, awaited by `close`.
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StoreError {
    /// A database error of the state at `path`, in words (the port knows no sqlx).
    pub(crate) fn db(path: &str, e: sqlx::Error) -> StoreError {
        let code = match &e {
            sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
            _ => None,
        };
        StoreError::Db { path: path.to_string(), message: e.to_string(), code }
    }
}

impl SqliteBackend {
    /// Opens (creating, or migrating from an older version) the state file at `path`. A file that
    /// is not promote's is refused untouched.
    /// Chains and seals with `key`.
    pub async fn open(path: &Path, key: crate::seal::Key) -> Result<SqliteBackend, StoreError> {
        let shown = path.display().to_string();
        if let Ok(meta) = std::fs::metadata(path)
            && meta.len() > 0
        {
            let mut head = [0u8; 16];
            use std::io::Read;
            let ok = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"SQLite format 3\0";
            if !ok {
                return Err(StoreError::NotSqlite { path: shown });
            }
        }
        // The state is its owner's only: the folder 0700 when promote makes it, the file 0600 (SQLite
        // gives its WAL and shared-memory files the database's mode).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| StoreError::db(&shown, sqlx::Error::Io(e)))?;
        }
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::db(&shown, sqlx::Error::Io(e))),
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit is flushed to the disk before it is acknowledged (the writer groups
            // commits, so that is one flush a batch): with `NORMAL`, a WAL commit survives the
            // process's crash but not the machine's (power loss, a kernel panic), and what was
            // acknowledged (an approval, a stage's result, an audit entry) could be lost.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // SQLite's thread may run this many rows ahead of the reader (sqlx's default, 50, makes
            // a page's thousands of rows a ping-pong of wake-ups between two threads).
            .row_buffer_size(1024);
        // Two processes creating the file at once can meet SQLITE_BUSY while the first switches it
        // to WAL (SQLite does not wait on the busy timeout there): try again for up to 10 s.
        let mut tries = 0;
        loop {
            let db = |source| StoreError::db(&shown, source);
            let attempt = async {
                let for_pool = key.clone();
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .after_connect(move |conn, _| {
                        let key = for_pool.clone();
                        Box::pin(async move { chain::register(conn, key).await })
                    })
                    .connect_with(options.clone())
                    .await
                    .map_err(db)?;
                schema::migrate(&pool, &shown, &key).await?;
                use sqlx::Connection;
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await.map_err(db)?;
                chain::register(&mut conn, key.clone()).await.map_err(db)?;
                let (writes, rx) = mpsc::channel(writer::QUEUE);
                let task = tokio::spawn(writer::run(conn, rx, key.clone()));
                Ok::<SqliteBackend, StoreError>(SqliteBackend {
                    pool,
                    path: shown.clone(),
                    key: key.clone(),
                    writes: std::sync::RwLock::new(Some(writes)),
                    writer: std::sync::Mutex::new(Some(task)),
                })
            };
            match attempt.await {
                Err(StoreError::Db { code: Some(code), .. }) if code == "5" && tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    fn db(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        |source| StoreError::db(&self.path, source)
    }

    async fn write_one(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, rx) = oneshot::channel();
        let closed = || StoreError::Closed { path: self.path.clone() };
        let writes = self.writes.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(closed)?;
        writes.send(writer::Job { write, reply }).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?.map_err(self.db())
    }

    async fn run_of(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, pipeline, file, source, version, state, triggered_by, created_at, finished_at, message, authenticated, seal FROM runs WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(row.as_ref().map(run_of))
    }

    async fn runs_of(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, pipeline, file, source, version, state, triggered_by, created_at, finished_at, message, authenticated, seal FROM runs ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(rows.iter().map(run_of).collect())
    }

    async fn stages_of(&self, run: &str) -> Result<Vec<StageRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT name, kind, state, attempt, started_at, finished_at, message, output, seal FROM stages WHERE run_id = ? ORDER BY position")
                .bind(run)
                .fetch_all(&self.pool)
                .await
                .map_err(self.db())?;
        Ok(rows.iter().map(|r| stage_row(r, 0)).collect())
    }

    async fn watches_of(&self, f: WatchFilter<'_>) -> Result<Vec<WatchRecord>, StoreError> {
        let (order, limit) = if f.due.is_some() { ("next_at, id", 10_000) } else { ("started_at DESC, id DESC", 1000) };
        // (Only constants are formatted in.)
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {}, clear_reason FROM watches
             WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR environment = ?2) AND (?3 IS NULL OR version = ?3) AND (?4 IS NULL OR run_id = ?4)
               AND (?5 IS NULL OR state = ?5) AND (?6 IS NULL OR (state IN ('watching', 'reverting') AND next_at <= ?6)) AND (?7 IS NULL OR id = ?7)
             ORDER BY {order} LIMIT {limit}",
            crate::store::sql::WATCH_COLUMNS
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
        .map_err(self.db())?;
        Ok(rows.iter().map(watch_of).collect())
    }

    async fn waiting_runs_of(&self, only: Option<&[String]>) -> Result<Vec<(RunRecord, Vec<StageRecord>)>, StoreError> {
        let only = only.map(|ids| serde_json::to_string(ids).unwrap_or_default());
        let runs = sqlx::query(
            "SELECT id, pipeline, file, source, version, state, triggered_by, created_at, finished_at, message, authenticated, seal FROM runs
             WHERE state = 'running' AND id IN (SELECT run_id FROM stages WHERE state = 'waiting')
               AND (?1 IS NULL OR id IN (SELECT value FROM json_each(?1))) ORDER BY created_at, id",
        )
        .bind(&only)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        let stages = sqlx::query(
            "SELECT name, kind, state, attempt, started_at, finished_at, NULL, NULL, seal, run_id FROM stages
             WHERE run_id IN (SELECT run_id FROM stages WHERE state = 'waiting')
               AND (?1 IS NULL OR run_id IN (SELECT value FROM json_each(?1))) ORDER BY run_id, position",
        )
        .bind(&only)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        let mut by_run: std::collections::HashMap<String, Vec<StageRecord>> = std::collections::HashMap::new();
        for r in &stages {
            by_run.entry(r.get(9)).or_default().push(stage_row(r, 0));
        }
        Ok(runs
            .iter()
            .map(run_of)
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
             WHERE (?1 IS NULL OR s.kind = ?1) AND (?2 IS NULL OR s.state = ?2)
             ORDER BY r.created_at, r.id, s.position",
        )
        .bind(kind)
        .bind(state.map(|s| s.as_str()))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
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

    async fn decisions_of(&self, run: &str, stage: &str) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query("SELECT user, approve, comment, at, seal FROM decisions WHERE run_id = ? AND stage = ? ORDER BY at, user")
            .bind(run)
            .bind(stage)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(rows.iter().map(|r| Decision { user: r.get(0), approve: r.get(1), comment: r.get(2), at: r.get(3), seal: r.get(4) }).collect())
    }

    async fn events_of(&self, run: &str) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query("SELECT id, stage, at, kind, actor, detail FROM events WHERE run_id = ? ORDER BY id")
            .bind(run)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(rows.iter().map(|r| Event { id: r.get(0), stage: r.get(1), at: r.get(2), kind: r.get(3), actor: r.get(4), detail: r.get(5) }).collect())
    }

    async fn last_events_of(&self, run: &str, n: i64) -> Result<(Vec<Event>, i64), StoreError> {
        let rows = sqlx::query("SELECT id, stage, at, kind, actor, detail FROM (SELECT * FROM events WHERE run_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id")
            .bind(run)
            .bind(n)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE run_id = ?").bind(run).fetch_one(&self.pool).await.map_err(self.db())?;
        Ok((rows.iter().map(|r| Event { id: r.get(0), stage: r.get(1), at: r.get(2), kind: r.get(3), actor: r.get(4), detail: r.get(5) }).collect(), total))
    }

    async fn changes(&self, after: i64, limit: i64) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query("SELECT id, run_id, stage, kind FROM events WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(rows.iter().map(|r| Change { id: r.get(0), run: r.get(1), stage: r.get(2), kind: r.get(3) }).collect())
    }
}

impl Backend for SqliteBackend {
    crate::store::sql::common_reads!();

    fn path(&self) -> &str {
        &self.path
    }

    fn key(&self) -> &crate::seal::Key {
        &self.key
    }

    fn state_id(&self) -> Fut<'_, Option<String>> {
        Box::pin(async move { sqlx::query_scalar("SELECT state_id FROM meta").fetch_optional(&self.pool).await.map_err(self.db()) })
    }

    fn schema_version(&self) -> Fut<'_, i64> {
        Box::pin(async move { sqlx::query_scalar("PRAGMA user_version").fetch_one(&self.pool).await.map_err(self.db()) })
    }

    fn write(&self, write: Write) -> Fut<'_, Written> {
        Box::pin(self.write_one(write))
    }

    fn run<'a>(&'a self, id: &'a str) -> Fut<'a, Option<RunRecord>> {
        Box::pin(self.run_of(id))
    }

    fn runs(&self, limit: i64) -> Fut<'_, Vec<RunRecord>> {
        Box::pin(self.runs_of(limit))
    }

    fn stages<'a>(&'a self, run: &'a str) -> Fut<'a, Vec<StageRecord>> {
        Box::pin(self.stages_of(run))
    }

    fn decisions<'a>(&'a self, run: &'a str, stage: &'a str) -> Fut<'a, Vec<Decision>> {
        Box::pin(self.decisions_of(run, stage))
    }

    fn watches<'a>(&'a self, filter: WatchFilter<'a>) -> Fut<'a, Vec<WatchRecord>> {
        Box::pin(self.watches_of(filter))
    }

    fn waiting_runs<'a>(&'a self, only: Option<&'a [String]>) -> Fut<'a, Vec<(RunRecord, Vec<StageRecord>)>> {
        Box::pin(self.waiting_runs_of(only))
    }

    fn stages_of_runs<'a>(&'a self, runs: &'a [String]) -> Fut<'a, Vec<(String, StageRecord)>> {
        Box::pin(async move {
            // The ids as one JSON array: one statement however many runs.
            let ids = serde_json::to_string(runs).unwrap_or_default();
            let rows = sqlx::query(
                "SELECT name, kind, state, attempt, started_at, finished_at, message, output, seal, run_id FROM stages
                 WHERE run_id IN (SELECT value FROM json_each(?1)) ORDER BY run_id, position",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
            Ok(rows.iter().map(|r| (r.get(9), stage_row(r, 0))).collect())
        })
    }

    fn decisions_of_runs<'a>(&'a self, runs: &'a [String]) -> Fut<'a, Vec<(String, String, Decision)>> {
        Box::pin(async move {
            let ids = serde_json::to_string(runs).unwrap_or_default();
            let rows = sqlx::query(
                "SELECT user, approve, comment, at, seal, run_id, stage FROM decisions WHERE run_id IN (SELECT value FROM json_each(?1)) ORDER BY at, user",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
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
        Box::pin(self.last_events_of(run, n))
    }

    fn events<'a>(&'a self, run: &'a str) -> Fut<'a, Vec<Event>> {
        Box::pin(self.events_of(run))
    }

    fn last_change(&self) -> Fut<'_, i64> {
        Box::pin(async move { sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events").fetch_one(&self.pool).await.map_err(self.db()) })
    }

    fn changes_after(&self, after: i64, limit: i64) -> Fut<'_, Vec<Change>> {
        Box::pin(self.changes(after, limit))
    }

    fn watch(&self, poke: Arc<Notify>) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        watch(Path::new(&self.path), poke).map(|w| Box::new(w) as Box<dyn std::any::Any + Send + Sync>)
    }

    fn verify_audit(&self) -> Fut<'_, Verdict> {
        Box::pin(SqliteBackend::verify_audit(self))
    }

    fn audit_entry_with_hash<'a>(&'a self, hash: &'a str) -> Fut<'a, Option<i64>> {
        Box::pin(SqliteBackend::audit_entry_with_hash(self, hash))
    }

    fn audit_entries<'a>(&'a self, run: Option<&'a str>, after: i64, limit: i64) -> Fut<'a, Vec<Entry>> {
        Box::pin(SqliteBackend::audit_entries(self, run, after, limit))
    }

    fn raw_sql<'a>(&'a self, sql: &'a str) -> Fut<'a, ()> {
        Box::pin(async move { sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool).await.map(|_| ()).map_err(self.db()) })
    }

    fn close(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            // The writer finishes what is queued, then closes its connection.
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

/// Watches the state file's folder: a commit by another process writes the file or its WAL, and
/// pokes the change feed.
fn watch(path: &Path, poke: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let name = path.file_name()?.to_string_lossy().into_owned();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && (e.kind.is_modify() || e.kind.is_create())
            && e.paths.iter().any(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&name)))
        {
            poke.notify_one();
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the state file: other processes' writes are seen by polling");
            return None;
        }
    };
    match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the state folder: other processes' writes are seen by polling");
            None
        }
    }
}

crate::store::sql::row_readers!(sqlx::sqlite::SqliteRow);
