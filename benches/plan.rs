//! Benchmark: load + validate + plan of generated wide-and-deep pipelines of 500, 5,000 and
//! 50,000 stages. Prints the median and spread of each size, the cost per stage (it should stay
//! flat: linear growth), and the peak memory of the process.
//!
//! Run: `cargo bench --bench plan` (all sizes) or `cargo bench --bench plan -- 5000` (one size).
//!
//! `cargo bench --bench plan -- process` times `promote validate` as a whole process (start, read,
//! load, plan, print, exit) on a pipeline of 5,000 environments and 5,000 deploys, one into each
//! (`generate::wide`); `PROMOTE_BIN=PATH` adds another build, run alternately with this one.

use std::time::{Duration, Instant};

#[path = "../tests/it/generate.rs"]
mod generate;

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `promote validate` as a whole process, alternating between the builds given.
fn process(quick: bool) {
    let yaml = generate::wide(5_000);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-plan");
    std::fs::create_dir_all(&dir).expect("bench folder");
    let file = dir.join("wide.yaml");
    std::fs::write(&file, &yaml).expect("bench file");
    let mut bins = vec![env!("CARGO_BIN_EXE_promote").to_string()];
    bins.extend(std::env::var("PROMOTE_BIN").ok());
    let runs = if quick { 2 } else { 31 };
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); bins.len()];
    for _ in 0..runs {
        for (b, bin) in bins.iter().enumerate() {
            let start = Instant::now();
            let out = std::process::Command::new(bin).arg("validate").arg(&file).output().expect("promote runs");
            times[b].push(start.elapsed());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    println!("promote validate, 5,000 environments and 5,000 deploys ({} KB), {runs} runs, as a whole process:", yaml.len() / 1024);
    for (bin, t) in bins.iter().zip(times) {
        let (min, max) = (*t.iter().min().unwrap(), *t.iter().max().unwrap());
        println!("  {bin}: median {:.1?}, min {min:.1?}, max {max:.1?}", median(t));
    }
}

fn main() {
    if std::env::args().any(|a| a == "process") {
        return process(!std::env::args().any(|a| a == "--bench"));
    }
    // `cargo test --benches` runs bench targets with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let all: &[(usize, usize, usize)] = if quick { &[(500, 25, 3)] } else { &[(500, 25, 41), (5_000, 80, 31), (50_000, 250, 9)] };
    // `cargo bench --bench plan -- 5000` runs one size, so that the peak memory is that size's.
    let only: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let sizes: Vec<(usize, usize, usize)> = all.iter().copied().filter(|(n, _, _)| only.is_none_or(|o| o == *n)).collect();
    println!("{:>8} {:>8} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}", "stages", "waves", "runs", "yaml KB", "median", "min", "max", "per stage");
    for (stages, width, runs) in sizes {
        let (yaml, layers) = generate::pipeline(stages, width);
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let mut diags = promote::diag::Diagnostics::new("generated.yaml");
            let plan = promote::model::load(&yaml, &mut diags).and_then(|p| promote::plan::plan(p, &mut diags));
            let elapsed = start.elapsed();
            let plan = plan.expect("generated pipeline is valid");
            assert_eq!(plan.waves.len(), layers);
            std::hint::black_box(&plan);
            times.push(elapsed);
        }
        let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        let med = median(times);
        println!(
            "{stages:>8} {layers:>8} {runs:>7} {:>12} {:>12.2?} {:>12.2?} {:>12.2?} {:>10.2}µs",
            yaml.len() / 1024,
            med,
            min,
            max,
            med.as_secs_f64() * 1e6 / stages as f64
        );
    }
    println!("peak RSS of the whole benchmark process: {:.1} MB", peak_rss_kb() as f64 / 1024.0);
}
