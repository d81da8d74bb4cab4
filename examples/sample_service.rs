//! A sample service for the demo: it "runs" whatever version the QA environment repo says (as if
//! Argo CD had synced it), simulates 100 requests a second, and exposes Prometheus metrics through
//! prometheus-client on `/metrics`:
//!
//! - `http_requests_total{version, code}`: requests served;
//! - `http_request_duration_seconds{version}`: a histogram of their latency.
//!
//! Versions named in `--bad` answer 25% of requests with 500 and twice as slowly; the others fail
//! 0.5% of requests. With `--log FILE` it also writes its log there: a line per 10 requests, a
//! warning now and then, and for bad versions an error with a stack-trace head.
//!
//! Run: `cargo run --example sample_service -- --repo envs/qa.git --file apps/checkout/kustomization.yaml --bad 1.5.0 --port-file port`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    version: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: String,
}

struct Args {
    repo: String,
    file: String,
    bad: Vec<String>,
    listen: String,
    port_file: Option<String>,
    log: Option<String>,
}

fn args() -> Args {
    let mut a = Args { repo: String::new(), file: String::new(), bad: Vec::new(), listen: "127.0.0.1:0".into(), port_file: None, log: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--repo" => a.repo = value,
            "--file" => a.file = value,
            "--bad" => a.bad.push(value),
            "--listen" => a.listen = value,
            "--port-file" => a.port_file = Some(value),
            "--log" => a.log = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.repo.is_empty() && !a.file.is_empty(), "--repo and --file are required");
    a
}

/// The `newTag` the environment repo's main branch holds now.
fn deployed(repo: &str, file: &str) -> Option<String> {
    let out = std::process::Command::new("git").args(["--git-dir", repo, "show", &format!("main:{file}")]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.trim().strip_prefix("newTag:")).map(|v| v.split('#').next().unwrap_or("").trim().to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let requests = Family::<Request, Counter>::default();
    let latency = Family::<Version, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 10)));
    let mut registry = Registry::default();
    registry.register("http_requests", "Requests served", requests.clone());
    registry.register("http_request_duration_seconds", "Request latency", latency.clone());
    let registry = Arc::new(registry);

    // The "operator": follow the QA repo.
    let version = Arc::new(Mutex::new(deployed(&a.repo, &a.file).unwrap_or_else(|| "unknown".into())));
    {
        let (version, repo, file) = (version.clone(), a.repo.clone(), a.file.clone());
        tokio::spawn(async move {
            loop {
                if let Some(v) = tokio::task::spawn_blocking({
                    let (r, f) = (repo.clone(), file.clone());
                    move || deployed(&r, &f)
                })
                .await
                .ok()
                .flatten()
                {
                    *version.lock().unwrap() = v;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    // Traffic: 10 requests every 100 ms.
    {
        let (version, bad) = (version.clone(), a.bad.clone());
        let mut log = a.log.as_ref().map(|f| std::fs::OpenOptions::new().create(true).append(true).open(f).expect("the log file opens"));
        tokio::spawn(async move {
            let mut n: u64 = 0;
            let mut tick: u64 = 0;
            loop {
                tick += 1;
                let v = version.lock().unwrap().clone();
                let is_bad = bad.contains(&v);
                // Every series exists from a version's first moment, as instrumented services do
                // (a counter born at its first increment hides that increment from rate()).
                for code in ["200", "500"] {
                    drop(requests.get_or_create(&Request { version: v.clone(), code: code.into() }));
                }
                for _ in 0..10 {
                    n += 1;
                    let failed = if is_bad { n.is_multiple_of(4) } else { n.is_multiple_of(200) };
                    let code = if failed { "500" } else { "200" };
                    requests.get_or_create(&Request { version: v.clone(), code: code.into() }).inc();
                    let base = 0.020 + (n % 7) as f64 * 0.002;
                    latency.get_or_create(&Version { version: v.clone() }).observe(if is_bad { base * 2.0 } else { base });
                }
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let v = version.lock().unwrap().clone();
                    let mut text = format!("INFO [http] served 10 requests (version {v}) in {} ms\n", 20 + tick % 13);
                    if tick.is_multiple_of(20) {
                        text.push_str(&format!("WARN [pool] connection pool at {}% of its size\n", 70 + tick % 20));
                    }
                    if bad.contains(&v) && tick.is_multiple_of(5) {
                        text.push_str(&format!(
                            "ERROR [payments] charge {} failed: java.net.SocketTimeoutException: Read timed out after 3000 ms\n",
                            1000 + tick
                        ));
                    }
                    let _ = f.write_all(text.as_bytes());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                prometheus_client::encoding::text::encode(&mut body, &registry).expect("metrics encode");
                ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&a.listen).await.expect("the listen address is free");
    let port = listener.local_addr().unwrap().port();
    if let Some(f) = &a.port_file {
        std::fs::write(f, port.to_string()).unwrap();
    }
    eprintln!("sample service on 127.0.0.1:{port}, following {}:{}", a.repo, a.file);
    axum::serve(listener, app).await.unwrap();
}
