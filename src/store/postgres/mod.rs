//! The PostgreSQL side of the state port, for several `promote serve` replicas on one database
//! (issue 19): so far its schema, migrated by whichever replica starts first, and the audit
//! trail's append, which keeps one chain whatever the number of concurrent writers. The
//! [`super::Backend`] over it is not done yet: nothing outside the tests opens one.

pub mod schema;

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::seal::Key;
use crate::store::StoreError;
use crate::store::chain::entry_hash;

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

fn db(url: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
        StoreError::Db { path: redacted(url), message: e.to_string(), code }
    }
}

/// Connects to `url` and brings its schema to the current version (see [`schema::migrate`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new().max_connections(max_connections).connect(url).await.map_err(db(url))?;
    schema::migrate(&pool, url).await?;
    Ok(pool)
}

/// One audit entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// The run it belongs to.
    pub run: &'a str,
    /// The stage, if any.
    pub stage: Option<&'a str>,
    /// When, in ms since the epoch.
    pub at: i64,
    /// What kind of entry.
    pub kind: &'a str,
    /// Who did it.
    pub actor: &'a str,
    /// The entry's text.
    pub detail: &'a str,
}

/// Appends `entry` to the trail in its own transaction and returns its id: the head row is
/// locked (`SELECT ... FOR UPDATE`), so that concurrent writers on any number of replicas take
/// turns and each entry chains on the one before it; the database's trigger refuses an entry
/// whose `prev_hash` is not the head's, whoever writes it.
pub async fn append(pool: &PgPool, url: &str, key: &Key, entry: &NewEntry<'_>) -> Result<i64, StoreError> {
    let e = db(url);
    let mut tx = pool.begin().await.map_err(&e)?;
    let (head_id, head_hash): (i64, String) =
        sqlx::query_as("SELECT id, hash FROM audit_head WHERE one = 1 FOR UPDATE").fetch_one(&mut *tx).await.map_err(&e)?;
    let id = head_id + 1;
    let hash = entry_hash(key, &head_hash, id, entry.run, entry.stage, entry.at, entry.kind, entry.actor, entry.detail);
    sqlx::query("INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(id)
        .bind(entry.run)
        .bind(entry.stage)
        .bind(entry.at)
        .bind(entry.kind)
        .bind(entry.actor)
        .bind(entry.detail)
        .bind(&head_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
    tx.commit().await.map_err(&e)?;
    Ok(id)
}

/// The trail as stored, oldest first.
pub async fn entries(pool: &PgPool, url: &str) -> Result<Vec<crate::store::Entry>, StoreError> {
    type Row = (i64, String, String, String, Option<String>, i64, String, String, String);
    let rows: Vec<Row> =
        sqlx::query_as("SELECT id, prev_hash, hash, run_id, stage, at, kind, actor, detail FROM events ORDER BY id").fetch_all(pool).await.map_err(db(url))?;
    Ok(rows
        .into_iter()
        .map(|(seq, prev_hash, hash, run, stage, at, kind, actor, detail)| crate::store::Entry {
            seq,
            at,
            time: crate::clock::rfc3339(at),
            run,
            stage,
            kind,
            actor,
            detail,
            prev_hash: Some(prev_hash),
            hash: Some(hash),
        })
        .collect())
}
