//! What real clients trip on: GitHub's form-encoded deliveries, Harbor's push by digest, metrics
//! that no unauthenticated request can grow and that promtool lints clean in the text format, and
//! API errors that are always `{"error": ...}` in the API's words.

use crate::exec::Setup;
use crate::server::{Running, push_event, sign};

#[tokio::test(flavor = "multi_thread")]
async fn a_github_hook_made_with_the_form_content_type_is_read_like_json() {
    // GitHub's REST API creates hooks with `content_type: form` unless told otherwise: the body is
    // `payload=<JSON>`, urlencoded, and the signature is over that body.
    let s = crate::server::setup();
    let server = Running::start(&s).await;
    let json = push_event("acme/checkout", "refs/tags/v2.0.1");
    let body = format!("payload={}", url::form_urlencoded::byte_serialize(&json).collect::<String>()).into_bytes();
    let sig = sign(&body);
    let r = server
        .http
        .post(format!("{}/hooks/github", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "push")
        .header("x-github-delivery", "form-1")
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!((status, answer["runs"][0]["version"].as_str()), (201, Some("v2.0.1")), "{answer}");
    // JSON sent under the form type (Python's urllib does it by default) is still read as JSON.
    let json = push_event("acme/checkout", "refs/tags/v2.0.2");
    let sig = sign(&json);
    let r = server
        .http
        .post(format!("{}/hooks/github", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "push")
        .header("x-github-delivery", "form-3")
        .header("x-hub-signature-256", sig)
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    // A ping of such a hook too.
    let ping = b"payload=%7B%22zen%22%3A%22Keep+it+logically+awesome.%22%2C%22hook_id%22%3A1%7D".to_vec();
    let sig = sign(&ping);
    let r = server
        .http
        .post(format!("{}/hooks/github", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "form-2")
        .header("x-hub-signature-256", sig)
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_harbor_push_by_digest_is_not_a_bad_request() {
    // Harbor retries what it gets a 4xx for: a push by digest (no tag) must be taken, not 400.
    let s = Setup::new(
        "  qa:\n    deploy: {environment: qa}\n",
        "triggers:\n  - image: {provider: harbor, repository: harbor.example.com/acme/checkout}\n    secretFile: harbor.secret\n",
    );
    std::fs::write(s.path().join("harbor.secret"), "Basic aGFyYm9yOnMzY3JldA==\n").unwrap();
    let server = Running::start(&s).await;
    let digest = "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4";
    let body = serde_json::json!({"type": "PUSH_ARTIFACT", "occur_at": 1680501893, "operator": "ci",
        "event_data": {"resources": [{"digest": digest, "tag": "", "resource_url": format!("harbor.example.com/acme/checkout@{digest}")}],
                       "repository": {"name": "checkout", "namespace": "acme", "repo_full_name": "acme/checkout", "repo_type": "private"}}});
    let r = server.http.post(format!("{}/hooks/harbor", server.url)).header("authorization", "Basic aGFyYm9yOnMzY3JldA==").json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!((status, answer["runs"][0]["version"].as_str()), (201, Some(digest)), "the digest is the version: {answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_unauthenticated_request_adds_a_series_and_promtool_lints_the_text_format_clean() {
    let s = crate::server::setup();
    let server = Running::start(&s).await;
    let metrics = |accept: Option<&'static str>| {
        let (http, url) = (server.http.clone(), server.url.clone());
        async move {
            let mut r = http.get(format!("{url}/metrics"));
            if let Some(a) = accept {
                r = r.header("accept", a);
            }
            let r = r.send().await.unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (ct, r.text().await.unwrap())
        }
    };
    let before = metrics(None).await.1;
    for i in 0..200 {
        let r = server.http.post(format!("{}/hooks/made-up-{i}", server.url)).body("{}").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], format!("no pipeline has a `made-up-{i}` trigger"));
    }
    let (ct, after) = metrics(None).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!after.contains("made-up"), "no label from a URL");
    let series = |t: &str| t.lines().filter(|l| l.starts_with("promote_webhook_deliveries_total{")).count();
    assert_eq!((series(&before), series(&after)), (0, 1), "200 made-up providers add the one `unknown` series:\n{after}");
    // promtool, the Prometheus project's own linter, on the text format.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(after.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}{}\n{after}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // OpenMetrics to whoever asks for it.
    let (ct, open) = metrics(Some("application/openmetrics-text; version=1.0.0")).await;
    assert!(ct.starts_with("application/openmetrics-text") && open.ends_with("# EOF\n"), "{ct}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_error_is_json_in_the_apis_words() {
    let s = crate::server::setup();
    let server = Running::start(&s).await;
    let token = crate::server::ALICE;
    let send = |method: reqwest::Method, path: &'static str, body: Vec<u8>, auth: Option<String>| {
        let (http, url) = (server.http.clone(), server.url.clone());
        async move {
            let mut r = http.request(method, format!("{url}{path}")).header("content-type", "application/json").body(body);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            let closes = r.headers().get("connection").is_some_and(|v| v == "close");
            (status, ct, closes, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let bearer = Some(format!("bearer {token}"));
    let (status, ct, _, v) = send(reqwest::Method::GET, "/api/v1/no-such-thing", vec![], bearer.clone()).await;
    assert_eq!((status, ct.as_str()), (404, "application/json"), "{v}");
    assert!(v["error"].as_str().unwrap().contains("no such route"), "{v}");
    let (status, _, _, v) = send(reqwest::Method::DELETE, "/api/v1/runs", vec![], bearer.clone()).await;
    assert_eq!(status, 405, "{v}");
    assert!(v["error"].as_str().unwrap().contains("does not take DELETE"), "{v}");
    // A body refused unread: the answer says its connection closes, so a client's next request
    // (the one below, on the same pooled connection otherwise) is not lost with it.
    let (status, _, closes, v) = send(reqwest::Method::POST, "/api/v1/runs", vec![b'x'; 2 << 20], bearer.clone()).await;
    assert!(status == 413 && v["error"].as_str().unwrap().contains("larger than"), "{status} {v}");
    assert!(closes, "a 413 says Connection: close");
    let (status, _, closes, _) = send(reqwest::Method::POST, "/api/v1/no-such-thing", vec![b'x'; 100 << 10], bearer.clone()).await;
    assert!(status == 404 && closes, "a large body refused unread (no such route) says Connection: close: {status}");
    // A body of the wrong shape: no internal type names.
    let (status, _, _, v) = send(reqwest::Method::POST, "/api/v1/runs/x/stages/y/approve", b"[1]".to_vec(), bearer.clone()).await;
    let why = v["error"].as_str().unwrap();
    assert_eq!(status, 400, "{v}");
    assert!(!why.contains("struct") && !why.contains("Body"), "{why}");
    // The scheme's name in any case (RFC 7235), and a 401 that reads as written.
    let (status, _, _, _) = send(reqwest::Method::GET, "/api/v1/runs", vec![], bearer).await;
    assert_eq!(status, 200);
    let (status, _, _, v) = send(reqwest::Method::GET, "/api/v1/runs", vec![], None).await;
    assert_eq!(status, 401);
    assert!(v["error"].as_str().unwrap().contains("Authorization header, scheme Bearer"), "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_never_hold_up_others_and_are_closed_when_their_time_is_up() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = crate::server::setup();
    let limits = promote::server::listen::Limits { max_connections: 400, header_timeout: std::time::Duration::from_secs(1), ..Default::default() };
    let config = promote::server::Config { pipelines: vec![s.path().to_path_buf()], reload: std::time::Duration::from_secs(60), limits, ..Default::default() };
    let server = Running::start_with(&s, config).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    // (A client that keeps no connection open between requests: the count below is exact.)
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    // 300 clients that send half a request and then nothing.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /hooks/github HTTP/1.1\r\nHost: promote\r\nX-Half: ").await.unwrap();
        slow.push(c);
    }
    // Everyone else is answered meanwhile.
    let health = tokio::time::timeout(std::time::Duration::from_secs(5), http.get(format!("{}/healthz", server.url)).send()).await;
    assert_eq!(health.expect("/healthz answers while 300 requests are half sent").unwrap().status().as_u16(), 200);
    // Their time up, the server closes them (EOF, or a 408 and EOF).
    for c in slow.iter_mut().take(20) {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a half-sent request is closed once its headers' time is up");
    }
    drop(slow);
    // Over the cap, a connection is closed at once; under it again, served.
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut over = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nHost: promote\r\n\r\n").await;
    let mut buf = Vec::new();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), over.read_to_end(&mut buf)).await;
    assert!(got.is_ok() && buf.is_empty(), "the 401st connection is closed unanswered: {:?}", String::from_utf8_lossy(&buf));
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(http.get(format!("{}/healthz", server.url)).send().await.unwrap().status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_url_with_a_trailing_slash_is_the_same_hook() {
    // A webhook URL pasted with a slash at its end (`.../hooks/github/`) must reach the receiver,
    // as it did before the routes were described one by one.
    let s = crate::server::setup();
    let server = Running::start(&s).await;
    let body = push_event("acme/checkout", "refs/tags/v3.0.1");
    let r = server
        .http
        .post(format!("{}/hooks/github/", server.url))
        .header("x-github-event", "push")
        .header("x-github-delivery", "slash-1")
        .header("x-hub-signature-256", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    server.stop().await;
}
