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
