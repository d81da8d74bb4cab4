//! The SQLite schema: one migration per version, applied in order; `PRAGMA user_version` says how
//! many are. Every state file written by an earlier promote opens and upgrades.

use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};

use std::sync::LazyLock;

use crate::seal::Key;
use crate::store::StoreError;
use crate::store::schema as shared;

/// The schema version whose migration adds the chain; entries already there are chained then.
pub const CHAIN_SCHEMA: usize = 5;

/// `PRAGMA application_id` of promote state files ("PROM").
pub(super) const APP_ID: i64 = 0x5052_4f4d;

/// The schema, one migration per version; `PRAGMA user_version` says how many are applied: this
/// backend's own first twelve, then the tables both backends describe once (`store::schema`).
/// Never edit a released entry: add one.
pub(super) static MIGRATIONS: LazyLock<Vec<String>> =
    LazyLock::new(|| OWN.iter().chain([&shared::WATCHES]).chain(shared::AFTER_WATCHES.iter()).map(|sql| shared::SQLITE.sql(sql)).collect());

/// Migrations 1 to 12, which only SQLite has (PostgreSQL's first holds their result).
const OWN: &[&str] = &[
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
    // 6: the chain is computed in Rust as promote appends (the same `chain_hash` for every
    // backend), each stage transition's entry written beside its UPDATE: no trigger updates an
    // entry after its insert any more. What stays in SQLite is the guard: an entry whose hash is
    // not its place in the chain is refused (and a shell without `promote_chain` cannot insert).
    "DROP TRIGGER IF EXISTS events_chain;
    DROP TRIGGER IF EXISTS stage_event;
    CREATE TRIGGER events_chained BEFORE INSERT ON events
    WHEN NEW.hash IS NOT promote_chain(NEW.prev_hash, NEW.id, NEW.run_id, NEW.stage, NEW.at, NEW.kind, NEW.actor, NEW.detail)
        OR NEW.prev_hash IS NOT coalesce((SELECT hash FROM events ORDER BY id DESC LIMIT 1), '')
    BEGIN
        SELECT RAISE(ABORT, 'an audit entry must carry its place in the chain: only promote appends to the trail');
    END;",
    // 7: sealed records and a keyed chain, with the key of `crate::seal` (outside the state):
    // runs, stages, decisions and exemptions carry the key's MAC over what promote acts on; the
    // chain is re-computed keyed (`seal_existing`, in the same transaction); the state gets an id
    // (the head kept in Git names it); a run records whether its starter proved who they are.
    "ALTER TABLE runs ADD COLUMN authenticated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN seal TEXT;
    ALTER TABLE stages ADD COLUMN seal TEXT;
    ALTER TABLE decisions ADD COLUMN seal TEXT;
    ALTER TABLE log_exemptions ADD COLUMN seal TEXT;
    CREATE TABLE meta (one INTEGER PRIMARY KEY CHECK (one = 1), state_id TEXT NOT NULL);
    INSERT INTO meta (one, state_id) VALUES (1, lower(hex(randomblob(16))));",
    // 8: leases. An environment lock lapses unless its run's driver renews it; a run is driven by
    // one process at a time, by lease. Locks from before have lapsed already (0).
    "ALTER TABLE env_locks ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE drivers (run_id TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL);",
    // 9: webhook deliveries, recorded with the run they start before they are answered: one run
    // per delivery, and one per pipeline and version, however often or wherever it is delivered.
    "CREATE TABLE deliveries (
        provider TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        version TEXT NOT NULL,
        run_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (provider, delivery_id, pipeline),
        UNIQUE (pipeline, version)
    );",
    // 10: the refs each polled trigger source had at its last poll (what a missed webhook is
    // told from).
    "CREATE TABLE polled (source TEXT NOT NULL, ref TEXT NOT NULL, oid TEXT NOT NULL, PRIMARY KEY (source, ref));",
    // 11: when what a delivery announced happened (the lead time's start), and stages found by
    // kind and state (DORA figures, waiting decisions) without a scan of every run.
    "ALTER TABLE deliveries ADD COLUMN origin_at INTEGER;
    CREATE INDEX stages_by_kind ON stages (kind, state);",
    // 12: drifts: changes in an environment branch promote did not make, one per head seen, and
    // their decisions (sealed: an accepted drift becomes the state the next promotion builds on).
    "CREATE TABLE drifts (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        head TEXT NOT NULL,
        baseline TEXT,
        commits TEXT NOT NULL,
        diff TEXT NOT NULL,
        rewritten INTEGER NOT NULL,
        state TEXT NOT NULL,
        decided_by TEXT,
        reason TEXT,
        at INTEGER NOT NULL,
        decided_at INTEGER,
        seal TEXT,
        UNIQUE (pipeline, environment, head)
    );",
];

/// The schema whose migration makes the DORA tables and counts the history into them.
const DORA_SCHEMA: usize = 19;

/// The schema whose migration seals what is there and re-chains the trail with the key.
const SEAL_SCHEMA: usize = 7;

/// Brings the file to the current schema in one `BEGIN IMMEDIATE` transaction (most opens find it
/// current and take no write lock). A file that is not promote's, or is newer, is refused untouched.
pub(super) async fn migrate(pool: &SqlitePool, path: &str, key: &Key) -> Result<(), StoreError> {
    let db = |source| StoreError::db(path, source);
    // Most opens find the schema current: check without taking the write lock.
    let app: i64 = sqlx::query_scalar("PRAGMA application_id").fetch_one(pool).await.map_err(db)?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(pool).await.map_err(db)?;
    if app == APP_ID && version as usize == MIGRATIONS.len() {
        return Ok(());
    }
    // IMMEDIATE: take the write lock first, so that two processes opening a new file wait for
    // each other instead of failing to upgrade a read lock.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let app: i64 = sqlx::query_scalar("PRAGMA application_id").fetch_one(&mut *tx).await.map_err(db)?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await.map_err(db)?;
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master").fetch_one(&mut *tx).await.map_err(db)?;
    if app != APP_ID && (app != 0 || tables > 0) {
        return Err(StoreError::Foreign { path: path.to_string(), found: app });
    }
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::Newer { path: path.to_string(), found: version, known: MIGRATIONS.len() });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(AssertSqlSafe(sql.as_str())).execute(&mut *tx).await.map_err(db)?;
        if i + 1 == CHAIN_SCHEMA {
            chain_existing(&mut tx, key).await.map_err(db)?;
        }
        if i + 1 == SEAL_SCHEMA {
            seal_existing(&mut tx, key).await.map_err(db)?;
        }
        if i + 1 == DORA_SCHEMA {
            super::writer::dora_backfill(&mut tx).await.map_err(db)?;
        }
        let set = format!("PRAGMA user_version = {}", i + 1);
        sqlx::query(AssertSqlSafe(set)).execute(&mut *tx).await.map_err(db)?;
    }
    if app != APP_ID {
        sqlx::query(AssertSqlSafe(format!("PRAGMA application_id = {APP_ID}"))).execute(&mut *tx).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// Chains entries written before the chain existed (schema < 5), oldest first, inside the
/// migration's transaction.
async fn chain_existing(tx: &mut sqlx::SqliteConnection, key: &Key) -> Result<(), sqlx::Error> {
    let prev: String = sqlx::query_scalar("SELECT hash FROM audit_head").fetch_optional(&mut *tx).await?.unwrap_or_default();
    chain_from(tx, key, "WHERE hash IS NULL", prev).await
}

/// Chains the entries `filter` selects, oldest first, after `prev`, and moves the head.
async fn chain_from(tx: &mut sqlx::SqliteConnection, key: &Key, filter: &str, mut prev: String) -> Result<(), sqlx::Error> {
    let q = format!("SELECT id, run_id, stage, at, kind, actor, detail FROM events {filter} ORDER BY id");
    let rows = sqlx::query(AssertSqlSafe(q)).fetch_all(&mut *tx).await?;
    let mut last = None;
    for r in &rows {
        let e = super::chain::row_entry(r, 0);
        let hash = e.expected_hash(key, &prev);
        sqlx::query("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?").bind(&prev).bind(&hash).bind(e.seq).execute(&mut *tx).await?;
        prev = hash;
        last = Some(e.seq);
    }
    if let Some(id) = last {
        sqlx::query("INSERT OR REPLACE INTO audit_head (one, id, hash) VALUES (1, ?, ?)").bind(id).bind(&prev).execute(&mut *tx).await?;
    }
    Ok(())
}

/// Seals the records of a state written before seals existed (schema < 7) and re-chains its whole
/// trail with the key, inside the migration's transaction: whoever holds the key upgrades, and
/// what the file held then is what is believed from now on.
async fn seal_existing(tx: &mut sqlx::SqliteConnection, key: &Key) -> Result<(), sqlx::Error> {
    use crate::store::seals;
    let rows = sqlx::query("SELECT id, pipeline, file, source, version, triggered_by, created_at FROM runs").fetch_all(&mut *tx).await?;
    for r in &rows {
        let id: String = r.get(0);
        let seal = seals::run(key, &id, r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), false, r.get(6));
        sqlx::query("UPDATE runs SET seal = ? WHERE id = ?").bind(seal).bind(&id).execute(&mut *tx).await?;
    }
    let rows = sqlx::query("SELECT run_id, name, state FROM stages").fetch_all(&mut *tx).await?;
    for r in &rows {
        let (run, name): (String, String) = (r.get(0), r.get(1));
        let seal = seals::stage(key, &run, &name, r.get(2));
        sqlx::query("UPDATE stages SET seal = ? WHERE run_id = ? AND name = ?").bind(seal).bind(&run).bind(&name).execute(&mut *tx).await?;
    }
    let rows = sqlx::query("SELECT run_id, stage, user, approve, comment, at FROM decisions").fetch_all(&mut *tx).await?;
    for r in &rows {
        let (run, stage, user): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let seal = seals::decision(key, &run, &stage, &user, r.get(3), r.get(4), r.get(5));
        sqlx::query("UPDATE decisions SET seal = ? WHERE run_id = ? AND stage = ? AND user = ?")
            .bind(seal)
            .bind(&run)
            .bind(&stage)
            .bind(&user)
            .execute(&mut *tx)
            .await?;
    }
    let rows = sqlx::query("SELECT pipeline, template, by_user, reason, at FROM log_exemptions").fetch_all(&mut *tx).await?;
    for r in &rows {
        let (pipeline, template): (String, String) = (r.get(0), r.get(1));
        let seal = seals::exemption(key, &pipeline, &template, r.get(2), r.get(3), r.get(4));
        sqlx::query("UPDATE log_exemptions SET seal = ? WHERE pipeline = ? AND template = ?")
            .bind(seal)
            .bind(&pipeline)
            .bind(&template)
            .execute(&mut *tx)
            .await?;
    }
    chain_from(tx, key, "", String::new()).await
}
