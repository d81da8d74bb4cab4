//! The PostgreSQL schema: the meaning of the SQLite schema at its version 13, in PostgreSQL's
//! types, one migration per version recorded in `promote_schema`; applied in one transaction
//! under an advisory lock, so that replicas starting together migrate once.

use sqlx::postgres::PgPool;

use crate::store::StoreError;

/// The advisory lock key replicas migrate under ("PROM").
const MIGRATION_LOCK: i64 = 0x5052_4f4d;

/// The schema, one migration per version. Never edit a released entry: add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite schema holds at its version 13. Times are Unix milliseconds
    // (BIGINT), counts BIGINT, flags BOOLEAN, JSON as text: the records decode the same from both.
    "CREATE TABLE meta (one INTEGER PRIMARY KEY CHECK (one = 1), state_id TEXT NOT NULL);
    INSERT INTO meta (one, state_id) VALUES (1, md5(random()::text || clock_timestamp()::text));
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        file TEXT NOT NULL,
        source TEXT NOT NULL,
        version TEXT NOT NULL,
        state TEXT NOT NULL,
        triggered_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        finished_at BIGINT,
        message TEXT,
        authenticated BOOLEAN NOT NULL DEFAULT false,
        seal TEXT
    );
    CREATE TABLE stages (
        run_id TEXT NOT NULL REFERENCES runs(id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        position BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempt BIGINT NOT NULL DEFAULT 0,
        started_at BIGINT,
        finished_at BIGINT,
        message TEXT,
        output TEXT,
        event TEXT,
        seal TEXT,
        PRIMARY KEY (run_id, name)
    );
    CREATE INDEX stages_by_kind ON stages (kind, state);
    CREATE TABLE events (
        id BIGINT PRIMARY KEY,
        run_id TEXT NOT NULL,
        stage TEXT,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        actor TEXT NOT NULL DEFAULT 'promote',
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX events_by_run ON events (run_id, id);
    CREATE TABLE audit_head (one INTEGER PRIMARY KEY CHECK (one = 1), id BIGINT NOT NULL, hash TEXT NOT NULL);
    INSERT INTO audit_head (one, id, hash) VALUES (1, 0, '');
    CREATE FUNCTION promote_events_chained() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE head RECORD;
    BEGIN
        SELECT id, hash INTO head FROM audit_head WHERE one = 1 FOR UPDATE;
        IF NEW.id <> head.id + 1 OR NEW.prev_hash <> head.hash THEN
            RAISE EXCEPTION 'an audit entry must carry its place in the chain: only promote appends to the trail';
        END IF;
        UPDATE audit_head SET id = NEW.id, hash = NEW.hash WHERE one = 1;
        -- Every replica's change feed listens (delivered at commit; one per transaction).
        PERFORM pg_notify('promote_changes', '');
        RETURN NEW;
    END $$;
    CREATE TRIGGER events_chained BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION promote_events_chained();
    CREATE FUNCTION promote_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit trail is append-only';
    END $$;
    CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION promote_append_only();
    CREATE TABLE decisions (
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        \"user\" TEXT NOT NULL,
        approve BOOLEAN NOT NULL,
        comment TEXT,
        at BIGINT NOT NULL,
        seal TEXT,
        PRIMARY KEY (run_id, stage, \"user\")
    );
    CREATE TABLE env_locks (environment TEXT PRIMARY KEY, run_id TEXT NOT NULL, at BIGINT NOT NULL, expires_at BIGINT NOT NULL DEFAULT 0);
    CREATE TABLE drivers (run_id TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL);
    CREATE TABLE log_exemptions (
        pipeline TEXT NOT NULL,
        template TEXT NOT NULL,
        by_user TEXT NOT NULL,
        reason TEXT NOT NULL,
        at BIGINT NOT NULL,
        seal TEXT,
        PRIMARY KEY (pipeline, template)
    );
    CREATE TABLE deliveries (
        provider TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        version TEXT NOT NULL,
        run_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        origin_at BIGINT,
        PRIMARY KEY (provider, delivery_id, pipeline),
        UNIQUE (pipeline, version)
    );
    CREATE TABLE polled (source TEXT NOT NULL, ref TEXT NOT NULL, oid TEXT NOT NULL, PRIMARY KEY (source, ref));
    CREATE TABLE drifts (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        head TEXT NOT NULL,
        baseline TEXT,
        commits TEXT NOT NULL,
        diff TEXT NOT NULL,
        rewritten BOOLEAN NOT NULL,
        state TEXT NOT NULL,
        decided_by TEXT,
        reason TEXT,
        at BIGINT NOT NULL,
        decided_at BIGINT,
        seal TEXT,
        UNIQUE (pipeline, environment, head)
    );
    CREATE TABLE watches (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT NOT NULL,
        commit_id TEXT NOT NULL,
        value TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ends_at BIGINT NOT NULL,
        interval_ms BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        looks BIGINT NOT NULL DEFAULT 0,
        failures BIGINT NOT NULL DEFAULT 0,
        errors BIGINT NOT NULL DEFAULT 0,
        passes BIGINT NOT NULL DEFAULT 0,
        message TEXT,
        evidence TEXT,
        marks TEXT,
        reverted_to TEXT,
        ended_at BIGINT,
        cleared_by TEXT,
        cleared_at BIGINT,
        clear_reason TEXT,
        seal TEXT,
        deployed_at BIGINT NOT NULL,
        previous TEXT,
        UNIQUE (run_id, stage)
    );
    CREATE INDEX watches_due ON watches (state, next_at);
    CREATE INDEX watches_by_env ON watches (pipeline, environment, state);
    CREATE INDEX watches_by_version ON watches (pipeline, version);",
    // 2: web sessions (SQLite's 14).
    "CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        via TEXT NOT NULL,
        token_hash TEXT,
        groups TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        seen_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        ended_at BIGINT
    );
    CREATE INDEX sessions_by_login ON sessions (login, ended_at);",
    // 3: polled registry repositories' claims (SQLite's 15).
    "CREATE TABLE poll_claims (source TEXT PRIMARY KEY, holder TEXT NOT NULL, next_at BIGINT NOT NULL);",
    // 4: the notes a waiting approval sent (SQLite's 16).
    "CREATE TABLE approval_notes (
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        since BIGINT NOT NULL,
        kind TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (run_id, stage, since, kind)
    );",
    // 5: environment queues and promotions (SQLite's 17).
    "CREATE TABLE env_queue (
        environment TEXT NOT NULL,
        run_id TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        since BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        superseded_by TEXT,
        PRIMARY KEY (environment, run_id)
    );
    CREATE INDEX env_queue_by_run ON env_queue (run_id);
    CREATE TABLE promotions (
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        run_id TEXT NOT NULL,
        version TEXT NOT NULL,
        at BIGINT NOT NULL,
        rolled_back BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (pipeline, environment, run_id)
    );
    CREATE INDEX promotions_newest ON promotions (pipeline, environment, at);
    CREATE INDEX runs_by_state ON runs (state, created_at);",
    // 6: compliance violations (SQLite's 18).
    "CREATE TABLE violations (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        head TEXT NOT NULL,
        policies TEXT NOT NULL,
        deny TEXT NOT NULL,
        state TEXT NOT NULL,
        decided_by TEXT,
        reason TEXT,
        until BIGINT,
        revert_to TEXT,
        at BIGINT NOT NULL,
        decided_at BIGINT,
        seal TEXT,
        UNIQUE (pipeline, environment, head, policies)
    );
    CREATE INDEX violations_by_state ON violations (state, until);
    CREATE INDEX events_by_time ON events (at);",
    // 7: the DORA figures kept with each write (SQLite's 19), counted once from the history.
    "CREATE TABLE dora_deployments (
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        committed_at BIGINT NOT NULL,
        origin_at BIGINT NOT NULL,
        stage_failed BIGINT NOT NULL,
        stage_restored_at BIGINT,
        failed BIGINT NOT NULL,
        lead_ms BIGINT NOT NULL,
        restore_ms BIGINT,
        PRIMARY KEY (run_id, stage)
    );
    CREATE INDEX dora_deployments_in_order ON dora_deployments (pipeline, environment, committed_at, run_id, stage);
    CREATE TABLE dora_rollbacks (pipeline TEXT NOT NULL, environment TEXT NOT NULL, at BIGINT NOT NULL);
    CREATE INDEX dora_rollbacks_in_order ON dora_rollbacks (pipeline, environment, at);
    CREATE TABLE dora (
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        deployments BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        lead_sum_ms BIGINT NOT NULL,
        restore_count BIGINT NOT NULL,
        restore_sum_ms BIGINT NOT NULL,
        PRIMARY KEY (pipeline, environment)
    );
    CREATE TABLE dora_buckets (
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        metric TEXT NOT NULL,
        bucket BIGINT NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (pipeline, environment, metric, bucket)
    );
    CREATE INDEX stages_waiting ON stages (run_id) WHERE state = 'waiting';",
    // 8: the chain checked per statement, not per row: a transaction's entries come in one INSERT,
    // and the head row moves once for them all (a row trigger moved it per entry, and each later
    // entry of the transaction walked every version of it made before). Every link is still
    // checked, in id order, under the head's lock.
    "DROP TRIGGER events_chained ON events;
    CREATE OR REPLACE FUNCTION promote_events_chained() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE head RECORD; e RECORD; n BIGINT := 0;
    BEGIN
        SELECT id, hash INTO head FROM audit_head WHERE one = 1 FOR UPDATE;
        FOR e IN SELECT id, prev_hash, hash FROM appended ORDER BY id LOOP
            IF e.id <> head.id + 1 OR e.prev_hash <> head.hash THEN
                RAISE EXCEPTION 'an audit entry must carry its place in the chain: only promote appends to the trail';
            END IF;
            head.id := e.id;
            head.hash := e.hash;
            n := n + 1;
        END LOOP;
        IF n > 0 THEN
            UPDATE audit_head SET id = head.id, hash = head.hash WHERE one = 1;
            -- Every replica's change feed listens (delivered at commit; one per transaction).
            PERFORM pg_notify('promote_changes', '');
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_chained AFTER INSERT ON events REFERENCING NEW TABLE AS appended FOR EACH STATEMENT EXECUTE FUNCTION promote_events_chained();",
];

/// The schema whose migration makes the DORA tables and counts the history into them.
const DORA_SCHEMA: usize = 7;

/// The schema version the database is at (0: none yet).
pub async fn version(pool: &PgPool, url: &str) -> Result<i64, StoreError> {
    let e = super::db(url);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('promote_schema') IS NOT NULL").fetch_one(pool).await.map_err(&e)?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT coalesce(max(version), 0)::BIGINT FROM promote_schema").fetch_one(pool).await.map_err(&e)
}

/// Brings the database to the current schema: in one transaction that first takes an advisory
/// lock, so that of several replicas starting at once one migrates and the others, once it is
/// done, find nothing to do. A database of a newer promote is refused untouched.
pub async fn migrate(pool: &PgPool, url: &str) -> Result<(), StoreError> {
    let e = super::db(url);
    let mut tx = pool.begin().await.map_err(&e)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await.map_err(&e)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS promote_schema (version BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
    let found: i64 = sqlx::query_scalar("SELECT coalesce(max(version), 0)::BIGINT FROM promote_schema").fetch_one(&mut *tx).await.map_err(&e)?;
    if found as usize > MIGRATIONS.len() {
        return Err(StoreError::Newer { path: super::redacted(url), found, known: MIGRATIONS.len() });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *tx).await.map_err(&e)?;
        if i + 1 == DORA_SCHEMA {
            super::writer::dora_backfill(&mut tx).await.map_err(&e)?;
        }
        sqlx::query("INSERT INTO promote_schema (version) VALUES ($1)").bind(i as i64 + 1).execute(&mut *tx).await.map_err(&e)?;
    }
    tx.commit().await.map_err(&e)?;
    Ok(())
}

/// The state's id (made by the first migration).
pub async fn state_id(pool: &PgPool, url: &str) -> Result<String, StoreError> {
    sqlx::query_scalar("SELECT state_id FROM meta WHERE one = 1").fetch_one(pool).await.map_err(super::db(url))
}
