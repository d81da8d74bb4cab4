//! A real PostgreSQL 15 (Debian's `postgresql-15` package) in a temporary data folder on a
//! loopback port, started as the `postgres` user when the tests run as root (PostgreSQL refuses
//! to run as root). Never a silent skip: a machine without it fails these tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL; stopped (immediately) and its folder removed when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_user: Option<&'static str>,
    durable: bool,
}

fn bin_dir() -> PathBuf {
    for v in ["15", "16", "17"] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if d.join("initdb").exists() {
            return d;
        }
    }
    panic!(
        "PostgreSQL's server is not installed (no /usr/lib/postgresql/15/bin/initdb): these tests need a real one (Debian: apt-get install postgresql-15; .ci/run installs it)"
    );
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Initialises a cluster (trust authentication on loopback, user `promote`, database
    /// `promote`) and starts it, without `fsync` (tests: a crash of the machine is not tried).
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// The same, with `fsync` on, as a production server has it (benches/replicas.rs).
    #[allow(dead_code)]
    pub fn start_durable() -> Postgres {
        Postgres::start_with(true)
    }

    fn start_with(durable: bool) -> Postgres {
        let bin = bin_dir();
        let as_user = is_root().then_some("postgres");
        let dir = tempfile::Builder::new().prefix("promote-pg").tempdir().unwrap();
        if as_user.is_some() {
            // The server's user must own its folder (and reach it).
            assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap().success(), "chown failed");
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { dir, port, bin, as_user, durable };
        let data = pg.dir.path().join("data");
        pg.run("initdb", &["-D", data.to_str().unwrap(), "-U", "promote", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        pg.start_server();
        pg.run("createdb", &["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "promote", "promote"]);
        pg
    }

    fn command(&self, tool: &str) -> Command {
        match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(self.bin.join(tool));
                c
            }
            None => Command::new(self.bin.join(tool)),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(out.status.success(), "{tool} {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server on its folder and waits until it answers.
    pub fn start_server(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let fsync = if self.durable { "on" } else { "off" };
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={fsync} -c max_connections=200", self.port, self.dir.path().display());
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "60", "start"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok =
                self.command("pg_isready").args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PostgreSQL did not answer on port {}: {}", self.port, std::fs::read_to_string(log).unwrap_or_default());
    }

    /// Stops the server at once (as a crash would, no checkpoint).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ =
            self.command("pg_ctl").args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Postgres {
    /// A new, empty database on this server; its URL.
    pub fn fresh_database(&self) -> String {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        self.run("createdb", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "promote", &name]);
        format!("postgres://promote@127.0.0.1:{}/{name}", self.port)
    }
}

/// The server the two-backend tests share (one per test process, a database per test), started
/// on first use and stopped when the process ends, however it ends: a watchdog stops it once
/// this process is gone (a static is never dropped).
pub fn shared() -> &'static Postgres {
    static SHARED: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let pg = Postgres::start();
        let data = pg.dir.path().join("data");
        let stop = match pg.as_user {
            Some(u) => format!("runuser -u {u} -- {} -D {} -m immediate stop", pg.bin.join("pg_ctl").display(), data.display()),
            None => format!("{} -D {} -m immediate stop", pg.bin.join("pg_ctl").display(), data.display()),
        };
        let dir = pg.dir.path().display().to_string();
        let script = format!("while kill -0 {} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}", std::process::id());
        // Never waited for: it outlives this process on purpose, to stop the server after it.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the PostgreSQL watchdog starts");
        pg
    })
}

thread_local! {
    static ON_POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes the setups this test thread builds from now on keep their state in PostgreSQL.
pub fn use_postgres() {
    ON_POSTGRES.with(|p| p.set(true));
}

/// For a test's setup: a fresh database on the shared server when the test runs on PostgreSQL.
pub fn database_for_this_test() -> Option<String> {
    ON_POSTGRES.with(|p| p.get()).then(|| shared().fresh_database())
}

/// One test, run twice: on SQLite (`NAME::sqlite`) and on PostgreSQL (`NAME::postgres`). The
/// body builds its `Setup` as usual; on PostgreSQL, the setup's state is a fresh database.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() $body
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                $crate::pg::use_postgres();
                $body
            }
        }
    };
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() $body
            #[test]
            fn postgres() {
                $crate::pg::use_postgres();
                $body
            }
        }
    };
}

/// Three replicas starting at once on a new database migrate it once; every entry that writers
/// on all three append at the same time chains on the one before it (one chain, never forked,
/// and `verify_audit` finds it intact); the database refuses an entry written beside promote's
/// chain, and any change to the trail.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_migrate_once_and_concurrent_writers_keep_one_chain() {
    use promote::store::{Store, postgres::schema};
    let url = shared().fresh_database();
    let key = promote::seal::Key::from_bytes([7u8; 32]);
    let opened = futures_util::future::join_all((0..3).map(|_| Store::open_url(&url, key.clone()))).await;
    let stores: Vec<Store> = opened.into_iter().map(|s| s.expect("a replica connects and migrates")).collect();
    assert_eq!(stores[0].schema_version().await.unwrap(), schema::MIGRATIONS.len() as i64);
    let id = stores[2].state_id().await.unwrap().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(stores[1].state_id().await.unwrap().as_deref(), Some(id.as_str()), "one state, whichever replica asks");

    // 3 replicas x 4 writers x 25 entries, all at once.
    let mut tasks = Vec::new();
    for (r, store) in stores.iter().enumerate() {
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    store
                        .audit(
                            Some(&format!("run-{r}-{w}")),
                            None,
                            promote::store::EntryKind::Notification,
                            "promote",
                            &format!("replica {r} writer {w} entry {i}"),
                        )
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let trail = stores[0].audit_entries(None, 0, 1000).await.unwrap();
    assert_eq!(trail.len(), 300);
    let mut prev = String::new();
    for (i, e) in trail.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
        assert_eq!(e.prev_hash.as_deref(), Some(prev.as_str()), "entry {} chains on the one before it", e.seq);
        prev = e.hash.clone().unwrap();
    }
    let verdict = stores[1].verify_audit().await.unwrap();
    assert!(verdict.tamper.is_none() && verdict.entries == 300, "{verdict:?}");

    // Beside the chain, or changing it: refused by the database itself.
    let forged =
        stores[0].raw_sql("INSERT INTO events (id, run_id, at, kind, detail, prev_hash, hash) VALUES (301, 'x', 0, 'test', 'forged', 'nope', 'nope')").await;
    assert!(forged.unwrap_err().to_string().contains("must carry its place in the chain"));
    let changed = stores[0].raw_sql("UPDATE events SET detail = 'changed' WHERE id = 5").await;
    assert!(changed.unwrap_err().to_string().contains("append-only"));
    let removed = stores[0].raw_sql("DELETE FROM events WHERE id = 300").await;
    assert!(removed.unwrap_err().to_string().contains("append-only"));

    // A replica restarted on the database finds it current and the same state.
    let again = Store::open_url(&url, key.clone()).await.unwrap();
    assert_eq!(again.state_id().await.unwrap().as_deref(), Some(id.as_str()));
    // One who changes an entry with the guard removed is found out.
    again.raw_sql("ALTER TABLE events DISABLE TRIGGER events_append_only; UPDATE events SET detail = 'rewritten' WHERE id = 7").await.unwrap();
    let verdict = again.verify_audit().await.unwrap();
    assert_eq!(verdict.tamper.map(|t| t.seq()), Some(7), "the altered entry is named");
}

/// Replicas write at the same time and meet only at the chain's end and where a write reads what
/// it then decides by: three replicas each claim every one of 40 new runs at once (a new run has
/// no lease row to lock: the claims race on the insert), and each run gets one driver, the
/// others told who; the winners then drive their runs to their end at once, and the trail is one
/// chain, numbered in the order it was committed, that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_for_the_same_new_runs_give_each_one_driver_and_keep_one_chain() {
    use futures_util::future::join_all;
    use promote::store::{RunRecord, RunState, StageState, StageWrite, Store, Transition};
    let url = shared().fresh_database();
    let key = promote::seal::Key::from_bytes([9u8; 32]);
    let stores: Vec<Store> = join_all((0..3).map(|_| Store::open_url(&url, key.clone()))).await.into_iter().map(Result::unwrap).collect();
    let ids: Vec<String> = (0..40).map(|i| format!("01RACE{i:05}")).collect();
    let record = |id: &str| RunRecord {
        id: id.to_string(),
        pipeline: "race".into(),
        file: "race.yaml".into(),
        source: String::new(),
        version: id.to_string(),
        state: RunState::Running,
        triggered_by: "test".into(),
        authenticated: false,
        created_at: promote::clock::now_ms(),
        finished_at: None,
        message: None,
        seal: None,
    };
    join_all(ids.iter().enumerate().map(|(i, id)| {
        let (store, run) = (stores[i % 3].clone(), record(id));
        async move { store.create_run(&run, &[("a", "wait"), ("b", "wait")]).await.unwrap() }
    }))
    .await;
    // (The second replica claims them newest first: two claims of the same new runs in opposite
    // orders must not wait for each other.)
    let claims = join_all(stores.iter().enumerate().flat_map(|(k, store)| {
        let order: Vec<String> = if k == 1 { ids.iter().rev().cloned().collect() } else { ids.clone() };
        order.into_iter().map(move |id| {
            let store = store.clone();
            async move { (id.clone(), k, store.take_drive(&id).await.unwrap()) }
        })
    }))
    .await;
    let mut winners = Vec::new();
    for id in &ids {
        let mine: Vec<_> = claims.iter().filter(|c| &c.0 == id).collect();
        let won: Vec<usize> = mine.iter().filter(|c| c.2.is_none()).map(|c| c.1).collect();
        assert_eq!(won.len(), 1, "{id}: exactly one replica drives it: {mine:?}");
        for (_, _, told) in mine.iter().filter(|c| c.2.is_some()) {
            assert_eq!(told.as_ref().unwrap().0, stores[won[0]].holder(), "{id}: the others are told who drives it");
        }
        winners.push((id.clone(), won[0]));
    }
    let step = |stage: &str, state: StageState| StageWrite {
        stage: stage.into(),
        transition: Transition { state: Some(state), ..Default::default() },
        event: format!("{stage} {}", state.as_str()),
    };
    // Meanwhile `audit verify` runs again and again: replicas appending are no cut or extended tail.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let verifier = {
        let (store, done) = (stores[0].clone(), done.clone());
        tokio::spawn(async move {
            let mut verdicts = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                verdicts.push(store.verify_audit().await.unwrap());
            }
            verdicts
        })
    };
    join_all(winners.iter().map(|(id, k)| {
        let (store, id) = (stores[*k].clone(), id.clone());
        let step = &step;
        async move {
            store.transitions(&id, vec![step("a", StageState::Running)]).await.unwrap();
            store.transitions(&id, vec![step("a", StageState::Succeeded), step("b", StageState::Running)]).await.unwrap();
            store.transitions(&id, vec![step("b", StageState::Succeeded)]).await.unwrap();
            store.finish_run(&id, RunState::Succeeded, None).await.unwrap();
        }
    }))
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let verdicts = verifier.await.unwrap();
    assert!(!verdicts.is_empty() && verdicts.iter().all(|v| v.tamper.is_none()), "{:?}", verdicts.iter().find(|v| v.tamper.is_some()));
    for (id, k) in &winners {
        assert_eq!(stores[(k + 1) % 3].run(id).await.unwrap().state, RunState::Succeeded);
        assert!(stores[(k + 2) % 3].stages(id).await.unwrap().iter().all(|s| s.state == StageState::Succeeded));
    }
    // 40 starts, 4 transitions and an end each.
    let trail = stores[0].audit_entries(None, 0, 1000).await.unwrap();
    assert_eq!(trail.len(), 40 * 6);
    for (i, e) in trail.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
        if i > 0 {
            assert_eq!(e.prev_hash.as_ref(), trail[i - 1].hash.as_ref(), "entry {} chains on the one before it", e.seq);
        }
    }
    let verdict = stores[2].verify_audit().await.unwrap();
    assert!(verdict.tamper.is_none() && verdict.entries == 240, "{verdict:?}");
}

/// The two backends' schemas, each migrated from nothing, have the same tables with the same
/// columns: a write said once (store/sql.rs) finds on each what it names. Where they differ on
/// purpose, the difference is listed here with why.
#[tokio::test(flavor = "multi_thread")]
async fn both_schemas_have_the_same_tables_and_columns() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    promote::store::Store::open(&file).await.unwrap().close().await;
    let lite = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display())).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetch_all(&lite).await.unwrap();
    let mut sqlite = BTreeSet::new();
    for t in tables {
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)").bind(&t).fetch_all(&lite).await.unwrap();
        sqlite.extend(columns.into_iter().map(|c| format!("{t}.{c}")));
    }
    lite.close().await;
    let url = shared().fresh_database();
    promote::store::Store::open_url(&url, promote::seal::Key::from_bytes([3u8; 32])).await.unwrap().close().await;
    let pg = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns WHERE table_schema = 'public'")
            .fetch_all(&pg)
            .await
            .unwrap();
    pg.close().await;
    let postgres: BTreeSet<String> = rows.into_iter().map(|(t, c)| format!("{t}.{c}")).collect();
    let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect::<Vec<_>>();
    // The one difference on purpose: PostgreSQL records its migrations in `promote_schema`,
    // SQLite in the file's `PRAGMA user_version`.
    assert_eq!(only(&sqlite, &postgres), Vec::<String>::new(), "columns only SQLite has");
    let pg_only: Vec<String> = only(&postgres, &sqlite).into_iter().filter(|c| !c.starts_with("promote_schema.")).collect();
    assert_eq!(pg_only, Vec::<String>::new(), "columns only PostgreSQL has");
}

/// The URL in a database error never carries its password.
#[test]
fn a_database_url_in_messages_has_no_password() {
    let shown = promote::store::postgres::redacted("postgres://promote:s3cret-pw@db.internal:5432/promote");
    assert!(!shown.contains("s3cret-pw") && shown.contains("db.internal:5432/promote"), "{shown}");
}
