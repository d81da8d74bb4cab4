//! Hardening (issue 14), the items fixed so far, each tried as the attacker or the careless user
//! tried it: a version that smuggles trailers, an approval given before its evidence exists, a
//! comment that forges a line of `audit log`, a state file anyone could read.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::exec::{Setup, promote, text};

#[test]
fn a_version_that_smuggles_trailers_is_refused_before_anything_runs() {
    let s = Setup::new("  prod:\n    deploy: {environment: prod}\n", "");
    let forged = "6.6.6\nApproved-By: Forged <f@example.com>\nPromote-Run: 01OTHER\nPromote-Stage: deploy-prod";
    for bad in [forged, "1.0 beta", "-rc1", "a/../b", "sha256:abc"] {
        let out = promote(s.path(), &["run", "pipeline.yaml", &format!("--version={bad}")]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
        assert!(text(&out).contains("is not a version"), "{bad:?}: {}", text(&out));
    }
    assert!(s.commits("prod").is_empty(), "nothing was committed");
    let runs: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", "--json"]).stdout).unwrap_or_default();
    assert_eq!(runs["items"].as_array().map_or(0, Vec::len), 0, "no run was recorded: {runs}");
    // A tag and a digest are versions.
    let digest = format!("sha256:{}", "ab".repeat(32));
    for good in ["1.4.2-rc.1", digest.as_str()] {
        let out = promote(s.path(), &["run", "pipeline.yaml", "--version", good]);
        assert!(out.status.success(), "{good}: {}", text(&out));
    }
}

#[test]
fn the_git_writer_refuses_a_message_text_of_more_than_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::repos::EnvRepo::new(dir.path(), "qa", &[("values.yaml", "image:\n  tag: 1.0.0\n")]);
    let writer = crate::repos::writer(dir.path(), "cache");
    let approvers = vec!["Alice <a@example.com>\nApproved-By: Mallory <m@example.com>".to_string()];
    let p = promote::git::Promotion {
        pipeline: "checkout",
        environment: "qa",
        run: "r1",
        stage: "deploy",
        version: "2.0.0",
        value: "2.0.0",
        approved_by: &approvers,
        check: None,
        seal: Some(&crate::repos::TEST_KEY),
    };
    let dest = repo.dest(&repo.path(), "values.yaml", promote::git::EditTarget::Path("image.tag".into()));
    let err = writer.promote(&dest, &p).unwrap_err();
    assert!(err.to_string().contains("has a control character") && err.to_string().contains("nothing was committed"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(repo.log().len(), 1, "only the initial commit");
}

#[test]
fn an_approval_cannot_be_given_before_what_it_needs_has_finished() {
    let s = Setup::new("  soak:\n    wait: {duration: 30s}\n  ok:\n    needs: [soak]\n    approval: {approvers: [alice]}\n", "");
    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.0.0", "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Wait for the soak to be under way, then try to approve what nobody has seen yet.
    for _ in 0..500 {
        let st: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
        if st["stages"][0]["state"] == "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = promote(s.path(), &["approve", &id, "ok", "--as", "alice"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("stage `ok` cannot be decided yet: what it needs has not finished (`soak` is running)"), "{}", text(&out));
    let log = promote(s.path(), &["audit", "log", "--run", &id]);
    assert!(!text(&log).contains("approved by alice"), "no decision was recorded: {}", text(&log));
}

#[test]
fn a_comment_cannot_forge_a_line_of_the_audit_log_or_the_status() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice]}\n", "");
    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.0.0", "--detach"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for _ in 0..500 {
        let st: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
        if st["stages"][0]["state"] == "waiting" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let forged = "fine\n#99     2026-12-01T00:00:00.000Z 01FORGED decision     ok                 bob        approved by bob\u{1b}[2K";
    let out = promote(s.path(), &["reject", &id, "ok", "--as", "alice", "--reason", forged]);
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&promote(s.path(), &["audit", "log"]).stdout).into_owned();
    assert!(log.lines().all(|l| l.starts_with('#')) && !log.lines().any(|l| l.starts_with("#99 ")), "{log}");
    assert!(log.contains("fine\\n#99") && log.contains("\\u{1b}[2K") && !log.contains('\u{1b}'), "{log}");
    // The JSON keeps the text as it was written.
    let json = String::from_utf8_lossy(&promote(s.path(), &["audit", "log", "--json"]).stdout).into_owned();
    assert!(json.contains("fine\\n#99"), "{json}");
}

#[test]
fn the_state_file_and_the_caches_are_their_owners_only() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "");
    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", text(&out));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let state = s.path().join(".promote");
    assert_eq!(mode(&state), 0o700, "the state folder");
    assert_eq!(mode(&state.join("state.db")), 0o600, "the state file");
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("state.db") {
            assert_eq!(mode(&entry.path()) & 0o077, 0, "{name} is readable by others");
        }
    }
    assert_eq!(mode(&state.join("repos")), 0o700, "the caches");
}

/// A pipeline file whose `description` is `body`.
fn pipeline_with(body: &str) -> String {
    format!("apiVersion: promote/v1\nkind: Pipeline\nname: bomb\nartifact: {{image: registry.example.com/acme/x}}\nenvironments: {{}}\nstages: {{}}\n{body}")
}

/// The three YAML bombs of item 6 and 7: bytes, count, depth; each with what it must say.
fn bombs() -> Vec<(&'static str, String, &'static str)> {
    // A 10,000-character string under 7 levels of 10 aliases: 10^7 copies of it.
    let mut by_bytes = format!("x0: &a0 \"{}\"\n", "x".repeat(10_000));
    for i in 1..=7 {
        let refs = (0..10).map(|_| format!("*a{}", i - 1)).collect::<Vec<_>>().join(", ");
        by_bytes.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    // The classic billion laughs: 9 levels of 10.
    let mut laughs = String::from("l0: &l0 \"lol\"\n");
    for i in 1..=9 {
        let refs = (0..10).map(|_| format!("*l{}", i - 1)).collect::<Vec<_>>().join(", ");
        laughs.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    // 300,000 sequences inside each other on one line (`- - - ... x`): 600 KB.
    let deep = format!("deep:\n{}x\n", "- ".repeat(300_000));
    vec![
        ("bytes.yaml", by_bytes, "aliases expand to more than 16 MB: refused (an alias bomb?)"),
        ("laughs.yaml", laughs, "aliases expand to more than 16 MB: refused (an alias bomb?)"),
        ("deep.yaml", deep, "nested more than 128 levels deep: refused"),
    ]
}

#[test]
fn alias_bombs_by_bytes_and_by_count_and_deep_nesting_are_refused_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body, want) in bombs() {
        std::fs::write(dir.path().join(name), pipeline_with(&body)).unwrap();
        let out = promote(dir.path(), &["validate", name]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains(want) && t.contains(&format!("{name}:")), "{name}: {t}");
        assert!(!t.contains(&format!("{name}:1:1:")), "{name}: the position is where it happens, not 1:1: {t}");
    }
}

#[test]
fn the_same_bombs_are_refused_in_the_users_file_the_rego_data_and_an_environment_file() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice]}\n  gate:\n    policy: {policies: [policies/], data: [data.yaml]}\n", "users: users.yaml\n");
    std::fs::create_dir(s.path().join("policies")).unwrap();
    std::fs::write(s.path().join("policies/p.rego"), "package p\n\ndeny contains msg if { false; msg := \"never\" }\n").unwrap();
    for (name, body, want) in bombs() {
        // The users file: a bomb under a user's entry (serde-saphyr reads it after the check).
        std::fs::write(s.path().join("users.yaml"), format!("users:\n  alice: {{name: Alice, email: a@example.com}}\n{body}")).unwrap();
        std::fs::write(s.path().join("data.yaml"), "limits: {}\n").unwrap();
        let started = std::time::Instant::now();
        let out = promote(s.path(), &["validate", "pipeline.yaml"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "users {name}: {t}");
        assert!(t.contains(want) && t.contains("users.yaml:") && !t.contains("users.yaml:1:1:"), "users {name}: {t}");
        assert!(started.elapsed() < Duration::from_secs(20), "users {name}: took {:?}", started.elapsed());

        // Rego data.
        std::fs::write(s.path().join("users.yaml"), "users:\n  alice: {name: Alice, email: a@example.com}\n").unwrap();
        std::fs::write(s.path().join("data.yaml"), format!("limits: {{}}\n{body}")).unwrap();
        let out = promote(s.path(), &["validate", "pipeline.yaml"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "data {name}: {t}");
        assert!(t.contains(want) && t.contains("data.yaml") && t.contains("line "), "data {name}: {t}");

        // An environment file the git writer edits.
        let err = promote::git::edit::apply("values.yaml", &format!("image:\n  tag: 1.0.0\n{body}"), promote::git::edit::Target::Path("image.tag"), "1.0.1")
            .unwrap_err()
            .to_string();
        assert!(err.contains(want) && err.starts_with("values.yaml:") && !err.starts_with("values.yaml:1:1:"), "env file {name}: {err}");
    }
}

#[test]
fn a_fifo_is_not_read_and_a_bad_byte_is_placed_where_it_is() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice]}\n", "users: users.yaml\n");
    let fifo = s.path().join("users.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Without the check, reading a FIFO nobody writes blocks forever.
    let mut child = std::process::Command::new(crate::promote_bin())
        .current_dir(s.path())
        .args(["validate", "pipeline.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("validate hung on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a regular file"), "{}", text(&out));

    // A byte that is not UTF-8 on line 3, column 9.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), b"apiVersion: promote/v1\nkind: Pipeline\nname: ab\xffcd\n").unwrap();
    let out = promote(dir.path(), &["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("bad.yaml:3:9: error: cannot read the file: not UTF-8 text: an invalid byte at line 3, column 9"), "{}", text(&out));
}

#[test]
fn repos_that_git_would_turn_into_a_command_or_an_option_are_refused_by_validate() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "");
    let original = std::fs::read_to_string(&s.file).unwrap();
    for (repo, want) in [
        ("'ext::sh -c touch% /tmp/pwned'", "names git's `ext::` transport, which runs a program"),
        ("'-oProxyCommand=touch /tmp/pwned@h:x'", "begins with `-`"),
        ("'git@-oProxyCommand=x:repo.git'", "has a host or path that begins with `-`"),
        ("'ssh://-oProxyCommand=x/repo.git'", "has a host or path that begins with `-`"),
    ] {
        std::fs::write(&s.file, original.replace("repo: envs/qa.git", &format!("repo: {repo}"))).unwrap();
        let out = promote(s.path(), &["validate", "pipeline.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{repo}: {}", text(&out));
        assert!(text(&out).contains(want) && text(&out).contains("use a path, a file://"), "{repo}: {}", text(&out));
    }
    // The ordinary forms still pass.
    for repo in ["envs/qa.git", "git@github.com:acme/envs.git", "https://git.example.com/acme/envs.git", "ssh://git@host/acme/envs.git"] {
        std::fs::write(&s.file, original.replace("repo: envs/qa.git", &format!("repo: {repo}"))).unwrap();
        let out = promote(s.path(), &["validate", "pipeline.yaml"]);
        assert!(!text(&out).contains("use a path, a file://"), "{repo}: {}", text(&out));
    }
}

#[test]
fn a_clone_with_the_branch_checked_out_is_refused_and_its_work_tree_left_alone() {
    let s = Setup::new("  qa:\n    deploy: {environment: qa}\n", "");
    // A non-bare clone of qa with main checked out, named as the repo.
    let work = s.path().join("envs/qa-work");
    let text_before = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text_before.replace("repo: envs/qa.git", "repo: envs/qa-work")).unwrap();
    let head = crate::repos::git(&work, &["rev-parse", "HEAD"]);
    let out = promote(s.path(), &["run", "pipeline.yaml", "--version", "1.1.0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("`main` is checked out in this repo's work tree: promote pushes to a bare repo"), "{}", text(&out));
    assert_eq!(crate::repos::git(&work, &["rev-parse", "HEAD"]), head, "the branch did not move");
    assert_eq!(crate::repos::git(&work, &["status", "--porcelain"]), "", "nothing staged in the work tree");
}

/// Runs SQL on the state as a `sqlite3` shell would: a plain connection, without promote's
/// functions or key.
async fn shell_sql(state: &std::path::Path, sql: &str) {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(state)).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_written_with_a_sql_shell_are_never_acted_on() {
    let s = Setup::new("  ok:\n    approval: {approvers: [bob]}\n  prod:\n    needs: [ok]\n    deploy: {environment: prod}\n", "");
    let exec = s.executor().await;
    let (a, b, c) = (s.start(&exec, "1.0.1").await, s.start(&exec, "1.0.2").await, s.start(&exec, "1.0.3").await);
    exec.store.close().await;
    // A decision row nobody made, an approval marked succeeded, and the stored source edited to
    // change who may approve.
    shell_sql(
        &s.state(),
        &format!(
            "INSERT INTO decisions (run_id, stage, user, approve, comment, at) VALUES ('{a}', 'ok', 'bob', 1, 'lgtm', 1);
             UPDATE stages SET state = 'succeeded' WHERE run_id = '{b}' AND name = 'ok';
             UPDATE runs SET source = replace(source, 'approvers: [bob]', 'approvers: [mallory]') WHERE id = '{c}';"
        ),
    )
    .await;
    for (run, want) in [
        (&a, "the decision of bob on stage `ok`".to_string()),
        (&b, format!("stage `ok` of run {b} (state succeeded)")),
        (&c, format!("run {c} (its pipeline source")),
    ] {
        let out = promote(s.path(), &["resume", run]);
        let t = text(&out);
        assert!(!out.status.success(), "{run}: {t}");
        assert!(t.contains(&want) && t.contains("does not carry promote's seal"), "{run}: {t}");
    }
    let out = promote(s.path(), &["approve", &c, "ok", "--as", "mallory"]);
    assert!(!out.status.success() && text(&out).contains("does not carry promote's seal"), "{}", text(&out));
    assert!(s.commits("prod").is_empty(), "nothing was deployed: {:?}", s.commits("prod"));
}

#[tokio::test(flavor = "multi_thread")]
async fn where_the_users_file_gives_tokens_starting_a_run_takes_one_and_a_self_declared_start_never_meets_separation_of_duties() {
    let (alice, bob) = ("prt_alice_secret_token_0001", "prt_bob_secret_token_0002");
    let hash = |t: &str| promote::governance::users::hash_token(t);
    let s = Setup::new("  ok:\n    approval: {approvers: [alice, bob, carol]}\n", "users: users.yaml\n");
    std::fs::write(
        s.path().join("users.yaml"),
        format!(
            "users:\n  alice: {{name: Alice, email: a@example.com, token: \"{}\"}}\n  bob: {{name: Bob, email: b@example.com, token: \"{}\"}}\n  carol: {{name: Carol, email: c@example.com}}\n",
            hash(alice),
            hash(bob)
        ),
    )
    .unwrap();
    let cli = |user: &str, token: Option<&str>, args: &[&str]| {
        let mut c = std::process::Command::new(crate::promote_bin());
        c.current_dir(s.path()).env("PROMOTE_USER", user).env_remove("PROMOTE_TOKEN").args(args);
        if let Some(t) = token {
            c.env("PROMOTE_TOKEN", t);
        }
        c.output().unwrap()
    };
    let run = ["run", "pipeline.yaml", "--version", "1.0.0", "--detach"];
    // Claiming to be alice without her token, or to be someone the file does not know: refused.
    let out = cli("alice", None, &run);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("user `alice` has an API token: set PROMOTE_TOKEN"), "{}", text(&out));
    let out = cli("ci-bot", None, &run);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("`ci-bot` is not in the users file, which gives tokens"), "{}", text(&out));
    let out = cli("alice", Some(bob), &run);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Alice, with her token: authenticated; she may not approve her own run, carol (no token in
    // a tokened file) may not be claimed by anyone, bob with his token may.
    let out = cli("alice", Some(alice), &run);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let st: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
    assert_eq!((st["run"]["triggeredBy"].as_str(), st["run"]["authenticated"].as_bool()), (Some("alice"), Some(true)), "{st}");
    let approve = ["approve", id.as_str(), "ok"];
    for _ in 0..500 {
        let st: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", &id, "--json"]).stdout).unwrap();
        if st["stages"][0]["state"] == "waiting" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = cli("alice", Some(alice), &[&approve[..], &["--as", "alice"]].concat());
    assert!(text(&out).contains("started this run and may not approve it"), "{}", text(&out));
    let out = cli("x", None, &[&approve[..], &["--as", "carol"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("user `carol` has no token in a users file that gives tokens"), "{}", text(&out));
    let out = cli("bob", Some(bob), &[&approve[..], &["--as", "bob"]].concat());
    assert!(out.status.success(), "{}", text(&out));

    // A run recorded without proof of its starter (as the library allows) cannot be approved under
    // separation of duties, by anyone.
    let exec = s.executor().await;
    let (source, plan) = s.plan();
    let unproven = exec.start(&s.file, &source, &plan, "1.0.1", "alice", false).await.unwrap().id;
    exec.store.close().await;
    let out = cli("bob", Some(bob), &["approve", &unproven, "ok", "--as", "bob"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("was started without proof of who started it"), "{}", text(&out));
}

#[test]
fn trailers_anyone_can_type_never_make_a_promotion_or_a_rollback_already_done() {
    use promote::git::{EditTarget, Outcome, Promotion, RollbackRequest, RollbackTarget};
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::repos::EnvRepo::new(dir.path(), "prod", &[("values.yaml", "image:\n  tag: 1.0.0\n")]);
    let writer = crate::repos::writer(dir.path(), "cache");
    let dest = repo.dest(&repo.path(), "values.yaml", EditTarget::Path("image.tag".into()));
    let key = &crate::repos::TEST_KEY;
    let p = Promotion {
        pipeline: "checkout",
        environment: "prod",
        run: "01RUNWAITING",
        stage: "deploy-prod",
        version: "2.0.0",
        value: "2.0.0",
        approved_by: &[],
        check: None,
        seal: Some(key),
    };
    // Someone who can push types the trailers of the run that waits for its approval (and a seal
    // of their own), with their value in the file.
    let forged = format!(
        "promote checkout 2.0.0 to prod\n\nPromote-Pipeline: checkout\nPromote-Run: 01RUNWAITING\nPromote-Stage: deploy-prod\nPromote-Version: 2.0.0\nPromote-Seal: {}\n",
        "0".repeat(64)
    );
    repo.commit_as_someone_else("values.yaml", "image:\n  tag: 6.6.6\n", &forged);
    let r = writer.promote(&dest, &p).unwrap();
    assert!(matches!(r.outcome, Outcome::Committed(_)), "the typed trailers are not believed: {r:?}");
    assert_eq!(repo.show("values.yaml"), "image:\n  tag: 2.0.0\n");
    // promote's own commit is believed: the same stage again commits nothing.
    let ours = repo.head();
    assert!(matches!(writer.promote(&dest, &p).unwrap().outcome, Outcome::AlreadyDone { commit } if commit.to_string() == ours));
    // Its message copied, seal and all, into another repo onto another value: the seal covers
    // the file's content, so it is not believed there.
    let other = crate::repos::EnvRepo::new(dir.path(), "prod-eu", &[("values.yaml", "image:\n  tag: 1.0.0\n")]);
    other.commit_as_someone_else("values.yaml", "image:\n  tag: 6.6.6\n", &repo.message("main"));
    let other_dest = other.dest(&other.path(), "values.yaml", EditTarget::Path("image.tag".into()));
    let r = writer.promote(&other_dest, &p).unwrap();
    assert!(matches!(r.outcome, Outcome::Committed(_)), "a copied seal on another content is not believed: {r:?}");
    assert_eq!(other.show("values.yaml"), "image:\n  tag: 2.0.0\n");

    // A typed `Promote-Rollback-Of` does not stop a rollback of that promotion.
    let promotion = repo.head();
    repo.commit_as_someone_else(
        "README.md",
        "x\n",
        &format!("roll back checkout in prod to 1.0.0\n\nPromote-Pipeline: checkout\nPromote-Rollback-Of: {promotion}\n"),
    );
    let rb = RollbackRequest {
        pipeline: "checkout",
        environment: "prod",
        target: RollbackTarget::Of(promotion.clone()),
        run: None,
        stage: None,
        seal: Some(key),
        only_if: None,
        forbidden: &[],
    };
    let r = writer.rollback(&dest, &rb).unwrap();
    assert!(matches!(r.outcome, Outcome::Committed(_)), "{r:?}");
    assert_eq!(repo.show("values.yaml"), "image:\n  tag: 6.6.6\n", "restored what the file held before that promotion");
}

/// `promote` with short leases (600 ms), as `user`.
fn leased(dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(crate::promote_bin());
    c.current_dir(dir).env("PROMOTE_USER", "ci-bot").env("PROMOTE_LEASE_MS", "600").args(args);
    c
}

fn status_json(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let out = leased(dir, &["status", id, "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_runs_environment_lock_is_named_stale_then_taken_over_and_audited() {
    let s = Setup::new("  prod:\n    deploy: {environment: prod}\n  soak:\n    needs: [prod]\n    wait: {duration: 1h}\n", "");
    // Run 1 deploys prod, then soaks holding prod (a soak judges it); then it is killed.
    let mut first = leased(s.path(), &["run", "pipeline.yaml", "--version", "1.0.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut r1 = String::new();
    wait_until("run 1 to soak", || {
        let list: serde_json::Value = serde_json::from_slice(&leased(s.path(), &["status", "--json"]).output().unwrap().stdout).unwrap_or_default();
        r1 = list["items"][0]["id"].as_str().unwrap_or("").to_string();
        !r1.is_empty() && status_json(s.path(), &r1)["stages"][1]["state"] == "running"
    });
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let st = status_json(s.path(), &r1);
    let notes: Vec<&str> = st["leases"].as_array().unwrap().iter().filter_map(|l| l["note"].as_str()).collect();
    assert!(notes.iter().any(|n| n.starts_with("not driven: the lease of") && n.contains(&format!("promote resume {r1}"))), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("holds environment `prod` as a stale holder")), "{notes:?}");
    let stale = st["leases"].as_array().unwrap().iter().find(|l| l["kind"] == "stale-lock").expect("a stale-lock entry");
    assert!(stale["environment"] == "prod" && stale["holder"] == r1.as_str() && stale["expiresAt"].is_i64(), "{stale}");

    // Run 2 takes prod over instead of waiting forever, and the trail says from whom.
    let out = leased(s.path(), &["run", "pipeline.yaml", "--version", "1.0.2", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let r2 = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_until("run 2 to deploy prod", || status_json(s.path(), &r2)["stages"][0]["state"] == "succeeded");
    let log = text(&leased(s.path(), &["audit", "log", "--run", &r2]).output().unwrap());
    assert!(log.contains(&format!("environment `prod` taken over from run {r1}: its lease lapsed at")), "{log}");
    assert_eq!(s.commits("prod"), ["promote checkout 1.0.2 to prod", "promote checkout 1.0.1 to prod"]);
}

#[test]
fn a_run_has_one_driver_and_a_dead_drivers_run_is_taken_over() {
    let s = Setup::new("  ok:\n    approval: {approvers: [alice]}\n  prod:\n    needs: [ok]\n    deploy: {environment: prod}\n", "");
    let out = leased(s.path(), &["run", "pipeline.yaml", "--version", "2.0.0", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_until("the run to wait", || status_json(s.path(), &id)["stages"][0]["state"] == "waiting");
    // While the detached driver lives, a second driver is refused: no stage runs twice.
    let out = leased(s.path(), &["resume", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(&format!("run {id} is being driven by another process")), "{}", text(&out));
    // Its driver killed, the run is taken over at once (the process is gone from this machine).
    let st = status_json(s.path(), &id);
    let driver = st["leases"][0]["note"].as_str().unwrap().to_string();
    let pid: i32 = driver.split(':').nth(1).and_then(|p| p.split(' ').next()).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{driver}"));
    // SAFETY: kill(2) on the detached driver this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until("the driver to be gone", || unsafe { libc::kill(pid, 0) } != 0);
    let resumed = leased(s.path(), &["resume", &id]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    wait_until("the new driver", || {
        status_json(s.path(), &id)["leases"][0]["note"].as_str().is_some_and(|n| n.starts_with("driven by") && !n.contains(&format!(":{pid} ")))
    });
    let out = leased(s.path(), &["approve", &id, "ok", "--as", "alice"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = resumed.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&leased(s.path(), &["audit", "log", "--run", &id]).output().unwrap());
    assert!(log.contains("driven by a new process: the previous driver ") && log.contains(&format!(":{pid} stopped (its lease ran until")), "{log}");
    assert_eq!(log.matches("started (attempt 1)").count(), 2, "each stage started once, not once per driver: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_any_form_reaches_output_status_the_audit_log_or_the_state_file() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // A server that refuses and echoes the Authorization header it was sent, as some do.
    let app = axum::Router::new().route(
        "/stats",
        axum::routing::get(|h: axum::http::HeaderMap| async move {
            let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            (axum::http::StatusCode::FORBIDDEN, format!("denied for Authorization: {auth}"))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (hook_path, password, api_key) = ("zzSecretHookPath77", "hunter2-S3cret!", "K3yInTheAddress99");
    // Written with an upper-case host and the default port: the HTTP client shows it otherwise.
    let hook = format!("http://LOCALHOST:80/hooks/{hook_path}");
    let web = format!(
        "  web-check:\n    metrics:\n      provider:\n        web: {{url: \"http://127.0.0.1:{port}/stats?q=${{query}}\", jsonPath: \"$.v\", auth: {{username: robot, passwordEnv: WEB_PASSWORD}}}}\n      checks:\n        - name: errors\n          query: errors\n          successCondition: result < 1\n          consecutiveErrorLimit: 0\n"
    );
    let prom = format!(
        "  prom-check:\n    metrics:\n      provider: {{prometheus: {{address: \"http://127.0.0.1:1/?api_key={api_key}\", timeout: 1s}}}}\n      checks:\n        - name: up\n          query: up\n          successCondition: result[0] > 0\n          consecutiveErrorLimit: 0\n"
    );
    let notify = "notifications:\n  - webhook: {urlEnv: HOOK_URL}\n    events: [stage-failed, run-finished]\n    attempts: 1\n    timeout: 2s\n";
    let s = Setup::new(&web, notify);
    let text_of = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(s.path().join("prom.yaml"), text_of.replace(&web, &prom)).unwrap();
    let mut outputs = Vec::new();
    for (file, version) in [("pipeline.yaml", "1.0.0"), ("prom.yaml", "1.0.1")] {
        let run = std::process::Command::new(crate::promote_bin())
            .current_dir(s.path())
            .env("PROMOTE_USER", "ci-bot")
            .env("PROMOTE_LOG", "debug")
            .env("HOOK_URL", &hook)
            .env("WEB_PASSWORD", password)
            .args(["run", file, "--version", version])
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(1), "the check fails: {}", text(&run));
        outputs.push((format!("{file} stdout"), run.stdout));
        outputs.push((format!("{file} stderr"), run.stderr));
    }
    let list: serde_json::Value = serde_json::from_slice(&promote(s.path(), &["status", "--json"]).stdout).unwrap();
    let id = list["items"][1]["id"].as_str().unwrap().to_string();
    let status = promote(s.path(), &["status", &id, "--json"]);
    let status_prom = promote(s.path(), &["status", list["items"][0]["id"].as_str().unwrap(), "--json"]);
    let audit = promote(s.path(), &["audit", "log", "--json"]);
    let audit_text = promote(s.path(), &["audit", "log"]);
    // The failures are there, told without their secrets.
    let st = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(st.contains("HTTP 403 Forbidden") && st.contains("denied for Authorization: Basic [redacted]"), "{st}");
    assert!(String::from_utf8_lossy(&audit.stdout).contains("notification"), "the undelivered notification is audited");

    let forms = |secret: &str| {
        vec![secret.to_string(), b64(secret), b64(&format!("robot:{secret}")), url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()]
    };
    assert!(String::from_utf8_lossy(&status_prom.stdout).contains("?api_key=[redacted] failed"), "{}", String::from_utf8_lossy(&status_prom.stdout));
    for (what, out) in [("status --json", &status), ("status --json (prom)", &status_prom), ("audit log --json", &audit), ("audit log", &audit_text)] {
        outputs.push((what.to_string(), out.stdout.clone()));
    }
    let mut state_bytes = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        state_bytes.extend(std::fs::read(s.path().join(".promote").join(f)).unwrap_or_default());
    }
    for secret in [hook_path, password, api_key] {
        for form in forms(secret) {
            for (what, bytes) in &outputs {
                assert!(!String::from_utf8_lossy(bytes).contains(&form), "`{form}` (of {secret}) is in {what}:\n{}", String::from_utf8_lossy(bytes));
            }
            // The address is written in the pipeline file itself, so its source (stored for
            // resume) holds it: only secrets from the environment and files are looked for here.
            if secret != api_key {
                assert!(!String::from_utf8_lossy(&state_bytes).contains(&form), "`{form}` (of {secret}) is in the state file");
            }
        }
    }
}
