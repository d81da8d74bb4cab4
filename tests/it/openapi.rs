//! The API's description (`GET /api/v1/openapi.json`), and the live server held to it by
//! schemathesis (PyPI): no server error, every status and content type documented, every JSON
//! answer valid against its schema. Without schemathesis the test is skipped, except under
//! CI=true, where it fails.

use crate::server::{ALICE, Running, push_event, sign};

/// The routes docs/api.md lists, as the document must name them (method, path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/pipelines"),
    ("get", "/api/v1/runs"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs/{id}"),
    ("get", "/api/v1/runs/{id}/events"),
    ("get", "/api/v1/runs/{id}/report"),
    ("post", "/api/v1/runs/{id}/stages/{stage}/{decision}"),
    ("post", "/api/v1/runs/{id}/stages/{stage}/templates/{number}/not-a-risk"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/audit/verify"),
    ("get", "/api/v1/drifts"),
    ("post", "/api/v1/drifts/{id}/{verdict}"),
    ("get", "/api/v1/compliance"),
    ("post", "/api/v1/compliance/{id}/{verdict}"),
    ("get", "/api/v1/watches"),
    ("get", "/api/v1/watches/{id}"),
    ("post", "/api/v1/watches/{id}/clear"),
    ("post", "/api/v1/pipelines/{name}/environments/{env}/rollback"),
    ("post", "/api/v1/sessions/revoke"),
    ("post", "/callbacks/{run}/{stage}/{token}"),
    ("post", "/hooks/{provider}"),
    ("post", "/hooks/{provider}/{token}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
];

#[tokio::test(flavor = "multi_thread")]
async fn the_document_describes_every_route_with_its_answers_and_errors() {
    let s = crate::server::setup();
    let server = Running::start(&s).await;
    // Served without a token: it says nothing of the state.
    let r = server.http.get(format!("{}/api/v1/openapi.json", server.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut described: Vec<(String, String)> =
        paths.iter().flat_map(|(p, ops)| ops.as_object().unwrap().keys().filter(|m| *m != "parameters").map(move |m| (m.clone(), p.clone()))).collect();
    described.sort();
    let mut want: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    want.sort();
    assert_eq!(described, want, "the document names exactly the routes the server serves");
    for (method, path) in ROUTES {
        let op = &paths[*path][*method];
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|c| c.starts_with('2')), "{method} {path}: a success is described");
        // Every error of an API route is `{"error": ...}`.
        for (code, r) in responses.iter().filter(|(c, _)| c.starts_with('4') || c.starts_with('5')) {
            let schema = &r["content"]["application/json"]["schema"]["$ref"];
            let ok = schema.as_str().is_some_and(|s| s.ends_with("/ErrorBody") || s.ends_with("/NotRolledBack") || s.ends_with("/HookAnswer"));
            assert!(ok, "{method} {path} {code}: an error's body is described: {r}");
        }
        if path.starts_with("/api/v1/") && *path != "/api/v1/openapi.json" {
            assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{method} {path}: needs the bearer token");
            assert!(responses.contains_key("401"), "{method} {path}: 401 described");
        }
    }
    // The records' schemas are the state's own: a run's state is one of its states.
    let states = &doc["components"]["schemas"]["RunState"]["enum"];
    assert_eq!(states, &serde_json::json!(["running", "succeeded", "failed", "reverted", "superseded"]));
    server.stop().await;
}

/// Where schemathesis is: its module in the `python3` that the tests run (pip installs it there).
fn schemathesis() -> Option<std::process::Command> {
    let have = std::process::Command::new("python3").args(["-c", "import schemathesis.cli"]).status().is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "schemathesis is missing (python3 -m pip install schemathesis): under CI the API's conformance test never skips"
        );
        eprintln!("skipped: schemathesis is missing (python3 -m pip install schemathesis)");
        return None;
    }
    let mut c = std::process::Command::new("python3");
    c.args(["-m", "schemathesis.cli"]);
    Some(c)
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_the_live_server_true_to_its_document() {
    let Some(mut st) = schemathesis() else { return };
    let s = crate::server::setup();
    let server = Running::start(&s).await;
    // Something to read: a run started by a signed push.
    let body = push_event("acme/checkout", "refs/tags/v1.0.0");
    let r = server
        .http
        .post(format!("{}/hooks/github", server.url))
        .header("x-github-event", "push")
        .header("x-github-delivery", "openapi-1")
        .header("x-hub-signature-256", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let started: serde_json::Value = r.json().await.unwrap();
    let id = started["runs"][0]["run"].as_str().unwrap().to_string();
    // Signed off by alice, so that it ends: its stream of entries then ends too.
    let (mut done, mut tries) = (false, 0);
    while !done && tries < 100 {
        let r = server.http.post(format!("{}/api/v1/runs/{id}/stages/sign-off/approve", server.url)).bearer_auth(ALICE).send().await.unwrap();
        done = r.status().as_u16() == 200;
        tries += 1;
        if !done {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert!(done, "alice signed off");
    for _ in 0..100 {
        let r = server.http.get(format!("{}/api/v1/runs/{id}", server.url)).bearer_auth(ALICE).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        if v["run"]["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // schemathesis writes its own files (.hypothesis/) where it runs: not in the repo.
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        st.args(["run", &format!("{url}/api/v1/openapi.json")])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
            .args(["--header", &format!("Authorization: Bearer {ALICE}")])
            // Each operation tried with its examples, the edges of its schemas and generated data.
            .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "10", "--workers", "2"])
            .args(["--request-timeout", "10", "--seed", "1", "--no-color", "--generation-database", "none"])
            .current_dir(&cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found the server differing from its document:\n{text}");
    // It did test every operation (not a run that reached nothing).
    let number = |pattern: &str| regex::Regex::new(pattern).unwrap().captures(&text).map(|c| c[1].parse::<usize>().unwrap());
    let (total, tested) = (number(r"(\d+) total"), number(r"Tested: (\d+)"));
    // (It leaves out the document's own route.)
    assert_eq!((total, tested), (Some(ROUTES.len() - 1), Some(ROUTES.len() - 1)), "{text}");
    // Nothing it sent broke the trail.
    let r = server.http.get(format!("{}/api/v1/audit/verify", server.url)).bearer_auth(ALICE).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["intact"], true, "{v}");
    server.stop().await;
}
