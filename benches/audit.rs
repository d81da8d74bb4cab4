//! Benchmark: `audit verify` over a trail of 1,000,000 entries in a real state file. Writes the
//! entries through the chain trigger (as promote does), then times the verification of the intact
//! trail (median of 3) and of a trail whose last entry was altered (the slow path that names it).
//!
//! Run: `cargo bench --bench audit` (1,000,000 entries) or `cargo bench --bench audit -- 100000`.

use std::time::Instant;

use promote::store::Store;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: i64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 2_000 } else { 1_000_000 });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(&path).await.unwrap();
        let t = Instant::now();
        // Entries shaped like a run's: who, what, a detail of ~80 characters.
        let fill = format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
             INSERT INTO events (run_id, stage, at, kind, actor, detail)
             SELECT printf('01JRUN%08d', x / 12), printf('stage-%d', x % 6), 1764000000000 + x, 'stage', 'promote',
                    printf('succeeded: prod -> 1.%d.0 in %010x, 2 check(s) Successful, approved by alice', x % 97, x)
             FROM c"
        );
        // promote chains entries in Rust as it appends them one transaction at a time; to fill a
        // million at once, the bench chains them inside SQLite with schema 5's trigger (the same
        // `promote_chain` function), then puts schema 6's guard back.
        let guard: &str = "CREATE TRIGGER events_chained BEFORE INSERT ON events
            WHEN NEW.hash IS NOT promote_chain(NEW.prev_hash, NEW.id, NEW.run_id, NEW.stage, NEW.at, NEW.kind, NEW.actor, NEW.detail)
                OR NEW.prev_hash IS NOT coalesce((SELECT hash FROM events ORDER BY id DESC LIMIT 1), '')
            BEGIN SELECT RAISE(ABORT, 'an audit entry must carry its place in the chain: only promote appends to the trail'); END;";
        let chain_while_filling = "DROP TRIGGER events_chained;
            CREATE TRIGGER fill_chain AFTER INSERT ON events BEGIN
                UPDATE events SET prev_hash = coalesce((SELECT hash FROM audit_head), ''),
                    hash = promote_chain(coalesce((SELECT hash FROM audit_head), ''), NEW.id, NEW.run_id, NEW.stage, NEW.at, NEW.kind, NEW.actor, NEW.detail)
                    WHERE id = NEW.id;
                INSERT OR REPLACE INTO audit_head (one, id, hash) SELECT 1, id, hash FROM events WHERE id = NEW.id;
            END;";
        store.raw_sql(&format!("{chain_while_filling} {fill}; DROP TRIGGER fill_chain; {guard}")).await.unwrap();
        println!("wrote {n} entries through a chain trigger in {:.1} s", t.elapsed().as_secs_f64());
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let v = store.verify_audit().await.unwrap();
            times.push(t.elapsed().as_secs_f64());
            assert!(v.tamper.is_none(), "{v:?}");
            assert_eq!(v.entries, n);
        }
        times.sort_by(f64::total_cmp);
        println!("verify, intact trail of {n}: median {:.2} s (min {:.2}, max {:.2})", times[1], times[0], times[2]);
        store.raw_sql(&format!("DROP TRIGGER events_append_only; UPDATE events SET detail = 'approved by mallory' WHERE id = {n}")).await.unwrap();
        let t = Instant::now();
        let v = store.verify_audit().await.unwrap();
        let took = t.elapsed().as_secs_f64();
        assert_eq!(v.tamper.as_ref().map(|t| t.seq()), Some(n), "{v:?}");
        println!("verify, last of {n} altered: {:.2} s to name it ({})", took, v.tamper.unwrap());
        store.close().await;
    });
}
