//! Durable state: runs, stages, attempts, the hash-chained audit trail, approval decisions and
//! environment locks in SQLite (WAL) through sqlx; every transition is committed before it is
//! reported.

pub mod audit;
mod feed;

pub use feed::{Change, Subscription, Woken};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row};

/// `PRAGMA application_id` of promote state files ("PROM").
const APP_ID: i64 = 0x5052_4f4d;

/// The schema, one migration per version; `PRAGMA user_version` says how many are applied. Never
/// edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // 1: runs, their stages, the events of both.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        file TEXT NOT NULL,
        source TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        triggered_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        finished_at INTEGER,
        message TEXT
    );
    CREATE TABLE stages (
        run_id TEXT NOT NULL REFERENCES runs(id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        position INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        started_at INTEGER,
        finished_at INTEGER,
        message TEXT,
        output TEXT,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        stage TEXT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );",
    // 2: approval decisions, one promotion at a time per environment.
    "CREATE TABLE decisions (
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        user TEXT NOT NULL,
        approve INTEGER NOT NULL,
        comment TEXT,
        at INTEGER NOT NULL,
        PRIMARY KEY (run_id, stage, user)
    );
    CREATE TABLE env_locks (
        environment TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX events_by_run ON events (run_id, id);",
    // 3: a stage transition is one UPDATE: the trigger writes its event in the same statement.
    "ALTER TABLE stages ADD COLUMN event TEXT;
    CREATE TRIGGER stage_event AFTER UPDATE OF event ON stages WHEN NEW.event IS NOT NULL
    BEGIN
        INSERT INTO events (run_id, stage, at, kind, detail)
        VALUES (NEW.run_id, NEW.name, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), 'stage', NEW.event);
    END;",
    // 4: log templates a person marked "not a risk", per pipeline.
    "CREATE TABLE log_exemptions (
        pipeline TEXT NOT NULL,
        template TEXT NOT NULL,
        by_user TEXT NOT NULL,
        reason TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (pipeline, template)
    );",
    // 5: the events table becomes the audit trail: who did it (actor), and a hash chain computed
    // inside SQLite by `promote_chain` (registered on every connection, see `audit`), so that no
    // insert can skip it. `audit_head` keeps the last entry, so a cut tail is seen. Older entries
    // are chained by `audit::chain_existing` in the same transaction.
    "ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT 'promote';
    ALTER TABLE events ADD COLUMN prev_hash TEXT;
    ALTER TABLE events ADD COLUMN hash TEXT;
    CREATE TABLE audit_head (one INTEGER PRIMARY KEY CHECK (one = 1), id INTEGER NOT NULL, hash TEXT NOT NULL);
    CREATE TRIGGER events_chain AFTER INSERT ON events
    BEGIN
        UPDATE events SET prev_hash = coalesce((SELECT hash FROM audit_head), ''),
            hash = promote_chain(coalesce((SELECT hash FROM audit_head), ''), NEW.id, NEW.run_id, NEW.stage, NEW.at, NEW.kind, NEW.actor, NEW.detail)
            WHERE id = NEW.id;
        INSERT OR REPLACE INTO audit_head (one, id, hash) SELECT 1, id, hash FROM events WHERE id = NEW.id;
    END;
    CREATE TRIGGER events_append_only BEFORE UPDATE OF id, run_id, stage, at, kind, actor, detail ON events
    BEGIN
        SELECT RAISE(ABORT, 'the audit trail is append-only');
    END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN
        SELECT RAISE(ABORT, 'the audit trail is append-only');
    END;",
];

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not a SQLite database.
    #[error("{path}: not a promote state file (not SQLite: corrupt, or another kind of file); nothing was changed: move it away or pass --state")]
    NotSqlite {
        /// The file.
        path: String,
    },
    /// A SQLite database that some other program made.
    #[error("{path}: a SQLite database, but not promote's (application id {found:#x}); nothing was changed: pass --state with another path")]
    Foreign {
        /// The file.
        path: String,
        /// Its application id.
        found: i64,
    },
    /// Written by a newer promote.
    #[error("{path}: written by a newer promote (schema {found}, this one knows up to {known}); nothing was changed: upgrade promote")]
    Newer {
        /// The file.
        path: String,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        known: usize,
    },
    /// No run has this id.
    #[error("no run `{id}` in {path}{hint}")]
    UnknownRun {
        /// The id asked for.
        id: String,
        /// The state file.
        path: String,
        /// The most recent runs, for a person.
        hint: String,
    },
    /// The database failed.
    #[error("{path}: {source}")]
    Db {
        /// The state file.
        path: String,
        /// What sqlx said.
        source: sqlx::Error,
    },
}

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Stages are running or waiting (or the process stopped: `promote resume`).
    Running,
    /// Every stage succeeded or was skipped by its `if`.
    Succeeded,
    /// A stage failed.
    Failed,
}

/// How a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageState {
    /// Not started.
    Pending,
    /// Working.
    Running,
    /// Waiting for a person or a lock.
    Waiting,
    /// Done, well.
    Succeeded,
    /// Done, badly (after its retries).
    Failed,
    /// Not run: an upstream stage failed, or its `if` was false.
    Skipped,
    /// Stopped because another stage failed.
    Cancelled,
    /// A deploy reverted by the run's rollback.
    RolledBack,
}

macro_rules! names {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// The name stored and shown.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($s => Ok(<$t>::$v),)* other => Err(format!("unknown state `{other}`")) }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
names!(RunState { Running = "running", Succeeded = "succeeded", Failed = "failed" });
names!(StageState {
    Pending = "pending",
    Running = "running",
    Waiting = "waiting",
    Succeeded = "succeeded",
    Failed = "failed",
    Skipped = "skipped",
    Cancelled = "cancelled",
    RolledBack = "rolled-back",
});

impl StageState {
    /// Whether the stage will not change any more (in this run).
    pub fn is_final(self) -> bool {
        !matches!(self, StageState::Pending | StageState::Running | StageState::Waiting)
    }
}

/// A run as stored.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// ULID.
    pub id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file as given.
    pub file: String,
    /// The file's text when the run started (a resumed run uses this, not today's file).
    #[serde(skip)]
    pub source: String,
    /// The version promoted.
    pub version: String,
    /// Its state.
    pub state: RunState,
    /// Who started it.
    pub triggered_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    /// Why it failed.
    pub message: Option<String>,
}

/// A stage of a run as stored.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRecord {
    /// The stage's name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its state.
    pub state: StageState,
    /// Attempts started so far.
    pub attempt: i64,
    /// Unix milliseconds of the current attempt's start.
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    /// Why it failed, or what it waits for.
    pub message: Option<String>,
    /// What it produced (JSON): a deploy's commit, an approval's approvers.
    pub output: Option<serde_json::Value>,
}

/// An approval decision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    /// Who.
    pub user: String,
    /// Approve (true) or reject.
    pub approve: bool,
    /// Comment or reason.
    pub comment: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
}

/// An event of a run's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Increasing.
    pub id: i64,
    /// The stage, if any.
    pub stage: Option<String>,
    /// Unix milliseconds.
    pub at: i64,
    /// `trigger`, `run`, `stage`, `decision`, `policy`, `break-glass`, `rollback`, ...
    pub kind: String,
    /// Who did it (`promote` for the runner itself).
    pub actor: String,
    /// What happened.
    pub detail: String,
}

/// A transition of one stage, written with its event in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Transition<'a> {
    /// The new state.
    pub state: Option<StageState>,
    /// Set the attempt counter.
    pub attempt: Option<i64>,
    /// Set the start time.
    pub started_at: Option<i64>,
    /// Set the end time.
    pub finished_at: Option<i64>,
    /// Set the message (empty string clears it).
    pub message: Option<&'a str>,
    /// Set the output.
    pub output: Option<&'a serde_json::Value>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The state store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: String,
    feed: std::sync::Arc<feed::Feed>,
}

impl Store {
    /// Opens (creating, or migrating from an older version) the state file at `path`. A file that
    /// is not promote's is refused untouched.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db { path: shown.clone(), source: sqlx::Error::Io(e) })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Two processes creating the file at once can meet SQLITE_BUSY while the first switches it
        // to WAL (SQLite does not wait on the busy timeout there): try again for up to 10 s.
        let mut tries = 0;
        loop {
            let db = |source| StoreError::Db { path: shown.clone(), source };
            let attempt = async {
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| Box::pin(audit::register(conn)))
                    .connect_with(options.clone())
                    .await
                    .map_err(db)?;
                let store = Store { pool, path: shown.clone(), feed: std::sync::Arc::new(feed::Feed::new()) };
                store.migrate().await?;
                Ok::<Store, StoreError>(store)
            };
            match attempt.await {
                Err(StoreError::Db { source: sqlx::Error::Database(e), .. }) if e.code().as_deref() == Some("5") && tries < 200 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// The state file.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The change feed from now on: every entry committed after this returns (by this process or
    /// another) is announced to the subscription.
    pub async fn subscribe(&self) -> Result<Subscription, StoreError> {
        self.feed.subscribe(&self.pool, Path::new(&self.path)).await.map_err(self.db())
    }

    fn db(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        |source| StoreError::Db { path: self.path.clone(), source }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Most opens find the schema current: check without taking the write lock.
        let app: i64 = sqlx::query_scalar("PRAGMA application_id").fetch_one(&self.pool).await.map_err(self.db())?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&self.pool).await.map_err(self.db())?;
        if app == APP_ID && version as usize == MIGRATIONS.len() {
            return Ok(());
        }
        // IMMEDIATE: take the write lock first, so that two processes opening a new file wait for
        // each other instead of failing to upgrade a read lock.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(self.db())?;
        let app: i64 = sqlx::query_scalar("PRAGMA application_id").fetch_one(&mut *tx).await.map_err(self.db())?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await.map_err(self.db())?;
        let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master").fetch_one(&mut *tx).await.map_err(self.db())?;
        if app != APP_ID && (app != 0 || tables > 0) {
            return Err(StoreError::Foreign { path: self.path.clone(), found: app });
        }
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Newer { path: self.path.clone(), found: version, known: MIGRATIONS.len() });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(self.db())?;
            if i + 1 == audit::CHAIN_SCHEMA {
                audit::chain_existing(&mut tx).await.map_err(self.db())?;
            }
            let set = format!("PRAGMA user_version = {}", i + 1);
            sqlx::query(AssertSqlSafe(set)).execute(&mut *tx).await.map_err(self.db())?;
        }
        if app != APP_ID {
            sqlx::query(AssertSqlSafe(format!("PRAGMA application_id = {APP_ID}"))).execute(&mut *tx).await.map_err(self.db())?;
        }
        let done = tx.commit().await.map_err(self.db());
        self.feed.poke();
        done
    }

    /// The schema version of the file (`PRAGMA user_version`).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("PRAGMA user_version").fetch_one(&self.pool).await.map_err(self.db())
    }

    /// Records a new run and its stages (all pending), in one transaction.
    pub async fn create_run(&self, run: &RunRecord, stages: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        sqlx::query("INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&run.id)
            .bind(&run.pipeline)
            .bind(&run.file)
            .bind(&run.source)
            .bind(&run.version)
            .bind(run.state.as_str())
            .bind(&run.triggered_by)
            .bind(run.created_at)
            .execute(&mut *tx)
            .await
            .map_err(self.db())?;
        for (i, (name, kind)) in stages.iter().enumerate() {
            sqlx::query("INSERT INTO stages (run_id, name, kind, position, state) VALUES (?, ?, ?, ?, 'pending')")
                .bind(&run.id)
                .bind(name)
                .bind(kind)
                .bind(i as i64)
                .execute(&mut *tx)
                .await
                .map_err(self.db())?;
        }
        let detail = format!("run started: {} {} by {}", run.pipeline, run.version, run.triggered_by);
        insert_event(&mut tx, &run.id, None, run.created_at, "trigger", &run.triggered_by, &detail).await.map_err(self.db())?;
        let done = tx.commit().await.map_err(self.db());
        self.feed.poke();
        done
    }

    /// One run by id.
    pub async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let row = sqlx::query("SELECT id, pipeline, file, source, version, state, triggered_by, created_at, finished_at, message FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.db())?;
        match row {
            Some(r) => Ok(run_of(&r)),
            None => {
                let recent = self.runs(5).await?;
                let hint = if recent.is_empty() {
                    " (it has no runs yet)".to_string()
                } else {
                    format!("; recent runs: {}", recent.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "))
                };
                Err(StoreError::UnknownRun { id: id.into(), path: self.path.clone(), hint })
            }
        }
    }

    /// The newest runs first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, pipeline, file, source, version, state, triggered_by, created_at, finished_at, message FROM runs ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db())?;
        Ok(rows.iter().map(run_of).collect())
    }

    /// A run's stages, in file order.
    pub async fn stages(&self, run: &str) -> Result<Vec<StageRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, kind, state, attempt, started_at, finished_at, message, output FROM stages WHERE run_id = ? ORDER BY position")
            .bind(run)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(rows
            .iter()
            .map(|r| StageRecord {
                name: r.get(0),
                kind: r.get(1),
                state: r.get::<String, _>(2).parse().unwrap_or(StageState::Pending),
                attempt: r.get(3),
                started_at: r.get(4),
                finished_at: r.get(5),
                message: r.get(6),
                output: r.get::<Option<String>, _>(7).and_then(|s| serde_json::from_str(&s).ok()),
            })
            .collect())
    }

    /// Applies a stage transition and records its event, atomically; returns the stage's start
    /// time (Unix ms) after the transition.
    pub async fn transition(&self, run: &str, stage: &str, t: &Transition<'_>, event: &str) -> Result<Option<i64>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(self.db())?;
        let done = update_stage(&mut conn, run, stage, t, event).await.map_err(self.db());
        self.feed.poke();
        done
    }

    /// Several transitions of one run in one transaction: all durable, or none. The walker writes a
    /// stage's result together with the starts it allows, so a stage whose needs are met is
    /// recorded running by the same commit. Returns each stage's start time.
    pub async fn transitions(&self, run: &str, items: &[(&str, Transition<'_>, &str)]) -> Result<Vec<Option<i64>>, StoreError> {
        if let [(stage, t, event)] = items {
            return Ok(vec![self.transition(run, stage, t, event).await?]);
        }
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        let mut out = Vec::with_capacity(items.len());
        for (stage, t, event) in items {
            out.push(update_stage(&mut tx, run, stage, t, event).await.map_err(self.db())?);
        }
        tx.commit().await.map_err(self.db())?;
        self.feed.poke();
        Ok(out)
    }

    /// Ends a run.
    pub async fn finish_run(&self, run: &str, state: RunState, message: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        let at = now_ms();
        sqlx::query("UPDATE runs SET state = ?, finished_at = ?, message = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(at)
            .bind(message)
            .bind(run)
            .execute(&mut *tx)
            .await
            .map_err(self.db())?;
        sqlx::query("DELETE FROM env_locks WHERE run_id = ?").bind(run).execute(&mut *tx).await.map_err(self.db())?;
        insert_event(&mut tx, run, None, at, "run", "promote", &format!("run {state}{}", message.map(|m| format!(": {m}")).unwrap_or_default()))
            .await
            .map_err(self.db())?;
        let done = tx.commit().await.map_err(self.db());
        self.feed.poke();
        done
    }

    /// Records an approval decision; a user's later decision replaces their earlier one.
    pub async fn decide(&self, run: &str, stage: &str, user: &str, approve: bool, comment: Option<&str>) -> Result<(), StoreError> {
        self.decide_as(run, stage, user, approve, comment, "decision").await
    }

    /// Records a decision whose audit entry is of `kind` (`decision`, `break-glass`).
    pub async fn decide_as(&self, run: &str, stage: &str, user: &str, approve: bool, comment: Option<&str>, kind: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        let at = now_ms();
        sqlx::query("INSERT OR REPLACE INTO decisions (run_id, stage, user, approve, comment, at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(run)
            .bind(stage)
            .bind(user)
            .bind(approve)
            .bind(comment)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(self.db())?;
        let what = match (kind, approve) {
            ("break-glass", _) => "freeze overridden (break-glass)",
            (_, true) => "approved",
            (_, false) => "rejected",
        };
        insert_event(&mut tx, run, Some(stage), at, kind, user, &format!("{what} by {user}{}", comment.map(|c| format!(": {c}")).unwrap_or_default()))
            .await
            .map_err(self.db())?;
        let done = tx.commit().await.map_err(self.db());
        self.feed.poke();
        done
    }

    /// Marks a log template "not a risk" for a pipeline's `logs` stages, with who and why; an
    /// event of `run` records it.
    pub async fn exempt_template(&self, run: &str, pipeline: &str, template: &str, user: &str, reason: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        let at = now_ms();
        sqlx::query("INSERT OR REPLACE INTO log_exemptions (pipeline, template, by_user, reason, at) VALUES (?, ?, ?, ?, ?)")
            .bind(pipeline)
            .bind(template)
            .bind(user)
            .bind(reason)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(self.db())?;
        insert_event(&mut tx, run, None, at, "log-exemption", user, &format!("`{template}` marked not a risk by {user}: {reason}")).await.map_err(self.db())?;
        let done = tx.commit().await.map_err(self.db());
        self.feed.poke();
        done
    }

    /// The log templates marked "not a risk" for a pipeline.
    pub async fn exempt_templates(&self, pipeline: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT template FROM log_exemptions WHERE pipeline = ? ORDER BY at").bind(pipeline).fetch_all(&self.pool).await.map_err(self.db())
    }

    /// The decisions on an approval stage, oldest first.
    pub async fn decisions(&self, run: &str, stage: &str) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query("SELECT user, approve, comment, at FROM decisions WHERE run_id = ? AND stage = ? ORDER BY at, user")
            .bind(run)
            .bind(stage)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(rows.iter().map(|r| Decision { user: r.get(0), approve: r.get(1), comment: r.get(2), at: r.get(3) }).collect())
    }

    /// Takes the environment for `run`; `Some(holder)` when another run holds it.
    pub async fn lock_environment(&self, environment: &str, run: &str) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.db())?;
        sqlx::query("INSERT OR IGNORE INTO env_locks (environment, run_id, at) VALUES (?, ?, ?)")
            .bind(environment)
            .bind(run)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(self.db())?;
        let holder: String =
            sqlx::query_scalar("SELECT run_id FROM env_locks WHERE environment = ?").bind(environment).fetch_one(&mut *tx).await.map_err(self.db())?;
        tx.commit().await.map_err(self.db())?;
        Ok((holder != run).then_some(holder))
    }

    /// A run's events, oldest first.
    pub async fn events(&self, run: &str) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query("SELECT id, stage, at, kind, actor, detail FROM events WHERE run_id = ? ORDER BY id")
            .bind(run)
            .fetch_all(&self.pool)
            .await
            .map_err(self.db())?;
        Ok(rows.iter().map(|r| Event { id: r.get(0), stage: r.get(1), at: r.get(2), kind: r.get(3), actor: r.get(4), detail: r.get(5) }).collect())
    }

    /// Appends an entry to the audit trail (a policy decision, a break-glass, a rollback, an
    /// undelivered notification); the chain is computed by SQLite's trigger.
    pub async fn audit(&self, run: &str, stage: Option<&str>, kind: &str, actor: &str, detail: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(self.db())?;
        let done = insert_event(&mut conn, run, stage, now_ms(), kind, actor, detail).await.map_err(self.db());
        self.feed.poke();
        done
    }

    /// Runs SQL as it is, on a connection that has promote's functions (benchmarks and tools that
    /// fill or repair a state file; never for user input).
    pub async fn raw_sql(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&self.pool).await.map(|_| ()).map_err(self.db())
    }

    /// Closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One stage transition: one UPDATE (its event row comes from the `stage_event` trigger).
async fn update_stage(conn: &mut sqlx::SqliteConnection, run: &str, stage: &str, t: &Transition<'_>, event: &str) -> Result<Option<i64>, sqlx::Error> {
    // One statement, so one round trip and atomic with its event (trigger `stage_event`).
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
    .bind(t.message)
    .bind(t.message)
    .bind(t.message)
    .bind(t.output.map(|o| o.to_string()))
    .bind(event)
    .bind(run)
    .bind(stage)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| r.get::<Option<i64>, _>(0)))
}

async fn insert_event(
    tx: &mut sqlx::SqliteConnection,
    run: &str,
    stage: Option<&str>,
    at: i64,
    kind: &str,
    actor: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (run_id, stage, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(run)
        .bind(stage)
        .bind(at)
        .bind(kind)
        .bind(actor)
        .bind(detail)
        .execute(tx)
        .await
        .map(|_| ())
}

fn run_of(r: &sqlx::sqlite::SqliteRow) -> RunRecord {
    RunRecord {
        id: r.get(0),
        pipeline: r.get(1),
        file: r.get(2),
        source: r.get(3),
        version: r.get(4),
        state: r.get::<String, _>(5).parse().unwrap_or(RunState::Running),
        triggered_by: r.get(6),
        created_at: r.get(7),
        finished_at: r.get(8),
        message: r.get(9),
    }
}

/// The default state file: `.promote/state.db` in the current folder.
pub fn default_path() -> PathBuf {
    PathBuf::from(".promote/state.db")
}
