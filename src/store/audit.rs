//! The audit trail: the events table, hash-chained inside SQLite, its verification and export.
//!
//! Every entry's `hash` is SHA-256 over the previous entry's hash and the entry's own fields
//! (sequence number, run, stage, time, kind, actor, detail), each length-prefixed. The chain is
//! computed by an `AFTER INSERT` trigger calling `promote_chain`, a function this module registers
//! on every pooled connection: no code path (a stage transition is one `UPDATE` whose event comes
//! from another trigger) can write an entry outside the chain, and a plain `sqlite3` shell, which
//! lacks the function, cannot insert at all. `audit_head` keeps the last entry, so a cut tail is
//! seen. The chain is not keyed: keep the head printed by `promote audit verify` somewhere else to
//! catch someone who rewrites the whole file and recomputes every hash.

use std::ffi::{CString, c_int};
use std::ptr::NonNull;

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError};

/// The schema version whose migration adds the chain; entries already there are chained then.
pub const CHAIN_SCHEMA: usize = 5;

/// The SQL function's name.
const FUNCTION: &str = "promote_chain";

/// The hash of an entry: SHA-256 over `prev` and each field, a field being a tag byte (0 = NULL,
/// 1 = text) then its length (8 bytes, little endian) and bytes. Integers are in decimal.
pub fn chain_hash(prev: &str, fields: &[Option<&[u8]>]) -> String {
    let mut h = Sha256::new();
    h.update((prev.len() as u64).to_le_bytes());
    h.update(prev.as_bytes());
    for f in fields {
        match f {
            None => h.update([0u8]),
            Some(b) => {
                h.update([1u8]);
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
        }
    }
    hex(&h.finalize())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// `promote_chain(prev, id, run_id, stage, at, kind, actor, detail)` for SQLite.
unsafe extern "C" fn chain_fn(ctx: *mut libsqlite3_sys::sqlite3_context, argc: c_int, argv: *mut *mut libsqlite3_sys::sqlite3_value) {
    use libsqlite3_sys as ffi;
    // SAFETY: SQLite calls this with `argc` valid values in `argv` (8, as registered); each text
    // pointer is valid for the byte count SQLite reports until the next call on that value, and
    // the result is copied by SQLite (SQLITE_TRANSIENT) before this returns.
    unsafe {
        let args = std::slice::from_raw_parts(argv, argc as usize);
        let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(args.len());
        for &v in args {
            if ffi::sqlite3_value_type(v) == ffi::SQLITE_NULL {
                fields.push(None);
            } else {
                let p = ffi::sqlite3_value_text(v);
                let n = ffi::sqlite3_value_bytes(v) as usize;
                fields.push(Some(if p.is_null() { &[] } else { std::slice::from_raw_parts(p, n) }));
            }
        }
        let prev = fields.first().copied().flatten().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        let out = chain_hash(&prev, &fields[1..]);
        ffi::sqlite3_result_text(ctx, out.as_ptr().cast(), out.len() as c_int, ffi::SQLITE_TRANSIENT());
    }
}

/// Registers `promote_chain` on a new connection (the pool's `after_connect`).
pub async fn register(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db: NonNull<libsqlite3_sys::sqlite3> = handle.as_raw_handle();
    let name = CString::new(FUNCTION).expect("no NUL");
    // SAFETY: the handle is locked out of sqlx's worker for the duration of the call; the name is
    // copied by SQLite; the function has no user data and no destructor.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_create_function_v2(
            db.as_ptr(),
            name.as_ptr(),
            8,
            libsqlite3_sys::SQLITE_UTF8 | libsqlite3_sys::SQLITE_DETERMINISTIC,
            std::ptr::null_mut(),
            Some(chain_fn),
            None,
            None,
            None,
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!("could not register {FUNCTION} (SQLite code {rc})")));
    }
    Ok(())
}

/// Chains entries written before the chain existed (schema < 5), oldest first, inside the
/// migration's transaction.
pub(super) async fn chain_existing(tx: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let rows = sqlx::query("SELECT id, run_id, stage, at, kind, actor, detail FROM events WHERE hash IS NULL ORDER BY id").fetch_all(&mut *tx).await?;
    let mut prev: String = sqlx::query_scalar("SELECT hash FROM audit_head").fetch_optional(&mut *tx).await?.unwrap_or_default();
    let mut last = None;
    for r in &rows {
        let e = row_entry(r, 0);
        let hash = e.expected_hash(&prev);
        sqlx::query("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?").bind(&prev).bind(&hash).bind(e.seq).execute(&mut *tx).await?;
        prev = hash;
        last = Some(e.seq);
    }
    if let Some(id) = last {
        sqlx::query("INSERT OR REPLACE INTO audit_head (one, id, hash) VALUES (1, ?, ?)").bind(id).bind(&prev).execute(&mut *tx).await?;
    }
    Ok(())
}

/// One entry of the trail.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its sequence number (the events table's id).
    pub seq: i64,
    /// When, Unix milliseconds.
    pub at: i64,
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// The run it belongs to.
    pub run: String,
    /// The stage, if any.
    pub stage: Option<String>,
    /// What kind of entry.
    pub kind: String,
    /// Who.
    pub actor: String,
    /// What happened.
    pub detail: String,
    /// The previous entry's hash (empty for the first).
    pub prev_hash: Option<String>,
    /// This entry's hash.
    pub hash: Option<String>,
}

impl Entry {
    /// The hash this entry should have after `prev`.
    pub fn expected_hash(&self, prev: &str) -> String {
        let (seq, at) = (self.seq.to_string(), self.at.to_string());
        chain_hash(
            prev,
            &[
                Some(seq.as_bytes()),
                Some(self.run.as_bytes()),
                self.stage.as_deref().map(str::as_bytes),
                Some(at.as_bytes()),
                Some(self.kind.as_bytes()),
                Some(self.actor.as_bytes()),
                Some(self.detail.as_bytes()),
            ],
        )
    }
}

const COLUMNS: &str = "id, run_id, stage, at, kind, actor, detail, prev_hash, hash";

fn row_entry(r: &sqlx::sqlite::SqliteRow, base: usize) -> Entry {
    let at: i64 = r.get(base + 3);
    Entry {
        seq: r.get(base),
        run: r.get(base + 1),
        stage: r.get(base + 2),
        at,
        time: rfc3339(at),
        kind: r.get(base + 4),
        actor: r.get(base + 5),
        detail: r.get(base + 6),
        prev_hash: r.try_get(base + 7).ok().flatten(),
        hash: r.try_get(base + 8).ok().flatten(),
    }
}

/// Unix milliseconds as RFC 3339 in UTC.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()).unwrap_or_else(|_| ms.to_string())
}

/// What is wrong with a trail: the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "problem")]
pub enum Tamper {
    /// The entry's content no longer matches its hash.
    Altered {
        /// The entry.
        seq: i64,
    },
    /// Entries before this one are gone.
    Removed {
        /// The entry that does not follow its predecessor.
        seq: i64,
        /// The entry now before it (0: none).
        after: i64,
    },
    /// The entry does not follow the one before it, though none is missing: rows were reordered
    /// or replaced.
    Reordered {
        /// The entry.
        seq: i64,
        /// The entry before it.
        after: i64,
    },
    /// The entry was written without the chain (by hand, with the trigger removed).
    Unhashed {
        /// The entry.
        seq: i64,
    },
    /// A head kept elsewhere is no longer in the trail: it was rewritten and every hash
    /// recomputed.
    Rewritten {
        /// The head given.
        known: String,
    },
    /// Entries at the end are gone: the head promote wrote last is not the last entry.
    TailCut {
        /// The last entry promote wrote.
        head: i64,
        /// The last entry there now (0: none).
        last: i64,
    },
}

impl Tamper {
    /// The first bad entry's number.
    pub fn seq(&self) -> i64 {
        match self {
            Tamper::Altered { seq } | Tamper::Removed { seq, .. } | Tamper::Reordered { seq, .. } | Tamper::Unhashed { seq } => *seq,
            Tamper::TailCut { last, .. } => *last + 1,
            Tamper::Rewritten { .. } => 0,
        }
    }
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tamper::Altered { seq } => write!(f, "entry #{seq} was altered: its content does not match its hash"),
            Tamper::Removed { seq, after: 0 } => write!(f, "entries before #{seq} were removed: it does not follow the start of the trail"),
            Tamper::Removed { seq, after } => write!(f, "entries between #{after} and #{seq} were removed: #{seq} does not follow #{after}"),
            Tamper::Reordered { seq, after } => write!(f, "entry #{seq} does not follow #{after}: entries were reordered or replaced"),
            Tamper::Unhashed { seq } => write!(f, "entry #{seq} has no hash: it was written outside promote's chain"),
            Tamper::TailCut { head, last } => write!(f, "the trail ends at #{last} but promote last wrote #{head}: entries at the end were removed"),
            Tamper::Rewritten { known } => {
                write!(f, "the head {known} kept from an earlier verify is not in the trail: it was rewritten and its hashes recomputed")
            }
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Entries in the trail.
    pub entries: i64,
    /// The last entry's hash (keep it elsewhere to catch a wholesale rewrite).
    pub head: Option<String>,
    /// The first problem found, if any.
    pub tamper: Option<Tamper>,
}

impl Store {
    /// Checks the whole trail: every hash recomputed inside SQLite (by the same function the
    /// trigger uses) and every link compared, in one query; the first bad entry is then looked at
    /// closely to say what happened to it.
    pub async fn verify_audit(&self) -> Result<Verdict, StoreError> {
        let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.pool).await.map_err(self.db())?;
        let bad: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM (
                SELECT id, hash, prev_hash, coalesce(lag(hash) OVER w, '') AS want_prev,
                       promote_chain(coalesce(lag(hash) OVER w, ''), id, run_id, stage, at, kind, actor, detail) AS want
                FROM events WINDOW w AS (ORDER BY id))
             WHERE hash IS NULL OR prev_hash IS NULL OR hash <> want OR prev_hash <> want_prev
             ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db())?;
        let last = sqlx::query("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetch_optional(&self.pool).await.map_err(self.db())?;
        let last: Option<(i64, Option<String>)> = last.map(|r| (r.get(0), r.get(1)));
        let head = last.as_ref().and_then(|l| l.1.clone());
        if let Some(seq) = bad {
            let tamper = self.classify(seq).await?;
            return Ok(Verdict { entries, head, tamper: Some(tamper) });
        }
        let written = sqlx::query("SELECT id, hash FROM audit_head").fetch_optional(&self.pool).await.map_err(self.db())?;
        let written: Option<(i64, String)> = written.map(|r| (r.get(0), r.get(1)));
        let tamper = match (&written, &last) {
            (Some((id, hash)), Some((lid, lhash))) if id != lid || Some(hash) != lhash.as_ref() => Some(Tamper::TailCut { head: *id, last: *lid }),
            (Some((id, _)), None) => Some(Tamper::TailCut { head: *id, last: 0 }),
            _ => None,
        };
        Ok(Verdict { entries, head, tamper })
    }

    /// Says what happened to the first entry that fails the chain.
    async fn classify(&self, seq: i64) -> Result<Tamper, StoreError> {
        let q = format!("SELECT {COLUMNS} FROM events WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(q)).bind(seq).fetch_one(&self.pool).await.map_err(self.db())?;
        let e = row_entry(&row, 0);
        let (Some(hash), Some(prev)) = (&e.hash, &e.prev_hash) else { return Ok(Tamper::Unhashed { seq }) };
        if e.expected_hash(prev) != *hash {
            return Ok(Tamper::Altered { seq });
        }
        // Self-consistent, but it does not follow the entry before it.
        let before: Option<i64> =
            sqlx::query_scalar("SELECT id FROM events WHERE id < ? ORDER BY id DESC LIMIT 1").bind(seq).fetch_optional(&self.pool).await.map_err(self.db())?;
        let after = before.unwrap_or(0);
        let found_later: Option<i64> =
            sqlx::query_scalar("SELECT id FROM events WHERE hash = ? AND id > ?").bind(prev).bind(seq).fetch_optional(&self.pool).await.map_err(self.db())?;
        if found_later.is_none() && seq - after > 1 {
            return Ok(Tamper::Removed { seq, after });
        }
        Ok(Tamper::Reordered { seq, after })
    }

    /// The entry whose hash is `hash`, if any (a head kept elsewhere must still be in the trail).
    pub async fn audit_entry_with_hash(&self, hash: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT id FROM events WHERE hash = ?").bind(hash.trim().to_ascii_lowercase()).fetch_optional(&self.pool).await.map_err(self.db())
    }

    /// The trail, oldest first, optionally of one run; `after` and `limit` page through it.
    pub async fn audit_entries(&self, run: Option<&str>, after: i64, limit: i64) -> Result<Vec<Entry>, StoreError> {
        let q = format!("SELECT {COLUMNS} FROM events WHERE id > ? AND (? IS NULL OR run_id = ?) ORDER BY id LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q)).bind(after).bind(run).bind(run).bind(limit).fetch_all(&self.pool).await.map_err(self.db())?;
        Ok(rows.iter().map(|r| row_entry(r, 0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_counts_and_boundaries_are_kept() {
        let a = chain_hash("", &[Some(b"1"), Some(b"ab"), Some(b"c")]);
        let b = chain_hash("", &[Some(b"1"), Some(b"a"), Some(b"bc")]);
        let c = chain_hash("", &[Some(b"1"), None, Some(b"abc")]);
        let d = chain_hash("x", &[Some(b"1"), Some(b"ab"), Some(b"c")]);
        assert_eq!(a.len(), 64);
        assert!(a != b && a != c && a != d && b != c);
        assert_eq!(a, chain_hash("", &[Some(b"1"), Some(b"ab"), Some(b"c")]));
    }
}
