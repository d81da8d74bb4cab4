//! Image triggers that poll an OCI registry: a real registry (Debian's `docker-registry`, with
//! htpasswd basic auth, images pushed through the distribution API: tests/it/oci.rs), and for the
//! 429 case a stand-in (a small axum server speaking the distribution API's JSON, its token flow
//! and its `Link` pagination), since the real registry cannot be made to answer 429.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exec::Setup;
use crate::oci::{PASSWORD, Registry, USER, registry_binary};
use crate::server::{Running, wait_for};

/// The harbor webhook secret of these tests' triggers.
const HARBOR: &str = "Basic aGFyYm9yOnJlZ2lzdHJ5LXRlc3Q=";

/// The server setup (qa, sign-off, prod; alice may see) whose one trigger polls `repository`
/// every second with the registry's credentials (a docker config.json beside the file), and
/// also takes Harbor's webhooks.
fn polled(repository: &str, tags: &str, host: &str) -> Setup {
    let s = crate::server::setup();
    let text = std::fs::read_to_string(&s.file).unwrap();
    let (head, _) = text.split_once("triggers:\n").unwrap();
    let trigger = format!(
        "triggers:\n  - image: {{provider: harbor, repository: {repository}, {tags}, poll: 1s, insecure: true}}\n    secretFile: harbor.secret\n    auth: {{dockerConfigFile: dockerconfig.json}}\n"
    );
    std::fs::write(&s.file, format!("{head}{trigger}")).unwrap();
    std::fs::write(s.path().join("harbor.secret"), format!("{HARBOR}\n")).unwrap();
    crate::oci::docker_config(s.path(), host);
    s
}

async fn versions(server: &Running) -> Vec<String> {
    let (_, runs) = server.api(reqwest::Method::GET, "/runs", None).await;
    let mut v: Vec<String> = runs["runs"].as_array().unwrap().iter().filter_map(|r| r["version"].as_str().map(String::from)).collect();
    v.sort();
    v
}

async fn polling(server: &Running) -> serde_json::Value {
    let (_, p) = server.api(reqwest::Method::GET, "/pipelines", None).await;
    p["pipelines"][0]["polling"][0].clone()
}

async fn metrics(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of `name{pipeline="checkout"}` in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(&format!("{name}{{pipeline=\"checkout\"}} "))).and_then(|v| v.parse().ok())
}

/// Neither the password nor its base64 forms are in `text`.
fn no_credentials(what: &str, text: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert!(!text.contains(PASSWORD) && !text.contains(&b64), "{what} holds the registry's credentials");
}

crate::both_backends! {
async fn tags_there_before_are_learnt_and_each_new_tag_in_range_runs_once() {
    let Some(bin) = registry_binary() else { return };
    let reg = Registry::start(&bin);
    reg.push("acme/checkout", "1.0.0").await;
    reg.push("acme/checkout", "1.1.0").await;
    let s = polled(&format!("{}/acme/checkout", reg.host()), "tags: '>=1.0.0 <2.0.0'", &reg.host());
    let server = Running::start(&s).await;
    wait_for("the first look", async || polling(&server).await["tags"] == 2).await;
    // Pushed while the server polls: one in range, and four that are not (out of range below and
    // above, a pre-release the range does not name, a tag that is no version).
    for tag in ["2.0.0", "1.3.0-rc.1", "0.9.0", "latest", "1.2.0"] {
        reg.push("acme/checkout", tag).await;
    }
    wait_for("the run of 1.2.0", async || versions(&server).await == ["1.2.0"]).await;
    // Several looks later, still that one run.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(versions(&server).await, ["1.2.0"], "the tags there before, out of range and pre-releases start nothing");
    let p = polling(&server).await;
    assert_eq!((p["ok"].as_bool(), p["tags"].as_u64(), p["backingOff"].as_bool(), p["runsStarted"].as_u64()), (Some(true), Some(7), Some(false), Some(1)), "{p}");
    assert!(p["lastLookAt"].as_i64().is_some() && p["nextLookAt"].as_i64().is_some() && p["lastError"].is_null(), "{p}");
    // Harbor's webhook for the same push, arriving late, is the same delivery: no second run.
    let mut hook: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks/harbor-push-artifact.json")).unwrap()).unwrap();
    hook["event_data"]["resources"][0]["tag"] = "1.2.0".into();
    hook["event_data"]["resources"][0]["resource_url"] = format!("{}/acme/checkout:1.2.0", reg.host()).into();
    let r = server.http.post(format!("{}/hooks/harbor", server.url)).header("authorization", HARBOR).json(&hook).send().await.unwrap();
    let (status, answer) = (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap());
    assert_eq!((status, answer["runs"][0]["duplicate"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(versions(&server).await, ["1.2.0"]);
    let m = metrics(&server.http, &server.url).await;
    assert!(sample(&m, "promote_registry_polls_total").is_some_and(|n| n >= 3.0), "{m}");
    assert_eq!(sample(&m, "promote_registry_polls_backing_off"), Some(0.0), "{m}");
    let (_, pipelines) = server.api(reqwest::Method::GET, "/pipelines", None).await;
    no_credentials("the API", &pipelines.to_string());
    no_credentials("/metrics", &m);
    server.stop().await;
    if s.database.is_none() {
        for f in std::fs::read_dir(s.path().join(".promote")).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                no_credentials(&f.display().to_string(), &String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
            }
        }
    }
}
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_pushed_while_no_server_ran_starts_its_run_at_the_next_start() {
    let Some(bin) = registry_binary() else { return };
    let reg = Registry::start(&bin);
    reg.push("acme/checkout", "1.0.0").await;
    let s = polled(&format!("{}/acme/checkout", reg.host()), "tags: '^1.0'", &reg.host());
    let server = Running::start(&s).await;
    wait_for("the first look", async || polling(&server).await["tags"] == 1).await;
    server.stop().await;
    reg.push("acme/checkout", "1.4.0").await;
    reg.push("acme/checkout", "1.3.0").await;
    let server = Running::start(&s).await;
    wait_for("the runs of 1.3.0 and 1.4.0", async || versions(&server).await == ["1.3.0", "1.4.0"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, runs) = server.api(reqwest::Method::GET, "/runs", None).await;
    // Oldest first: 1.3.0 was started before 1.4.0 (the list is newest first).
    let order: Vec<&str> = runs["runs"].as_array().unwrap().iter().filter_map(|r| r["version"].as_str()).collect();
    assert_eq!(order, ["1.4.0", "1.3.0"], "{runs}");
    server.stop().await;
}

/// One `promote serve` child on PostgreSQL.
struct Replica {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(s: &Setup, database: &str) -> Replica {
        // A working folder of its own (its git caches).
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(crate::promote_bin())
            .current_dir(dir.path())
            .env("PROMOTE_KEY_FILE", s.path().join("key"))
            .env("PROMOTE_LOG", "info")
            .env("PROMOTE_DATABASE_URL", database)
            .args(["serve", "--listen", "127.0.0.1:0", "--pipelines"])
            .arg(s.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
        let url = loop {
            let line = lines.next().expect("the replica says where it listens").unwrap();
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Replica { child, url, _dir: dir }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgresql_poll_the_registry_and_start_one_run_between_them() {
    let Some(bin) = registry_binary() else { return };
    let reg = Registry::start(&bin);
    reg.push("acme/checkout", "1.0.0").await;
    let s = polled(&format!("{}/acme/checkout", reg.host()), "tags: '>=1.0.0'", &reg.host());
    promote::seal::Key::load_or_create(&s.path().join("key")).unwrap();
    let database = crate::pg::shared().fresh_database();
    let replicas = [Replica::start(&s, &database), Replica::start(&s, &database)];
    let http = promote::providers::http_client();
    let looks = async || {
        let mut n = 0.0;
        for r in &replicas {
            n += sample(&metrics(&http, &r.url).await, "promote_registry_polls_total").unwrap_or(0.0);
        }
        n
    };
    wait_for("the first look", async || looks().await >= 1.0).await;
    reg.push("acme/checkout", "1.5.0").await;
    let store = promote::store::Store::open_url(&database, promote::seal::Key::load_or_create(&s.path().join("key")).unwrap()).await.unwrap();
    wait_for("the run of 1.5.0", async || !store.runs(10).await.unwrap().is_empty()).await;
    // Over five seconds at `poll: 1s`, the two replicas look about five times between them, not
    // ten: each look is claimed by one.
    let (before, at) = (looks().await, Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let made = looks().await - before;
    let seconds = at.elapsed().as_secs_f64();
    assert!(made >= 2.0 && made <= seconds + 2.0, "{made} looks in {seconds:.1}s by two replicas");
    let runs = store.runs(10).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(), ["1.5.0"], "one run between the two replicas");
}

/// The stand-in registry's state: whether it is busy, its tags, when it was asked.
#[derive(Default)]
struct StandIn {
    busy: bool,
    tags: Vec<String>,
    /// (when, status) of each tags request that carried the token.
    asked: Vec<(Instant, u16)>,
    tokens_given: usize,
}

const TOKEN: &str = "standin-token-5b8e0f1c2d3a4e6f";

/// A stand-in registry (not a real one: the real one never answers 429): `GET /v2/acme/app/tags/list`
/// behind the bearer token flow (`/token` takes the basic credentials), two tags a page with a
/// `Link` to the next, or 429 with `Retry-After: 3` while busy.
async fn stand_in(state: Arc<Mutex<StandIn>>) -> String {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let realm = format!("{base}/token");
    type S = Arc<Mutex<StandIn>>;
    let tags = move |State(st): State<S>, headers: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| {
        let realm = realm.clone();
        async move {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
                let challenge = format!("Bearer realm=\"{realm}\",service=\"stand-in\",scope=\"repository:acme/app:pull\"");
                return (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", challenge)],
                    "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
                )
                    .into_response();
            }
            let mut st = st.lock().unwrap();
            if st.busy {
                st.asked.push((Instant::now(), 429));
                return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3")], "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"slow down\"}]}")
                    .into_response();
            }
            st.asked.push((Instant::now(), 200));
            let after = q.get("last").cloned().unwrap_or_default();
            let rest: Vec<String> = st.tags.iter().filter(|t| after.is_empty() || **t > after).cloned().collect();
            let page: Vec<String> = rest.iter().take(2).cloned().collect();
            let body = serde_json::json!({"name": "acme/app", "tags": page}).to_string();
            if rest.len() > 2 {
                let link = format!("</v2/acme/app/tags/list?n=2&last={}>; rel=\"next\"", page[1]);
                return (StatusCode::OK, [("link", link), ("content-type", "application/json".into())], body).into_response();
            }
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
    };
    let token = |State(st): State<S>, headers: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
        use base64::Engine as _;
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
        let scope_ok = q.get("scope").map(String::as_str) == Some("repository:acme/app:pull") && q.get("service").map(String::as_str) == Some("stand-in");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) || !scope_ok {
            return (StatusCode::UNAUTHORIZED, "{}").into_response();
        }
        st.lock().unwrap().tokens_given += 1;
        axum::Json(serde_json::json!({"token": TOKEN, "expires_in": 300})).into_response()
    };
    let app = axum::Router::new().route("/v2/acme/app/tags/list", axum::routing::get(tags)).route("/token", axum::routing::get(token)).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_answering_429_is_backed_off_and_says_so_in_the_api_and_metrics() {
    let state = Arc::new(Mutex::new(StandIn { tags: vec!["1.0.0".into(), "1.1.0".into(), "1.2.0".into()], ..Default::default() }));
    let base = stand_in(state.clone()).await;
    let host = base.trim_start_matches("http://").to_string();
    let s = polled(&format!("{host}/acme/app"), "tags: '>=1.0.0'", &host);
    let server = Running::start(&s).await;
    // Learnt through the token flow and two pages.
    wait_for("the first look", async || polling(&server).await["tags"] == 3).await;
    assert_eq!(state.lock().unwrap().tokens_given, 1);
    state.lock().unwrap().busy = true;
    let busy_since = Instant::now();
    wait_for("the back-off", async || polling(&server).await["backingOff"] == true).await;
    let p = polling(&server).await;
    assert!(p["lastError"].as_str().unwrap().contains("429"), "{p}");
    assert!(p["nextLookAt"].as_i64().unwrap() - p["lastLookAt"].as_i64().unwrap() >= 2900, "Retry-After honoured: {p}");
    let m = metrics(&server.http, &server.url).await;
    assert_eq!(sample(&m, "promote_registry_polls_backing_off"), Some(1.0), "{m}");
    assert!(sample(&m, "promote_registry_poll_errors_total").is_some_and(|n| n >= 1.0), "{m}");
    let text = format!("{p}{m}");
    no_credentials("the API and /metrics", &text);
    assert!(!text.contains(TOKEN), "the token is in the API or /metrics");
    // Busy for 8 s: asked at most at 0, 3 (Retry-After) and 7 (4: doubled) seconds, not every second.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(busy_since.elapsed())).await;
    let asked: Vec<Instant> = state.lock().unwrap().asked.iter().filter(|(_, s)| *s == 429).map(|(at, _)| *at).collect();
    assert!((1..=3).contains(&asked.len()), "{} busy answers in 8 s", asked.len());
    for pair in asked.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(2800), "asked again {:?} after a 429 with Retry-After: 3", pair[1] - pair[0]);
    }
    // No longer busy, with a new tag: the next look starts its run and the back-off ends.
    {
        let mut st = state.lock().unwrap();
        st.busy = false;
        st.tags.push("1.3.0".into());
    }
    wait_for("the run of 1.3.0", async || versions(&server).await == ["1.3.0"]).await;
    wait_for("the end of the back-off", async || polling(&server).await["backingOff"] == false).await;
    let m = metrics(&server.http, &server.url).await;
    assert_eq!(sample(&m, "promote_registry_polls_backing_off"), Some(0.0), "{m}");
    server.stop().await;
}

#[test]
fn validate_checks_polled_image_triggers() {
    let s = crate::server::setup();
    let text = std::fs::read_to_string(&s.file).unwrap();
    let (head, _) = text.split_once("triggers:\n").unwrap();
    let triggers = "triggers:\n  - image: {repository: registry.example.com/acme/a, tags: '>=1.0.0 <2.0.0', poll: 1m}\n    auth: {dockerConfigFile: cfg.json}\n  - image: {repository: registry.example.com/acme/b, tagPattern: '^build-(?P<order>[0-9]+$'}\n  - image: {repository: Registry.example.com/Acme/C:1.0, poll: 30s}\n  - image: {repository: registry.example.com/acme/d, tags: '>=1', tagPattern: '.*', poll: 1m}\n  - image: {provider: harbor, repository: r.example.com/acme/e, tags: '^[0-9]+[.][0-9]+$'}\n    secretFile: hook.secret\n  - image: {repository: r.example.com/acme/f, poll: 1m}\n    secretEnv: NOPE\n";
    std::fs::write(&s.file, format!("{head}{triggers}")).unwrap();
    let out = crate::exec::promote(s.path(), &["validate", s.file.to_str().unwrap()]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}");
    let line_of = |needle: &str| head.lines().count() + 1 + triggers.lines().position(|l| l.contains(needle)).unwrap();
    let col_of = |needle: &str, at: &str| triggers.lines().find(|l| l.contains(needle)).unwrap().find(at).unwrap() + 1;
    let expect = |needle: &str, at: &str, words: &str| {
        let want = format!("pipeline.yaml:{}:{}: error: ", line_of(needle), col_of(needle, at));
        assert!(said.lines().any(|l| l.contains(&want) && l.contains(words)), "no `{want}...{words}` in:\n{said}");
    };
    // The first trigger is valid: polled, with a range and credentials.
    assert!(!said.contains(&format!(":{}:", line_of("acme/a"))), "{said}");
    expect("acme/b", "registry.example.com", "a webhook");
    expect("acme/b", "'^build", "`tagPattern` is a regular expression");
    expect("Acme/C", "Registry", "is not a repository");
    expect("acme/d", "'>=1'", "give one");
    assert!(said.contains("warning: `^[0-9]+[.][0-9]+$` is not a semver range"), "an old regex in `tags` warns: {said}");
    assert!(said.contains("`secretEnv`/`secretFile` verify webhooks"), "{said}");
}
