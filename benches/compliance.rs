//! Benchmark: compliance sweeps over 1,000 environments, as a server does them. A `promote serve`
//! child over 10 pipelines of 100 environments each (a branch each of one repo per pipeline, a
//! LoadBalancer Service in every one), every pipeline with one Rego policy stage. Printed:
//! - the first sweep: from the server's start until every environment's violation is recorded;
//! - a policy change (the policy file rewritten in place): until every environment is judged by
//!   the new policy (the goal: within 10 s);
//! - the steady cost once every environment complies: the server's CPU time over a minute of
//!   sweeps at `compliance.every: 15s` (drift polling off), per sweep, and as a share of one core
//!   at `every: 1h` (the goal: under 5%).
//!
//! Run: `cargo bench --bench compliance` (1,000 environments) or `cargo bench --bench compliance
//! -- 200`; `cargo test --bench compliance` is a quick run over 100.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PIPELINES: usize = 10;
const EVERY_S: u64 = 15;

const SERVICE: &[u8] = b"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n";

fn policy(version: &str, banned: &str) -> String {
    format!(
        "package bench.services\nimport rego.v1\n\ndeny contains msg if {{\n    some m in input.manifests\n    m.kind == \"Service\"\n    m.object.spec.type == \"{banned}\"\n    msg := sprintf(\"{version}: %s: Service %s is of type {banned}\", [m.file, m.name])\n}}\n"
    )
}

/// A bare repo with `envs` branches, each holding `k.yaml` and a LoadBalancer `svc.yaml`.
fn repo(path: &Path, envs: usize) {
    let repo = git2::Repository::init_bare(path).unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("k.yaml", repo.blob(b"image:\n  tag: 1.0.0\n").unwrap(), 0o100644).unwrap();
    tb.insert("svc.yaml", repo.blob(SERVICE).unwrap(), 0o100644).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let sig = git2::Signature::now("init", "init@example.com").unwrap();
    let commit = repo.commit(Some("refs/heads/main"), &sig, &sig, "initial", &tree, &[]).unwrap();
    for i in 0..envs {
        repo.reference(&format!("refs/heads/env-{i}"), commit, true, "bench").unwrap();
    }
}

fn pipeline(p: usize, envs: usize) -> String {
    let mut y = format!(
        "apiVersion: promote/v1\nkind: Pipeline\nname: team-{p}\nartifact: {{image: registry.example.com/team-{p}}}\ncompliance: {{every: {EVERY_S}s}}\nenvironments:\n"
    );
    for i in 0..envs {
        y.push_str(&format!(
            "  e{i}: {{repo: ../repos/team-{p}.git, branch: env-{i}, file: k.yaml, update: {{yamlPath: image.tag, value: \"${{version}}\"}}}}\n"
        ));
    }
    y.push_str("stages:\n  deploy:\n    deploy: {environment: e0}\n  policy:\n    policy: {policies: [../policy/]}\n");
    y
}

/// User + system CPU time of process `pid`.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn serve(root: &Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_promote"))
        .current_dir(root)
        .env("PROMOTE_KEY_FILE", root.join("key"))
        .env("RUST_LOG", "error")
        .args([
            "--state",
            root.join("state.db").to_str().unwrap(),
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--pipelines",
            "pipelines",
            "--drift-poll",
            "24h",
        ])
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

/// Open violations whose denial starts with `version` (at most 1,000 are read).
async fn open(store: &promote::store::Store, version: &str) -> usize {
    let filter = promote::store::ViolationFilter { state: Some(promote::store::ViolationState::Open), ..Default::default() };
    store.violations(filter).await.unwrap().iter().filter(|v| v.deny.0.iter().any(|d| d.starts_with(version))).count()
}

async fn until(store: &promote::store::Store, version: &str, want: usize, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let n = open(store, version).await;
        if n >= want {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "{n} of {want} environments judged by the {version} policy after {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let envs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(if quick { 100 } else { 1000 }).min(1000);
    let per = envs / PIPELINES;
    let envs = per * PIPELINES;
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    for sub in ["repos", "pipelines", "policy"] {
        std::fs::create_dir(root.join(sub)).unwrap();
    }
    for p in 0..PIPELINES {
        repo(&root.join(format!("repos/team-{p}.git")), per);
        std::fs::write(root.join(format!("pipelines/team-{p}.yaml")), pipeline(p, per)).unwrap();
    }
    std::fs::write(root.join("policy/services.rego"), policy("v1", "LoadBalancer")).unwrap();
    let key = promote::seal::Key::load_or_create(&root.join("key")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    println!("compliance: {envs} environments ({PIPELINES} pipelines of {per}), one Rego policy, a `promote serve` child");
    let started = Instant::now();
    let mut child = serve(&root, port);
    let store = promote::store::Store::open_with_key(&root.join("state.db"), key).await.unwrap();
    until(&store, "v1", envs, Duration::from_secs(600)).await;
    let first = started.elapsed();
    let cpu_first = cpu_of(child.id());
    println!(
        "first sweep: every environment's violation recorded {:.1} s after the server started (server CPU so far {:.1} s)",
        first.as_secs_f64(),
        cpu_first.as_secs_f64()
    );

    // The company's policy changes: every environment is judged again by it.
    std::fs::write(root.join("policy/services.rego"), policy("v2", "LoadBalancer")).unwrap();
    let changed = until(&store, "v2", envs, Duration::from_secs(600)).await;
    println!("policy change: judged in all {envs} environments {:.1} s after the file changed (goal: 10 s)", changed.as_secs_f64());

    // Then a policy every environment complies with: the steady sweeps.
    std::fs::write(root.join("policy/services.rego"), policy("v3", "NodePort")).unwrap();
    let t = Instant::now();
    while open(&store, "v2").await > 0 {
        assert!(t.elapsed() < Duration::from_secs(600), "the violations did not resolve");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let soak = if quick { Duration::from_secs(EVERY_S * 2) } else { Duration::from_secs(EVERY_S * 4) };
    let (c0, t0) = (cpu_of(child.id()), Instant::now());
    tokio::time::sleep(soak).await;
    let (cpu, wall) = (cpu_of(child.id()) - c0, t0.elapsed());
    let sweeps = wall.as_secs_f64() / EVERY_S as f64;
    let per_sweep = cpu.as_secs_f64() / sweeps;
    println!(
        "steady: server CPU {:.2} s over {:.0} s ({:.1} sweeps at every {EVERY_S}s): {:.2} s a sweep of {envs} environments; at `every: 1h`, {:.3}% of one core (goal: under 5%)",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        sweeps,
        per_sweep,
        per_sweep / 3600.0 * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
