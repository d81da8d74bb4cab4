//! The git writer against real repos: bare repos on disk and `git daemon` on loopback, every
//! result checked with the git CLI (`git log`, `git show`, `git fsck`, `git verify-commit`).

use std::path::Path;
use std::sync::Arc;

use promote::git::{EditTarget, GitError, Outcome, Promotion, RollbackRequest, RollbackTarget};

use crate::repos::{Daemon, EnvRepo, git, writer};

const KUSTOMIZATION: &str = "apps/checkout/kustomization.yaml";
const IMAGE: &str = "registry.example.com/acme/checkout";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/edit").join(name)).unwrap()
}

fn kustomize() -> EditTarget {
    EditTarget::KustomizeImage { name: IMAGE.into(), digest: false }
}

/// A commit message without its `Promote-Seal` trailer, once that is checked to be one (64 hex
/// digits).
fn unsealed(message: &str) -> String {
    let (seals, rest): (Vec<&str>, Vec<&str>) = message.split_inclusive('\n').partition(|l| l.starts_with("Promote-Seal: "));
    assert_eq!(seals.len(), 1, "one seal: {message}");
    let hex = seals[0].trim_end().trim_start_matches("Promote-Seal: ");
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{message}");
    rest.concat()
}

fn promotion<'a>(run: &'a str, stage: &'a str, version: &'a str) -> Promotion<'a> {
    Promotion {
        pipeline: "checkout",
        environment: "qa",
        run,
        stage,
        version,
        value: version,
        approved_by: &[],
        check: None,
        seal: Some(&crate::repos::TEST_KEY),
    }
}

/// The qa repo, a writer with its cache in `dir/cache`, and the kustomization's checkout image.
fn qa(dir: &Path) -> (EnvRepo, promote::git::Writer, promote::git::Destination) {
    let repo = env_repo(dir);
    let dest = repo.dest(&repo.path(), KUSTOMIZATION, kustomize());
    (repo, writer(dir, "cache"), dest)
}

fn env_repo(dir: &Path) -> EnvRepo {
    EnvRepo::new(dir, "qa", &[(KUSTOMIZATION, &fixture("kustomization.yaml")), ("README.md", "qa environment\n")])
}

#[test]
fn promotion_commit_has_the_product_format_and_touches_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    let w = writer(dir.path(), "cache");
    let approvers = vec!["Alice <alice@example.com>".to_string(), "Bob <bob@example.com>".to_string()];
    let p = Promotion { approved_by: &approvers, ..promotion("01JDRUN", "deploy-qa", "1.4.2") };
    let report = w.promote(&repo.dest(&repo.path(), KUSTOMIZATION, kustomize()), &p).unwrap();
    let Outcome::Committed(written) = &report.outcome else { panic!("{report:?}") };
    assert_eq!(report.attempts, 1);
    assert_eq!(written.old_value.as_deref(), Some("1.4.1"));
    assert_eq!(written.commit.to_string(), repo.head());
    assert_eq!(
        unsealed(&repo.message("main")),
        "promote checkout 1.4.2 to qa\n\nPromote-Pipeline: checkout\nPromote-Run: 01JDRUN\nPromote-Stage: deploy-qa\nPromote-Version: 1.4.2\n\
         Approved-By: Alice <alice@example.com>\nApproved-By: Bob <bob@example.com>\n\n"
    );
    assert_eq!(git(&repo.bare, &["log", "-1", "--format=%an <%ae>|%cn <%ce>", "main"]).trim(), "Release Bot <bot@example.com>|Release Bot <bot@example.com>");
    // One file, one line, nothing else.
    assert_eq!(git(&repo.bare, &["show", "--numstat", "--format=", "main"]).trim(), format!("1\t1\t{KUSTOMIZATION}"));
    let diff = git(&repo.bare, &["show", "--format=", "-U0", "main"]);
    assert!(diff.contains("-    newTag: 1.4.1 # promoted by promote\n+    newTag: 1.4.2 # promoted by promote\n"), "{diff}");
    assert_eq!(git(&repo.bare, &["rev-parse", "main^"]).trim(), repo.log()[1]);
    repo.assert_fsck();
}

#[test]
fn the_same_run_and_stage_never_commits_twice_even_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    let dest = repo.dest(&repo.path(), KUSTOMIZATION, kustomize());
    let first = writer(dir.path(), "cache").promote(&dest, &promotion("run-1", "deploy-qa", "1.4.2")).unwrap();
    let Outcome::Committed(written) = first.outcome else { panic!() };
    // Someone else commits on top; then the run is resumed after a crash that happened between
    // the push and recording it: the same writer, and a new process with an empty cache.
    repo.commit_as_someone_else("README.md", "qa environment, now with docs\n", "docs");
    for cache in ["cache", "fresh-cache"] {
        let again = writer(dir.path(), cache).promote(&dest, &promotion("run-1", "deploy-qa", "1.4.2")).unwrap();
        assert_eq!(again.outcome, Outcome::AlreadyDone { commit: written.commit });
    }
    assert_eq!(repo.log().len(), 3, "initial, promotion, docs: no duplicate");
    // A different stage of the same run is a new promotion; a value already there is not.
    let same_value = writer(dir.path(), "cache").promote(&dest, &promotion("run-2", "deploy-qa", "1.4.2")).unwrap();
    assert_eq!(same_value.outcome, Outcome::Unchanged { value: "1.4.2".into() });
    assert_eq!(repo.log().len(), 3);
}

#[test]
fn pushes_over_file_urls_and_git_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    let w = writer(dir.path(), "cache");
    let file_url = format!("file://{}", repo.path());
    w.promote(&repo.dest(&file_url, KUSTOMIZATION, kustomize()), &promotion("r1", "deploy-qa", "1.5.0")).unwrap();
    assert!(repo.show(KUSTOMIZATION).contains("newTag: 1.5.0 #"));

    let daemon = Daemon::start(dir.path());
    let report = w.promote(&repo.dest(&daemon.url("qa.git"), KUSTOMIZATION, kustomize()), &promotion("r2", "deploy-qa", "1.6.0")).unwrap();
    assert!(matches!(report.outcome, Outcome::Committed(_)), "{report:?}");
    assert!(repo.show(KUSTOMIZATION).contains("newTag: 1.6.0 #"));
    assert_eq!(repo.log().len(), 3);
    repo.assert_fsck();
}

#[test]
fn bad_targets_are_clear_errors_and_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    let w = writer(dir.path(), "cache");
    let before = repo.head();
    let p = promotion("r1", "deploy-qa", "1.4.2");

    let e = w.promote(&repo.dest(&repo.path(), KUSTOMIZATION, EditTarget::Path("spec.template.image".into())), &p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{KUSTOMIZATION}:2: path `spec.template.image` not found: `spec` does not exist (check the environment's `update` in the pipeline)")
    );
    let e = w.promote(&repo.dest(&repo.path(), "README.md", EditTarget::Path("image.tag".into())), &p).unwrap_err();
    assert!(e.to_string().starts_with("README.md:1: path `image.tag` not found"), "{e}");
    let e = w.promote(&repo.dest(&repo.path(), "apps/missing.yaml", kustomize()), &p).unwrap_err();
    assert_eq!(e.to_string(), format!("{} main: `apps/missing.yaml` does not exist (check the environment's `file`)", repo.path()));
    let mut dest = repo.dest(&repo.path(), KUSTOMIZATION, kustomize());
    dest.branch = "prod".into();
    let e = w.promote(&dest, &p).unwrap_err();
    assert!(matches!(e, GitError::BranchMissing { .. }), "{e}");
    let e = w.promote(&repo.dest(&format!("{}/nowhere.git", dir.path().display()), KUSTOMIZATION, kustomize()), &p).unwrap_err();
    assert!(e.to_string().contains("fetch failed"), "{e}");
    assert_eq!(repo.head(), before);
}

#[test]
fn secrets_never_appear_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = promote::git::WriterConfig::new(dir.path().join("cache"));
    config.credentials.token = Some(promote::git::Secret::new("ghp_TOKEN_VALUE_123"));
    let w = promote::git::Writer::new(config);
    // Nothing listens on port 9: the error must still not echo the URL's password or the token.
    let dest = promote::git::Destination {
        remote: promote::git::Remote::resolve("https://bot:hunter2pass@127.0.0.1:9/envs/qa.git", Path::new("/")),
        branch: "main".into(),
        file: "k.yaml".into(),
        target: kustomize(),
    };
    let e = w.promote(&dest, &promotion("r", "s", "1")).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("https://***@127.0.0.1:9/envs/qa.git"), "{shown}");
    assert!(!shown.contains("hunter2pass") && !shown.contains("ghp_TOKEN_VALUE_123"), "{shown}");
    assert!(!format!("{:?}", w.config()).contains("ghp_TOKEN_VALUE_123"));
}

/// A values file with one key per task, so that 20 tasks edit 20 values of the same file.
fn values_for(n: usize) -> String {
    let mut s = String::from("# per-service tags\nservices:\n");
    for i in 0..n {
        s.push_str(&format!("  svc{i}:\n    tag: \"0.0.0\"  # svc{i}\n"));
    }
    s
}

fn assert_all_landed(repo: &EnvRepo, n: usize, initial_commits: usize) {
    let log = repo.log();
    assert_eq!(log.len(), initial_commits + n, "one commit per task, no lost update, no duplicate");
    let all = git(&repo.bare, &["log", "--format=%B", "main"]);
    for i in 0..n {
        assert_eq!(all.matches(&format!("Promote-Run: run-{i}\n")).count(), 1, "run-{i} exactly once");
    }
    repo.assert_fsck();
}

#[test]
fn twenty_tasks_sharing_one_writer_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, String)> = (0..10).map(|i| (format!("apps/svc{i}/values.yaml"), "image:\n  tag: \"0.0.0\"\n".to_string())).collect();
    files.push(("shared/values.yaml".into(), values_for(10)));
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let repo = Arc::new(EnvRepo::new(dir.path(), "qa", &refs));
    let w = Arc::new(writer(dir.path(), "cache"));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let (w, repo) = (w.clone(), repo.clone());
            std::thread::spawn(move || {
                // Tasks 0-9: a file each; tasks 10-19: one value each in the same file.
                let (file, path) = if i < 10 {
                    (format!("apps/svc{i}/values.yaml"), "image.tag".to_string())
                } else {
                    ("shared/values.yaml".into(), format!("services.svc{}.tag", i - 10))
                };
                let run = format!("run-{i}");
                let version = format!("1.0.{i}");
                let p = Promotion {
                    pipeline: "checkout",
                    environment: "qa",
                    run: &run,
                    stage: "deploy",
                    version: &version,
                    value: &version,
                    approved_by: &[],
                    check: None,
                    seal: Some(&crate::repos::TEST_KEY),
                };
                w.promote(&repo.dest(&repo.path(), &file, EditTarget::Path(path)), &p).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert!(matches!(t.join().unwrap().outcome, Outcome::Committed(_)));
    }
    assert_all_landed(&repo, 20, 1);
    let shared = repo.show("shared/values.yaml");
    for i in 0..10 {
        assert!(repo.show(&format!("apps/svc{i}/values.yaml")).contains(&format!("tag: \"1.0.{i}\"")));
        assert!(shared.contains(&format!("  svc{i}:\n    tag: \"1.0.{}\"  # svc{i}\n", i + 10)), "{shared}");
    }
}

#[test]
fn twenty_replicas_racing_on_one_file_all_land_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let repo = EnvRepo::new(dir.path(), "qa", &[("values.yaml", &values_for(20))]);
    let url = repo.path();
    twenty_replicas(dir.path(), repo, url);
}

#[test]
fn twenty_replicas_racing_through_git_daemon_all_land_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let repo = EnvRepo::new(dir.path(), "qa", &[("values.yaml", &values_for(20))]);
    let daemon = Daemon::start(dir.path());
    twenty_replicas(dir.path(), repo, daemon.url("qa.git"));
}

fn twenty_replicas(root: &Path, repo: EnvRepo, url: String) {
    let (repo, url) = (Arc::new(repo), Arc::new(url));
    let barrier = Arc::new(std::sync::Barrier::new(20));
    // Each task has its own cache, as separate promote processes or replicas would: they race at
    // the remote, and the losers fetch, re-apply and push again.
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let (repo, barrier, url) = (repo.clone(), barrier.clone(), url.clone());
            let root = root.to_path_buf();
            std::thread::spawn(move || {
                let w = writer(&root, &format!("cache-{i}"));
                let run = format!("run-{i}");
                let version = format!("2.0.{i}");
                let p = Promotion {
                    pipeline: "checkout",
                    environment: "qa",
                    run: &run,
                    stage: "deploy",
                    version: &version,
                    value: &version,
                    approved_by: &[],
                    check: None,
                    seal: Some(&crate::repos::TEST_KEY),
                };
                let dest = repo.dest(&url, "values.yaml", EditTarget::Path(format!("services.svc{i}.tag")));
                barrier.wait();
                w.promote(&dest, &p).unwrap()
            })
        })
        .collect();
    let attempts: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap().attempts).collect();
    assert_all_landed(&repo, 20, 1);
    let text = repo.show("values.yaml");
    for i in 0..20 {
        assert!(text.contains(&format!("  svc{i}:\n    tag: \"2.0.{i}\"  # svc{i}\n")), "{text}");
    }
    assert!(attempts.iter().any(|&a| a > 1), "the race was real: some pushes were refused and retried ({attempts:?})");
}

/// Installs a pre-receive hook in the bare repo that, on the first push only, commits `path` =
/// `text` on main first (as a colleague racing us would), so that the push loses the race.
fn race_once(repo: &EnvRepo, path: &str, text: &str) {
    let hook = repo.bare.join("hooks/pre-receive");
    let racer = repo.bare.parent().unwrap().join("racer");
    let content = repo.bare.parent().unwrap().join("raced-content");
    std::fs::write(&content, text).unwrap();
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\n[ -e '{marker}' ] && exit 0\ntouch '{marker}'\n\
         unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_DIR\n\
         export GIT_AUTHOR_NAME=Racer GIT_AUTHOR_EMAIL=r@x GIT_COMMITTER_NAME=Racer GIT_COMMITTER_EMAIL=r@x\n\
         rm -rf '{racer}' && git clone -q '{bare}' '{racer}' && cd '{racer}' && cp '{content}' '{path}' && \
         git commit -qam 'racing commit' && git push -q origin main\nexit 0\n",
        marker = repo.bare.join("raced").display(),
        racer = racer.display(),
        bare = repo.bare.display(),
        content = content.display(),
    );
    std::fs::write(&hook, script).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
}

#[test]
fn a_push_that_loses_a_race_is_reapplied_on_the_new_tip() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    race_once(&repo, "README.md", "changed by a racer\n");
    // Hooks run in receive-pack, which `git daemon` runs: the local transport would skip them.
    let daemon = Daemon::start(dir.path());
    let report =
        writer(dir.path(), "cache").promote(&repo.dest(&daemon.url("qa.git"), KUSTOMIZATION, kustomize()), &promotion("r1", "deploy-qa", "1.4.2")).unwrap();
    assert_eq!(report.attempts, 2, "{report:?}");
    assert_eq!(repo.show("README.md"), "changed by a racer\n");
    assert!(repo.show(KUSTOMIZATION).contains("newTag: 1.4.2 #"));
    assert_eq!(git(&repo.bare, &["log", "--format=%s", "main"]), "promote checkout 1.4.2 to qa\nracing commit\ninitial\n");
}

#[test]
fn a_race_on_the_same_value_stops_with_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    let raced = fixture("kustomization.yaml").replace("newTag: 1.4.1", "newTag: 1.4.9");
    race_once(&repo, KUSTOMIZATION, &raced);
    let daemon = Daemon::start(dir.path());
    let e =
        writer(dir.path(), "cache").promote(&repo.dest(&daemon.url("qa.git"), KUSTOMIZATION, kustomize()), &promotion("r1", "deploy-qa", "1.4.2")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: {KUSTOMIZATION} `images[name={IMAGE}].newTag` changed under us: it was `1.4.1` when this promotion began and is now `1.4.9`; nothing was committed",
            format_args!("{} main", daemon.url("qa.git"))
        )
    );
    assert_eq!(git(&repo.bare, &["log", "--format=%s", "main"]), "racing commit\ninitial\n");
}

#[test]
fn a_force_push_is_detected_and_the_vanished_commits_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, w, dest) = qa(dir.path());
    w.promote(&dest, &promotion("r1", "deploy-qa", "1.4.2")).unwrap();
    let promoted = repo.head();
    // Someone resets main to the initial commit and force-pushes something else.
    git(&repo.work, &["fetch", "-q", "origin"]);
    git(&repo.work, &["reset", "-q", "--hard", "origin/main~1"]);
    std::fs::write(repo.work.join("README.md"), "rewritten\n").unwrap();
    git(&repo.work, &["commit", "-qam", "rewrite"]);
    git(&repo.work, &["push", "-q", "--force", "origin", "main"]);
    let rewritten = repo.head();

    let e = w.promote(&dest, &promotion("r2", "deploy-qa", "1.4.3")).unwrap_err();
    let GitError::HistoryRewritten(rewrite) = &e else { panic!("{e}") };
    let promote::git::Rewrite { lost, kept_at, seen, head, .. } = rewrite.as_ref();
    assert_eq!((seen.as_str(), head.as_str()), (promoted.as_str(), rewritten.as_str()));
    assert_eq!(lost.iter().map(|c| (c.id.as_str(), c.summary.as_str())).collect::<Vec<_>>(), [(promoted.as_str(), "promote checkout 1.4.2 to qa")]);
    assert!(e.to_string().contains(&format!("{} promote checkout 1.4.2 to qa", &promoted[..10])), "{e}");
    let cache = w.cache_path(&dest.remote);
    assert_eq!(git(&cache, &["rev-parse", kept_at]).trim(), promoted, "the vanished commit is kept in the cache");
    assert_eq!(repo.head(), rewritten, "nothing pushed");
    // Still refused until a person accepts the new history.
    assert!(matches!(w.promote(&dest, &promotion("r2", "deploy-qa", "1.4.3")), Err(GitError::HistoryRewritten(_))));
    assert_eq!(w.accept_history(&dest).unwrap().to_string(), rewritten);
    assert!(matches!(w.promote(&dest, &promotion("r2", "deploy-qa", "1.4.3")).unwrap().outcome, Outcome::Committed(_)));
    assert_eq!(git(&cache, &["rev-parse", kept_at]).trim(), promoted, "still kept");
}

#[test]
fn rollback_restores_the_value_over_unrelated_later_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, w, dest) = qa(dir.path());
    w.promote(&dest, &promotion("r1", "deploy-qa", "1.4.2")).unwrap();
    let p1 = repo.head();
    w.promote(&dest, &promotion("r2", "deploy-qa", "1.4.3")).unwrap();
    let p2 = repo.head();
    repo.commit_as_someone_else("README.md", "unrelated change\n", "docs");
    repo.commit_as_someone_else("apps/other.yaml", "a: 1\n", "other app");

    let latest = RollbackRequest {
        pipeline: "checkout",
        environment: "qa",
        target: RollbackTarget::Latest,
        run: None,
        stage: None,
        seal: Some(&crate::repos::TEST_KEY),
        only_if: None,
        forbidden: &[],
    };
    let r = w.rollback(&dest, &latest).unwrap();
    let Outcome::Committed(written) = &r.outcome else { panic!("{r:?}") };
    assert_eq!((written.old_value.as_deref(), written.new_value.as_str()), (Some("1.4.3"), "1.4.2"));
    assert_eq!(written.undoes.map(|u| u.to_string()), Some(p2.clone()));
    assert_eq!(unsealed(&repo.message("main")), format!("roll back checkout in qa to 1.4.2\n\nPromote-Pipeline: checkout\nPromote-Rollback-Of: {p2}\n\n"));
    assert_eq!(repo.show("README.md"), "unrelated change\n", "later commits stay");
    assert_eq!(git(&repo.bare, &["show", "--numstat", "--format=", "main"]).trim(), format!("1\t1\t{KUSTOMIZATION}"));
    // Rolling back the same promotion again does nothing; "latest" now means the one before.
    let of_p2 = RollbackRequest { target: RollbackTarget::Of(p2[..12].to_string()), ..latest.clone() };
    assert!(matches!(w.rollback(&dest, &of_p2).unwrap().outcome, Outcome::AlreadyDone { .. }));
    let r = w.rollback(&dest, &latest).unwrap();
    let Outcome::Committed(written) = &r.outcome else { panic!("{r:?}") };
    assert_eq!((written.new_value.as_str(), written.undoes.map(|u| u.to_string())), ("1.4.1", Some(p1.clone())));
    assert!(repo.show(KUSTOMIZATION).contains("newTag: 1.4.1 # promoted by promote"));
    // Nothing left to roll back.
    let e = w.rollback(&dest, &latest).unwrap_err();
    assert!(e.to_string().contains("no promotion of `checkout` into apps/checkout/kustomization.yaml left to roll back"), "{e}");
    // --to a commit: the value as it was there.
    let to = RollbackRequest { target: RollbackTarget::To(p2.clone()), ..latest.clone() };
    let r = w.rollback(&dest, &to).unwrap();
    let Outcome::Committed(written) = &r.outcome else { panic!("{r:?}") };
    assert_eq!(written.new_value, "1.4.3");
    assert!(repo.message("main").contains(&format!("Promote-Rollback-To: {p2}\n")));
    assert_eq!(git(&repo.bare, &["log", "--format=%s", "main"]).lines().count(), 8, "history only grows");
    repo.assert_fsck();
}

#[test]
fn rollback_refuses_when_the_value_changed_since() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, w, dest) = qa(dir.path());
    w.promote(&dest, &promotion("r1", "deploy-qa", "1.4.2")).unwrap();
    let p1 = repo.head();
    let hand = fixture("kustomization.yaml").replace("newTag: 1.4.1", "newTag: 1.5.0-hotfix");
    repo.commit_as_someone_else(KUSTOMIZATION, &hand, "hotfix by hand");
    let of = RollbackRequest {
        pipeline: "checkout",
        environment: "qa",
        target: RollbackTarget::Of(p1.clone()),
        run: None,
        stage: None,
        seal: Some(&crate::repos::TEST_KEY),
        only_if: None,
        forbidden: &[],
    };
    let e = w.rollback(&dest, &of).unwrap_err();
    assert!(e.to_string().contains("wrote `1.4.2` but it is now `1.5.0-hotfix`: a later commit changed it; name the state to restore with --to COMMIT"), "{e}");
    let e = w.rollback(&dest, &RollbackRequest { target: RollbackTarget::Of("0123456789abcdef".into()), ..of }).unwrap_err();
    assert!(e.to_string().starts_with("commit `0123456789abcdef` is not on"), "{e}");
}

#[test]
fn signed_commits_pass_git_verify_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    let key = dir.path().join("signing_key");
    git(dir.path(), &["--version"]);
    let status = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "bot@example.com", "-f"]).arg(&key).status().unwrap();
    assert!(status.success());
    let mut w = writer(dir.path(), "cache").config().clone();
    w.signing = Some(promote::git::SigningKey::Ssh(key.clone()));
    let w = promote::git::Writer::new(w);
    w.promote(&repo.dest(&repo.path(), KUSTOMIZATION, kustomize()), &promotion("r1", "deploy-qa", "1.4.2")).unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("bot@example.com {public}")).unwrap();
    let out = std::process::Command::new("git")
        .current_dir(&repo.bare)
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("gpg.ssh.allowedSignersFile={}", allowed.display()))
        .args(["verify-commit", "main"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Good \"git\" signature for bot@example.com"), "{}", String::from_utf8_lossy(&out.stderr));
    repo.assert_fsck();
}

const PIPELINE: &str = "apiVersion: promote/v1
kind: Pipeline
name: checkout
artifact: {image: registry.example.com/acme/checkout}
environments:
  qa:
    repo: qa.git
    file: apps/checkout/kustomization.yaml
    update: {kustomizeImage: registry.example.com/acme/checkout}
stages:
  deploy-qa:
    deploy: {environment: qa}
";

/// `promote rollback` as a user runs it; the GnuPG home is given to the child process only.
fn rollback_cmd(dir: &Path, gnupg: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::promote_bin())
        .current_dir(dir)
        .args(["--state", ".promote/state.db", "rollback"])
        .args(args)
        .env("GNUPGHOME", gnupg)
        .env("PROMOTE_GIT_SIGNING_KEY", "gpg:bot@example.com")
        .env("PROMOTE_GIT_AUTHOR", "Release Bot <bot@example.com>")
        .output()
        .unwrap()
}

#[test]
fn rollback_command_writes_a_gpg_signed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::process::Command::new("chmod").arg("700").arg(&home).status().unwrap();
    let gen_key = std::process::Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--passphrase", "", "--quick-gen-key", "Release Bot <bot@example.com>", "ed25519", "sign", "never"])
        .output()
        .unwrap();
    assert!(gen_key.status.success(), "{}", String::from_utf8_lossy(&gen_key.stderr));
    let repo = env_repo(dir.path());
    std::fs::write(dir.path().join("pipeline.yaml"), PIPELINE).unwrap();
    writer(dir.path(), "cache").promote(&repo.dest(&repo.path(), KUSTOMIZATION, kustomize()), &promotion("r1", "deploy-qa", "1.4.2")).unwrap();
    let promoted = repo.head();

    let out = rollback_cmd(dir.path(), &home, &["qa", "--pipeline", "pipeline.yaml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let head = repo.head();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("rolled back qa: 1.4.2 -> 1.4.1 in commit {head} (undoes {promoted})\n"));
    assert!(dir.path().join(".promote/repos").is_dir(), "the cache lives beside the state file");
    let verify = std::process::Command::new("git").current_dir(&repo.bare).env("GNUPGHOME", &home).args(["verify-commit", "main"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("Good signature from \"Release Bot <bot@example.com>\""));

    // The manual rollback is in the audit trail, with who did it.
    let log = std::process::Command::new(crate::promote_bin()).current_dir(dir.path()).args(["audit", "log", "--json"]).output().unwrap();
    let all: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    let last = all["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "rollback");
    assert!(last["detail"].as_str().unwrap().starts_with(&format!("checkout: rolled back qa: 1.4.2 -> 1.4.1 in commit {head}")), "{last}");

    // Nothing left: exit 1 and why. A wrong environment: exit 2 with the nearest name.
    let out = rollback_cmd(dir.path(), &home, &["qa", "--pipeline", "pipeline.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "failed");
    assert!(json["error"].as_str().unwrap().contains("left to roll back"), "{json}");
    let out = rollback_cmd(dir.path(), &home, &["qs", "--pipeline", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "promote: error: pipeline.yaml has no environment `qs` (its environments: qa)\n");
    assert_eq!(repo.head(), head);
}

#[test]
fn http_remotes_get_the_token_and_never_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = env_repo(dir.path());
    let token = "glpat-SECRET-0123456789";
    let server = crate::repos::HttpServer::start(dir.path(), token);
    let dest = repo.dest(&server.url("qa.git"), KUSTOMIZATION, kustomize());

    // Without a token: refused, and the message says what to set.
    let e = writer(dir.path(), "cache").promote(&dest, &promotion("r1", "deploy-qa", "1.4.2")).unwrap_err();
    assert!(e.to_string().contains("set PROMOTE_GIT_TOKEN or PROMOTE_GIT_TOKEN_FILE"), "{e}");
    // A wrong token: refused, and the wrong token is not echoed.
    let mut c = writer(dir.path(), "cache").config().clone();
    c.credentials.token = Some(promote::git::Secret::new("wrong-token-value"));
    let e = promote::git::Writer::new(c.clone()).promote(&dest, &promotion("r1", "deploy-qa", "1.4.2")).unwrap_err();
    assert!(!e.to_string().contains("wrong-token-value"), "{e}");
    // The right token, from a file, through the command line: `promote rollback` after a promotion.
    c.credentials.token = Some(promote::git::Secret::new(token));
    promote::git::Writer::new(c).promote(&dest, &promotion("r1", "deploy-qa", "1.4.2")).unwrap();
    assert!(repo.show(KUSTOMIZATION).contains("newTag: 1.4.2 #"));
    let sent = std::fs::read_to_string(dir.path().join("auth.log")).unwrap();
    use base64_free::encode;
    assert!(sent.contains(&format!("Basic {}", encode(&format!("x-access-token:{token}")))), "{sent}");

    std::fs::write(dir.path().join("pipeline.yaml"), PIPELINE.replace("repo: qa.git", &format!("repo: {}", server.url("qa.git")))).unwrap();
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let out = std::process::Command::new(crate::promote_bin())
        .current_dir(dir.path())
        .args(["rollback", "qa", "--pipeline", "pipeline.yaml"])
        .env("PROMOTE_GIT_TOKEN_FILE", dir.path().join("token"))
        .env_remove("PROMOTE_GIT_TOKEN")
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.starts_with("rolled back qa: 1.4.2 -> 1.4.1"), "{all}");
    assert!(!all.contains(token));
    assert!(repo.show(KUSTOMIZATION).contains("newTag: 1.4.1 #"));
}

/// Base64 for one assertion, without a dependency.
mod base64_free {
    pub fn encode(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                out.push(if i <= chunk.len() { T[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
            }
        }
        out
    }
}

#[test]
fn a_cache_left_half_made_or_locked_by_a_killed_process_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, w, dest) = qa(dir.path());
    // Killed while creating the cache: a folder with only a config lock in it.
    let cache = w.cache_path(&dest.remote);
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("config.lock"), "").unwrap();
    assert!(matches!(w.promote(&dest, &promotion("r1", "deploy-qa", "1.4.2")).unwrap().outcome, Outcome::Committed(_)));
    let aside: Vec<String> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".git.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "the broken cache is kept aside");
    // Killed while updating a ref: its lock file stays behind.
    std::fs::write(cache.join("refs/promote/seen/main.lock"), "").unwrap();
    std::fs::write(cache.join("packed-refs.lock"), "").unwrap();
    assert!(matches!(w.promote(&dest, &promotion("r2", "deploy-qa", "1.4.3")).unwrap().outcome, Outcome::Committed(_)));
    assert!(!cache.join("refs/promote/seen/main.lock").exists());
    assert_eq!(repo.log().len(), 3);
    repo.assert_fsck();
}
