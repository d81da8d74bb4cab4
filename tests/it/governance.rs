//! Governance against real repos, real state files and the real binary: policies on real
//! manifests (stage and commit check), approvals with a users file, freeze windows with
//! break-glass, notifications to a local HTTP receiver.

use std::sync::{Arc, Mutex};

use promote::store::{RunState, StageState};

use crate::exec::{Setup, drive, promote, stage, text, wait_for_state};
use crate::repos::{EnvRepo, git};

const POLICIES: &str = include_str!("../../pipelines/governance/policies/production.rego");

const USERS: &str = "users:
  alice: {name: Alice Liddell, email: alice@example.com, groups: [release-managers]}
  bob: {name: Bob Martin, email: bob@example.com, groups: [release-managers]}
  dave: {name: Dave Cutler, email: dave@example.com, groups: [release-managers, sre]}
  carol: {name: Carol Shaw, email: carol@example.com, groups: [sre]}
  ci-bot: {name: CI, email: ci@example.com, groups: [release-managers]}
";

const LOADBALANCER: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n";
const CLUSTERIP: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: ClusterIP\n  ports: [{port: 80}]\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: checkout\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/acme/checkout:1.0.0\n";

/// A setup with the shipped policies in `policies/` and the users file `users.yaml`.
fn governed(stages: &str, extra: &str) -> Setup {
    let s = Setup::new(stages, &format!("users: users.yaml\n{extra}"));
    std::fs::create_dir(s.path().join("policies")).unwrap();
    std::fs::write(s.path().join("policies/production.rego"), POLICIES).unwrap();
    std::fs::write(s.path().join("users.yaml"), USERS).unwrap();
    s
}

fn env_repo(s: &Setup, env: &str) -> EnvRepo {
    EnvRepo { bare: s.path().join(format!("envs/{env}.git")), work: s.path().join(format!("envs/{env}-work")) }
}

async fn audit_details(exec: &promote::exec::Executor, run: &str, kind: &str) -> Vec<String> {
    exec.store.events(run).await.unwrap().into_iter().filter(|e| e.kind == kind).map(|e| e.detail).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_denies_a_loadbalancer_in_prod_warns_on_missing_limits_and_lets_a_clusterip_through() {
    let s = governed(
        "  qa:\n    deploy: {environment: qa}\n  policy-check:\n    needs: [qa]\n    policy: {policies: [policies/]}\n  prod:\n    needs: [policy-check]\n    deploy: {environment: prod}\n",
        "",
    );
    let prod = env_repo(&s, "prod");
    prod.commit_as_someone_else("app/service.yaml", LOADBALANCER, "expose web");
    prod.commit_as_someone_else("app/deployment.yaml", DEPLOYMENT, "the app");
    let before = prod.head();
    let exec = s.executor().await;
    let id = s.start(&exec, "1.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Failed);
    let check = stage(&sum, "policy-check");
    assert_eq!(check.state, StageState::Failed);
    let msg = check.message.as_deref().unwrap();
    assert!(msg.starts_with("denied by policy: app/service.yaml: Service web is of type LoadBalancer"), "{msg}");
    let warn = &check.output.as_ref().unwrap()["policy"]["warn"];
    assert!(warn[0].as_str().unwrap().contains("app/deployment.yaml: container app of Deployment checkout has no resource limits"), "{warn}");
    assert_eq!(prod.head(), before, "nothing reached prod");
    let decisions = audit_details(&exec, &id, "policy").await;
    assert!(decisions.iter().any(|d| d.starts_with("policy denied for `prod`: app/service.yaml")), "{decisions:?}");
    assert!(decisions.iter().any(|d| d.starts_with("commit: policy allowed for `qa`")), "the qa commit was judged too: {decisions:?}");

    prod.commit_as_someone_else("app/service.yaml", CLUSTERIP, "internal only");
    let id = s.start(&exec, "1.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}");
    assert_eq!(s.commits("prod")[0], "promote checkout 1.1.0 to prod");
    let out = stage(&sum, "prod").output.clone().unwrap();
    assert!(out["policyWarnings"][0].as_str().unwrap().contains("no resource limits"), "the commit check warns too: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_commit_check_stops_a_deploy_whatever_the_stage_order() {
    // The policy stage comes after the deploy: the commit check still judges the commit.
    let s = governed("  prod:\n    deploy: {environment: prod}\n  audit-after:\n    needs: [prod]\n    policy: {policies: [policies/]}\n", "");
    let prod = env_repo(&s, "prod");
    prod.commit_as_someone_else("app/service.yaml", LOADBALANCER, "expose web");
    let before = prod.head();
    let exec = s.executor().await;
    let id = s.start(&exec, "1.2.0").await;
    let sum = drive(&exec, &id).await;
    let deploy = stage(&sum, "prod");
    assert_eq!(deploy.state, StageState::Failed);
    let msg = deploy.message.as_deref().unwrap();
    assert!(msg.contains("refused by policy, nothing was pushed: app/service.yaml: Service web is of type LoadBalancer"), "{msg}");
    assert_eq!(prod.head(), before);
    assert!(audit_details(&exec, &id, "policy").await.iter().any(|d| d.starts_with("commit to `prod` refused")));

    // A semver downgrade is refused at commit, in any environment.
    let s = governed("  qa:\n    deploy: {environment: qa}\n  later:\n    needs: [qa]\n    policy: {policies: [policies/]}\n", "");
    let exec = s.executor().await;
    let id = s.start(&exec, "0.9.0").await;
    let sum = drive(&exec, &id).await;
    let msg = stage(&sum, "qa").message.clone().unwrap();
    assert!(msg.contains("app/kustomization.yaml: 1.0.0 -> 0.9.0 is a downgrade"), "{msg}");
    assert!(s.commits("qa").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_policies_are_errors_with_their_place_never_a_pass() {
    let s = governed("  p:\n    policy: {policies: [rules/]}\n", "");
    std::fs::create_dir(s.path().join("rules")).unwrap();
    std::fs::write(s.path().join("rules/broken.rego"), "package broken\n\ndeny contains msg if {\n    msg := sprintf(\"%s\", [input.version]\n}\n").unwrap();
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("rules/broken.rego:4:9: error: Rego: expecting `}`"), "{}", text(&out));

    // A division by zero at evaluation fails the stage with the file and line.
    std::fs::write(
        s.path().join("rules/broken.rego"),
        "package div\n\ndeny contains msg if {\n    x := 10 / count(input.approvals)\n    x > 1\n    msg := \"never\"\n}\n",
    )
    .unwrap();
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    let exec = s.executor().await;
    let id = s.start(&exec, "1.0.1").await;
    let sum = drive(&exec, &id).await;
    let p = stage(&sum, "p");
    assert_eq!(p.state, StageState::Failed);
    let msg = p.message.as_deref().unwrap();
    assert!(msg.starts_with("policy error (nothing passes on an error): rules/broken.rego:4:"), "{msg}");

    // A folder of policies with no deny or warn rule is refused.
    std::fs::write(s.path().join("rules/broken.rego"), "package nothing\n\nallow if true\n").unwrap();
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert!(text(&out).contains("rules/broken.rego:1:1: error: policy rules/broken.rego (data.nothing) has no `deny` or `warn` rule"), "{}", text(&out));
}

crate::both_backends! {
async fn approvals_follow_the_users_file_groups_min_count_and_separation_of_duties() {
    let s = governed(
        "  ok:\n    approval: {approvers: [group:release-managers], minApprovals: 2}\n  prod:\n    needs: [ok]\n    deploy: {environment: prod}\n",
        "",
    );
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    let refused = |user: &str, want: &str| {
        let out = promote(s.path(), &["approve", &id, "ok", "--as", user]);
        assert_eq!(out.status.code(), Some(2), "{user}: {}", text(&out));
        assert!(text(&out).contains(want), "{user}: {}", text(&out));
    };
    refused("mallory", "`mallory` is not in the users file");
    refused("carol", "`carol` is not an approver of this stage, nor in one of its groups");
    refused("ci-bot", "`ci-bot` started this run and may not approve it");
    let out = promote(s.path(), &["reject", &id, "ok", "--as", "bob", "--reason", " "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("a rejection needs a reason"));

    let out = promote(s.path(), &["approve", &id, "ok", "--as", "bob", "--comment", "looks good"]);
    assert!(out.status.success(), "{}", text(&out));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(exec.store.stages(&id).await.unwrap()[0].state, StageState::Waiting, "1 of 2 still waits");
    let out = promote(s.path(), &["approve", &id, "ok", "--as", "dave"]);
    assert!(out.status.success(), "{}", text(&out));
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded);
    let msg = git(&s.path().join("envs/prod.git"), &["log", "-1", "--format=%B", "main"]);
    assert!(msg.ends_with("Approved-By: Bob Martin <bob@example.com>\nApproved-By: Dave Cutler <dave@example.com>\n\n"), "{msg}");
    let decisions = audit_details(&exec, &id, "decision").await;
    assert_eq!(decisions, ["approved by bob: looks good", "approved by dave"]);
    let actors: Vec<String> = exec.store.events(&id).await.unwrap().into_iter().filter(|e| e.kind == "decision").map(|e| e.actor).collect();
    assert_eq!(actors, ["bob", "dave"]);

    // A rejection with a reason fails the run, and the trail says who and why.
    let id = s.start(&exec, "2.0.1").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    let out = promote(s.path(), &["reject", &id, "ok", "--as", "alice", "--reason", "freeze week"]);
    assert!(out.status.success(), "{}", text(&out));
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Failed);
    assert_eq!(stage(&sum, "ok").message.as_deref(), Some("rejected by alice: freeze week"));
    assert_eq!(audit_details(&exec, &id, "decision").await, ["rejected by alice: freeze week"]);
}
}

crate::both_backends! {
async fn an_approval_times_out_as_a_rejection() {
    let s = governed("  ok:\n    approval: {approvers: [alice], timeout: 300ms}\n  prod:\n    needs: [ok]\n    deploy: {environment: prod}\n", "");
    let exec = s.executor().await;
    let id = s.start(&exec, "2.1.0").await;
    let sum = drive(&exec, &id).await;
    assert_eq!(stage(&sum, "ok").state, StageState::Failed);
    assert_eq!(stage(&sum, "ok").message.as_deref(), Some("rejected: no decision within 300ms (0 of 1 approvals)"));
    assert!(s.commits("prod").is_empty());
}
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_with_a_token_must_present_it_and_it_is_never_printed_or_stored() {
    let s = governed("  ok:\n    approval: {approvers: [bob]}\n", "");
    let out = promote(s.path(), &["token", "--for", "bob"]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let token = printed.lines().next().unwrap().rsplit(' ').next().unwrap().to_string();
    let stored = printed.lines().find(|l| l.trim_start().starts_with("token: sha256:")).unwrap().trim().trim_start_matches("token: ").to_string();
    let users = USERS.replace("bob: {name: Bob Martin,", &format!("bob: {{token: \"{stored}\", name: Bob Martin,"));
    std::fs::write(s.path().join("users.yaml"), users).unwrap();
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "2.2.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    let with = |tok: Option<&str>| {
        let mut c = crate::exec::promote_command(s.path());
        c.env("PROMOTE_USER", "ci-bot").env_remove("PROMOTE_TOKEN").args(["approve", &id, "ok", "--as", "bob"]);
        if let Some(t) = tok {
            c.env("PROMOTE_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = with(None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("user `bob` has an API token: set PROMOTE_TOKEN"), "{}", text(&out));
    let out = with(Some("prt_0000wrong"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not `bob`'s") && !text(&out).contains("prt_0000wrong"), "{}", text(&out));
    let out = with(Some(&token));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(walker.await.unwrap().run.state, RunState::Succeeded);
    exec.store.close().await;
    for f in ["state.db", "state.db-wal"] {
        if let Ok(bytes) = std::fs::read(s.path().join(".promote").join(f)) {
            assert!(!String::from_utf8_lossy(&bytes).contains(&token), "the token is in {f}");
        }
    }
}

fn frozen_now(on_freeze: &str) -> String {
    let today = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC).date();
    let from = today.yesterday().unwrap();
    let to = today.tomorrow().unwrap().tomorrow().unwrap();
    format!(
        "    freeze:\n      timezone: UTC\n      onFreeze: {on_freeze}\n      windows: [{{name: year-end, from: \"{from}\", to: \"{to}\"}}]\n      breakGlass: [alice, ci-bot]\n"
    )
}

/// The setup with prod frozen now.
fn with_frozen_prod(on_freeze: &str) -> Setup {
    let s = governed("  prod:\n    deploy: {environment: prod}\n", "");
    let text = std::fs::read_to_string(&s.file).unwrap();
    let marker = "  prod:\n    repo: envs/prod.git\n    file: app/kustomization.yaml\n    update: {kustomizeImage: registry.example.com/acme/checkout}\n";
    assert!(text.contains(marker));
    std::fs::write(&s.file, text.replace(marker, &format!("{marker}{}", frozen_now(on_freeze)))).unwrap();
    s
}

crate::both_backends! {
async fn a_freeze_fails_or_waits_and_only_an_allowed_person_breaks_the_glass() {
    let s = with_frozen_prod("fail");
    let head = env_repo(&s, "prod").head();
    let exec = s.executor().await;
    let id = s.start(&exec, "3.0.0").await;
    let sum = drive(&exec, &id).await;
    let msg = stage(&sum, "prod").message.clone().unwrap();
    assert!(msg.starts_with("`prod` is frozen (year-end) until ") && msg.ends_with("nothing was committed (onFreeze: fail)"), "{msg}");
    assert_eq!(env_repo(&s, "prod").head(), head);

    let s = with_frozen_prod("wait");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "3.0.1").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "prod", StageState::Waiting).await;
    let waiting = exec.store.stages(&id).await.unwrap()[0].message.clone().unwrap();
    assert!(waiting.contains(&format!("promote break-glass {id} prod --as USER --reason TEXT")), "{waiting}");
    for (user, reason, want) in [
        ("alice", "", "breaking the glass needs a reason"),
        ("bob", "hotfix", "`bob` is not an approver of this stage"),
        ("ci-bot", "hotfix", "`ci-bot` started this run"),
    ] {
        let out = promote(s.path(), &["break-glass", &id, "prod", "--as", user, "--reason", reason]);
        assert_eq!(out.status.code(), Some(2), "{user}");
        assert!(text(&out).contains(want), "{user}: {}", text(&out));
    }
    let out = promote(s.path(), &["break-glass", &id, "prod", "--as", "alice", "--reason", "payment outage hotfix INC-42"]);
    assert!(out.status.success(), "{}", text(&out));
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}");
    assert_eq!(s.commits("prod"), ["promote checkout 3.0.1 to prod"]);
    let out = stage(&sum, "prod").output.clone().unwrap();
    assert_eq!(out["breakGlass"]["user"], "alice");
    assert_eq!(out["breakGlass"]["window"], "year-end");
    assert_eq!(audit_details(&exec, &id, "break-glass").await, ["freeze overridden (break-glass) by alice: payment outage hotfix INC-42"]);
    let verify = promote(s.path(), &["audit", "verify"]);
    assert!(verify.status.success() && text(&verify).starts_with("audit trail intact"), "{}", text(&verify));
}
}

/// A local HTTP receiver: answers each request with the next status of `script` (then 200), and
/// keeps the bodies it got.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    hits: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start(script: Vec<u16>) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/hook-s3cretpath", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(Mutex::new(0usize));
        let (b, h) = (bodies.clone(), hits.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook-s3cretpath",
                    axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                        let (b, h, script) = (b.clone(), h.clone(), script.clone());
                        async move {
                            let n = {
                                let mut h = h.lock().unwrap();
                                *h += 1;
                                *h
                            };
                            let code = script.get(n - 1).copied().unwrap_or(200);
                            if code == 200 {
                                b.lock().unwrap().push(v);
                            }
                            axum::http::StatusCode::from_u16(code).unwrap()
                        }
                    }),
                );
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Receiver { url, bodies, hits }
    }
}

fn channel(yaml: &str) -> Vec<promote::model::Notification> {
    let mut diags = promote::diag::Diagnostics::new("t");
    let node = promote::model::yaml::parse(yaml, &mut diags).unwrap();
    promote::model::from_node(&node, &mut diags).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_fails_twice_gets_the_note_on_the_third_attempt_redacted() {
    use promote::governance::notify::{Note, Notifier};
    let r = Receiver::start(vec![500, 500, 200]);
    let mut n = Notifier::new(&channel(&format!("- webhook: {{url: \"{}\"}}\n  attempts: 3\n", r.url)), vec![]).unwrap();
    n.first_backoff = std::time::Duration::from_millis(20);
    let n = Arc::new(n);
    n.send(Note {
        event: "stage-failed".into(),
        pipeline: "checkout".into(),
        run: "01RUN".into(),
        version: "1.0.0".into(),
        stage: Some("deploy".into()),
        message: format!("push failed: Authorization: Bearer abc123secret; see {}", r.url),
        ..Default::default()
    });
    assert!(n.finish().await.is_empty(), "delivered");
    assert_eq!(*r.hits.lock().unwrap(), 3);
    let got = r.bodies.lock().unwrap()[0].clone();
    assert_eq!(got["event"], "stage-failed");
    let m = got["message"].as_str().unwrap();
    assert!(!m.contains("abc123secret") && !m.contains("s3cretpath"), "{m}");

    let always = Receiver::start(vec![503; 10]);
    let mut n = Notifier::new(&channel(&format!("- slack: {{url: \"{}\"}}\n  attempts: 2\n  name: ops\n", always.url)), vec![]).unwrap();
    n.first_backoff = std::time::Duration::from_millis(10);
    let n = Arc::new(n);
    n.send(Note {
        event: "rollback".into(),
        pipeline: "c".into(),
        run: "r".into(),
        version: "v".into(),
        stage: None,
        message: "m".into(),
        ..Default::default()
    });
    let failed = n.finish().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error, "ops: answered 503 Service Unavailable (after 2 attempts)");
    assert_eq!(*always.hits.lock().unwrap(), 2);
}

/// A receiver that refuses a note for what it is (a 404 of a revoked hook, a 400) is not asked
/// again; one that asks to be tried later (429) gets it on the next attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_note_is_not_sent_again_and_a_rate_limited_one_is() {
    use promote::governance::notify::{Note, Notifier};
    let note = || Note { event: "rollback".into(), pipeline: "c".into(), run: "r".into(), version: "v".into(), message: "m".into(), ..Default::default() };
    let gone = Receiver::start(vec![404, 200, 200]);
    let mut n = Notifier::new(&channel(&format!("- webhook: {{url: \"{}\"}}\n  attempts: 3\n  name: old-hook\n", gone.url)), vec![]).unwrap();
    n.first_backoff = std::time::Duration::from_millis(10);
    let n = Arc::new(n);
    n.send(note());
    let failed = n.finish().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error, "old-hook: answered 404 Not Found (after 1 attempt)");
    assert_eq!(*gone.hits.lock().unwrap(), 1, "a refusal is final: the receiver is not asked again");

    let busy = Receiver::start(vec![429, 200]);
    let mut n = Notifier::new(&channel(&format!("- webhook: {{url: \"{}\"}}\n  attempts: 3\n", busy.url)), vec![]).unwrap();
    n.first_backoff = std::time::Duration::from_millis(10);
    let n = Arc::new(n);
    n.send(note());
    assert!(n.finish().await.is_empty(), "delivered on the second attempt");
    assert_eq!(*busy.hits.lock().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_notifies_slack_of_pending_approval_failure_and_its_end() {
    let r = Receiver::start(vec![500]);
    // The URL is a secret: it comes from a file, not the pipeline.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), format!("{}\n", r.url)).unwrap();
    let s = governed(
        "  ok:\n    approval: {approvers: [alice]}\n",
        &format!("notifications:\n  - slack: {{urlFile: {}}}\n    events: [approval-pending, stage-failed, run-finished]\n", secret.path().display()),
    );
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "4.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    let reason = format!("the hook {} is wrong", r.url);
    exec.store.decide(&id, "ok", "alice", false, Some(&reason)).await.unwrap();
    assert_eq!(walker.await.unwrap().run.state, RunState::Failed);
    let bodies = r.bodies.lock().unwrap().clone();
    let texts: Vec<&str> = bodies.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    for want in [
        "*approval-pending* checkout 4.0.0 `ok`: 0 of 1 approvals from alice: promote approve",
        "*stage-failed* checkout 4.0.0 `ok`: rejected by alice: the hook [redacted] is wrong",
        "*run-finished* checkout 4.0.0: failed",
    ] {
        assert!(texts.iter().any(|t| t.starts_with(want)), "no `{want}` in {texts:?}");
    }
    assert!(texts.iter().all(|t| !t.contains("s3cretpath")), "{texts:?}");
    assert_eq!(*r.hits.lock().unwrap(), 4, "the first call was retried");
}

/// The keys of every object the schema describes, checked against the real document both ways.
pub fn check_against(schema: &serde_json::Value, doc: &serde_json::Value, at: &str, problems: &mut Vec<String>) {
    let Some(props) = schema["properties"].as_object() else {
        if let (Some(each), Some(map)) = (schema["additionalProperties"].as_object(), doc.as_object()) {
            for (k, v) in map {
                check_against(&serde_json::Value::Object(each.clone()), v, &format!("{at}.{k}"), problems);
            }
        }
        if let (Some(items), Some(list)) = (schema.get("items"), doc.as_array()) {
            for (i, v) in list.iter().enumerate() {
                check_against(items, v, &format!("{at}[{i}]"), problems);
            }
        }
        return;
    };
    let Some(map) = doc.as_object() else {
        if !doc.is_null() {
            problems.push(format!("{at} is not an object"));
        }
        return;
    };
    for k in map.keys() {
        if !props.contains_key(k) {
            problems.push(format!("{at}.{k} is in the document but not in the schema"));
        }
    }
    for (k, s) in props {
        match map.get(k) {
            None => problems.push(format!("{at}.{k} is in the schema but not in the document")),
            Some(v) => check_against(s, v, &format!("{at}.{k}"), problems),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_input_document_is_the_documented_one() {
    // A policy that hands the whole input back as a warning: the real document, from a real run.
    let s = governed(
        "  qa:\n    deploy: {environment: qa}\n  ok:\n    needs: [qa]\n    approval: {approvers: [alice]}\n  echo:\n    needs: [ok]\n    policy: {policies: [echo.rego]}\n  prod:\n    needs: [echo]\n    deploy: {environment: prod}\n",
        "",
    );
    std::fs::write(s.path().join("echo.rego"), "package echo\n\nwarn contains json.marshal(input) if input.phase == \"stage\"\n").unwrap();
    let prod = env_repo(&s, "prod");
    prod.commit_as_someone_else("app/deployment.yaml", DEPLOYMENT, "the app");
    prod.commit_as_someone_else("app/broken.yaml", "a: [unclosed\n", "oops");
    let exec = Arc::new(s.executor().await);
    let id = s.start(&exec, "5.0.0").await;
    let (e, i) = (exec.clone(), id.clone());
    let walker = tokio::spawn(async move { drive(&e, &i).await });
    wait_for_state(&exec.store, &id, "ok", StageState::Waiting).await;
    exec.store.decide(&id, "ok", "alice", true, Some("yes")).await.unwrap();
    let sum = walker.await.unwrap();
    assert_eq!(sum.run.state, RunState::Succeeded, "{sum:?}");
    let warn = stage(&sum, "echo").output.clone().unwrap()["policy"]["warn"][0].as_str().unwrap().to_string();
    let doc: serde_json::Value = serde_json::from_str(&warn).unwrap();
    assert_eq!(
        (doc["environment"].as_str(), doc["change"]["oldValue"].as_str(), doc["change"]["newValue"].as_str()),
        (Some("prod"), Some("1.0.0"), Some("5.0.0"))
    );
    assert!(doc["manifests"].as_array().unwrap().iter().any(|m| m["kind"] == "Deployment" && m["file"] == "app/deployment.yaml"));
    assert_eq!(doc["manifestErrors"][0]["file"], "app/broken.yaml");
    assert_eq!(doc["approvals"][0]["comment"], "yes");
    assert_eq!(doc["stages"]["qa"]["output"]["newValue"], "5.0.0");
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../docs/policy-input.schema.json")).unwrap();
    let mut problems = Vec::new();
    check_against(&schema, &doc, "input", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn validation_reads_the_files_a_pipeline_names() {
    let s = governed(
        "  qa:\n    deploy: {environment: qa}\n  p:\n    policy: {policies: [policies/, nothere.rego]}\n  a:\n    approval: {approvers: [alice, group:nobody, zed]}\n",
        "notifications:\n  - slack: {url: ftp://x}\n    events: [stage-faild]\n",
    );
    let source = std::fs::read_to_string(&s.file).unwrap();
    let freeze = "    freeze: {timezone: Mars/X, windows: [{weekly: {from: fri 18:00, to: mon 25:00}}], breakGlass: [zed]}\n";
    std::fs::write(
        &s.file,
        source.replacen(
            "update: {kustomizeImage: registry.example.com/acme/checkout}\n",
            &format!("update: {{kustomizeImage: registry.example.com/acme/checkout}}\n{freeze}"),
            1,
        ),
    )
    .unwrap();
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    for want in [
        "pipeline.yaml:10:24: error: unknown time zone `Mars/X`",
        "error: malformed weekly time `mon 25:00`",
        "error: break-glass: `zed` is not in the users file",
        "error: policy `nothere.rego` does not exist",
        "error: approver: nobody in the users file is in group `nobody`",
        "error: approver: `zed` is not in the users file",
        "error: a notification `url` starts with http:// or https://",
        "error: unknown notification event `stage-faild`; did you mean `stage-failed`?",
    ] {
        assert!(t.contains(want), "no `{want}` in:\n{t}");
    }
    assert!(t.contains("(8 errors"), "{t}");

    // Too few people in the users file for `minApprovals`.
    let source = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, source.replace("approvers: [alice, group:nobody, zed]", "approvers: [group:sre], minApprovals: 3")).unwrap();
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert!(text(&out).contains("`minApprovals: 3` but only 2 people in the users file may approve (carol, dave): it could never be met"), "{}", text(&out));

    // The users file's own mistakes are reported at their place in it.
    std::fs::write(s.path().join("users.yaml"), "users:\n  alice:\n    name: Alice\n    emial: a@example.com\n").unwrap();
    let out = promote(s.path(), &["validate", "pipeline.yaml"]);
    assert!(text(&out).contains("users.yaml:4:5: error:"), "{}", text(&out));
}
