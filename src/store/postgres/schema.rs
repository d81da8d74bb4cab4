//! The PostgreSQL schema: the meaning of the SQLite schema at its version 13, in PostgreSQL's
//! types, one migration per version recorded in `promote_schema`; applied in one transaction
//! under an advisory lock, so that replicas starting together migrate once.

use std::sync::LazyLock;

use sqlx::postgres::PgPool;

use crate::store::StoreError;
use crate::store::schema as shared;

/// The advisory lock key replicas migrate under ("PROM").
const MIGRATION_LOCK: i64 = 0x5052_4f4d;

/// The schema, one migration per version: the first holds what SQLite's first 13 hold, then the
/// tables both backends describe once (`store::schema`), then this backend's own.
/// Never edit a released entry: add one.
pub static MIGRATIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let first = format!("{FIRST}\n    {}", shared::WATCHES);
    [first.as_str()].into_iter().chain(shared::AFTER_WATCHES).chain(OWN.iter().copied()).map(|sql| shared::POSTGRES.sql(sql)).collect()
});

/// Migration 1 up to the shared watches table: everything the SQLite schema holds at its version
/// 13. Times are Unix milliseconds (BIGINT), counts BIGINT, flags BOOLEAN, JSON as text: the
/// records decode the same from both.
const FIRST: &str = "CREATE TABLE meta (one INTEGER PRIMARY KEY CHECK (one = 1), state_id TEXT NOT NULL);
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
    );";

/// This backend's own migrations after the shared ones.
const OWN: &[&str] = &[
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
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.as_str())).execute(&mut *tx).await.map_err(&e)?;
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
