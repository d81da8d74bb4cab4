//! Benchmark: the web pages at scale. The inbox with 1,000 decisions waiting for the signed-in
//! person, and the run page of a 5,000-stage pipeline: the server's time for each page (p50, p99
//! over repeated requests on loopback), and in headless Chromium the time to DOMContentLoaded.
//!
//! Run: `cargo bench --bench ui` (1,000 decisions, 5,000 stages) or `cargo bench --bench ui -- 100`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use promote::exec::{Executor, Metrics};
use promote::git::{Writer, WriterConfig};
use promote::store::Store;

const TOKEN: &str = "prt_alice_bench_token_0001";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A pipeline of `n` no-op stages, 100 to a wave, each needing one stage of the wave before.
fn wide(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: promote/v1\nkind: Pipeline\nname: wide\nenvironments:\n  qa: {repo: qa.git, file: k.yaml, update: {yamlPath: image.tag}}\nstages:\n",
    );
    for i in 0..n {
        let needs = match i {
            0..100 => String::new(),
            // Every tenth also needs another stage of the wave before: edges cross.
            _ if i % 10 == 0 => format!("needs: [s{}, s{}], ", i - 100, (i / 100 - 1) * 100 + (i * 7 + 3) % 100),
            _ => format!("needs: [s{}], ", i - 100),
        };
        s.push_str(&format!("  s{i}: {{{needs}wait: {{duration: 0s}}}}\n"));
    }
    s
}

/// Signs in through the form as a browser does (its CSRF token and cookie first); the session
/// cookie's value.
async fn sign_in(url: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(format!("{url}/ui/login")).send().await.unwrap();
    let form = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let signed = http.post(format!("{url}/ui/login")).header("cookie", form).form(&[("token", TOKEN), ("csrf", csrf.as_str())]).send().await.unwrap();
    let set = signed.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().trim_start_matches("promote_session=").to_string()
}

async fn timed(http: &reqwest::Client, url: &str, cookie: &str, n: usize) -> (f64, f64, usize) {
    timed_after(http, url, cookie, n, None).await
}

/// As [`timed`], with an entry appended to the trail before each request (untimed) when `store`
/// is given: the state changed since the last request, as on a busy server.
async fn timed_after(http: &reqwest::Client, url: &str, cookie: &str, n: usize, store: Option<&Store>) -> (f64, f64, usize) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..n {
        if let Some(store) = store {
            store.audit(None, None, promote::store::EntryKind::Notification, "bench", &format!("change {i}")).await.unwrap();
        }
        let t = Instant::now();
        let r = http.get(url).header("cookie", format!("promote_session={cookie}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url}");
        assert!(!r.url().path().ends_with("/login"), "{url}: the session was refused");
        let body = r.bytes().await.unwrap();
        if std::env::var_os("UI_BENCH_SHOW").is_some() {
            eprintln!("{}", String::from_utf8_lossy(&body[..body.len().min(3000)]));
        }
        bytes = body.len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (pct(&mut times, 0.5), pct(&mut times, 0.99), bytes)
}

/// DOMContentLoaded of `url` in headless Chromium (ms after navigation start), median of 5.
async fn in_chromium(server: &str, path: &str, cookie: &str) -> Result<f64, String> {
    let driver = ["/usr/bin/chromedriver"].into_iter().find(|p| std::path::Path::new(p).exists()).ok_or("chromedriver is not installed")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.path().display())]}),
    );
    let mut client = None;
    for _ in 0..100 {
        match fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let c = client.ok_or("no Chromium session")?;
    // Signed in as a person would: the token in the sign-in form.
    let _ = cookie;
    c.goto(&format!("{server}/ui/login")).await.map_err(|e| e.to_string())?;
    c.find(fantoccini::Locator::Id("token")).await.map_err(|e| e.to_string())?.send_keys(TOKEN).await.map_err(|e| e.to_string())?;
    c.find(fantoccini::Locator::Css("form.login button")).await.map_err(|e| e.to_string())?.click().await.map_err(|e| e.to_string())?;
    c.wait().for_element(fantoccini::Locator::Id("signed-in")).await.map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..5 {
        c.goto(&format!("{server}{path}")).await.map_err(|e| e.to_string())?;
        let v = c.execute("return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd", vec![]).await.map_err(|e| e.to_string())?;
        times.push(v.as_f64().ok_or(format!("{v}"))?);
    }
    let _ = c.close().await;
    let _ = child.kill();
    let _ = child.wait();
    Ok(pct(&mut times, 0.5))
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let decisions: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 20 } else { 1000 });
    let stages = if quick { 300 } else { 5000 };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("users.yaml"),
        format!("users:\n  alice: {{name: Alice, email: alice@example.com, token: \"{}\"}}\n", promote::governance::users::hash_token(TOKEN)),
    )
    .unwrap();
    let gate = "apiVersion: promote/v1\nkind: Pipeline\nname: gate\nusers: users.yaml\nenvironments:\n  qa: {repo: qa.git, file: k.yaml, update: {yamlPath: image.tag}}\nstages:\n  soak: {wait: {duration: 0s}}\n  sign-off: {needs: [soak], approval: {approvers: [alice], message: \"Sign-off\"}}\n  after: {needs: [sign-off], wait: {duration: 0s}}\n";
    std::fs::write(root.join("gate.yaml"), gate).unwrap();
    std::fs::write(root.join("wide.yaml"), wide(stages)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let key = promote::seal::Key::load_or_create(&root.join("key")).unwrap();
        let exec = Executor {
            store: Store::open_with_key(&root.join("state.db"), key.clone()).await.unwrap(),
            writer: Arc::new(Writer::new(WriterConfig::new(root.join("repos")))),
            metrics: Arc::new(Metrics::default()),
            poll: Duration::from_millis(200),
            public_url: None,
            directory: None,
        };
        let plan_of = |name: &str| Arc::new(promote::ops::check_file(&root.join(name)).plan.expect("valid"));
        let (gate_plan, wide_plan) = (plan_of("gate.yaml"), plan_of("wide.yaml"));
        let filled = Instant::now();
        for i in 0..decisions {
            exec.start(&root.join("gate.yaml"), gate, &gate_plan, &format!("1.0.{i}"), "ci-bot", true).await.unwrap();
        }
        let wide_src = std::fs::read_to_string(root.join("wide.yaml")).unwrap();
        let wide_run = exec.start(&root.join("wide.yaml"), &wide_src, &wide_plan, "2.0.0", "ci-bot", true).await.unwrap().id;
        let store = exec.store.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = promote::server::Config { pipelines: vec![root.to_path_buf()], reload: Duration::from_secs(3600), ..Default::default() };
        let server = tokio::spawn(promote::server::serve(listener, exec, config, async move {
            let _ = rx.await;
        }));
        // The server drives them: every gate run reaches its sign-off, the wide run its end.
        loop {
            let waiting = store.stages_where(Some("approval"), Some(promote::store::StageState::Waiting)).await.unwrap().len();
            let wide_done = store.run(&wide_run).await.unwrap().state != promote::store::RunState::Running;
            if waiting == decisions && wide_done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("{decisions} decisions waiting and a {stages}-stage run done, in {:.1} s", filled.elapsed().as_secs_f64());
        let http = promote::providers::http_client();
        let cookie = sign_in(&url).await;
        let (p50, p99, bytes) = timed(&http, &format!("{url}/ui/"), &cookie, 100).await;
        println!("inbox ({decisions} waiting)       server p50 {p50:.1} ms, p99 {p99:.1} ms, {} KB", bytes / 1024);
        let (p50, p99, _) = timed_after(&http, &format!("{url}/ui/"), &cookie, 100, Some(&store)).await;
        println!("  after a write each time  server p50 {p50:.1} ms, p99 {p99:.1} ms");
        let (first, _, _) = timed(&http, &format!("{url}/ui/runs/{wide_run}"), &cookie, 1).await;
        println!("run page ({stages} stages)   first view {first:.1} ms (its stages read)");
        let (p50, p99, bytes) = timed(&http, &format!("{url}/ui/runs/{wide_run}"), &cookie, 100).await;
        println!("run page ({stages} stages)   server p50 {p50:.1} ms, p99 {p99:.1} ms, {} KB", bytes / 1024);
        match in_chromium(&url, "/ui/", &cookie).await {
            Ok(ms) => println!("inbox in Chromium        DOMContentLoaded {ms:.0} ms (median of 5)"),
            Err(e) => println!("inbox in Chromium        not measured: {e}"),
        }
        match in_chromium(&url, &format!("/ui/runs/{wide_run}"), &cookie).await {
            Ok(ms) => println!("run page in Chromium     DOMContentLoaded {ms:.0} ms (median of 5)"),
            Err(e) => println!("run page in Chromium     not measured: {e}"),
        }
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    });
}
