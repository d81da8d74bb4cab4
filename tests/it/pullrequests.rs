//! The pull-request client against the fake hosts (tests/it/hosts.rs, standing in for GitHub,
//! GitLab and Gitea), each over a real bare repo: a branch pushed with the promotion's change,
//! a request opened, found, refused a merge while checks are pending, merged for real, commented
//! and closed; a wrong token refused; the token never in a message.

use promote::providers::pullrequest::{Host, Merge, PrState, PullRequests};
use promote::secret::Secret;

use crate::repos::{EnvRepo, git};

const TOKEN: &str = "tok_pr_0123456789abcdef";

async fn the_requests_of(host: Host) {
    let dir = tempfile::tempdir().unwrap();
    let env = EnvRepo::new(dir.path(), "checkout-env", &[("app/kustomization.yaml", "images:\n  - name: app\n    newTag: 1.0.0\n")]);
    // A promotion's branch, as a person would push it.
    git(&env.work, &["checkout", "-q", "-b", "promote/checkout/prod/1.1.0"]);
    std::fs::write(env.work.join("app/kustomization.yaml"), "images:\n  - name: app\n    newTag: 1.1.0\n").unwrap();
    git(&env.work, &["commit", "-q", "-am", "promote checkout 1.1.0 to prod"]);
    git(&env.work, &["push", "-q", "origin", "promote/checkout/prod/1.1.0"]);
    let (fake, api) = crate::hosts::start(host, env.bare.clone(), TOKEN).await;
    let prs = PullRequests::new(host, &api, "acme/checkout-env", Secret::new(TOKEN));

    assert_eq!(prs.find_open("promote/checkout/prod/1.1.0", "main").await.unwrap(), None);
    let pr = prs.open("promote/checkout/prod/1.1.0", "main", "promote checkout 1.1.0 to prod", "evidence: ...").await.unwrap();
    assert_eq!((pr.number, pr.state.clone(), pr.head.as_str()), (1, PrState::Open, "promote/checkout/prod/1.1.0"));
    assert!(pr.url.starts_with("http://127.0.0.1:"), "{}", pr.url);
    assert_eq!(prs.find_open("promote/checkout/prod/1.1.0", "main").await.unwrap().map(|p| p.number), Some(1));
    assert!(prs.open("promote/checkout/prod/1.1.0", "main", "again", "").await.is_err(), "one request per branch");

    // Required checks pending: not yet, in the host's words.
    fake.checks_pass.store(false, std::sync::atomic::Ordering::SeqCst);
    match prs.merge(1).await.unwrap() {
        Merge::NotYet(why) => assert!(why.contains("Required status check"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(prs.get(1).await.unwrap().state, PrState::Open);
    // Checks pass: merged for real, the merge commit now the base branch's head.
    fake.checks_pass.store(true, std::sync::atomic::Ordering::SeqCst);
    let Merge::Merged(sha) = prs.merge(1).await.unwrap() else { panic!("not merged") };
    assert_eq!(git(&env.bare, &["rev-parse", "main"]).trim(), sha);
    assert_eq!(git(&env.bare, &["show", "main:app/kustomization.yaml"]), "images:\n  - name: app\n    newTag: 1.1.0\n");
    assert_eq!(git(&env.bare, &["rev-list", "--parents", "-n", "1", "main"]).split_whitespace().count(), 3, "a merge commit");
    assert_eq!(prs.get(1).await.unwrap().state, PrState::Merged(sha.clone()));
    assert_eq!(prs.merge(1).await.unwrap(), Merge::Merged(sha), "merging again is merged");

    // A stale request: commented on, then closed without a merge.
    git(&env.work, &["checkout", "-q", "-b", "promote/checkout/prod/1.2.0"]);
    git(&env.work, &["commit", "-q", "--allow-empty", "-m", "promote checkout 1.2.0 to prod"]);
    git(&env.work, &["push", "-q", "origin", "promote/checkout/prod/1.2.0"]);
    let stale = prs.open("promote/checkout/prod/1.2.0", "main", "promote checkout 1.2.0 to prod", "").await.unwrap();
    prs.comment(stale.number, "superseded by 1.3.0").await.unwrap();
    prs.close(stale.number).await.unwrap();
    assert_eq!(prs.get(stale.number).await.unwrap().state, PrState::Closed);
    assert_eq!(fake.prs.lock().unwrap()[1].comments, ["superseded by 1.3.0"]);
    assert!(prs.list_open("main").await.unwrap().is_empty());

    // A wrong token: refused, and no token in the message.
    let wrong = PullRequests::new(host, &api, "acme/checkout-env", Secret::new("tok_wrong_ffffffffffff"));
    let e = wrong.get(1).await.unwrap_err().to_string();
    assert!(e.contains("401") && !e.contains("tok_wrong") && !e.contains(TOKEN), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn github_pull_requests_open_wait_for_checks_merge_for_real_and_close() {
    the_requests_of(Host::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_merge_requests_open_wait_for_checks_merge_for_real_and_close() {
    the_requests_of(Host::GitLab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gitea_pull_requests_open_wait_for_checks_merge_for_real_and_close() {
    the_requests_of(Host::Gitea).await;
}

// ---- the deploy stage through a pull request, on the fakes ----

use std::sync::Arc;

use promote::store::{RunState, StageState};

use crate::exec::{Setup, drive, stage, wait_for_state};

/// A pipeline deploying QA by push and prod through a request on `host` (the fake at `api`).
async fn pr_setup(host: Host, merge: &str) -> (Setup, crate::hosts::Fake) {
    pr_setup_with(host, merge, "  deploy-qa:\n    deploy: {environment: qa}\n  deploy-prod:\n    needs: [deploy-qa]\n    deploy: {environment: prod}\n", "")
        .await
}

async fn pr_setup_with(host: Host, merge: &str, stages: &str, extra: &str) -> (Setup, crate::hosts::Fake) {
    let s = Setup::new(stages, extra);
    let prod = s.path().join("envs/prod.git");
    let (fake, api) = crate::hosts::start(host, prod, TOKEN).await;
    std::fs::write(s.path().join("pr.token"), format!("{TOKEN}\n")).unwrap();
    let provider = match host {
        Host::GitHub => "github",
        Host::GitLab => "gitlab",
        Host::Gitea => "gitea",
    };
    let text = std::fs::read_to_string(&s.file).unwrap();
    let pr = format!(
        "    repo: envs/prod.git\n    pullRequest: {{provider: {provider}, repo: acme/checkout-env, tokenFile: pr.token, merge: {merge}, api: \"{api}\"}}\n"
    );
    std::fs::write(&s.file, text.replace("    repo: envs/prod.git\n", &pr)).unwrap();
    (s, fake)
}

fn client(host: Host, fake: &crate::hosts::Fake) -> PullRequests {
    let base = fake.base_url.lock().unwrap().clone();
    let api = match host {
        Host::GitHub => base,
        Host::GitLab => format!("{base}/api/v4"),
        Host::Gitea => format!("{base}/api/v1"),
    };
    PullRequests::new(host, &api, "acme/checkout-env", Secret::new(TOKEN))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_prod_is_promoted_by_the_merge_of_a_pull_request_with_the_evidence() {
    let (s, fake) = pr_setup(Host::GitHub, "wait").await;
    let bare = s.path().join("envs/prod.git");
    // A request an earlier promotion left open: a newer one closes it, saying why.
    git(&bare, &["branch", "promote/checkout/prod/1.9.0", "main"]);
    let stale = client(Host::GitHub, &fake).open("promote/checkout/prod/1.9.0", "main", "promote checkout 1.9.0 to prod", "").await.unwrap();
    let main_before = git(&bare, &["rev-parse", "main"]);

    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    for _ in 0..300 {
        let st = exec.store.stages(&id).await.unwrap();
        if st.iter().any(|x| x.name == "deploy-prod" && x.state != StageState::Pending && x.state != StageState::Running) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let st = exec.store.stages(&id).await.unwrap().into_iter().find(|x| x.name == "deploy-prod").unwrap();
    assert_eq!(st.state, StageState::Waiting, "{:?}", st.message);
    assert!(st.message.as_deref().unwrap().starts_with("pull request #2 waits for a merge: http://127.0.0.1:"), "{:?}", st.message);
    // The promotion commit is on its own branch, main untouched; the request carries the evidence.
    assert_eq!(git(&bare, &["rev-parse", "main"]), main_before, "the protected branch is not pushed to");
    let on_branch = git(&bare, &["log", "-1", "--format=%B", "promote/checkout/prod/2.0.0"]);
    assert!(on_branch.starts_with("promote checkout 2.0.0 to prod") && on_branch.contains(&format!("Promote-Run: {id}")), "{on_branch}");
    let (body, closed, comments) = {
        let prs = fake.prs.lock().unwrap();
        (prs[1].body.clone(), prs[0].state, prs[0].comments.clone())
    };
    assert!(body.contains(&format!("by run `{id}`")) && body.contains("| deploy-qa | succeeded | qa -> 2.0.0 in "), "{body}");
    assert_eq!(closed, "closed");
    assert!(comments[0].starts_with("Superseded by pull request #2 (checkout 2.0.0"), "{comments:?}");
    assert_eq!(stale.number, 1);

    // A person merges it on the host: the merge commit is the promotion; the run carries on.
    let Merge::Merged(sha) = client(Host::GitHub, &fake).merge(2).await.unwrap() else { panic!("not merged") };
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{:?}", stage(&sum, "deploy-prod").message);
    let out = stage(&sum, "deploy-prod").output.clone().unwrap();
    assert_eq!((out["outcome"].as_str(), out["commit"].as_str()), (Some("merged"), Some(sha.as_str())));
    assert_eq!(out["pullRequest"]["number"], 2);
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), sha);
    // Its trailers are kept in main's history (the promotion commit is the merge's second parent).
    let log = git(&bare, &["log", "--format=%H %s", "main"]);
    assert!(log.contains("promote checkout 2.0.0 to prod"), "{log}");
    // `promote rollback` works on it (the value from before the promotion the merge brought),
    // through a request of its own, which a person merges.
    let back = crate::exec::promote(s.path(), &["rollback", "prod", "--pipeline", "pipeline.yaml"]);
    assert!(crate::exec::text(&back).contains("rollback of prod: proposed in pull request #3"), "{}", crate::exec::text(&back));
    let Merge::Merged(_) = client(Host::GitHub, &fake).merge(3).await.unwrap() else { panic!("not merged") };
    assert!(git(&bare, &["show", "main:app/kustomization.yaml"]).contains("newTag: 1.0.0"));
    let trail: Vec<String> = exec.store.events(&id).await.unwrap().into_iter().filter(|e| e.kind == "pull-request").map(|e| e.detail).collect();
    assert!(trail.iter().any(|t| t.starts_with("opened pull request #2")) && trail.iter().any(|t| t.starts_with("closed stale pull request #1")), "{trail:?}");
    assert!(trail.iter().any(|t| t.starts_with(&format!("#2 merged into `main` as {sha}"))), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_merge_auto_promote_merges_the_request_once_the_hosts_checks_pass() {
    let (s, fake) = pr_setup(Host::GitLab, "auto").await;
    fake.checks_pass.store(false, std::sync::atomic::Ordering::SeqCst);
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "3.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "deploy-prod", StageState::Waiting).await;
    let st = exec.store.stages(&id).await.unwrap().into_iter().find(|x| x.name == "deploy-prod").unwrap();
    let msg = st.message.unwrap();
    assert!(msg.starts_with("merge request #1 waits for its checks to pass: ") && msg.contains("Required status check"), "{msg}");
    fake.checks_pass.store(true, std::sync::atomic::Ordering::SeqCst);
    let sum = tokio::time::timeout(std::time::Duration::from_secs(30), walker).await.expect("merged within the poll").unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded);
    let sha = stage(&sum, "deploy-prod").output.clone().unwrap()["commit"].as_str().unwrap().to_string();
    assert_eq!(git(&s.path().join("envs/prod.git"), &["rev-parse", "main"]).trim(), sha);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_closed_without_a_merge_fails_the_deploy() {
    let (s, fake) = pr_setup(Host::Gitea, "wait").await;
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "4.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "deploy-prod", StageState::Waiting).await;
    client(Host::Gitea, &fake).close(1).await.unwrap();
    let sum = tokio::time::timeout(std::time::Duration::from_secs(30), walker).await.expect("seen within the poll").unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    let msg = stage(&sum, "deploy-prod").message.clone().unwrap();
    assert!(msg.contains("pull request #1") && msg.contains("was closed without a merge: nothing was promoted"), "{msg}");
    assert_eq!(git(&s.path().join("envs/prod.git"), &["log", "--format=%s", "main"]).trim(), "initial", "nothing reached prod");
}

#[test]
fn a_pull_request_is_checked_before_anything_runs() {
    let s = Setup::new("  deploy-prod:\n    deploy: {environment: prod}\n", "");
    let text = std::fs::read_to_string(&s.file).unwrap();
    let bad = "    repo: envs/prod.git\n    pullRequest: {provider: bitbucket, repo: acme, tokenEnv: \"ghp_123 4\"}\n";
    std::fs::write(&s.file, text.replace("    repo: envs/prod.git\n", bad)).unwrap();
    let out = crate::exec::promote(s.path(), &["validate", "pipeline.yaml"]);
    let said = crate::exec::text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    for want in ["is not a host promote knows: use github, gitlab, gitea or forgejo", "must be OWNER/NAME", "must name an environment variable"] {
        assert!(said.contains(want), "missing `{want}` in:\n{said}");
    }
    assert!(said.contains("pipeline.yaml:"), "each with its place: {said}");
    let gitea = "    repo: envs/prod.git\n    pullRequest: {provider: gitea, repo: acme/x, tokenFile: t}\n";
    std::fs::write(&s.file, text.replace("    repo: envs/prod.git\n", gitea)).unwrap();
    let said = crate::exec::text(&crate::exec::promote(s.path(), &["validate", "pipeline.yaml"]));
    assert!(said.contains("is self-hosted: give `api`"), "{said}");
}

/// A pull_request webhook, signed with the trigger's secret as GitHub signs it, wakes the waiting
/// deploy at once: it does not wait for its next poll.
#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_webhook_wakes_the_waiting_deploy_before_its_next_poll() {
    let (s, fake) = pr_setup(Host::GitHub, "wait").await;
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(
        &s.file,
        format!("{text}triggers:\n  - git: {{provider: github, repo: acme/checkout, refs: [\"refs/tags/v*\"], version: tag}}\n    secretFile: hook.secret\n"),
    )
    .unwrap();
    std::fs::write(s.path().join("hook.secret"), "It's a Secret to Everybody\n").unwrap();
    let server = crate::server::Running::start(&s).await;
    let body = crate::server::push_event("acme/checkout", "refs/tags/v5.0.0");
    let sig = crate::server::sign(&body);
    let (status, answer) = server.hook(&[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-pr-1"), ("X-Hub-Signature-256", sig.as_str())], body).await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["runs"][0]["run"].as_str().unwrap().to_string();
    let store = s.executor().await.store;
    wait_for_state(&store, &id, "deploy-prod", StageState::Waiting).await;
    // The deploy polls every 2 s for its first 10 s, then every quarter of its wait: just after
    // its 10 s look, the next is 2.5 s away.
    tokio::time::sleep(std::time::Duration::from_millis(10_300)).await;
    let Merge::Merged(sha) = client(Host::GitHub, &fake).merge(1).await.unwrap() else { panic!("not merged") };
    let event = serde_json::to_vec(&serde_json::json!({
        "action": "closed", "number": 1,
        "pull_request": {"number": 1, "merged": true, "merge_commit_sha": sha, "head": {"ref": "promote/checkout/prod/v5.0.0"}, "base": {"ref": "main"}},
        "repository": {"full_name": "acme/checkout-env"}
    }))
    .unwrap();
    let sig = crate::server::sign(&event);
    let sent = std::time::Instant::now();
    let (status, answer) =
        server.hook(&[("X-GitHub-Event", "pull_request"), ("X-GitHub-Delivery", "d-pr-2"), ("X-Hub-Signature-256", sig.as_str())], event).await;
    assert_eq!((status, answer["woke"].as_bool()), (202, Some(true)), "{answer}");
    loop {
        let run = store.run(&id).await.unwrap();
        if run.state == RunState::Succeeded {
            break;
        }
        assert!(sent.elapsed() < std::time::Duration::from_millis(1500), "not woken by the event: {:?}", store.stages(&id).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!("merged -> deploy done {} ms after the pull_request event", sent.elapsed().as_millis());
    server.stop().await;
}

/// A run that fails after a protected prod was promoted rolls prod back through a request too
/// (merged at once with `merge: auto`), QA by a push; `promote rollback` on a `merge: wait`
/// environment proposes the request and says that nothing is restored until it is merged.
#[tokio::test(flavor = "multi_thread")]
async fn rollbacks_of_a_protected_environment_go_through_a_request() {
    let stages = "  deploy-qa:\n    deploy: {environment: qa}\n  deploy-prod:\n    needs: [deploy-qa]\n    deploy: {environment: prod}\n  sign-off:\n    needs: [deploy-prod]\n    approval: {approvers: [alice]}\n";
    let (s, _fake) = pr_setup_with(Host::GitLab, "auto", stages, "onFailure: {rollback: true}\n").await;
    let bare = s.path().join("envs/prod.git");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "6.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "sign-off", StageState::Waiting).await;
    assert!(git(&bare, &["show", "main:app/kustomization.yaml"]).contains("newTag: 6.0.0"));
    exec.store.decide(&id, "sign-off", "alice", false, Some("not today")).await.unwrap();
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    let prod = stage(&sum, "deploy-prod");
    assert_eq!(prod.state, StageState::RolledBack, "{:?}", prod.message);
    assert!(prod.message.as_deref().unwrap().contains("through merge request #2"), "{:?}", prod.message);
    assert!(git(&bare, &["show", "main:app/kustomization.yaml"]).contains("newTag: 1.0.0"), "prod restored by the merge");
    assert!(git(&bare, &["log", "-1", "--format=%s", "main"]).starts_with("Merge pull request #2 from acme/promote/checkout/prod/rollback-"));

    // By hand, on an environment a person merges: proposed, not restored.
    let (s, fake) = pr_setup(Host::GitHub, "auto").await;
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "7.0.0").await;
    assert_eq!(drive(&exec, &id).await.run.state, RunState::Succeeded);
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace("merge: auto", "merge: wait")).unwrap();
    let out = crate::exec::promote(s.path(), &["rollback", "prod", "--pipeline", "pipeline.yaml"]);
    let said = crate::exec::text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("rollback of prod: proposed in pull request #2 (http://127.0.0.1:") && said.contains("merging it restores the value"), "{said}");
    assert!(git(&s.path().join("envs/prod.git"), &["show", "main:app/kustomization.yaml"]).contains("newTag: 7.0.0"), "not restored yet");
    assert_eq!(fake.prs.lock().unwrap()[1].state, "open");
}

/// A watch on a protected environment reverts through a request too: the release's error rate
/// is bad from its first look; the revert's request is merged by promote (`merge: auto`), the
/// environment holds its value from before the release, the watch fails and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_watch_reverts_a_protected_environment_through_a_request() {
    let service = crate::prom::Exporter::start("error_rate 0.31\n");
    let prom = tokio::task::block_in_place(|| {
        let p = crate::prom::Prometheus::scraping(&service.addr);
        crate::prom::wait_for_value(&p, "error_rate", 0.31);
        p
    });
    let stages = format!(
        "  deploy-prod:\n    deploy:\n      environment: prod\n      watch:\n        for: 60s\n        interval: 1s\n        metrics:\n          provider: {{prometheus: {{address: \"{}\", timeout: 2s}}}}\n          checks:\n            - name: error-rate\n              query: error_rate\n              successCondition: result[0] < 0.05\n",
        prom.url()
    );
    let (s, fake) = pr_setup_with(Host::GitHub, "auto", &stages, "").await;
    let bare = s.path().join("envs/prod.git");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "8.0.0").await;
    assert_eq!(drive(&exec, &id).await.run.state, RunState::Succeeded);
    assert!(git(&bare, &["show", "main:app/kustomization.yaml"]).contains("newTag: 8.0.0"));
    let dir = s.path().to_path_buf();
    let looked = tokio::task::spawn_blocking(move || crate::exec::promote(&dir, &["watch", "run"])).await.unwrap();
    assert_eq!(looked.status.code(), Some(1), "a failed watch\n{}", crate::exec::text(&looked));
    assert!(git(&bare, &["show", "main:app/kustomization.yaml"]).contains("newTag: 1.0.0"), "reverted by the merge");
    let head = git(&bare, &["log", "-1", "--format=%s", "main"]);
    assert!(head.starts_with("Merge pull request #2 from acme/promote/checkout/prod/revert-"), "{head}");
    assert_eq!(fake.prs.lock().unwrap()[1].state, "merged");
    let list = crate::exec::promote(s.path(), &["watch", "list", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let w = &doc["items"][0];
    assert_eq!(w["state"], "failed", "{w}");
    assert!(w["message"].as_str().unwrap().contains("through pull request #2"), "{w}");
}

// ---- issue 35: lists read page after page; a merged request is the promotion, not a drift ----

/// A long list: 150 requests of other people opened after promote's own; every page is read
/// (GitHub and GitLab 100 a page, Gitea 50), and promote's request, on the last page, is found.
async fn every_page_of(host: Host) {
    let dir = tempfile::tempdir().unwrap();
    let env = EnvRepo::new(dir.path(), "checkout-env", &[("app/kustomization.yaml", "images:\n  - name: app\n    newTag: 1.0.0\n")]);
    git(&env.work, &["push", "-q", "origin", "main:promote/checkout/prod/1.1.0"]);
    let (fake, api) = crate::hosts::start(host, env.bare.clone(), TOKEN).await;
    let prs = PullRequests::new(host, &api, "acme/checkout-env", Secret::new(TOKEN));
    let ours = prs.open("promote/checkout/prod/1.1.0", "main", "promote checkout 1.1.0 to prod", "").await.unwrap();
    fake.seed(150, "main");
    let open = prs.list_open("main").await.unwrap();
    assert_eq!(open.len(), 151, "{host:?}");
    assert_eq!(open.last().map(|p| p.number), Some(ours.number), "newest first: promote's is the oldest");
    assert_eq!(prs.find_open("promote/checkout/prod/1.1.0", "main").await.unwrap().map(|p| p.number), Some(ours.number));
}

#[tokio::test(flavor = "multi_thread")]
async fn github_gitlab_and_gitea_lists_are_read_page_after_page() {
    every_page_of(Host::GitHub).await;
    every_page_of(Host::GitLab).await;
    every_page_of(Host::Gitea).await;
}

/// GitHub's merge answer names the merge commit (`sha`): it is taken from there, also when the
/// request read again has no `merge_commit_sha` (as newer API versions have it).
#[tokio::test(flavor = "multi_thread")]
async fn the_merge_commit_comes_from_the_merge_answer() {
    let dir = tempfile::tempdir().unwrap();
    let env = EnvRepo::new(dir.path(), "checkout-env", &[("app/kustomization.yaml", "images:\n  - name: app\n    newTag: 1.0.0\n")]);
    git(&env.work, &["checkout", "-q", "-b", "promote/checkout/prod/1.1.0"]);
    std::fs::write(env.work.join("app/kustomization.yaml"), "images:\n  - name: app\n    newTag: 1.1.0\n").unwrap();
    git(&env.work, &["commit", "-q", "-am", "promote checkout 1.1.0 to prod"]);
    git(&env.work, &["push", "-q", "origin", "promote/checkout/prod/1.1.0"]);
    let (fake, api) = crate::hosts::start(Host::GitHub, env.bare.clone(), TOKEN).await;
    fake.no_merge_commit_sha.store(true, std::sync::atomic::Ordering::SeqCst);
    let prs = PullRequests::new(Host::GitHub, &api, "acme/checkout-env", Secret::new(TOKEN));
    let pr = prs.open("promote/checkout/prod/1.1.0", "main", "promote checkout 1.1.0 to prod", "").await.unwrap();
    assert_eq!(prs.merge(pr.number).await.unwrap(), Merge::Merged(env.head()));
}

/// `promote drift check` in the pipeline's folder: its exit code and what it said.
fn drift_check(s: &Setup) -> (Option<i32>, String) {
    let out = crate::exec::promote(s.path(), &["drift", "check", "pipeline.yaml"]);
    (out.status.code(), crate::exec::text(&out))
}

/// Drives run `id` to its end, within a minute (a deploy waiting on a drift never ends).
async fn finish(exec: &Arc<promote::exec::Executor>, id: &str) -> promote::exec::Summary {
    tokio::time::timeout(std::time::Duration::from_secs(60), drive(exec, id)).await.unwrap_or_else(|_| panic!("run {id} did not end: waiting?"))
}

/// A promotion merged by promote (`merge: auto`) is the approved state: no drift, and the next
/// promotion goes on without waiting; a rollback merged through a request is no drift either.
async fn merged_promotions_are_no_drift_on(host: Host) {
    let (s, fake) = pr_setup(host, "auto").await;
    let bare = s.path().join("envs/prod.git");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.0.0").await;
    assert_eq!(finish(&exec, &id).await.run.state, RunState::Succeeded);
    assert_eq!(git(&bare, &["rev-list", "--parents", "-n", "1", "main"]).split_whitespace().count(), 3, "{host:?}: a merge commit");
    let (code, said) = drift_check(&s);
    assert_eq!(code, Some(0), "{host:?}: {said}");
    assert!(said.contains("prod: no drift"), "{host:?}: {said}");

    let id = s.start(&exec, "2.1.0").await;
    let sum = finish(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Succeeded, "{host:?}: {:?}", stage(&sum, "deploy-prod").message);
    assert!(git(&bare, &["show", "main:app/kustomization.yaml"]).contains("newTag: 2.1.0"));
    assert_eq!(drift_check(&s).0, Some(0), "{host:?}");

    let back = crate::exec::promote(s.path(), &["rollback", "prod", "--pipeline", "pipeline.yaml"]);
    assert!(back.status.success(), "{host:?}: {}", crate::exec::text(&back));
    assert!(git(&bare, &["show", "main:app/kustomization.yaml"]).contains("newTag: 2.0.0"), "{host:?}: rolled back by the merge");
    assert_eq!(fake.prs.lock().unwrap().last().unwrap().state, "merged");
    let (code, said) = drift_check(&s);
    assert_eq!(code, Some(0), "{host:?}: {said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_merge_of_promotes_request_is_no_drift_and_the_next_promotion_does_not_wait() {
    merged_promotions_are_no_drift_on(Host::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gitlab_merge_of_promotes_request_is_no_drift_and_the_next_promotion_does_not_wait() {
    merged_promotions_are_no_drift_on(Host::GitLab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gitea_merge_of_promotes_request_is_no_drift_and_the_next_promotion_does_not_wait() {
    merged_promotions_are_no_drift_on(Host::Gitea).await;
}

/// Runs `version` up to its deploy waiting for request `number`, lets `merge` land it on the
/// host, and drives the run to its end.
async fn promoted_through(s: &Setup, exec: &Arc<promote::exec::Executor>, version: &str, merge: impl AsyncFnOnce()) -> promote::exec::Summary {
    let id = s.start(exec, version).await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "deploy-prod", StageState::Waiting).await;
    merge().await;
    tokio::time::timeout(std::time::Duration::from_secs(30), walker).await.expect("merged within the poll").unwrap()
}

/// A person's commit pushed to the request's branch and merged with it is a drift (what the
/// merge brought beyond promote's change); the same request merged alone was none.
#[tokio::test(flavor = "multi_thread")]
async fn a_persons_commit_on_the_requests_branch_merged_with_it_is_a_drift() {
    let (s, fake) = pr_setup(Host::GitHub, "wait").await;
    let exec = Arc::new(s.executor().await);
    let sum = promoted_through(&s, &exec, "2.0.0", async || {
        let Merge::Merged(_) = client(Host::GitHub, &fake).merge(1).await.unwrap() else { panic!("not merged") };
    })
    .await;
    assert_eq!(sum.run.state, RunState::Succeeded);
    let (code, said) = drift_check(&s);
    assert_eq!(code, Some(0), "the merge alone: {said}");

    let sum = promoted_through(&s, &exec, "2.1.0", async || {
        fake.push_to_head(2, "app/debug.yaml", "debug: true\n", "turn debug on in prod");
        let Merge::Merged(_) = client(Host::GitHub, &fake).merge(2).await.unwrap() else { panic!("not merged") };
    })
    .await;
    assert_eq!(sum.run.state, RunState::Succeeded);
    let (code, said) = drift_check(&s);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("prod: drift") && said.contains("Dev <dev@example.com>") && said.contains("turn debug on in prod"), "{said}");
    let id = said.split_whitespace().find(|w| w.starts_with("d-")).unwrap().trim_end_matches(':').to_string();
    let shown = crate::exec::text(&crate::exec::promote(s.path(), &["drift", "show", &id]));
    assert!(shown.contains("+debug: true"), "{shown}");
    assert!(!shown.contains("newTag"), "promote's own change is not the drift: {shown}");
}

/// A person squash-merges promote's request on the host (one new commit, without promote's
/// trailers; on GitLab, a squash commit merged with a merge commit) on top of a promotion pushed
/// before prod was protected: no drift.
async fn a_squash_is_no_drift_on(host: Host) {
    let (s, fake) = pr_setup(host, "wait").await;
    let bare = s.path().join("envs/prod.git");
    let exec = Arc::new(s.executor().await);
    let protected = std::fs::read_to_string(&s.file).unwrap();
    let open: String = protected.lines().filter(|l| !l.contains("pullRequest:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&s.file, open).unwrap();
    let id = s.start(&exec, "1.5.0").await;
    assert_eq!(finish(&exec, &id).await.run.state, RunState::Succeeded);
    assert!(git(&bare, &["log", "-1", "--format=%B", "main"]).contains("Promote-Seal"), "pushed by promote");
    std::fs::write(&s.file, protected).unwrap();
    let sum = promoted_through(&s, &exec, "2.0.0", async || {
        let base = fake.base_url.lock().unwrap().clone();
        let http = reqwest::Client::new();
        let req = match host {
            Host::GitHub => http
                .put(format!("{base}/repos/acme/checkout-env/pulls/1/merge"))
                .bearer_auth(TOKEN)
                .header("X-GitHub-Api-Version", "2022-11-28")
                .json(&serde_json::json!({"merge_method": "squash"})),
            Host::GitLab => http
                .put(format!("{base}/api/v4/projects/acme%2Fcheckout-env/merge_requests/1/merge"))
                .header("PRIVATE-TOKEN", TOKEN)
                .json(&serde_json::json!({"squash": true})),
            Host::Gitea => http
                .post(format!("{base}/api/v1/repos/acme/checkout-env/pulls/1/merge"))
                .header("Authorization", format!("token {TOKEN}"))
                .json(&serde_json::json!({"Do": "squash"})),
        };
        assert_eq!(req.send().await.unwrap().status(), 200);
    })
    .await;
    assert_eq!(sum.run.state, RunState::Succeeded, "{host:?}: {:?}", stage(&sum, "deploy-prod").message);
    assert_eq!(stage(&sum, "deploy-prod").output.as_ref().unwrap()["commit"].as_str().unwrap(), git(&bare, &["rev-parse", "main"]).trim());
    let landed = git(&bare, &["log", "--first-parent", "-1", "--format=%B", "main"]);
    assert!(!landed.contains("Promote-Seal"), "{host:?}: the host's own commit: {landed}");
    let (code, said) = drift_check(&s);
    assert_eq!(code, Some(0), "{host:?}: {said}");
    assert!(said.contains("prod: no drift"), "{host:?}: {said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_squash_merge_of_promotes_request_is_no_drift() {
    a_squash_is_no_drift_on(Host::GitHub).await;
    a_squash_is_no_drift_on(Host::GitLab).await;
}

/// 150 requests open into prod, promote's stale one the oldest (on the second page): a new
/// promotion closes it, with its comment.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_request_on_the_second_page_is_closed() {
    let (s, fake) = pr_setup(Host::GitHub, "wait").await;
    let bare = s.path().join("envs/prod.git");
    git(&bare, &["branch", "promote/checkout/prod/1.9.0", "main"]);
    let stale = client(Host::GitHub, &fake).open("promote/checkout/prod/1.9.0", "main", "promote checkout 1.9.0 to prod", "").await.unwrap();
    fake.seed(149, "main");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "deploy-prod", StageState::Waiting).await;
    let (state, comments) = {
        let prs = fake.prs.lock().unwrap();
        let p = prs.iter().find(|p| p.number == stale.number).unwrap();
        (p.state, p.comments.clone())
    };
    assert_eq!(state, "closed", "{comments:?}");
    assert!(comments.first().is_some_and(|c| c.starts_with("Superseded by pull request #151")), "{comments:?}");
    walker.abort();
}

/// A drift in a protected environment is reverted through a request, never pushed to its
/// branch; it is decided by its id alone (the id names the pipeline, whose file its run names).
#[tokio::test(flavor = "multi_thread")]
async fn a_drift_in_a_protected_environment_is_reverted_through_a_request() {
    let (s, fake) = pr_setup(Host::GitHub, "auto").await;
    let bare = s.path().join("envs/prod.git");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.0.0").await;
    assert_eq!(finish(&exec, &id).await.run.state, RunState::Succeeded);
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace("merge: auto", "merge: wait")).unwrap();
    let hotfix = tokio::task::block_in_place(|| crate::drift::hand_edit(&s, "prod", |t| t.replace("newTag: 2.0.0", "newTag: 6.6.6"), "hotfix"));
    let (code, said) = drift_check(&s);
    assert_eq!(code, Some(1), "{said}");
    let drift = crate::drift::drift_id(&said);
    let out = crate::exec::promote(s.path(), &["drift", "reject", &drift, "--as", "alice", "--reason", "through the pipeline"]);
    let said = crate::exec::text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("proposed in pull request #") && said.contains("merging it restores the value"), "{said}");
    assert_eq!(git(&bare, &["rev-parse", "main"]).trim(), hotfix, "the protected branch is not pushed to");
    let request = fake.prs.lock().unwrap().last().unwrap().clone();
    assert_eq!(request.state, "open");
    let on_branch = git(&bare, &["show", &format!("{}:app/kustomization.yaml", request.head)]);
    assert!(on_branch.contains("newTag: 2.0.0"), "the request restores the approved files: {on_branch}");
}
