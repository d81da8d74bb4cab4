//! Benchmark: one `promote serve` (in this process) following N repositories of a real OCI
//! registry (Debian's `docker-registry`, a child process: its CPU is not counted) at `poll: 1m`,
//! with htpasswd basic auth from a docker config file. After the first round of looks (which
//! only learns), the CPU this process uses over 60 s (getrusage: every look, its claim in the
//! state, the tags compared, the file reloads, the watcher and poll loops) as a share of one core.
//!
//! Run: `cargo bench --bench registry` (1,000 repositories) or `cargo bench --bench registry -- 200`.

#[path = "../tests/it/oci.rs"]
#[allow(dead_code)]
mod oci;

#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{bare, cpu};

fn pipeline(n: usize, host: &str) -> String {
    let mut s = String::from(
        "apiVersion: promote/v1\nkind: Pipeline\nname: fleet\nartifact: {image: registry.example.com/acme/app}\nenvironments:\n  qa: {repo: envs/qa.git, file: k.yaml, update: {yamlPath: image.tag}}\nstages:\n  deploy: {deploy: {environment: qa}}\ntriggers:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - image: {{repository: {host}/r{i}/app, tags: '>=1.0.0', poll: 1m, insecure: true}}\n    auth: {{dockerConfigFile: dockerconfig.json}}\n"
        ));
    }
    s
}

async fn looks(http: &reqwest::Client, url: &str) -> f64 {
    let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("promote_registry_polls_total{pipeline=\"fleet\"} ")).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 100 } else { 1000 });
    let bin = oci::registry_binary().expect("the benchmark needs /usr/bin/docker-registry (apt-get install -y docker-registry)");
    let registry = oci::Registry::start(&bin);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("envs")).unwrap();
    bare(&root.join("envs"), "qa");
    oci::docker_config(root, &registry.host());
    std::fs::write(root.join("pipeline.yaml"), pipeline(n, &registry.host())).unwrap();
    // SAFETY: set before any thread of this process reads the environment.
    unsafe { std::env::set_var("PROMOTE_KEY_FILE", root.join("key")) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let t = Instant::now();
        let pushes = futures_util::stream::iter((0..n).map(|i| {
            let r = &registry;
            async move { r.push(&format!("r{i}/app"), "1.0.0").await }
        }));
        use futures_util::StreamExt as _;
        pushes.buffer_unordered(16).collect::<Vec<()>>().await;
        println!("pushed {n} repositories in {:.1} s", t.elapsed().as_secs_f64());
        let store = promote::store::Store::open(&root.join(".promote/state.db")).await.unwrap();
        let exec = support::executor(store, &root.join(".promote/repos"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = promote::server::Config { pipelines: vec![root.to_path_buf()], reload: Duration::from_secs(10), ..Default::default() };
        let server = tokio::spawn(promote::server::serve(listener, exec, config, async move {
            let _ = rx.await;
        }));
        let http = promote::providers::http_client();
        let t = Instant::now();
        while looks(&http, &url).await < n as f64 {
            assert!(t.elapsed() < Duration::from_secs(120), "the first round did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("first round (learns): {n} looks in {:.1} s", t.elapsed().as_secs_f64());
        // One minute of following: every repository looked at once more.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (l0, c0, t0) = (looks(&http, &url).await, cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (used, wall, made) = ((cpu() - c0).as_secs_f64(), t0.elapsed().as_secs_f64(), looks(&http, &url).await - l0);
        println!(
            "{n} repositories at poll: 1m: {made} looks in {wall:.1} s, CPU {used:.2} s = **{:.2}% of one core** ({:.2} ms per look)",
            used / wall * 100.0,
            used * 1000.0 / made.max(1.0)
        );
        let _ = tx.send(());
        let _ = server.await;
    });
}
