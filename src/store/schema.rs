//! The tables both backends hold, each described once: SQLite applies these as its migrations
//! 13 to 19, PostgreSQL as the end of its 1 and its 2 to 7. Each text is written in both
//! dialects by [`Dialect::sql`]: only the integer and flag column types differ (SQLite's
//! `INTEGER`, PostgreSQL's `BIGINT` and `BOOLEAN`), and the records decode the same from both.
//! A new table or column both need is one more entry here and one line in each backend's list.

/// The column types that differ between the two backends.
pub(super) struct Dialect {
    /// Times (Unix milliseconds) and counts.
    int: &'static str,
    /// A flag that is false until set.
    flag: &'static str,
}

pub(super) const SQLITE: Dialect = Dialect { int: "INTEGER", flag: "INTEGER NOT NULL DEFAULT 0" };
pub(super) const POSTGRES: Dialect = Dialect { int: "BIGINT", flag: "BOOLEAN NOT NULL DEFAULT FALSE" };

impl Dialect {
    /// A shared description in this dialect's types.
    pub(super) fn sql(&self, shared: &str) -> String {
        shared.replace("{int}", self.int).replace("{flag}", self.flag)
    }
}

/// The shared migrations after the watches table, in the order both apply them (SQLite's 14 to
/// 19, PostgreSQL's 2 to 7). Never edit a released entry: add one.
pub(super) const AFTER_WATCHES: [&str; 6] = [SESSIONS, POLL_CLAIMS, APPROVAL_NOTES, QUEUES, VIOLATIONS, DORA];

/// watches: a promoted release judged after its run, reverted when it goes bad (sealed: a failed
/// watch holds its version, a passed one makes its commit the last compliant state).
pub(super) const WATCHES: &str = "CREATE TABLE watches (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT NOT NULL,
        commit_id TEXT NOT NULL,
        value TEXT NOT NULL,
        started_at {int} NOT NULL,
        ends_at {int} NOT NULL,
        interval_ms {int} NOT NULL,
        next_at {int} NOT NULL,
        state TEXT NOT NULL,
        looks {int} NOT NULL DEFAULT 0,
        failures {int} NOT NULL DEFAULT 0,
        errors {int} NOT NULL DEFAULT 0,
        passes {int} NOT NULL DEFAULT 0,
        message TEXT,
        evidence TEXT,
        marks TEXT,
        reverted_to TEXT,
        ended_at {int},
        cleared_by TEXT,
        cleared_at {int},
        clear_reason TEXT,
        seal TEXT,
        deployed_at {int} NOT NULL,
        previous TEXT,
        UNIQUE (run_id, stage)
    );
    CREATE INDEX watches_due ON watches (state, next_at);
    CREATE INDEX watches_by_env ON watches (pipeline, environment, state);
    CREATE INDEX watches_by_version ON watches (pipeline, version);";

/// web sessions kept on the server (revocable: sign-out, a token change, a disabled person, an
/// admin's revoke); only the hash of a cookie is stored.
pub(super) const SESSIONS: &str = "CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        login TEXT NOT NULL,
        via TEXT NOT NULL,
        token_hash TEXT,
        groups TEXT NOT NULL,
        created_at {int} NOT NULL,
        seen_at {int} NOT NULL,
        expires_at {int} NOT NULL,
        ended_at {int}
    );
    CREATE INDEX sessions_by_login ON sessions (login, ended_at);";

/// polled registry repositories: when each one's next look is due and who took the last (of
/// several processes on one state, one looks each time).
pub(super) const POLL_CLAIMS: &str = "CREATE TABLE poll_claims (source TEXT PRIMARY KEY, holder TEXT NOT NULL, next_at {int} NOT NULL);";

/// the notes a waiting approval sent (its latest reminder, its escalation), each taken by a
/// conditional write so that no process, replica or restart sends one twice.
pub(super) const APPROVAL_NOTES: &str = "CREATE TABLE approval_notes (
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        since {int} NOT NULL,
        kind TEXT NOT NULL,
        seq {int} NOT NULL,
        at {int} NOT NULL,
        PRIMARY KEY (run_id, stage, since, kind)
    );";

/// the runs queued for each environment, served in order (a newer run may supersede the older ones
/// of its pipeline), and each run's promotions: an environment never goes back to an older run's
/// version; the running runs found by one query (replicas taking over).
pub(super) const QUEUES: &str = "CREATE TABLE env_queue (
        environment TEXT NOT NULL,
        run_id TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        since {int} NOT NULL,
        expires_at {int} NOT NULL,
        superseded_by TEXT,
        PRIMARY KEY (environment, run_id)
    );
    CREATE INDEX env_queue_by_run ON env_queue (run_id);
    CREATE TABLE promotions (
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        run_id TEXT NOT NULL,
        version TEXT NOT NULL,
        at {int} NOT NULL,
        rolled_back {flag},
        PRIMARY KEY (pipeline, environment, run_id)
    );
    CREATE INDEX promotions_newest ON promotions (pipeline, environment, at);
    CREATE INDEX runs_by_state ON runs (state, created_at);";

/// compliance violations: an environment's current files that the pipeline's policies deny, one
/// per (environment, head, policies).
pub(super) const VIOLATIONS: &str = "CREATE TABLE violations (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        head TEXT NOT NULL,
        policies TEXT NOT NULL,
        deny TEXT NOT NULL,
        state TEXT NOT NULL,
        decided_by TEXT,
        reason TEXT,
        until {int},
        revert_to TEXT,
        at {int} NOT NULL,
        decided_at {int},
        seal TEXT,
        UNIQUE (pipeline, environment, head, policies)
    );
    CREATE INDEX violations_by_state ON violations (state, until);
    CREATE INDEX events_by_time ON events (at);";

/// the DORA figures kept with each write (`store::dora`): each deployment and what it adds, each
/// rollback by hand, the sums and histogram buckets of each pipeline and environment, counted once
/// from the history by the migration; the waiting stages indexed.
pub(super) const DORA: &str = "CREATE TABLE dora_deployments (
        run_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        committed_at {int} NOT NULL,
        origin_at {int} NOT NULL,
        stage_failed {int} NOT NULL,
        stage_restored_at {int},
        failed {int} NOT NULL,
        lead_ms {int} NOT NULL,
        restore_ms {int},
        PRIMARY KEY (run_id, stage)
    );
    CREATE INDEX dora_deployments_in_order ON dora_deployments (pipeline, environment, committed_at, run_id, stage);
    CREATE TABLE dora_rollbacks (pipeline TEXT NOT NULL, environment TEXT NOT NULL, at {int} NOT NULL);
    CREATE INDEX dora_rollbacks_in_order ON dora_rollbacks (pipeline, environment, at);
    CREATE TABLE dora (
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        deployments {int} NOT NULL,
        failed {int} NOT NULL,
        lead_sum_ms {int} NOT NULL,
        restore_count {int} NOT NULL,
        restore_sum_ms {int} NOT NULL,
        PRIMARY KEY (pipeline, environment)
    );
    CREATE TABLE dora_buckets (
        pipeline TEXT NOT NULL,
        environment TEXT NOT NULL,
        metric TEXT NOT NULL,
        bucket {int} NOT NULL,
        n {int} NOT NULL,
        PRIMARY KEY (pipeline, environment, metric, bucket)
    );
    CREATE INDEX stages_waiting ON stages (run_id) WHERE state = 'waiting';";
