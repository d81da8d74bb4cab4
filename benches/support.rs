//! What the benchmarks share: percentiles, the process's CPU time, bare repos made with libgit2,
//! the durable-run benchmarks' pipeline and executor.
// Each benchmark uses some of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

/// The `p` quantile of `v` (sorted in place).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// User + system CPU time of this process so far.
pub fn cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| Duration::from_secs(v.tv_sec as u64) + Duration::from_micros(v.tv_usec as u64);
    t(u.ru_utime) + t(u.ru_stime)
}

/// A bare repo `name.git` under `dir` with `k.yaml` on `main`, made with libgit2 (fast).
pub fn bare(dir: &Path, name: &str) {
    let repo = git2::Repository::init_bare(dir.join(format!("{name}.git"))).unwrap();
    let blob = repo.blob(b"image:\n  tag: 1.0.0\n").unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("k.yaml", blob, 0o100644).unwrap();
    let tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let sig = git2::Signature::now("init", "init@example.com").unwrap();
    repo.commit(Some("refs/heads/main"), &sig, &sig, "initial", &tree, &[]).unwrap();
    repo.set_head("refs/heads/main").unwrap();
}

/// The pipeline of the durable-run benchmarks (exec, replicas): six no-op stages, a diamond
/// and two tails.
pub const NOOP_PIPELINE: &str = "apiVersion: promote/v1
kind: Pipeline
name: bench
artifact: {image: registry.example.com/acme/bench}
environments:
  qa: {repo: envs/qa.git, file: k.yaml, update: {kustomizeImage: registry.example.com/acme/bench}}
stages:
  s1: {wait: {duration: 0s}}
  s2: {needs: [s1], wait: {duration: 0s}}
  s3: {needs: [s1], wait: {duration: 0s}}
  s4: {needs: [s2, s3], wait: {duration: 0s}}
  s5: {needs: [s4], wait: {duration: 0s}}
  s6: {needs: [s4], wait: {duration: 0s}}
";

/// An executor over `store`, its git caches in `cache`, polling every 200 ms.
pub fn executor(store: promote::store::Store, cache: &Path) -> promote::exec::Executor {
    promote::exec::Executor {
        store,
        writer: std::sync::Arc::new(promote::git::Writer::new(promote::git::WriterConfig::new(cache))),
        metrics: std::sync::Arc::new(promote::exec::Metrics::default()),
        poll: Duration::from_millis(200),
        public_url: None,
        directory: None,
    }
}

/// Turns `perf record --control fifo:CTL,ACK -D -1` on or off (`"enable"`, `"disable"`) when
/// `PROMOTE_PERF_CONTROL=CTL,ACK` names its two FIFOs, so that a profile holds only the timed part.
#[allow(dead_code)]
pub fn perf_control(command: &str) {
    let Ok(fifos) = std::env::var("PROMOTE_PERF_CONTROL") else { return };
    let Some((ctl, ack)) = fifos.split_once(',') else { return };
    use std::io::{Read, Write};
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open(ctl) {
        let _ = writeln!(c, "{command}");
        let mut answer = [0u8; 5];
        let _ = std::fs::File::open(ack).and_then(|mut a| a.read(&mut answer));
    }
}
