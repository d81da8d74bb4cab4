//! `promote serve` on 127.0.0.1: signed webhooks start runs (once, however often they are
//! delivered), refused ones start nothing, the API approves as the token's user, the server stops
//! gracefully. The GitHub push events are the documented JSON shape (GitHub's API cannot run
//! here: the test stands in for it, signing as GitHub signs).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::exec::{Setup, text};

pub const ALICE: &str = "prt_alice_server_token_0001";
const SECRET: &str = "It's a Secret to Everybody";

pub fn sign(body: &[u8]) -> String {
    sign_with(SECRET, body)
}

/// GitHub's `X-Hub-Signature-256` of `body` under `secret`.
pub fn sign_with(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// A GitHub `push` event of `git_ref` (the fields promote reads, as GitHub sends them).
pub fn push_event(repo: &str, git_ref: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": git_ref, "before": "0000000000000000000000000000000000000000", "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "created": true, "deleted": false, "forced": false,
        "repository": {"id": 1296269, "name": repo.rsplit('/').next().unwrap(), "full_name": repo, "private": false},
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
        // Committed two hours ago: the lead time counts from it.
        "head_commit": {"id": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "message": "release",
                        "timestamp": jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(2)).unwrap().to_string()}
    }))
    .unwrap()
}

/// `promote serve` in this process on 127.0.0.1:0.
pub struct Running {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), promote::server::ServerError>>,
    pub http: reqwest::Client,
}

impl Running {
    pub async fn start(s: &Setup) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let exec = s.executor().await;
        let config = promote::server::Config { pipelines: vec![s.path().to_path_buf()], repos: vec![], reload: Duration::from_secs(60), ..Default::default() };
        let task = tokio::spawn(promote::server::serve(listener, exec, config, async move {
            let _ = rx.await;
        }));
        Running { url, stop: Some(tx), task, http: promote::providers::http_client() }
    }

    /// A server over `config` instead of the setup's folder.
    pub async fn start_with(s: &Setup, config: promote::server::Config) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let exec = s.executor().await;
        let task = tokio::spawn(promote::server::serve(listener, exec, config, async move {
            let _ = rx.await;
        }));
        Running { url, stop: Some(tx), task, http: promote::providers::http_client() }
    }

    pub async fn hook(&self, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, serde_json::Value) {
        let send = |body: Vec<u8>| {
            let mut req = self.http.post(format!("{}/hooks/github", self.url)).body(body);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send()
        };
        let small = body.len() <= promote::server::MAX_BODY;
        let mut sent = send(body.clone()).await;
        // A pooled connection the server closed (after refusing an oversized body) fails the
        // next request before it is sent: that one is sent again, as a provider redelivers.
        if small && sent.is_err() {
            sent = send(body).await;
        }
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or_default())
            }
            // The server answered and closed before the client finished sending (an oversized
            // body): status 0.
            Err(e) => (0, serde_json::json!({"error": e.to_string()})),
        }
    }

    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, format!("{}/api/v1{path}", self.url)).bearer_auth(ALICE);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("the server stops").unwrap().unwrap();
    }
}

pub fn setup() -> Setup {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n  sign-off:\n    needs: [qa]\n    approval: {approvers: [alice]}\n  prod:\n    needs: [sign-off]\n    deploy: {environment: prod}\n",
        "users: users.yaml\naccess: {run: [alice], rollback: [alice], admin: [alice]}\ntriggers:\n  - git: {provider: github, repo: acme/checkout, refs: [\"refs/tags/v*\"], version: tag}\n    secretFile: hook.secret\n",
    );
    std::fs::write(s.path().join("hook.secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(
        s.path().join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(ALICE)),
    )
    .unwrap();
    s
}

/// The value of the sample `name{labels...}` in OpenMetrics `text` (labels in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        let have: Vec<&str> = rest.trim_end_matches('}').split(',').filter(|x| !x.is_empty()).collect();
        let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        (n == name && have.len() == want.len() && want.iter().all(|w| have.contains(&w.as_str()))).then(|| value.parse().ok()).flatten()
    })
}

/// Signs in to the web pages as a browser would (the form's CSRF token and its cookie first):
/// the session cookie (`promote_session=...`).
pub async fn sign_in(http: &reqwest::Client, url: &str, token: &str) -> String {
    let page = http.get(format!("{url}/ui/login")).send().await.unwrap();
    let form_cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let signed = http.post(format!("{url}/ui/login")).header("cookie", &form_cookie).form(&[("token", token), ("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(signed.status().as_u16(), 303, "signed in");
    signed.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string()
}

pub async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

crate::both_backends! {
async fn a_signed_tag_push_starts_one_run_that_the_api_approves_through_to_prod() {
    let s = setup();
    let server = Running::start(&s).await;
    let body = push_event("acme/checkout", "refs/tags/v1.4.2");
    let sig = sign(&body);
    let headers = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"), ("X-Hub-Signature-256", sig.as_str())];
    let (status, answer) = server.hook(&headers, body.clone()).await;
    assert_eq!(status, 201, "{answer}");
    let id = answer["runs"][0]["run"].as_str().unwrap().to_string();
    assert_eq!(answer["runs"][0]["version"], "v1.4.2");

    // The same delivery again, and the same tag in another delivery: no second run.
    let (status, again) = server.hook(&headers, body.clone()).await;
    assert_eq!((status, again["runs"][0]["run"].as_str()), (200, Some(id.as_str())), "{again}");
    let other = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "another-delivery"), ("X-Hub-Signature-256", sig.as_str())];
    let (status, again) = server.hook(&other, body.clone()).await;
    assert_eq!((status, again["runs"][0]["duplicate"].as_bool()), (200, Some(true)), "{again}");

    // Its entries stream as server-sent events until its end.
    let stream = {
        let r = server.http.get(format!("{}/api/v1/runs/{id}/events", server.url)).bearer_auth(ALICE).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        tokio::spawn(async move {
            let mut r = r;
            let mut text = String::new();
            while let Ok(Some(chunk)) = r.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        })
    };
    // The run promotes the tag to QA at once and waits for alice.
    wait_for("qa", async || s.commits("qa").first().is_some_and(|c| c == "promote checkout v1.4.2 to qa")).await;
    wait_for("the sign-off", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
    let (status, shown) = server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await;
    assert_eq!(status, 200);
    let metrics = server.http.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&metrics, "promote_decisions_waiting", &[("pipeline", "checkout"), ("kind", "approval")]), Some(1.0), "{metrics}");
    // Logs templates are marked through the API as through the CLI, with a reason, as the token's user.
    let (status, why) =
        server.api(reqwest::Method::POST, &format!("/runs/{id}/stages/sign-off/templates/1/not-a-risk"), Some(serde_json::json!({"reason": "known"}))).await;
    assert_eq!((status, why["error"].as_str()), (400, Some(format!("stage `sign-off` of run {id} reported no log templates").as_str())));
    let (status, _) = server.api(reqwest::Method::POST, &format!("/runs/{id}/stages/sign-off/templates/1/not-a-risk"), Some(serde_json::json!({}))).await;
    assert_eq!(status, 400, "a reason is required");
    let (status, _) = server
        .api(reqwest::Method::POST, &format!("/runs/{id}/stages/sign-off/templates/1/not-a-risk"), Some(serde_json::json!({"reason": "x", "as": "bob"})))
        .await;
    assert_eq!(status, 403, "as someone else");
    assert_eq!((shown["run"]["triggeredBy"].as_str(), shown["run"]["authenticated"].as_bool()), (Some("webhook:github"), Some(true)));

    // Approved through the API, as the token's user, by the same rules as the CLI.
    let (status, done) =
        server.api(reqwest::Method::POST, &format!("/runs/{id}/stages/sign-off/approve"), Some(serde_json::json!({"comment": "ship it"}))).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["by"], "alice");
    wait_for("prod", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["run"]["state"] == "succeeded").await;
    assert_eq!(s.commits("prod"), ["promote checkout v1.4.2 to prod"]);
    let streamed = tokio::time::timeout(Duration::from_secs(10), stream).await.expect("the stream ends with the run").unwrap();
    for want in ["event: trigger\n", "event: decision\n", "approved by alice: ship it", "event: run\n", "run succeeded"] {
        assert!(streamed.contains(want), "`{want}` in:\n{streamed}");
    }
    let (_, runs) = server.api(reqwest::Method::GET, "/runs", None).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "one run for three deliveries");
    // And rolled back through the API, as alice, in a new commit.
    let (status, done) = server.api(reqwest::Method::POST, "/pipelines/checkout/environments/prod/rollback", None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((done["by"].as_str(), done["rolledBack"].as_bool()), (Some("alice"), Some(true)), "{done}");
    assert_eq!(s.commits("prod")[0], "roll back checkout in prod to 1.0.0");

    // Without a token, the API answers nothing.
    let r = server.http.get(format!("{}/api/v1/runs", server.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let metrics = server.http.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("promote_webhook_deliveries_total{provider=\"github\",result=\"started\"} 1"), "{metrics}");
    assert!(metrics.contains("promote_webhook_deliveries_total{provider=\"github\",result=\"duplicate\"} 2"), "{metrics}");
    // DORA, read from the state: one deployment each; prod's was rolled back by hand.
    let qa = [("pipeline", "checkout"), ("environment", "qa")];
    let prod = [("pipeline", "checkout"), ("environment", "prod")];
    assert_eq!(sample(&metrics, "promote_deployments_total", &qa), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "promote_deployments_failed_total", &qa), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "promote_change_failure_ratio", &prod), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "promote_time_to_restore_seconds_count", &prod), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "promote_time_to_restore_seconds_count", &qa), None, "{metrics}");
    // The lead time counts from the pushed commit's time, two hours before.
    let le = |b: &str| sample(&metrics, "promote_lead_time_seconds_bucket", &[qa[0], qa[1], ("le", b)]);
    assert_eq!((le("3600.0"), le("14400.0")), (Some(0.0), Some(1.0)), "{metrics}");
    assert_eq!(sample(&metrics, "promote_decisions_waiting", &[("pipeline", "checkout"), ("kind", "approval")]), None, "none waits now");
    server.stop().await;
}
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_sha1_oversized_and_unwatched_deliveries_start_nothing() {
    let s = setup();
    let server = Running::start(&s).await;
    let body = push_event("acme/checkout", "refs/tags/v2.0.0");
    let forged = sign(b"another body");
    type Case = (Vec<(&'static str, String)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (vec![("X-GitHub-Event", "push".into()), ("X-Hub-Signature-256", forged)], body.clone(), 401),
        (vec![("X-GitHub-Event", "push".into()), ("X-Hub-Signature", "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59".into())], body.clone(), 401),
        (vec![("X-GitHub-Event", "push".into())], body.clone(), 401),
        (vec![("X-GitHub-Event", "push".into()), ("X-Hub-Signature-256", "sha256=".into())], body.clone(), 401),
        (vec![("X-GitHub-Event", "push".into()), ("X-Hub-Signature-256", sign(&vec![b'x'; 2 << 20]))], vec![b'x'; 2 << 20], 413),
    ];
    for (i, (headers, body, want)) in cases.into_iter().enumerate() {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, answer) = server.hook(&h, body).await;
        // An oversized body is answered 413 as soon as its length is known; the client may see
        // the connection closed under the rest of its upload instead.
        let ok = status == want || (want == 413 && status == 0);
        assert!(ok, "case {i}: {status} {answer}");
    }
    // Verified, but not a run: a ping, a branch the trigger does not watch, another repo, a
    // deleted tag, a tag that is not a version.
    let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#.to_vec();
    let (status, _) = server.hook(&[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sign(&ping))], ping).await;
    assert_eq!(status, 200);
    for body in [push_event("acme/checkout", "refs/heads/main"), push_event("acme/other", "refs/tags/v2.0.0")] {
        let (status, answer) = server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&body))], body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let mut deleted: serde_json::Value = serde_json::from_slice(&push_event("acme/checkout", "refs/tags/v2.0.0")).unwrap();
    deleted["deleted"] = true.into();
    let deleted = serde_json::to_vec(&deleted).unwrap();
    let (status, _) = server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&deleted))], deleted).await;
    assert_eq!(status, 202);
    let bad = push_event("acme/checkout", "refs/tags/v1\nApproved-By: x");
    let (status, answer) = server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&bad))], bad).await;
    assert_eq!(status, 400, "{answer}");
    let (_, runs) = server.api(reqwest::Method::GET, "/runs", None).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "nothing started: {runs}");
    assert!(s.commits("qa").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_stops_on_sigterm_and_the_next_one_carries_the_run_on() {
    let s = setup();
    let (mut child, url) = serve_child(&s);
    let http = promote::providers::http_client();
    let body = push_event("acme/checkout", "refs/tags/v3.0.0");
    let r =
        http.post(format!("{url}/hooks/github")).header("X-GitHub-Event", "push").header("X-Hub-Signature-256", sign(&body)).body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["runs"][0]["run"].as_str().unwrap().to_string();
    wait_for("the sign-off", async || {
        let out = crate::exec::promote(s.path(), &["status", &id, "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| v["stages"][1]["state"] == "waiting")
    })
    .await;
    // SAFETY: kill(2) on the server this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    // The run waits, undriven; approving it and serving again carries it to prod.
    let out = crate::exec::promote(s.path(), &["status", &id, "--json"]);
    assert!(text(&out).contains("not driven"), "{}", text(&out));
    let out = std::process::Command::new(crate::promote_bin())
        .current_dir(s.path())
        .env("PROMOTE_TOKEN", ALICE)
        .args(["approve", &id, "sign-off", "--as", "alice"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let server = Running::start(&s).await;
    wait_for("prod", async || s.commits("prod").len() == 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_git_push_of_a_tag_whose_post_receive_hook_posts_the_event_promotes_it_to_qa() {
    let s = setup();
    let server = Running::start(&s).await;
    // The app's repo, with a post-receive hook that posts a GitHub-shaped push event, signed.
    let app = s.path().join("checkout.git");
    crate::repos::git(s.path(), &["init", "--bare", "-q", app.to_str().unwrap()]);
    let hook = app.join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            r#"#!/usr/bin/env python3
import hashlib, hmac, json, sys, urllib.request
for line in sys.stdin:
    old, new, ref = line.split()
    body = json.dumps({{"ref": ref, "before": old, "after": new, "deleted": new == "0" * 40,
                        "repository": {{"full_name": "acme/checkout"}}}}).encode()
    sig = "sha256=" + hmac.new({secret:?}.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request("{url}/hooks/github", data=body, method="POST",
        headers={{"X-GitHub-Event": "push", "X-GitHub-Delivery": new + ref, "X-Hub-Signature-256": sig, "Content-Type": "application/json"}})
    print("promote:", urllib.request.urlopen(req).status)
"#,
            secret = SECRET,
            url = server.url
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let work = s.path().join("work");
    crate::repos::git(s.path(), &["clone", "-q", app.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::write(work.join("README.md"), "checkout\n").unwrap();
    for args in
        [&["add", "README.md"][..], &["-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "release 5.0.0"], &["tag", "v5.0.0"]]
    {
        crate::repos::git(&work, args);
    }
    let out = std::process::Command::new("git").current_dir(&work).args(["push", "-q", "origin", "HEAD:refs/heads/main", "v5.0.0"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("promote: 201"), "the hook's delivery started a run: {}", text(&out));
    wait_for("qa", async || s.commits("qa").first().is_some_and(|c| c == "promote checkout v5.0.0 to qa")).await;
    server.stop().await;
}

/// tests/fixtures/webhooks holds each provider's push event as its documentation shows it,
/// trimmed to the fields that identify the push.
#[test]
fn each_providers_documented_push_shape_gives_the_version_its_trigger_asks_for() {
    use promote::server::{Event, parse, version_for};
    let h = |pairs: &[(&'static str, &'static str)]| {
        let mut m = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    };
    let git = |provider: &str, refs: &str, version: &str| {
        let yaml = format!("git: {{provider: {provider}, repo: acme/checkout, refs: [\"{refs}\"], version: {version}}}\nsecretEnv: S\n");
        let mut d = promote::diag::Diagnostics::new("t");
        let node = promote::model::yaml::parse(&yaml, &mut d).unwrap();
        promote::model::from_node::<promote::model::triggers::Trigger>(&node, &mut d).unwrap()
    };
    let image = |provider: &str, repository: &str, tags: &str| {
        let yaml = format!("image: {{provider: {provider}, repository: {repository}, tags: '{tags}'}}\nsecretEnv: S\n");
        let mut d = promote::diag::Diagnostics::new("t");
        let node = promote::model::yaml::parse(&yaml, &mut d).unwrap();
        promote::model::from_node::<promote::model::triggers::Trigger>(&node, &mut d).unwrap()
    };
    let fixture = |name: &str| std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks").join(name)).unwrap();
    let cases = [
        ("gitlab", h(&[("x-gitlab-event", "Tag Push Hook")]), "gitlab-tag-push.json", git("gitlab", "refs/tags/*", "tag"), Some("v1.4.2")),
        (
            "gitea",
            h(&[("x-gitea-event", "push")]),
            "gitea-push.json",
            git("gitea", "refs/heads/main", "commit"),
            Some("4c2b8b9b6ee4c0d6d0e4b8c5c0c3a1a7c0a2d1e3"),
        ),
        ("bitbucket", h(&[("x-event-key", "repo:push")]), "bitbucket-cloud-push.json", git("bitbucket", "refs/tags/*", "tag"), Some("v1.4.2")),
        ("bitbucket", h(&[("x-event-key", "repo:refs_changed")]), "bitbucket-server-refs-changed.json", git("bitbucket", "refs/tags/*", "tag"), Some("v1.4.2")),
        ("harbor", h(&[]), "harbor-push-artifact.json", image("harbor", "harbor.example.com/acme/checkout", "^[0-9]+[.][0-9]+[.][0-9]+$"), Some("1.4.2")),
        ("dockerhub", h(&[]), "dockerhub-push.json", image("dockerhub", "docker.io/acme/checkout", ".*"), Some("1.4.2")),
        ("quay", h(&[]), "quay-push.json", image("quay", "quay.io/acme/checkout", "^1[.]"), Some("1.4.2")),
        ("standard", h(&[]), "standard-image-push.json", image("standard", "registry.example.com/acme/checkout", "^v"), None),
    ];
    for (provider, headers, file, trigger, want) in cases {
        let event = parse(provider, &headers, &fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!matches!(event, Event::Other(_)), "{file}: {event:?}");
        assert_eq!(version_for(&trigger, &event).as_deref(), want, "{file}: {event:?}");
    }
}

crate::both_backends! {
async fn the_cli_acts_through_the_server_with_its_token() {
    let s = setup();
    let server = Running::start(&s).await;
    let cli = |token: Option<&str>, args: &[&str]| {
        let mut c = crate::exec::promote_command(s.path());
        c.env("PROMOTE_SERVER", &server.url).env_remove("PROMOTE_TOKEN").env("PROMOTE_USER", "nobody").args(args);
        if let Some(t) = token {
            c.env("PROMOTE_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = cli(None, &["status"]);
    assert!(!out.status.success() && text(&out).contains("--server needs PROMOTE_TOKEN"), "{}", text(&out));
    let out = cli(Some("prt_not_a_token"), &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Started through the API: the token's user (alice) is the starter, whatever PROMOTE_USER says.
    let out = cli(Some(ALICE), &["run", "pipeline.yaml", "--version", "6.1.0", "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_for("the sign-off", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["stages"][1]["state"] == "waiting").await;
    let out = cli(Some(ALICE), &["status", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run"]["triggeredBy"], "alice");
    // Claiming to be someone else, or approving one's own run: refused, by the same rules.
    let out = cli(Some(ALICE), &["approve", &id, "sign-off", "--as", "bob"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("the token is alice's, not bob's"), "{}", text(&out));
    let out = cli(Some(ALICE), &["approve", &id, "sign-off", "--as", "alice"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("started this run and may not approve it"), "{}", text(&out));
    let out = cli(Some(ALICE), &["reject", &id, "sign-off", "--as", "alice", "--reason", "not today"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = cli(Some(ALICE), &["status", &id]);
    assert!(out.status.success() && text(&out).contains(&format!("run {id} checkout 6.1.0")), "{}", text(&out));
    server.stop().await;
}
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_whose_webhook_never_came_is_caught_by_polling_the_source_and_old_tags_start_nothing() {
    let s = setup();
    // The app's repo, with a tag from before the server: the first poll only learns it.
    let app = s.path().join("checkout.git");
    let work = s.path().join("work");
    crate::repos::git(s.path(), &["init", "--bare", "-q", app.to_str().unwrap()]);
    crate::repos::git(s.path(), &["clone", "-q", app.to_str().unwrap(), work.to_str().unwrap()]);
    let commit_and_tag = |tag: &str| {
        std::fs::write(work.join("VERSION"), tag).unwrap();
        crate::repos::git(&work, &["add", "VERSION"]);
        crate::repos::git(&work, &["-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", tag]);
        crate::repos::git(&work, &["tag", "-a", tag, "-m", tag]);
        crate::repos::git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main", tag]);
    };
    commit_and_tag("v0.9.0");
    let text = std::fs::read_to_string(&s.file).unwrap();
    std::fs::write(&s.file, text.replace("version: tag}", "version: tag, url: checkout.git, poll: 1s}")).unwrap();
    let server = Running::start(&s).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A push nobody announced.
    commit_and_tag("v1.0.0");
    wait_for("the poll", async || s.commits("qa").first().is_some_and(|c| c == "promote checkout v1.0.0 to qa")).await;
    let (_, runs) = server.api(reqwest::Method::GET, "/runs", None).await;
    let versions: Vec<&str> = runs["runs"].as_array().unwrap().iter().filter_map(|r| r["version"].as_str()).collect();
    assert_eq!(versions, ["v1.0.0"], "the old tag started nothing: {runs}");
    // The webhook arriving late starts no second run.
    let body = push_event("acme/checkout", "refs/tags/v1.0.0");
    let (status, answer) = server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&body))], body).await;
    assert_eq!((status, answer["runs"][0]["duplicate"].as_bool()), (200, Some(true)), "{answer}");
    server.stop().await;
}

/// `promote serve` as a child process: its URL from its first line on stderr.
fn serve_child(s: &Setup) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(crate::promote_bin())
        .current_dir(s.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let first = lines.next().unwrap().unwrap();
    std::thread::spawn(move || for _ in lines {});
    (child, first.rsplit(' ').next().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_delivery_is_exactly_one_run_across_a_sigkill_of_the_server() {
    let s = Setup::new(
        "  soak:\n    wait: {duration: 0s}\n",
        "triggers:\n  - git: {provider: github, repo: acme/checkout, refs: [\"refs/tags/v*\"]}\n    secretFile: hook.secret\n",
    );
    std::fs::write(s.path().join("hook.secret"), SECRET).unwrap();
    let (mut child, url) = serve_child(&s);
    let http = promote::providers::http_client();
    let send = |url: String, i: usize| {
        let http = http.clone();
        async move {
            let body = push_event("acme/checkout", &format!("refs/tags/v2.0.{i}"));
            let r = http
                .post(format!("{url}/hooks/github"))
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", format!("delivery-{i}"))
                .header("X-Hub-Signature-256", sign(&body))
                .body(body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    // 150 deliveries, 20 at a time, every tenth sent twice; the server is killed halfway.
    let n = 150;
    let mut acked = vec![false; n];
    let mut sent = 0;
    while sent < n {
        let batch: Vec<usize> = (sent..(sent + 20).min(n)).collect();
        let answers = futures_util::future::join_all(
            batch
                .iter()
                .flat_map(|&i| {
                    let twice = if i % 10 == 0 { 2 } else { 1 };
                    (0..twice).map(move |_| i)
                })
                .map(|i| {
                    let f = send(url.clone(), i);
                    async move { (i, f.await) }
                }),
        );
        let answers = if sent == 80 {
            // SIGKILL while this batch is in flight: some are answered, some cut, some refused.
            let kill = async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                child.kill().unwrap();
            };
            let (answers, ()) = tokio::join!(answers, kill);
            child.wait().unwrap();
            answers
        } else {
            answers.await
        };
        for (i, status) in answers {
            acked[i] |= (200..300).contains(&status);
        }
        sent += 20;
    }
    // Restarted, the senders retry what got no 2xx (as GitHub's redelivery would).
    let (mut child, url) = serve_child(&s);
    for (i, acked) in acked.iter_mut().enumerate().filter(|(_, a)| !**a) {
        let status = send(url.clone(), i).await;
        assert!((200..300).contains(&status), "delivery {i} after the restart: {status}");
        *acked = true;
    }
    // SAFETY: kill(2) on the server this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let store = promote::store::Store::open(&s.state()).await.unwrap();
    let runs = store.runs(10_000).await.unwrap();
    store.close().await;
    let mut versions: Vec<String> = runs.iter().map(|r| r.version.clone()).collect();
    versions.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("v2.0.{i}")).collect();
    want.sort();
    assert_eq!(versions, want, "one run per acknowledged delivery, none twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_stage_calls_out_with_the_runs_variables_and_judges_the_answer() {
    use std::sync::{Arc, Mutex};
    // A change-request system that answers `approved` for 1.x and `denied` otherwise, and records
    // what it was sent; `/flaky` fails with 503 once.
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let flaky = Arc::new(Mutex::new(0));
    let (s2, f2) = (seen.clone(), flaky.clone());
    let app = axum::Router::new()
        .route(
            "/cr/{version}",
            axum::routing::post(move |axum::extract::Path(v): axum::extract::Path<String>, h: axum::http::HeaderMap, body: String| {
                let seen = s2.clone();
                async move {
                    let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    seen.lock().unwrap().push((v.clone(), auth, body));
                    axum::Json(serde_json::json!({"state": if v.starts_with('1') { "approved" } else { "denied" }}))
                }
            }),
        )
        .route(
            "/flaky",
            axum::routing::get(move || {
                let f = f2.clone();
                async move {
                    let mut n = f.lock().unwrap();
                    *n += 1;
                    if *n == 1 { axum::http::StatusCode::SERVICE_UNAVAILABLE } else { axum::http::StatusCode::OK }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir_token = tempfile::tempdir().unwrap();
    let token_file = dir_token.path().join("cr-token");
    std::fs::write(&token_file, "cr-s3cret-token").unwrap();
    let stages = format!(
        "  change-request:\n    webhook:\n      url: \"http://127.0.0.1:{port}/cr/${{version}}\"\n      body: '{{\"pipeline\": \"${{pipeline}}\", \"run\": \"${{run}}\"}}'\n      auth: {{bearerTokenFile: \"{}\"}}\n      successCondition: response.body.state == \"approved\"\n  flaky:\n    needs: [change-request]\n    retry: {{attempts: 2, backoff: 10ms}}\n    webhook: {{url: \"http://127.0.0.1:{port}/flaky\", method: GET}}\n  prod:\n    needs: [flaky]\n    deploy: {{environment: prod}}\n",
        token_file.display()
    );
    let s = Setup::new(&stages, "");
    let exec = s.executor().await;
    let ok = s.start(&exec, "1.2.0").await;
    let sum = crate::exec::drive(&exec, &ok).await;
    assert_eq!(sum.run.state, promote::store::RunState::Succeeded, "{sum:?}");
    let cr = sum.stages.iter().find(|x| x.name == "change-request").unwrap();
    assert_eq!(cr.message.as_deref(), Some(format!("POST http://127.0.0.1:{port}/cr/1.2.0 -> HTTP 200").as_str()));
    assert_eq!(sum.stages.iter().find(|x| x.name == "flaky").unwrap().attempt, 2, "a 503 is transient: retried");
    let (v, auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!((v.as_str(), auth.as_str()), ("1.2.0", "Bearer cr-s3cret-token"));
    assert_eq!(body, format!("{{\"pipeline\": \"checkout\", \"run\": \"{ok}\"}}"));

    let denied = s.start(&exec, "2.0.0").await;
    let sum = crate::exec::drive(&exec, &denied).await;
    assert_eq!(sum.run.state, promote::store::RunState::Failed);
    let cr = sum.stages.iter().find(|x| x.name == "change-request").unwrap();
    assert_eq!(cr.message.as_deref(), Some("successCondition `response.body.state == \"approved\"` is false (HTTP 200)"));
    assert_eq!(s.commits("prod"), ["promote checkout 1.2.0 to prod"], "the denied version never reached prod");
    exec.store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_stage_with_a_callback_waits_for_the_verdict_posted_once_to_its_url() {
    use std::sync::{Arc, Mutex};
    // An external test suite: takes the call, keeps the callback URL it was given, answers 202.
    let given: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let g2 = given.clone();
    let app = axum::Router::new().route(
        "/suites",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let given = g2.clone();
            async move {
                given.lock().unwrap().push(body);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = Setup::new(
        &format!(
            "  suite:\n    webhook: {{url: \"http://127.0.0.1:{port}/suites\", callback: true, callbackTimeout: 10m}}\n  prod:\n    needs: [suite]\n    deploy: {{environment: prod}}\n"
        ),
        "users: users.yaml\naccess: {run: [alice, bob], rollback: [alice]}\n",
    );
    std::fs::write(
        s.path().join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(ALICE)),
    )
    .unwrap();
    let server = Running::start(&s).await;
    let post = |url: String, body: serde_json::Value| {
        let http = server.http.clone();
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let mut urls = Vec::new();
    for (version, passed, message) in [("1.2.0", true, "412 tests passed"), ("1.3.0", false, "3 tests failed")] {
        let (status, started) = server.api(reqwest::Method::POST, "/runs", Some(serde_json::json!({"pipeline": "checkout", "version": version}))).await;
        assert_eq!(status, 201, "{started}");
        let id = started["run"]["id"].as_str().unwrap().to_string();
        wait_for("the suite to wait", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["stages"][0]["state"] == "waiting").await;
        let call = given.lock().unwrap().last().cloned().unwrap();
        assert_eq!((call["run"].as_str(), call["version"].as_str()), (Some(id.as_str()), Some(version)));
        let url = call["callbackUrl"].as_str().unwrap().to_string();
        assert!(url.starts_with(&format!("{}/callbacks/{id}/suite/", server.url)), "{url}");
        // A guessed token is no URL at all.
        let forged = format!("{}{}", &url[..url.len() - 4], "0000");
        assert_eq!(post(forged, serde_json::json!({"passed": true})).await.0, 404);
        let (status, done) = post(url.clone(), serde_json::json!({"passed": passed, "message": message})).await;
        assert_eq!(status, 200, "{done}");
        let (status, again) = post(url.clone(), serde_json::json!({"passed": true})).await;
        assert_eq!(status, 409, "a callback URL is used once: {again}");
        let want = if passed { "succeeded" } else { "failed" };
        wait_for("the run's end", async || server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await.1["run"]["state"] == want).await;
        let (_, shown) = server.api(reqwest::Method::GET, &format!("/runs/{id}"), None).await;
        if !passed {
            assert_eq!(shown["stages"][0]["message"], "the called system's verdict: failed: 3 tests failed", "{shown}");
        }
        assert_eq!(shown["stages"][0]["output"]["callback"]["message"], message, "{shown}");
        assert_eq!(given.lock().unwrap().len(), urls.len() + 1, "one call per run: waking did not call again");
        urls.push(url);
    }
    assert_eq!(s.commits("prod"), ["promote checkout 1.2.0 to prod"], "the failed suite kept 1.3.0 out of prod");
    // The URL is a credential: the trail does not hold it.
    let (_, shown) = server.api(reqwest::Method::GET, &format!("/runs/{}", urls[0].split('/').nth(4).unwrap()), None).await;
    assert!(!shown.to_string().contains(urls[0].rsplit('/').next().unwrap()), "{shown}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelines_from_a_git_repo_reload_on_a_push_to_it_and_a_version_file_is_read_at_the_pushed_commit() {
    let s = setup();
    let root = s.path().to_path_buf();
    let commit_all = |work: &std::path::Path, msg: &str| {
        crate::repos::git(work, &["add", "-A"]);
        crate::repos::git(work, &["-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", msg]);
        crate::repos::git(work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
        crate::repos::git(work, &["rev-parse", "HEAD"]).trim().to_string()
    };
    let repo = |name: &str| {
        let bare = root.join(format!("acme/{name}.git"));
        let work = root.join(format!("work-{name}"));
        crate::repos::git(&root, &["init", "--bare", "-q", "-b", "main", bare.to_str().unwrap()]);
        crate::repos::git(&root, &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
        (bare, work)
    };
    // The app: its version is in a file.
    let (app, app_work) = repo("checkout");
    std::fs::write(app_work.join("VERSION"), "2.5.0\n").unwrap();
    let commit = commit_all(&app_work, "release 2.5.0");
    // The pipelines repo: the setup's pipeline with absolute paths, reading VERSION at the commit.
    let (pipelines, work) = repo("pipelines");
    let text = std::fs::read_to_string(&s.file)
        .unwrap()
        .replace("repo: envs/", &format!("repo: {}/envs/", root.display()))
        .replace("users: users.yaml", &format!("users: {}/users.yaml", root.display()))
        .replace("secretFile: hook.secret", &format!("secretFile: {}/hook.secret", root.display()))
        .replace("refs: [\"refs/tags/v*\"], version: tag}", &format!("refs: [refs/heads/main], version: {{file: VERSION}}, url: {}}}", app.display()));
    std::fs::write(work.join("checkout.yaml"), &text).unwrap();
    commit_all(&work, "the checkout pipeline");
    let cache = tempfile::tempdir().unwrap();
    let repos = vec![promote::server::PipelinesRepo::parse(pipelines.to_str().unwrap(), cache.path())];
    let server = Running::start_with(&s, promote::server::Config { pipelines: vec![], repos, reload: Duration::from_secs(3600), ..Default::default() }).await;
    let (_, loaded) = server.api(reqwest::Method::GET, "/pipelines", None).await;
    assert_eq!(loaded["pipelines"][0]["stages"], 3, "{loaded}");

    // A push of main: the version is VERSION's line at that commit.
    let push = |repo: &str, commit: &str| {
        serde_json::to_vec(&serde_json::json!({"ref": "refs/heads/main", "after": commit, "deleted": false, "repository": {"full_name": repo}})).unwrap()
    };
    let body = push("acme/checkout", &commit);
    let (status, answer) = server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&body))], body).await;
    assert_eq!((status, answer["runs"][0]["version"].as_str()), (201, Some("2.5.0")), "{answer}");
    wait_for("qa", async || s.commits("qa").first().is_some_and(|c| c == "promote checkout 2.5.0 to qa")).await;

    // A change to the pipelines repo, announced by its push webhook: loaded at once (the timer
    // is an hour), and a broken one is refused with its line while the last good one serves.
    std::fs::write(
        work.join("checkout.yaml"),
        text.replace("  prod:\n    needs: [sign-off]", "  soak:\n    needs: [sign-off]\n    wait: {duration: 0s}\n  prod:\n    needs: [soak]"),
    )
    .unwrap();
    let head = commit_all(&work, "soak before prod");
    let body = push("acme/pipelines", &head);
    let (status, _) = server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&body))], body).await;
    assert_eq!(status, 202, "a push to the pipelines repo starts nothing");
    wait_for("the reload", async || server.api(reqwest::Method::GET, "/pipelines", None).await.1["pipelines"][0]["stages"] == 4).await;
    std::fs::write(work.join("checkout.yaml"), text.replace("needs: [sign-off]", "needs: [sign-of]")).unwrap();
    let head = commit_all(&work, "a typo");
    let body = push("acme/pipelines", &head);
    server.hook(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sign(&body))], body).await;
    wait_for("the refusal", async || !server.api(reqwest::Method::GET, "/pipelines", None).await.1["errors"].as_object().unwrap().is_empty()).await;
    let (_, loaded) = server.api(reqwest::Method::GET, "/pipelines", None).await;
    assert_eq!(loaded["pipelines"][0]["stages"], 4, "the last good version serves: {loaded}");
    let errors = loaded["errors"].to_string();
    assert!(errors.contains("checkout.yaml:") && errors.contains("sign-of"), "{errors}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn harbor_and_docker_hub_image_pushes_of_their_documented_shape_promote_the_tag_to_qa() {
    // Harbor signs nothing: it sends the configured `Authorization` value; Docker Hub sends
    // nothing at all: the unguessable token is in the URL.
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n",
        "triggers:\n  - image: {provider: harbor, repository: harbor.example.com/acme/checkout, tags: '^[0-9]+[.][0-9]+[.][0-9]+$'}\n    secretFile: harbor.secret\n  - image: {provider: dockerhub, repository: docker.io/acme/checkout}\n    secretFile: dockerhub.token\n",
    );
    std::fs::write(s.path().join("harbor.secret"), "Basic aGFyYm9yOnMzY3JldA==\n").unwrap();
    std::fs::write(s.path().join("dockerhub.token"), "dh-5a0c9e1f7b2d4c6e8a0b\n").unwrap();
    let server = Running::start(&s).await;
    let fixture = |name: &str| std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks").join(name)).unwrap();
    let post = |path: String, auth: Option<&str>, body: Vec<u8>| {
        let mut r = server.http.post(format!("{}{path}", server.url)).header("content-type", "application/json").body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let harbor = fixture("harbor-push-artifact.json");
    assert_eq!(post("/hooks/harbor".into(), Some("Basic d3Jvbmc="), harbor.clone()).await.0, 401, "a wrong Authorization starts nothing");
    let (status, answer) = post("/hooks/harbor".into(), Some("Basic aGFyYm9yOnMzY3JldA=="), harbor).await;
    assert_eq!((status, answer["runs"][0]["version"].as_str()), (201, Some("1.4.2")), "{answer}");
    wait_for("qa 1.4.2", async || s.commits("qa").first().is_some_and(|c| c == "promote checkout 1.4.2 to qa")).await;

    // Docker Hub's push of another tag.
    let mut hub: serde_json::Value = serde_json::from_slice(&fixture("dockerhub-push.json")).unwrap();
    hub["push_data"]["tag"] = "1.4.3".into();
    let hub = serde_json::to_vec(&hub).unwrap();
    assert_eq!(post("/hooks/dockerhub/dh-guessed".into(), None, hub.clone()).await.0, 401, "a wrong URL token starts nothing");
    let (status, answer) = post("/hooks/dockerhub/dh-5a0c9e1f7b2d4c6e8a0b".into(), None, hub).await;
    assert_eq!((status, answer["runs"][0]["version"].as_str()), (201, Some("1.4.3")), "{answer}");
    wait_for("qa 1.4.3", async || s.commits("qa").first().is_some_and(|c| c == "promote checkout 1.4.3 to qa")).await;
    let (_, runs) = server.api(reqwest::Method::GET, "/runs", None).await;
    server.stop().await;
    assert!(runs.get("error").is_some(), "no users file: the API takes no token here");
}
