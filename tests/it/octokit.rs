//! GitHub's own webhook payloads (npm's `@octokit/webhooks-examples`, tests/octokit/) replayed
//! through the webhook receiver, signed as GitHub signs, as JSON and as GitHub's `content_type:
//! form`: push, create, delete, release, package, registry_package, ping and pull_request, each
//! answered as docs/api.md says. Without the package: skipped, except under CI=true, where it fails.

use crate::exec::Setup;
use crate::server::{ALICE, Running, sign_with};

const SECRET: &str = "octokit-replay-secret";
const EVENTS: &[&str] = &["push", "create", "delete", "release", "package", "registry_package", "ping", "pull_request"];

/// The examples of `event` in the package's `api.github.com` set (none for an event it lacks).
fn examples() -> Option<Vec<(String, serde_json::Value)>> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/octokit/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let Ok(text) = std::fs::read_to_string(&file) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is missing (cd tests/octokit && npm ci): under CI the replay of GitHub's payloads never skips",
            file.display()
        );
        eprintln!("skipped: {} is missing (cd tests/octokit && npm ci)", file.display());
        return None;
    };
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for e in all.iter().filter(|e| EVENTS.contains(&e["name"].as_str().unwrap())) {
        for x in e["examples"].as_array().unwrap() {
            out.push((e["name"].as_str().unwrap().to_string(), x.clone()));
        }
    }
    Some(out)
}

/// What promote must answer to `payload` of `event` (status, and the version a run is for), by the
/// payload's own fields and the versions started so far.
fn expected(event: &str, payload: &serde_json::Value, started: &mut Vec<String>) -> (u16, Option<String>) {
    let mut run = |version: String| {
        if started.contains(&version) {
            (200, Some(version))
        } else {
            started.push(version.clone());
            (201, Some(version))
        }
    };
    match event {
        "ping" => (200, None),
        "pull_request" => (202, None),
        "push" if payload["deleted"] == true => (202, None),
        "push" => {
            let git_ref = payload["ref"].as_str().unwrap();
            match git_ref.strip_prefix("refs/tags/") {
                Some(tag) => run(tag.to_string()),
                None if git_ref == "refs/heads/master" => run(payload["after"].as_str().unwrap().to_string()),
                None => (202, None),
            }
        }
        "package" | "registry_package" => {
            let p = if payload["package"].is_object() { &payload["package"] } else { &payload["registry_package"] };
            let v = &p["package_version"];
            let container = v["container_metadata"].is_object() || p["package_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("container"));
            if payload["action"] != "published" || !container {
                return (202, None);
            }
            let tag = v["container_metadata"]["tag"]["name"].as_str().filter(|t| !t.is_empty()).unwrap_or_else(|| v["version"].as_str().unwrap());
            run(tag.to_string())
        }
        // A tag's `create`, a `delete`, a `release`: the push that comes with them starts the run.
        _ => (202, None),
    }
}

fn setup() -> Setup {
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n",
        "users: users.yaml\naccess: {view: [alice]}\ntriggers:\n\
         \x20 - git: {provider: github, repo: Codertocat/Hello-World, refs: [\"refs/tags/*\"], version: tag}\n    secretFile: hook.secret\n\
         \x20 - git: {provider: github, repo: Codertocat/Hello-World, refs: [refs/heads/master], version: commit}\n    secretFile: hook.secret\n\
         \x20 - image: {provider: github, repository: ghcr.io/codertocat/hello-world}\n    secretFile: hook.secret\n",
    );
    std::fs::write(s.path().join("hook.secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(
        s.path().join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(ALICE)),
    )
    .unwrap();
    s
}

async fn replay(form: bool) {
    let Some(examples) = examples() else { return };
    let names: std::collections::BTreeSet<&str> = examples.iter().map(|(e, _)| e.as_str()).collect();
    // The package's set has every event promote reads but `registry_package` (GitHub's older name
    // for `package`), which it does not publish: the replay covers what it has.
    for e in EVENTS.iter().filter(|e| **e != "registry_package") {
        assert!(names.contains(e), "@octokit/webhooks-examples has no `{e}` example any more");
    }
    let s = setup();
    let server = Running::start(&s).await;
    let mut started = Vec::new();
    for (i, (event, payload)) in examples.iter().enumerate() {
        let json = serde_json::to_vec(payload).unwrap();
        let (body, content_type) = if form {
            (format!("payload={}", url::form_urlencoded::byte_serialize(&json).collect::<String>()).into_bytes(), "application/x-www-form-urlencoded")
        } else {
            (json, "application/json")
        };
        let r = server
            .http
            .post(format!("{}/hooks/github", server.url))
            .header("content-type", content_type)
            .header("x-github-event", event.as_str())
            .header("x-github-delivery", format!("octokit-{i}"))
            .header("x-hub-signature-256", sign_with(SECRET, &body))
            .header("user-agent", "GitHub-Hookshot/octokit")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: serde_json::Value = r.json().await.unwrap();
        let (want, version) = expected(event, payload, &mut started);
        let what = format!("{event} #{i} ({}): {answer}", payload["action"].as_str().or(payload["ref"].as_str()).unwrap_or(""));
        assert_eq!(status, want, "{what}");
        match (event.as_str(), status) {
            ("ping", _) => assert_eq!(answer["pong"], true, "{what}"),
            ("pull_request", _) => {
                let number = payload["pull_request"]["number"].as_u64().or(payload["number"].as_u64());
                assert_eq!(answer["pullRequest"].as_u64(), number, "{what}");
            }
            (_, 201) => assert_eq!((answer["runs"][0]["version"].as_str(), answer["runs"][0]["started"].as_bool()), (version.as_deref(), Some(true)), "{what}"),
            (_, 200) => assert_eq!(answer["runs"][0]["duplicate"], true, "{what}"),
            (_, 202) => assert!(answer["ignored"].as_str().is_some_and(|w| !w.is_empty()), "ignored, saying why: {what}"),
            _ => unreachable!(),
        }
    }
    assert!(started.len() >= 3, "a tag, a branch and a container image started runs: {started:?}");
    // The runs are those, started by the webhook, each once.
    let r = server.http.get(format!("{}/api/v1/runs", server.url)).bearer_auth(ALICE).send().await.unwrap();
    let runs: serde_json::Value = r.json().await.unwrap();
    let mut got: Vec<String> = runs["runs"].as_array().unwrap().iter().map(|r| r["version"].as_str().unwrap().to_string()).collect();
    got.sort();
    started.sort();
    assert_eq!(got, started);
    assert!(runs["runs"].as_array().unwrap().iter().all(|r| r["triggeredBy"] == "webhook:github"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn githubs_own_payloads_as_json_are_each_answered_as_documented() {
    replay(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn githubs_own_payloads_as_a_form_are_each_answered_as_documented() {
    replay(true).await;
}
