//! The chain inside SQLite: `promote_chain` (the port's [`chain_hash`], keyed) registered on
//! every connection, so that the guard trigger refuses an entry off the chain and a plain
//! `sqlite3` shell, which lacks the function (and the key), cannot insert at all; and
//! verification in one query.

use std::ffi::{CString, c_int};
use std::ptr::NonNull;

use sqlx::Row;

use super::SqliteBackend;
use crate::seal::Key;
use crate::store::StoreError;
use crate::store::chain::{Entry, Tamper, Verdict, chain_hash};

/// The SQL function's name.
const FUNCTION: &str = "promote_chain";

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
        // SAFETY: the user data is the `Key` boxed by `register`, alive until SQLite calls
        // `drop_key` when the connection closes.
        let key = &*(ffi::sqlite3_user_data(ctx) as *const Key);
        let out = chain_hash(key, &prev, &fields[1..]);
        ffi::sqlite3_result_text(ctx, out.as_ptr().cast(), out.len() as c_int, ffi::SQLITE_TRANSIENT());
    }
}

/// Frees the key given to SQLite with the function.
unsafe extern "C" fn drop_key(p: *mut std::ffi::c_void) {
    // SAFETY: `p` is the `Box<Key>` leaked by `register`, given back once by SQLite.
    drop(unsafe { Box::from_raw(p as *mut Key) });
}

/// Registers `promote_chain`, keyed with `key`, on a new connection (the pool's `after_connect`).
pub async fn register(conn: &mut sqlx::SqliteConnection, key: Key) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db: NonNull<libsqlite3_sys::sqlite3> = handle.as_raw_handle();
    let name = CString::new(FUNCTION).expect("no NUL");
    let data = Box::into_raw(Box::new(key)) as *mut std::ffi::c_void;
    // SAFETY: the handle is locked out of sqlx's worker for the duration of the call; the name is
    // copied by SQLite; the user data is a leaked box that SQLite frees with `drop_key` (also
    // when registering fails).
    let rc = unsafe {
        libsqlite3_sys::sqlite3_create_function_v2(
            db.as_ptr(),
            name.as_ptr(),
            8,
            libsqlite3_sys::SQLITE_UTF8 | libsqlite3_sys::SQLITE_DETERMINISTIC,
            data,
            Some(chain_fn),
            None,
            None,
            Some(drop_key),
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!("could not register {FUNCTION} (SQLite code {rc})")));
    }
    Ok(())
}

const COLUMNS: &str = "id, run_id, stage, at, kind, actor, detail, prev_hash, hash";

pub(super) fn row_entry(r: &sqlx::sqlite::SqliteRow, base: usize) -> Entry {
    let at: i64 = r.get(base + 3);
    Entry {
        seq: r.get(base),
        run: r.get(base + 1),
        stage: r.get(base + 2),
        at,
        time: crate::clock::rfc3339(at),
        kind: r.get(base + 4),
        actor: r.get(base + 5),
        detail: r.get(base + 6),
        prev_hash: r.try_get(base + 7).ok().flatten(),
        hash: r.try_get(base + 8).ok().flatten(),
    }
}

impl SqliteBackend {
    /// Checks the whole trail: every hash recomputed inside SQLite (by the same function the
    /// trigger uses) and every link compared, in one query; the first bad entry is then looked at
    /// closely to say what happened to it.
    pub(super) async fn verify_audit(&self) -> Result<Verdict, StoreError> {
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
            return Ok(Verdict { entries, head, tamper: Some(tamper), kept: Vec::new() });
        }
        let written = sqlx::query("SELECT id, hash FROM audit_head").fetch_optional(&self.pool).await.map_err(self.db())?;
        let written: Option<(i64, String)> = written.map(|r| (r.get(0), r.get(1)));
        let tamper = match (&written, &last) {
            (Some((id, hash)), Some((lid, lhash))) if id != lid || Some(hash) != lhash.as_ref() => Some(Tamper::TailCut { head: *id, last: *lid }),
            (Some((id, _)), None) => Some(Tamper::TailCut { head: *id, last: 0 }),
            _ => None,
        };
        Ok(Verdict { entries, head, tamper, kept: Vec::new() })
    }

    /// Says what happened to the first entry that fails the chain.
    async fn classify(&self, seq: i64) -> Result<Tamper, StoreError> {
        let q = format!("SELECT {COLUMNS} FROM events WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(q)).bind(seq).fetch_one(&self.pool).await.map_err(self.db())?;
        let e = row_entry(&row, 0);
        let (Some(hash), Some(prev)) = (&e.hash, &e.prev_hash) else { return Ok(Tamper::Unhashed { seq }) };
        if e.expected_hash(&self.key, prev) != *hash {
            // Intact content at another place (rows swapped or moved): its hash holds for the
            // number it was written as. Looked for near where it stands now.
            const NEAR: i64 = 4096;
            if let Some(w) = (seq.saturating_sub(NEAR).max(1)..=seq + NEAR).filter(|&w| w != seq).find(|&w| e.expected_hash_at(&self.key, prev, w) == *hash) {
                return Ok(Tamper::Moved { seq, written_as: w });
            }
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
    pub(super) async fn audit_entry_with_hash(&self, hash: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT id FROM events WHERE hash = ?").bind(hash.trim().to_ascii_lowercase()).fetch_optional(&self.pool).await.map_err(self.db())
    }

    /// The trail, oldest first, optionally of one run; `after` and `limit` page through it.
    pub(super) async fn audit_entries(&self, run: Option<&str>, after: i64, limit: i64) -> Result<Vec<Entry>, StoreError> {
        let q = format!("SELECT {COLUMNS} FROM events WHERE id > ? AND (? IS NULL OR run_id = ?) ORDER BY id LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q)).bind(after).bind(run).bind(run).bind(limit).fetch_all(&self.pool).await.map_err(self.db())?;
        Ok(rows.iter().map(|r| row_entry(r, 0)).collect())
    }
}
