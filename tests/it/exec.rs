//! The executor against real repos and a real SQLite state file: scenarios of the walker, crash
//! and resume with the real binary (SIGKILL), bad state files, migrations, metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use promote::exec::{Executor, Metrics, Summary};
use promote::git::{Writer, WriterConfig};
use promote::store::{RunState, StageState, Store};

use crate::repos::{EnvRepo, git};

const KUSTOMIZATION: &str = "# promote writes newTag\nimages:\n  - name: registry.example.com/acme/checkout\n    newTag: 1.0.0 # promoted\n";

/// A folder with env repos `envs/NAME.git` and `pipeline.yaml` holding `stages` (YAML, indented
/// by 2) over environments qa, staging and prod.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
    /// The PostgreSQL database the state is in, when the test runs on PostgreSQL.
    pub database: Option<String>,
}

impl Setup {
    pub fn new(stages: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("envs")).unwrap();
        let mut envs = String::new();
        for env in ["qa", "staging", "prod"] {
            EnvRepo::new(&dir.path().join("envs"), env, &[("app/kustomization.yaml", KUSTOMIZATION)]);
            envs.push_str(&format!(
                "  {env}:\n    repo: envs/{env}.git\n    file: app/kustomization.yaml\n    update: {{kustomizeImage: registry.example.com/acme/checkout}}\n"
            ));
        }
        let yaml = format!(
            "apiVersion: promote/v1\nkind: Pipeline\nname: checkout\nartifact: {{image: registry.example.com/acme/checkout}}\nenvironments:\n{envs}stages:\n{stages}{extra}"
        );
        let file = dir.path().join("pipeline.yaml");
        std::fs::write(&file, yaml).unwrap();
        let database = crate::pg::database_for_this_test();
        if let Some(url) = &database {
            // For the commands a test runs in this folder (`promote` below): the same database.
            std::fs::create_dir_all(dir.path().join(".promote")).unwrap();
            std::fs::write(dir.path().join(".promote/database-url"), url).unwrap();
        }
        Setup { dir, file, database }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Points `staging` at a branch its repo does not have: its deploys fail with a real git error.
    fn staging_on_missing_branch(&self) {
        let text = std::fs::read_to_string(&self.file).unwrap();
        std::fs::write(&self.file, text.replace("repo: envs/staging.git", "repo: envs/staging.git\n    branch: release")).unwrap();
    }

    /// Where the state is: the SQLite file, or the PostgreSQL database's URL (which `--state` and
    /// `Store::open` take as well).
    pub fn state(&self) -> PathBuf {
        match &self.database {
            Some(url) => PathBuf::from(url),
            None => self.path().join(".promote/state.db"),
        }
    }

    pub async fn executor(&self) -> Executor {
        let store = Store::open(&self.state()).await.unwrap();
        // A test on PostgreSQL is on PostgreSQL.
        assert_eq!(store.path().starts_with("postgres://"), self.database.is_some(), "{}", store.path());
        Executor {
            store,
            writer: Arc::new(Writer::new(WriterConfig::new(self.path().join(".promote/repos")))),
            metrics: Arc::new(Metrics::default()),
            poll: Duration::from_millis(20),
            public_url: None,
            directory: None,
        }
    }

    pub fn plan(&self) -> (String, promote::plan::Plan) {
        let checked = promote::ops::check_file(&self.file);
        assert!(checked.plan.is_some(), "{:?}", checked.diagnostics);
        (std::fs::read_to_string(&self.file).unwrap(), checked.plan.unwrap())
    }

    /// Starts a run as `ci-bot`, authenticated: the test stands in for a starter who proved who
    /// they are (the CLI's own checks are tried in hardening.rs).
    pub async fn start(&self, exec: &Executor, version: &str) -> String {
        let (source, plan) = self.plan();
        exec.start(&self.file, &source, &plan, version, "ci-bot", true).await.unwrap().id
    }

    /// Messages of the promotion commits in env `name`, newest first.
    pub fn commits(&self, env: &str) -> Vec<String> {
        let bare = self.path().join(format!("envs/{env}.git"));
        git(&bare, &["log", "--format=%s", "main"]).lines().filter(|l| *l != "initial").map(String::from).collect()
    }
}

pub async fn drive(exec: &Executor, id: &str) -> Summary {
    exec.drive(id, Arc::new(|_| {})).await.unwrap()
}

pub fn stage<'a>(s: &'a Summary, name: &str) -> &'a promote::store::StageRecord {
    s.stages.iter().find(|x| x.name == name).unwrap()
}

crate::both_backends! {
async fn independent_stages_overlap_and_a_join_waits_for_both() {
    let s = Setup::new("  a:\n    wait: {duration: 300ms}\n  b:\n    wait: {duration: 300ms}\n  c:\n    needs: [a, b]\n    deploy: {environment: qa}\n", "");
    let exec = s.executor().await;
    let id = s.start(&exec, "1.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Succeeded);
    let (a, b, c) = (stage(&sum, "a"), stage(&sum, "b"), stage(&sum, "c"));
    assert!(a.started_at < b.finished_at && b.started_at < a.finished_at, "a and b ran at the same time: {a:?} {b:?}");
    assert!(c.started_at >= a.finished_at && c.started_at >= b.finished_at, "c after both");
    assert_eq!(s.commits("qa"), ["promote checkout 1.1.0 to qa"]);
    assert_eq!(c.output.as_ref().unwrap()["outcome"], "committed");
}
}

crate::both_backends! {
async fn a_failure_cancels_running_stages_and_skips_downstream() {
    // `broken` deploys to a branch that does not exist: a real git error.
    let s = Setup::new(
        "  slow:\n    wait: {duration: 30s}\n  broken:\n    deploy: {environment: staging}\n  after-slow:\n    needs: [slow]\n    wait: {duration: 0s}\n  after-broken:\n    needs: [broken]\n    deploy: {environment: prod}\n",
        "",
    );
    s.staging_on_missing_branch();
    let exec = s.executor().await;
    let id = s.start(&exec, "1.2.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Failed);
    let states: Vec<(&str, StageState)> = sum.stages.iter().map(|x| (x.name.as_str(), x.state)).collect();
    assert_eq!(
        states,
        [("slow", StageState::Cancelled), ("broken", StageState::Failed), ("after-slow", StageState::Skipped), ("after-broken", StageState::Skipped)]
    );
    assert!(stage(&sum, "broken").message.as_deref().unwrap().contains("branch `release` does not exist"), "{sum:?}");
    assert!(sum.run.message.as_deref().unwrap().starts_with("`broken` failed: "));
    assert!(s.commits("prod").is_empty());
}
}

crate::both_backends! {
async fn a_terminal_failure_is_not_retried_and_timeouts_fail_the_stage() {
    let only_flaky = Setup::new("  flaky:\n    retry: {attempts: 3, backoff: 10ms}\n    deploy: {environment: staging}\n", "");
    only_flaky.staging_on_missing_branch();
    let exec = only_flaky.executor().await;
    let id = only_flaky.start(&exec, "1.3.0").await;
    let sum = drive(&exec, &id).await;
    // A branch that does not exist will not exist on the next attempt either: not retried (the
    // retries of transient failures are in `retry.rs`).
    assert_eq!((stage(&sum, "flaky").state, stage(&sum, "flaky").attempt), (StageState::Failed, 1));
    assert!(stage(&sum, "flaky").message.as_deref().unwrap().contains("does not exist"), "{sum:?}");

    let only_sleepy = Setup::new("  sleepy:\n    timeout: 100ms\n    wait: {duration: 20s}\n", "");
    let exec = only_sleepy.executor().await;
    let id = only_sleepy.start(&exec, "1.3.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(stage(&sum, "sleepy").state, StageState::Failed);
    assert_eq!(stage(&sum, "sleepy").message.as_deref(), Some("timed out after 100ms"));
}
}

crate::both_backends! {
async fn if_false_skips_the_stage_and_what_needs_it() {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  hotfix-only:\n    needs: [qa]\n    if: version.endsWith(\"-hotfix\")\n    deploy: {environment: staging}\n  after:\n    needs: [hotfix-only]\n    deploy: {environment: prod}\n  always:\n    needs: [qa]\n    if: stages[\"qa\"].state == \"succeeded\" && trigger.by == \"ci-bot\"\n    wait: {duration: 0s}\n",
        "",
    );
    let exec = s.executor().await;
    let id = s.start(&exec, "2.0.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Succeeded);
    assert_eq!(stage(&sum, "hotfix-only").state, StageState::Skipped);
    assert_eq!(stage(&sum, "hotfix-only").message.as_deref(), Some("`if: version.endsWith(\"-hotfix\")` is false"));
    assert_eq!(stage(&sum, "after").state, StageState::Skipped);
    assert_eq!(stage(&sum, "always").state, StageState::Succeeded);
    assert!(s.commits("staging").is_empty() && s.commits("prod").is_empty());

    let id = s.start(&exec, "2.0.1-hotfix").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(stage(&sum, "hotfix-only").state, StageState::Succeeded);
    assert_eq!(s.commits("prod"), ["promote checkout 2.0.1-hotfix to prod"]);
}
}

crate::both_backends! {
async fn a_rejection_rolls_back_every_deploy_newest_first() {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  staging:\n    needs: [qa]\n    deploy: {environment: staging}\n  sign-off:\n    needs: [staging]\n    approval: {approvers: [alice]}\n  prod:\n    needs: [sign-off]\n    deploy: {environment: prod}\n",
        "onFailure: {rollback: true}\n",
    );
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "3.0.0").await;
    let (e2, id2) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e2, &id2).await });
    wait_for_state(&exec.store, &id, "sign-off", StageState::Waiting).await;
    exec.store.decide(&id, "sign-off", "alice", false, Some("too risky")).await.unwrap();
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    assert_eq!(stage(&sum, "sign-off").message.as_deref(), Some("rejected by alice: too risky"));
    assert_eq!((stage(&sum, "qa").state, stage(&sum, "staging").state), (StageState::RolledBack, StageState::RolledBack));
    assert_eq!(s.commits("qa"), ["roll back checkout in qa to 1.0.0", "promote checkout 3.0.0 to qa"]);
    assert_eq!(s.commits("staging"), ["roll back checkout in staging to 1.0.0", "promote checkout 3.0.0 to staging"]);
    let events = exec.store.events(&id).await.unwrap();
    let order: Vec<&str> = events.iter().filter(|e| e.detail.starts_with("rolled-back")).map(|e| e.stage.as_deref().unwrap()).collect();
    assert_eq!(order, ["staging", "qa"], "newest first");
    let rollback = git(&s.path().join("envs/qa.git"), &["log", "-1", "--format=%B", "main"]);
    assert!(rollback.contains(&format!("Promote-Run: {id}\nPromote-Stage: qa\n")), "{rollback}");
}
}

pub async fn wait_for_state(store: &Store, run: &str, stage: &str, want: StageState) {
    for _ in 0..500 {
        if store.stages(run).await.unwrap().iter().any(|s| s.name == stage && s.state == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{stage} never became {want}");
}

crate::both_backends! {
async fn a_sign_off_does_not_hold_qa_and_an_older_run_never_replaces_a_newer_one() {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  ok:\n    needs: [qa]\n    approval: {approvers: [alice, bob], minApprovals: 2}\n  prod:\n    needs: [ok]\n    deploy: {environment: prod}\n",
        "",
    );
    let exec = Arc::new(s.executor().await);
    let first = s.start(&exec, "4.0.0").await;
    let second = s.start(&exec, "4.0.1").await;
    let (e1, f) = (exec.clone(), first.clone());
    let w1 = tokio::spawn(async move { drive(&e1, &f).await });
    wait_for_state(&exec.store, &first, "ok", StageState::Waiting).await;
    // While the first waits for its sign-off, QA is free: the second promotes it.
    let (e2, sc) = (exec.clone(), second.clone());
    let w2 = tokio::spawn(async move { drive(&e2, &sc).await });
    wait_for_state(&exec.store, &second, "ok", StageState::Waiting).await;
    assert_eq!(s.commits("qa"), ["promote checkout 4.0.1 to qa", "promote checkout 4.0.0 to qa"]);
    assert!(exec.store.env_locks().await.unwrap().is_empty(), "nobody holds an environment while people decide");
    // The newer is signed off first and reaches prod; the older, signed off later, would take
    // prod back to 4.0.0: it ends superseded instead, and prod keeps 4.0.1.
    exec.store.decide(&second, "ok", "alice", true, None).await.unwrap();
    exec.store.decide(&second, "ok", "bob", true, None).await.unwrap();
    assert_eq!(w2.await.unwrap().run.state, RunState::Succeeded);
    exec.store.decide(&first, "ok", "alice", true, None).await.unwrap();
    exec.store.decide(&first, "ok", "bob", true, Some("fine")).await.unwrap();
    let sum = w1.await.unwrap();
    assert_eq!(sum.run.state, RunState::Superseded);
    let why = sum.run.message.clone().unwrap();
    assert!(why.contains(&format!("`prod` holds 4.0.1 from run {second}, newer than this run's 4.0.0")), "{why}");
    assert_eq!(stage(&sum, "prod").state, StageState::Skipped);
    assert_eq!(stage(&sum, "qa").state, StageState::Succeeded, "nothing rolled back");
    assert_eq!(s.commits("prod"), ["promote checkout 4.0.1 to prod"]);
    assert_eq!(s.commits("qa"), ["promote checkout 4.0.1 to qa", "promote checkout 4.0.0 to qa"]);
    let prod = git(&s.path().join("envs/prod.git"), &["log", "-1", "--format=%B", "main"]);
    assert!(prod.contains("Promote-Version: 4.0.1\nPromote-Seal: ") && prod.ends_with("\nApproved-By: alice\nApproved-By: bob\n\n"), "{prod}");
    let trail = exec.store.events(&first).await.unwrap();
    assert!(trail.iter().any(|e| e.kind == "run" && e.detail.starts_with("run superseded: `prod` holds 4.0.1")), "{trail:?}");
    // The metrics saw it all.
    let text = exec.metrics.encode();
    for line in [
        "promote_runs_total{outcome=\"succeeded\"} 1",
        "promote_runs_total{outcome=\"superseded\"} 1",
        "promote_promotions_total{environment=\"qa\"} 2",
        "promote_promotions_total{environment=\"prod\"} 1",
        "promote_stage_duration_seconds_count{kind=\"approval\",state=\"succeeded\"} 2",
        "promote_approvals_waiting 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}
}

// ---- the real binary: approvals on the command line, crashes, bad state files ----

pub fn promote(dir: &Path, args: &[&str]) -> std::process::Output {
    promote_command(dir).env("PROMOTE_USER", "ci-bot").args(args).output().unwrap()
}

/// The binary, in `dir`, on the state of the setup there (its PostgreSQL database, when the test
/// runs on one).
pub fn promote_command(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(crate::promote_bin());
    c.current_dir(dir);
    if let Ok(url) = std::fs::read_to_string(dir.join(".promote/database-url")) {
        c.env("PROMOTE_DATABASE_URL", url.trim());
    }
    c
}

pub fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

crate::both_backends! {
fn approve_and_reject_refuse_what_is_not_allowed() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice, ci-bot]}\n", "");
    let detached = promote(s.path(), &["run", "pipeline.yaml", "--version", "5.0.0", "--detach"]);
    assert!(detached.status.success(), "{}", text(&detached));
    let id = String::from_utf8_lossy(&detached.stdout).trim().to_string();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let out = promote(s.path(), &["approve", &id, "ok", "--as", "mallory"]);
    assert_eq!(
        (out.status.code(), text(&out)),
        (Some(2), "promote: error: `mallory` is not an approver of this stage, nor in one of its groups (approvers: alice, ci-bot)\n".into())
    );
    let out = promote(s.path(), &["approve", &id, "ok", "--as", "ci-bot"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("`ci-bot` started this run and may not approve it"), "{}", text(&out));
    let out = promote(s.path(), &["approve", &id, "okk", "--as", "alice"]);
    assert_eq!(text(&out), format!("promote: error: run {id} has no stage `okk`; did you mean `ok`?\n"));
    let out = promote(s.path(), &["reject", &id, "ok", "--as", "alice"]);
    assert_eq!(out.status.code(), Some(2), "a reason is required: {}", text(&out));
    let out = promote(s.path(), &["approve", &id, "ok", "--as", "alice", "--comment", "ship it"]);
    assert!(out.status.success(), "{}", text(&out));
    // The detached run finishes on its own.
    for _ in 0..200 {
        if text(&promote(s.path(), &["status", &id])).contains(": succeeded in") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = promote(s.path(), &["status", &id, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["run"]["state"], "succeeded");
    assert_eq!(json["stages"][0]["output"]["approvedBy"][0], "alice");
    assert!(json["events"].as_array().unwrap().iter().any(|e| e["detail"] == "approved by alice: ship it"));
    let out = promote(s.path(), &["resume", &id]);
    assert_eq!(
        (out.status.code(), text(&out)),
        (Some(2), format!("promote: error: run {id} already succeeded: nothing to resume (`promote status {id}` shows it)\n"))
    );
}
}

crate::both_backends! {
fn killed_runs_resume_to_the_same_end_with_one_commit_per_deploy() {
    // Kill at several points: during the first deploy, during the soak, around the last deploy.
    let mut resumed = 0;
    for (i, delay_ms) in [0u64, 40, 300, 700, 1000].into_iter().enumerate() {
        let s = Setup::new(
            "  deploy-qa:\n    deploy: {environment: qa}\n  soak:\n    needs: [deploy-qa]\n    wait: {duration: 800ms}\n  deploy-staging:\n    needs: [soak]\n    deploy: {environment: staging}\n  deploy-prod:\n    needs: [soak]\n    deploy: {environment: prod}\n",
            "",
        );
        let version = format!("6.0.{i}");
        let mut child = promote_command(s.path())
            .args(["run", "pipeline.yaml", "--version", &version])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the run exists, then let it go on for the delay, then SIGKILL.
        let id = loop {
            let out = promote(s.path(), &["status", "--json"]);
            let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if let Some(id) = runs["items"].get(0).and_then(|r| r["id"].as_str()) {
                break id.to_string();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("`promote run` ended ({status}) before its run was recorded");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let before = promote(s.path(), &["status", &id, "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
        if json["run"]["state"] == "running" {
            let out = promote(s.path(), &["resume", &id]);
            assert!(out.status.success(), "resume after a kill at {delay_ms} ms: {}", text(&out));
            resumed += 1;
        }
        let after: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
        assert_eq!(after["run"]["state"], "succeeded", "kill at {delay_ms} ms: {after}");
        for st in after["stages"].as_array().unwrap() {
            assert_eq!(st["state"], "succeeded", "kill at {delay_ms} ms: {st}");
        }
        for env in ["qa", "staging", "prod"] {
            assert_eq!(s.commits(env), [format!("promote checkout {version} to {env}")], "kill at {delay_ms} ms: exactly one commit in {env}");
        }
    }
    assert!(resumed >= 3, "most kills landed mid-run ({resumed} of 5)");
}
}

#[test]
fn bad_state_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let junk = b"this is not a database, but somebody's notes\n".repeat(100);
    std::fs::write(&state, &junk).unwrap();
    let out = promote(dir.path(), &["--state", "state.db", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out),
        "promote: error: state.db: not a promote state file (not SQLite: corrupt, or another kind of file); nothing was changed: move it away or pass --state\n"
    );
    assert_eq!(std::fs::read(&state).unwrap(), junk, "not a byte changed");

    // Another program's SQLite database.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let foreign = dir.path().join("foreign.db");
    rt.block_on(async {
        use sqlx::sqlite::SqliteConnectOptions;
        let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(&foreign).create_if_missing(true)).await.unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO notes VALUES ('keep me')").execute(&pool).await.unwrap();
        pool.close().await;
    });
    let out = promote(dir.path(), &["--state", "foreign.db", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("foreign.db: a SQLite database, but not promote's"), "{}", text(&out));
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&foreign)).await.unwrap();
        let body: String = sqlx::query_scalar("SELECT body FROM notes").fetch_one(&pool).await.unwrap();
        assert_eq!(body, "keep me");
    });

    // No state at all: said, and none made.
    let out = promote(dir.path(), &["resume", "01HZZZZZZZZZZZZZZZZZZZZZZZ", "--state", "fresh.db"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).starts_with("promote: error: no state at fresh.db: nothing has run here"), "{}", text(&out));
    assert!(!dir.path().join("fresh.db").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_file_from_an_older_version_is_migrated_with_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // The file as promote's first schema wrote it (frozen here on purpose: it is history).
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, file TEXT NOT NULL, source TEXT NOT NULL, version TEXT NOT NULL,
                state TEXT NOT NULL, triggered_by TEXT NOT NULL, created_at INTEGER NOT NULL, finished_at INTEGER, message TEXT);
             CREATE TABLE stages (run_id TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL, kind TEXT NOT NULL, position INTEGER NOT NULL,
                state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, started_at INTEGER, finished_at INTEGER, message TEXT, output TEXT,
                PRIMARY KEY (run_id, name));
             CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, stage TEXT, at INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
             PRAGMA user_version = 1;
             PRAGMA application_id = 1347571533;
             INSERT INTO runs (id, pipeline, file, source, version, state, triggered_by, created_at, finished_at)
                VALUES ('01OLD', 'checkout', 'p.yaml', '', '0.9.0', 'succeeded', 'ops', 1, 2);
             INSERT INTO stages (run_id, name, kind, position, state) VALUES ('01OLD', 'deploy-qa', 'deploy', 0, 'succeeded');",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 19);
    let run = store.run("01OLD").await.unwrap();
    assert_eq!((run.version.as_str(), run.state), ("0.9.0", RunState::Succeeded));
    // The tables of versions 2 and 3 work on the old rows.
    assert_eq!(store.lock_environment("qa", "checkout", "01NEW", true).await.unwrap(), promote::store::LockState::Taken);
    store
        .transition("01OLD", "deploy-qa", promote::store::Transition { message: Some("noted".into()), ..Default::default() }, "noted after the upgrade")
        .await
        .unwrap();
    assert_eq!(store.events("01OLD").await.unwrap().last().unwrap().detail, "noted after the upgrade");
}

#[test]
fn a_force_pushed_environment_fails_the_run_until_accepted() {
    let s = Setup::new("  deploy-qa:\n    deploy: {environment: qa}\n", "");
    assert!(promote(s.path(), &["run", "pipeline.yaml", "--version", "7.0.0"]).status.success());
    // Someone rewrites qa's main.
    let work = s.path().join("envs/qa-work");
    git(&work, &["fetch", "-q", "origin"]);
    git(&work, &["reset", "-q", "--hard", "origin/main~1"]);
    std::fs::write(work.join("README"), "rewritten\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "rewrite"]);
    git(&work, &["push", "-q", "--force", "origin", "main"]);

    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "7.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("`main` was rewritten") && text(&out).contains("promote checkout 7.0.0 to qa"), "{}", text(&out));
    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "7.0.1", "--accept-rewrite", "qa"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("accepted the history of `qa`"), "{}", text(&out));
    assert_eq!(s.commits("qa"), ["promote checkout 7.0.1 to qa", "rewrite"]);
    // The trail keeps the rewrite found and who accepted it.
    let log = promote(s.path(), &["audit", "log", "--json"]);
    let entries = serde_json::from_slice::<serde_json::Value>(&log.stdout).unwrap()["items"].as_array().unwrap().clone();
    let found = entries.iter().find(|e| e["kind"] == "history-rewrite").expect("the rewrite is in the trail");
    assert!(found["detail"].as_str().unwrap().contains("`main` was rewritten"), "{found}");
    let accepted = entries.iter().find(|e| e["kind"] == "accept-rewrite").expect("the acceptance is in the trail");
    assert_eq!(accepted["actor"], "ci-bot");
    assert!(promote(s.path(), &["audit", "verify"]).status.success());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = Setup::new("  soak:\n    wait: {duration: 0s}\n", "");
    let out = std::process::Command::new(crate::promote_bin())
        .current_dir(s.path())
        .env("PROMOTE_LOG", "info")
        .args(["--log-format", "json", "run", "pipeline.yaml", "--version", "8.0.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<serde_json::Value> = stderr.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(logs.iter().any(|l| l["fields"]["message"] == "stage" && l["fields"]["stage"] == "soak" && l["fields"]["state"] == "succeeded"), "{stderr}");
    assert!(logs.iter().any(|l| l["fields"]["message"] == "run finished" && l["fields"]["outcome"] == "succeeded"), "{stderr}");
}

#[test]
fn on_a_terminal_the_live_view_redraws_one_line_per_stage() {
    // `script` (util-linux) gives promote a pseudo-terminal as stderr.
    let s = Setup::new("  deploy-qa:\n    deploy: {environment: qa}\n  soak:\n    needs: [deploy-qa]\n    wait: {duration: 600ms}\n", "");
    let cmd = format!("{} run pipeline.yaml --version 9.0.0", crate::promote_bin());
    let out = std::process::Command::new("script").current_dir(s.path()).args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let screen = String::from_utf8_lossy(&out.stdout);
    // Lines are cleared and rewritten in place (cursor up, erase line), not appended.
    assert!(screen.contains("\x1b[2Kdeploy-qa"), "{screen:?}");
    assert!(screen.contains("\x1b[2A"), "the two stage lines are redrawn: {screen:?}");
    assert!(screen.contains("soak                     running"), "{screen:?}");
    assert!(screen.contains("run ") && screen.contains("checkout 9.0.0: succeeded"), "{screen:?}");
}

#[test]
fn processes_creating_the_state_file_at_once_all_succeed() {
    // Seen in CI: two processes creating .promote/state.db together, one failing with "database
    // is locked" while the other switched the file to WAL. (Only commands that write make a
    // state: here `promote run` of a one-stage pipeline.)
    let pipeline =
        "apiVersion: promote/v1\nkind: Pipeline\nname: tiny\nartifact: {image: registry.example.com/acme/tiny}\nstages:\n  pause:\n    wait: {duration: 1ms}\n";
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tiny.yaml"), pipeline).unwrap();
        let children: Vec<_> = (0..6)
            .map(|i| {
                std::process::Command::new(crate::promote_bin())
                    .current_dir(dir.path())
                    .args(["run", "tiny.yaml", "--version", &format!("1.0.{i}")])
                    .output_async()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out));
        }
        let list = promote(dir.path(), &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(v["items"].as_array().map(Vec::len), Some(6), "round {round}: {v}");
    }
}

trait Spawn {
    fn output_async(&mut self) -> std::process::Child;
}

impl Spawn for std::process::Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }
}

#[test]
fn sigterm_stops_a_run_at_a_durable_point_and_resume_carries_it_on() {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  ok:\n    needs: [qa]\n    approval: {approvers: [alice]}\n  prod:\n    needs: [ok]\n    deploy: {environment: prod}\n",
        "",
    );
    let child = std::process::Command::new(crate::promote_bin())
        .current_dir(s.path())
        .env("PROMOTE_USER", "ci-bot")
        .args(["run", "pipeline.yaml", "--version", "6.1.0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the approval waits, then ask the process to stop.
    let id = loop {
        let runs: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", "--json"]).stdout).unwrap_or_default();
        if let Some(id) = runs["items"].get(0).and_then(|r| r["id"].as_str()) {
            let st: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", id, "--json"]).stdout).unwrap();
            if st["stages"][1]["state"] == "waiting" {
                break id.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains(&format!("run {id} stopped before its end: `promote resume {id}` carries it on")), "{}", text(&out));
    let st: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
    assert_eq!((st["run"]["state"].as_str(), st["stages"][1]["state"].as_str()), (Some("running"), Some("waiting")), "{st}");
    // A decision meanwhile, then the run goes on from where it stopped.
    assert!(promote(s.path(), &["approve", &id, "ok", "--as", "alice"]).status.success());
    let out = promote(s.path(), &["resume", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.commits("qa"), ["promote checkout 6.1.0 to qa"], "the deploy before the stop is not repeated");
    assert_eq!(s.commits("prod"), ["promote checkout 6.1.0 to prod"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_unhealthy_after_its_commit_is_a_change_failure_restored_by_the_next_deployment() {
    // The app is healthy at 2.0.1, not at 2.0.0.
    let app = axum::Router::new().route(
        "/health/{version}",
        axum::routing::get(|axum::extract::Path(v): axum::extract::Path<String>| async move {
            if v == "2.0.0" { axum::http::StatusCode::SERVICE_UNAVAILABLE } else { axum::http::StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = Setup::new(
        &format!(
            "  qa:\n    deploy:\n      environment: qa\n      health:\n        http: {{url: \"http://127.0.0.1:{port}/health/${{version}}\"}}\n        timeout: 1s\n"
        ),
        "",
    );
    let exec = s.executor().await;
    let bad = s.start(&exec, "2.0.0").await;
    assert_eq!(drive(&exec, &bad).await.run.state, RunState::Failed);
    let f = promote::ops::figures::figures(&exec.store, promote::clock::now_ms()).await.unwrap();
    let qa = &f.dora[&("checkout".to_string(), "qa".to_string())];
    assert_eq!((qa.deployments, qa.failed, qa.time_to_restore.count), (1, 1, 0), "failed, not restored yet: {qa:?}");
    let good = s.start(&exec, "2.0.1").await;
    assert_eq!(drive(&exec, &good).await.run.state, RunState::Succeeded);
    let f = promote::ops::figures::figures(&exec.store, promote::clock::now_ms()).await.unwrap();
    let qa = &f.dora[&("checkout".to_string(), "qa".to_string())];
    assert_eq!((qa.deployments, qa.failed, qa.change_failure_rate()), (2, 1, 0.5), "{qa:?}");
    // Restored by 2.0.1's commit: at least the second 2.0.0 waited for health, well under a minute.
    assert_eq!(qa.time_to_restore.count, 1, "{qa:?}");
    assert!(qa.time_to_restore.sum_ms >= 1000 && qa.time_to_restore.sum_ms < 60_000, "{qa:?}");
    assert_eq!(qa.lead_time.count, 2);
    exec.store.close().await;
}

#[test]
fn a_detached_driver_stops_when_its_state_folder_is_removed() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice]}\n", "");
    let run = |args: &[&str]| {
        std::process::Command::new(crate::promote_bin())
            .current_dir(s.path())
            .env("PROMOTE_USER", "ci-bot")
            .env("PROMOTE_LEASE_MS", "600")
            .args(args)
            .output()
            .unwrap()
    };
    let detached = run(&["run", "pipeline.yaml", "--version", "5.0.0", "--detach"]);
    assert!(detached.status.success(), "{}", text(&detached));
    let id = String::from_utf8_lossy(&detached.stdout).trim().to_string();
    // Its driver, by the pid in its lease's holder (`ULID@host:pid`).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let st = text(&run(&["status", &id]));
        if let Some(holder) = st.split_whitespace().skip_while(|w| *w != "by").nth(1)
            && let Some(pid) = holder.rsplit(':').next().and_then(|p| p.parse::<u32>().ok())
        {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "no driver: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the driver runs");
    drop(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| !st.contains(") Z ")) {
        assert!(std::time::Instant::now() < deadline, "the driver {pid} lives on over a removed state");
        std::thread::sleep(Duration::from_millis(100));
    }
}

crate::both_backends! {
async fn a_run_is_driven_by_the_plan_of_its_stored_text_and_a_handed_plan_only_when_made_from_it() {
    let s = Setup::new("  a:\n    wait: {duration: 0s}\n  b:\n    needs: [a]\n    wait: {duration: 0s}\n", "");
    let exec = s.executor().await;
    let (source, plan) = s.plan();
    // A plan of another text (the file changed since the run started): not used.
    let other = Setup::new("  x:\n    wait: {duration: 0s}\n", "");
    let (other_source, other_plan) = other.plan();
    let id = s.start(&exec, "1.1.0").await;
    let handed = promote::exec::Planned { source: other_source.into(), plan: Arc::new(other_plan), users: None };
    exec.drive_planned(&id, Some(handed), Arc::new(|_| {}), tokio_util::sync::CancellationToken::new()).await.unwrap();
    let sum = exec.summary(&id).await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{:?}", sum.run.message);
    let names: Vec<(&str, StageState)> = sum.stages.iter().map(|x| (x.name.as_str(), x.state)).collect();
    assert_eq!(names, [("a", StageState::Succeeded), ("b", StageState::Succeeded)]);
    // The plan of exactly the stored text: used, to the same end.
    let id = s.start(&exec, "1.2.0").await;
    let handed = promote::exec::Planned { source: source.into(), plan: Arc::new(plan), users: None };
    exec.drive_planned(&id, Some(handed), Arc::new(|_| {}), tokio_util::sync::CancellationToken::new()).await.unwrap();
    let sum = exec.summary(&id).await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{:?}", sum.run.message);
    assert_eq!(sum.stages.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}
}

crate::both_backends! {
async fn a_run_of_many_stages_records_them_all_in_order() {
    // More stages than one INSERT carries (500): every one recorded, pending, in the file's order.
    let stages: String = (0..1203).map(|i| format!("  s{i}:\n    wait: {{duration: 0s}}\n")).collect();
    let s = Setup::new(&stages, "");
    let exec = s.executor().await;
    let id = s.start(&exec, "1.1.0").await;
    let recorded = exec.store.stages(&id).await.unwrap();
    assert_eq!(recorded.len(), 1203);
    for (i, r) in recorded.iter().enumerate() {
        assert_eq!((r.name.as_str(), r.state, r.kind.as_str()), (format!("s{i}").as_str(), StageState::Pending, "wait"));
    }
}
}
