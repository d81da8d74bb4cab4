//! Benchmark: `promote serve` (the real binary, a child process) under load, and its memory.
//!
//! 1. Signed GitHub push deliveries at 200 a second for N seconds (each a new tag; every tenth
//!    also sent again, as a provider's redelivery): how many were acknowledged, whether each
//!    acknowledged one is exactly one run, and the answers' p50/p99.
//! 2. The same with the server killed (SIGKILL) half-way through and started again on the same
//!    port: every delivery that got a 2xx must end as exactly one run, finished by the new server.
//! 3. The server's memory (VmRSS, and its peak VmHWM) with 10,000 finished runs in its history and
//!    1,000 runs waiting for an approval, which it drives.
//!
//! The load pipeline's only stage is `wait: 0s`: what is measured is the intake (verify, record the
//! delivery with its run, answer) and the driving, not the git writes (`--bench serve` times those).
//!
//! Run: `cargo bench --bench load` (60 s per phase) or `cargo bench --bench load -- 10`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "load-secret";
const RATE: u64 = 200;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Bench {
    root: PathBuf,
}

impl Bench {
    fn state(&self) -> PathBuf {
        self.root.join("state.db")
    }

    /// `promote serve` on `port`, as a child; returns once it listens.
    fn serve(&self, port: u16) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_promote"))
            .current_dir(&self.root)
            .env("PROMOTE_KEY_FILE", self.root.join("key"))
            .env("RUST_LOG", "warn")
            .args(["--state", self.state().to_str().unwrap(), "serve", "--listen", &format!("127.0.0.1:{port}"), "--pipelines", "pipelines"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let first = lines.next().unwrap().unwrap();
        assert!(first.contains("listening on"), "{first}");
        std::thread::spawn(move || for _ in lines {});
        child
    }

    async fn store(&self) -> promote::store::Store {
        let key = promote::seal::Key::load_or_create(&self.root.join("key")).unwrap();
        promote::store::Store::open_with_key(&self.state(), key).await.unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn signed(i: u64, phase: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/tags/{phase}.{i}"), "after": format!("{i:040x}"), "deleted": false,
        "repository": {"full_name": "acme/load"}
    }))
    .unwrap();
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(&body);
    (body, format!("sha256={}", hex::encode(m.finalize().into_bytes())))
}

/// What one delivery got: its version and, when acknowledged (2xx), the run the answer named.
#[derive(Default)]
struct Sent {
    acked: BTreeMap<String, String>,
    answers: Vec<f64>,
    refused: usize,
    failed: usize,
    redelivered_same_run: usize,
    redelivered: usize,
}

/// Sends RATE deliveries a second for `seconds` to `port`; `kill` is called once at half-time.
async fn load(port: u16, seconds: u64, phase: &'static str, mut kill: impl FnMut() + Send) -> Sent {
    let http = promote::providers::http_client();
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let total = RATE * seconds;
    for i in 0..total {
        tick.tick().await;
        if i == total / 2 {
            kill();
        }
        let (http, sent) = (http.clone(), sent.clone());
        tasks.spawn(async move {
            let (body, sig) = signed(i, phase);
            let version = format!("{phase}.{i}");
            let mut first_run = None;
            for attempt in 0..if i % 10 == 0 { 2 } else { 1 } {
                let start = Instant::now();
                let r = http
                    .post(format!("http://127.0.0.1:{port}/hooks/github"))
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", format!("{phase}-{i}"))
                    .header("X-Hub-Signature-256", &sig)
                    .timeout(Duration::from_secs(30))
                    .body(body.clone())
                    .send()
                    .await;
                let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(r) if r.status().is_success() => {
                        drop(s);
                        let status = r.status().as_u16();
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        let run = v["runs"][0]["run"].as_str().unwrap_or_default().to_string();
                        let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
                        s.answers.push(start.elapsed().as_secs_f64() * 1000.0);
                        if attempt == 1 {
                            s.redelivered += 1;
                            if status == 200 && first_run.as_deref() == Some(run.as_str()) {
                                s.redelivered_same_run += 1;
                            }
                        }
                        if first_run.is_none() {
                            first_run = Some(run.clone());
                        }
                        s.acked.entry(version.clone()).or_insert(run);
                    }
                    Ok(_) => s.refused += 1,
                    Err(_) => s.failed += 1,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(sent).ok().unwrap().into_inner().unwrap()
}

/// Waits until no run of the state is running; returns how long that took.
async fn settled(b: &Bench) -> Duration {
    let start = Instant::now();
    loop {
        let store = b.store().await;
        let running = store.runs(100_000).await.unwrap().iter().filter(|r| r.state == promote::store::RunState::Running).count();
        store.close().await;
        if running == 0 {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(600), "{running} runs still running after 10 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks every acknowledged delivery against the runs of `phase`: (runs, lost, doubled, unfinished).
async fn check(b: &Bench, sent: &Sent, phase: &str) -> (usize, usize, usize, usize) {
    let store = b.store().await;
    let runs: Vec<_> = store.runs(100_000).await.unwrap().into_iter().filter(|r| r.version.starts_with(&format!("{phase}."))).collect();
    store.close().await;
    let mut by_version: HashMap<&str, Vec<&promote::store::RunRecord>> = HashMap::new();
    for r in &runs {
        by_version.entry(r.version.as_str()).or_default().push(r);
    }
    let lost = sent.acked.iter().filter(|(v, id)| !by_version.get(v.as_str()).is_some_and(|rs| rs.iter().any(|r| &r.id == *id))).count();
    let doubled = by_version.values().filter(|rs| rs.len() > 1).count();
    let unfinished = runs.iter().filter(|r| r.state != promote::store::RunState::Succeeded).count();
    (runs.len(), lost, doubled, unfinished)
}

fn report(phase: &str, seconds: u64, sent: &mut Sent, checked: (usize, usize, usize, usize), settle: Duration) {
    let (runs, lost, doubled, unfinished) = checked;
    println!("{phase}");
    println!("  sent                 {} deliveries in {seconds} s ({RATE}/s), every tenth sent twice", RATE * seconds);
    println!("  acknowledged (2xx)   {} distinct; {} refused, {} not answered (connection refused or cut)", sent.acked.len(), sent.refused, sent.failed);
    println!("  redelivered          {} answered, {} with the first delivery's run", sent.redelivered, sent.redelivered_same_run);
    println!("  answer               p50 {:.2} ms, p99 {:.2} ms", pct(&mut sent.answers, 0.5), pct(&mut sent.answers, 0.99));
    println!(
        "  runs                 {runs} (lost: {lost}, doubled: {doubled}, not succeeded: {unfinished}); all finished {:.1} s after the last delivery",
        settle.as_secs_f64()
    );
    assert_eq!((lost, doubled, unfinished), (0, 0, 0), "{phase}: every acknowledged delivery is exactly one run, finished");
    assert!(sent.refused == 0, "{phase}: deliveries were refused");
    assert!(sent.failed > 0 || sent.acked.len() as u64 >= RATE * seconds * 9 / 10, "{phase}: deliveries were not answered with the server up");
}

fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0u64);
    (kb("VmRSS:") / 1024, kb("VmHWM:") / 1024)
}

fn write_pipelines(root: &Path) {
    let dir = root.join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hook.secret"), SECRET).unwrap();
    std::fs::write(
        dir.join("load.yaml"),
        "apiVersion: promote/v1\nkind: Pipeline\nname: load\n\
         triggers:\n  - git: {provider: github, repo: acme/load, refs: [\"refs/tags/*\"]}\n    secretFile: hook.secret\n\
         environments:\n  qa: {repo: qa.git, file: k.yaml, update: {yamlPath: image.tag}}\n\
         stages:\n  soak: {wait: {duration: 0s}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("gate.yaml"),
        "apiVersion: promote/v1\nkind: Pipeline\nname: gate\n\
         environments:\n  qa: {repo: qa.git, file: k.yaml, update: {yamlPath: image.tag}}\n\
         stages:\n  sign-off: {approval: {approvers: [alice]}}\n",
    )
    .unwrap();
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 2 } else { 60 });
    let dir = tempfile::tempdir().unwrap();
    let b = Bench { root: dir.path().to_path_buf() };
    write_pipelines(&b.root);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // 1. Steady load.
        let port = free_port();
        let mut child = b.serve(port);
        let mut sent = load(port, seconds, "v1", || {}).await;
        let settle = settled(&b).await;
        let checked = check(&b, &sent, "v1").await;
        report("steady: 200 deliveries a second", seconds, &mut sent, checked, settle);

        // 2. Killed half-way and started again on the same port.
        let restarted = Arc::new(Mutex::new(None::<(Child, Duration)>));
        let r2 = restarted.clone();
        let mut victim = Some(child);
        let bench = Bench { root: b.root.clone() };
        let mut killer = None;
        let mut sent = load(port, seconds, "v2", || {
            // Off the sender: deliveries go on meeting a dead port (refused) and requests in
            // flight are cut, as when a node dies; a second later a new server takes the port.
            let mut c = victim.take().unwrap();
            let (bench, r2) = (Bench { root: bench.root.clone() }, r2.clone());
            killer = Some(std::thread::spawn(move || {
                let down = Instant::now();
                c.kill().unwrap();
                c.wait().unwrap();
                std::thread::sleep(Duration::from_secs(1));
                let next = bench.serve(port);
                *r2.lock().unwrap() = Some((next, down.elapsed()));
            }));
        })
        .await;
        killer.take().unwrap().join().unwrap();
        let settle = settled(&b).await;
        let checked = check(&b, &sent, "v2").await;
        let (next, down) = restarted.lock().unwrap().take().unwrap();
        child = next;
        report(&format!("with a SIGKILL half-way (down {:.0} ms, then started again)", down.as_secs_f64() * 1000.0), seconds, &mut sent, checked, settle);
        child.kill().unwrap();
        child.wait().unwrap();

        // 3. Memory: 10,000 finished runs in the history and 1,000 waiting.
        let (finished, waiting) = if quick { (500, 50) } else { (10_000, 1_000) };
        let store = b.store().await;
        let have = store.runs(100_000).await.unwrap().len();
        let exec = Arc::new(promote::exec::Executor {
            store,
            writer: Arc::new(promote::git::Writer::new(promote::git::WriterConfig::new(b.root.join("repos")))),
            metrics: Arc::new(promote::exec::Metrics::default()),
            poll: Duration::from_millis(200),
            public_url: None,
            directory: None,
        });
        let plan_of = |name: &str| {
            let file = b.root.join("pipelines").join(name);
            let source = std::fs::read_to_string(&file).unwrap();
            let checked = promote::ops::check_file(&file);
            (file, source, Arc::new(checked.plan.expect("the bench pipeline is valid")))
        };
        let (load_file, load_src, load_plan) = plan_of("load.yaml");
        let filled = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in have..finished {
            let (exec, file, src, plan) = (exec.clone(), load_file.clone(), load_src.clone(), load_plan.clone());
            tasks.spawn(async move {
                let run = exec.start(&file, &src, &plan, &format!("v3.{i}"), "bench", false).await.unwrap();
                exec.drive_until(&run.id, Arc::new(|_| {}), tokio_util::sync::CancellationToken::new()).await.unwrap();
            });
            if tasks.len() >= 64 {
                tasks.join_next().await;
            }
        }
        while tasks.join_next().await.is_some() {}
        let (gate_file, gate_src, gate_plan) = plan_of("gate.yaml");
        for i in 0..waiting {
            exec.start(&gate_file, &gate_src, &gate_plan, &format!("w.{i}"), "bench", false).await.unwrap();
        }
        exec.store.close().await;
        let fill = filled.elapsed();
        let started = Instant::now();
        let mut child = b.serve(port);
        let http = promote::providers::http_client();
        let waiting_now = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("promote_decisions_waiting{") && l.contains("pipeline=\"gate\""))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        loop {
            let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
            if waiting_now(&text) >= waiting as u64 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "the waiting runs did not all wait");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let to_wait = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (settled_rss, _) = rss(child.id());
        // Everything that reads the whole history, a few times.
        for _ in 0..5 {
            let _ = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await;
        }
        let (after_rss, peak) = rss(child.id());
        println!("memory: {} finished runs in the history, {waiting} waiting for an approval (filled in {:.1} s)", have.max(finished), fill.as_secs_f64());
        println!("  all {waiting} driven and waiting {:.1} s after the start", to_wait.as_secs_f64());
        println!("  VmRSS                {settled_rss} MB settled, {after_rss} MB after 5 scrapes of /metrics; peak (VmHWM) {peak} MB");
        child.kill().unwrap();
        child.wait().unwrap();
    });
}
