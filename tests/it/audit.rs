//! The audit trail in a real state file: a clean trail verifies and exports; rows edited, deleted,
//! swapped, cut or inserted directly in the SQLite file (as someone with the file would) are each
//! caught by `promote audit verify`, which names the first bad entry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use promote::store::StageState;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::exec::{Setup, drive, promote, text, wait_for_state};

/// A state file with a few runs in it: triggers, transitions, a decision, a run's end.
async fn trail() -> (Setup, usize) {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n  ok:\n    needs: [qa]\n    approval: {approvers: [alice]}\n", "");
    let exec = Arc::new(s.executor().await);
    for v in ["1.1.0", "1.2.0"] {
        let id = s.start(&exec, v).await;
        let (e, i) = (exec.clone(), id.clone());
        let walker = tokio::spawn(async move { drive(&e, &i).await });
        wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
        exec.store.decide(&id, "ok", "alice", true, Some("ship it")).await.unwrap();
        walker.await.unwrap();
    }
    promote::exec::settle_heads().await;
    let n = exec.store.audit_entries(None, 0, 1_000_000).await.unwrap().len();
    exec.store.close().await;
    (s, n)
}

/// A copy of the state file to tamper with, and a plain SQLite pool on it (no promote function:
/// what an attacker with `sqlite3` has).
async fn copy(s: &Setup, name: &str) -> (PathBuf, SqlitePool) {
    let to = s.path().join(format!("{name}.db"));
    std::fs::copy(s.state(), &to).unwrap();
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&to)).await.unwrap();
    (to, pool)
}

async fn exec_sql(pool: &SqlitePool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn verify(dir: &Path, state: &Path) -> (Option<i32>, String) {
    let out = promote(dir, &["--state", state.to_str().unwrap(), "audit", "verify"]);
    (out.status.code(), text(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_trail_verifies_and_exports_linked_json_lines() {
    let (s, n) = trail().await;
    assert!(n >= 14, "{n} entries");
    let (code, out) = verify(s.path(), &s.state());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with(&format!("audit trail intact: {n} entries, head ")), "{out}");
    let log = promote(s.path(), &["audit", "log", "--json"]);
    assert!(log.status.success());
    let lines = serde_json::from_slice::<serde_json::Value>(&log.stdout).unwrap()["items"].as_array().unwrap().clone();
    assert_eq!(lines.len(), n);
    for (i, e) in lines.iter().enumerate() {
        assert_eq!(e["seq"], i as i64 + 1);
        let prev = if i == 0 { "" } else { lines[i - 1]["hash"].as_str().unwrap() };
        assert_eq!(e["prevHash"], prev, "entry {} links to the one before", i + 1);
    }
    let kinds: Vec<&str> = lines.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "trigger");
    assert_eq!(lines[0]["actor"], "ci-bot");
    assert!(lines.iter().any(|e| e["kind"] == "decision" && e["actor"] == "alice" && e["detail"] == "approved by alice: ship it"));
    assert!(lines.iter().any(|e| e["kind"] == "stage" && e["detail"].as_str().unwrap().starts_with("succeeded: qa -> 1.2.0 in ")), "commits are in the trail");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_tampering_is_caught_and_the_first_bad_entry_named() {
    let (s, n) = trail().await;
    let n = n as i64;

    // Edited: the detail, the time, the actor of entry 5.
    for (name, set) in [("detail", "detail = 'approved by mallory'"), ("time", "at = at + 1"), ("actor", "actor = 'mallory'")] {
        let (db, pool) = copy(&s, name).await;
        exec_sql(&pool, &format!("DROP TRIGGER events_append_only; UPDATE events SET {set} WHERE id = 5;")).await;
        pool.close().await;
        let (code, out) = verify(s.path(), &db);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.contains("entry #5 was altered"), "{name}: {out}");
    }

    // Removed: entry 6.
    let (db, pool) = copy(&s, "deleted").await;
    exec_sql(&pool, "DROP TRIGGER events_no_delete; DELETE FROM events WHERE id = 6;").await;
    pool.close().await;
    let (code, out) = verify(s.path(), &db);
    assert_eq!(code, Some(1));
    assert!(out.contains("entries between #5 and #7 were removed"), "{out}");

    // Swapped: entries 3 and 4 trade places, hashes and all.
    let (db, pool) = copy(&s, "swapped").await;
    exec_sql(&pool, "DROP TRIGGER events_append_only; UPDATE events SET id = -3 WHERE id = 3; UPDATE events SET id = 3 WHERE id = 4; UPDATE events SET id = 4 WHERE id = -3;").await;
    pool.close().await;
    let (code, out) = verify(s.path(), &db);
    assert_eq!(code, Some(1));
    assert!(out.contains("entry #3 "), "{out}");

    // Cut: the last two entries.
    let (db, pool) = copy(&s, "cut").await;
    exec_sql(&pool, &format!("DROP TRIGGER events_no_delete; DELETE FROM events WHERE id > {};", n - 2)).await;
    pool.close().await;
    let (code, out) = verify(s.path(), &db);
    assert_eq!(code, Some(1));
    assert!(out.contains(&format!("the trail ends at #{} but promote last wrote #{n}", n - 2)), "{out}");

    // Inserted by hand: refused while the chain trigger stands; unhashed when it was dropped.
    let (db, pool) = copy(&s, "inserted").await;
    let refused = sqlx::raw_sql("INSERT INTO events (run_id, at, kind, actor, detail) VALUES ('x', 0, 'decision', 'mallory', 'approved')").execute(&pool).await;
    assert!(refused.unwrap_err().to_string().contains("no such function: promote_chain"));
    exec_sql(&pool, "DROP TRIGGER events_chained; INSERT INTO events (run_id, at, kind, actor, detail) VALUES ('x', 0, 'decision', 'mallory', 'approved');")
        .await;
    pool.close().await;
    let (code, out) = verify(s.path(), &db);
    assert_eq!(code, Some(1));
    assert!(out.contains(&format!("entry #{} has no hash", n + 1)), "{out}");

    // JSON names the first bad entry too.
    let out = promote(s.path(), &["--state", db.to_str().unwrap(), "audit", "verify", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["intact"].as_bool(), v["firstBad"].as_i64()), (Some(false), Some(n + 1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_4_state_file_is_chained_when_opened() {
    let (s, _) = trail().await;
    // Take the file back to schema 4: no chain columns' values, no head, no triggers.
    let (db, pool) = copy(&s, "old").await;
    exec_sql(
        &pool,
        "DROP TABLE dora_deployments; DROP TABLE dora_rollbacks; DROP TABLE dora; DROP TABLE dora_buckets; DROP INDEX stages_waiting;
         DROP TRIGGER events_chained; DROP TRIGGER events_append_only; DROP TRIGGER events_no_delete; DROP TABLE audit_head;
         ALTER TABLE events DROP COLUMN prev_hash; ALTER TABLE events DROP COLUMN hash; ALTER TABLE events DROP COLUMN actor;
         ALTER TABLE runs DROP COLUMN authenticated; ALTER TABLE runs DROP COLUMN seal; ALTER TABLE stages DROP COLUMN seal;
         ALTER TABLE decisions DROP COLUMN seal; ALTER TABLE log_exemptions DROP COLUMN seal; DROP TABLE meta;
         ALTER TABLE env_locks DROP COLUMN expires_at; DROP TABLE drivers; DROP TABLE deliveries; DROP TABLE polled; DROP INDEX stages_by_kind; DROP TABLE drifts; DROP TABLE watches; DROP TABLE sessions; DROP TABLE poll_claims; DROP TABLE approval_notes; DROP TABLE env_queue; DROP TABLE promotions; DROP INDEX runs_by_state; DROP TABLE violations; DROP INDEX events_by_time; PRAGMA user_version = 4;",
    )
    .await;
    pool.close().await;
    let store = promote::store::Store::open(&db).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 19);
    let v = store.verify_audit().await.unwrap();
    assert!(v.tamper.is_none() && v.entries > 10, "{v:?}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewrite_that_recomputes_every_hash_is_caught_by_a_head_kept_elsewhere() {
    let (s, _) = trail().await;
    let (code, out) = verify(s.path(), &s.state());
    assert_eq!(code, Some(0));
    let kept = out.lines().next().unwrap().rsplit(' ').next().unwrap().to_string();
    assert_eq!(kept.len(), 64, "the head printed: {out}");
    // Someone with the file and promote's code, but not the key, edits entry 5 and recomputes
    // every hash after it with a key of their own: the chain is keyed, so it shows.
    let recompute = |key: promote::seal::Key| {
        let db = s.state();
        async move {
            let store = promote::store::Store::open(&db).await.unwrap();
            store.raw_sql("DROP TRIGGER IF EXISTS events_append_only; UPDATE events SET detail = 'approved by mallory' WHERE id = 5;").await.unwrap();
            let mut prev = String::new();
            for e in store.audit_entries(None, 0, 1_000_000).await.unwrap() {
                let hash = e.expected_hash(&key, &prev);
                store.raw_sql(&format!("UPDATE events SET prev_hash = '{prev}', hash = '{hash}' WHERE id = {}", e.seq)).await.unwrap();
                store.raw_sql(&format!("UPDATE audit_head SET id = {}, hash = '{hash}'", e.seq)).await.unwrap();
                prev = hash;
            }
            store.close().await;
        }
    };
    recompute(promote::seal::Key::from_bytes([0x5a; 32])).await;
    let (code, out) = verify(s.path(), &s.state());
    assert_eq!(code, Some(1), "a recompute without the key is caught by the chain: {out}");
    assert!(out.contains("entry #1 was altered"), "{out}");
    // Whoever also holds the key can recompute a chain that verifies: the head every run keeps
    // in Git catches them.
    recompute(promote::seal::Key::load_default().unwrap()).await;
    let (code, out) = verify(s.path(), &s.state());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not the one whose hash") && out.contains("envs/qa.git keeps (refs/promote/audit): the trail was rewritten"), "{out}");
    // And if they can also push to the repo and remove that ref, a head kept anywhere else does.
    crate::repos::git(&s.path().join("envs/qa.git"), &["update-ref", "-d", "refs/promote/audit"]);
    let (code, out) = verify(s.path(), &s.state());
    assert_eq!(code, Some(0), "the chain and Git alone cannot see it now: {out}");
    let out = promote(s.path(), &["audit", "verify", "--known", &kept]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains(&format!("the head {kept} kept from an earlier verify is not in the trail")), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_tail_a_wipe_a_forged_entry_and_a_swap_are_each_named_against_the_head_kept_in_git() {
    let (s, n) = trail().await;
    let n = n as i64;
    // Every run's end keeps the trail's head, sealed, in the first environment's repo.
    let kept = crate::repos::git(&s.path().join("envs/qa.git"), &["log", "--format=%B", "refs/promote/audit"]);
    assert!(kept.contains(&format!("Promote-Audit-Seq: {n}")) && kept.contains("Promote-Audit-Seal: "), "{kept}");
    let cases = [
        (
            "cut",
            format!(
                "DROP TRIGGER events_no_delete; DELETE FROM events WHERE id > {c};
                 UPDATE audit_head SET id = {c}, hash = (SELECT hash FROM events WHERE id = {c});",
                c = n - 3
            ),
            format!("the trail ends at #{} but the head kept in", n - 3),
        ),
        ("wipe", "DROP TRIGGER events_no_delete; DELETE FROM events; DELETE FROM audit_head;".to_string(), "the trail ends at #0 but the head kept in".to_string()),
        ("wipe-all", "DROP TRIGGER events_no_delete; DELETE FROM events; DELETE FROM audit_head; DELETE FROM meta;".to_string(), "the state has lost its id".to_string()),
        (
            "forged",
            format!(
                "DROP TRIGGER events_chained; INSERT INTO events (id, run_id, stage, at, kind, actor, detail, prev_hash, hash)
                 VALUES ({m}, 'x', 'ok', 1, 'decision', 'bob', 'approved by bob', (SELECT hash FROM events WHERE id = {n}), '{h}');
                 UPDATE audit_head SET id = {m}, hash = '{h}';",
                m = n + 1,
                h = "ab".repeat(32)
            ),
            format!("entry #{} was altered", n + 1),
        ),
        (
            "swap",
            "DROP TRIGGER events_append_only; UPDATE events SET id = -1 WHERE id = 3; UPDATE events SET id = 3 WHERE id = 4; UPDATE events SET id = 4 WHERE id = -1;"
                .to_string(),
            "entry #3 was written as #4: entries were reordered".to_string(),
        ),
    ];
    for (name, sql, want) in cases {
        let (db, pool) = copy(&s, name).await;
        exec_sql(&pool, &sql).await;
        pool.close().await;
        let (code, out) = verify(s.path(), &db);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.contains(&want), "{name}: want `{want}` in: {out}");
    }
    // With the pipeline named, a state file that was replaced by a new one is named too.
    let fresh = s.path().join("fresh.db");
    promote::store::Store::open(&fresh).await.unwrap().close().await;
    let out = promote(s.path(), &["--state", fresh.to_str().unwrap(), "audit", "verify", "--against", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("keeps the head #{n} of state")) && text(&out).contains("none of this one"), "{}", text(&out));
}
