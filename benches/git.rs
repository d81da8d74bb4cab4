//! Benchmark: promote one value into environment repos of 1,000, 20,000 and 100,000 files (paths
//! 4 to 6 deep), with promote's git writer (kept bare clone: fetch + in-memory commit + push) and,
//! in the same run, the way other runners do it with the git CLI (`git clone --depth 1` + edit +
//! `git commit` + `git push`). Also the in-memory commit alone (blob + trees + commit object).
//!
//! Run: `cargo bench --bench git` (all sizes) or `cargo bench --bench git -- 20000` (one size).
//! Repos are made under target/bench-git (on disk, not tmpfs) with `git fast-import`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use promote::git::{Destination, EditTarget, Promotion, Remote, Writer, WriterConfig};

// The git CLI helper of the integration tests (the rest of that file is for tests).
#[path = "../tests/it/repos.rs"]
#[allow(dead_code)]
mod repos;
use repos::git;

const TARGET: &str = "apps/checkout/overlays/prod/kustomization.yaml";

/// A bare repo of `files` YAML files at depths 4 to 6 (plus the target file, 5 deep), one commit.
fn make_repo(dir: &Path, files: usize) -> PathBuf {
    let bare = dir.join(format!("env-{files}.git"));
    if bare.exists() {
        std::fs::remove_dir_all(&bare).unwrap();
    }
    git(dir, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
    let mut child = Command::new("git").current_dir(&bare).args(["fast-import", "--quiet"]).stdin(Stdio::piped()).spawn().unwrap();
    let mut input = std::io::BufWriter::new(child.stdin.take().unwrap());
    writeln!(input, "commit refs/heads/main\ncommitter Dev <dev@example.com> 1700000000 +0000\ndata 8\ninitial\n").unwrap();
    let target = "# prod overlay\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n  - name: registry.example.com/acme/checkout\n    newTag: 1.0.0 # promoted\n";
    writeln!(input, "M 100644 inline {TARGET}\ndata {}\n{target}", target.len()).unwrap();
    for i in 0..files - 1 {
        let depth = 4 + i % 3;
        let mut path = String::new();
        let mut n = i;
        for level in 0..depth - 1 {
            path.push_str(&format!("d{level}-{}/", n % 12));
            n /= 12;
        }
        path.push_str(&format!("f{i}.yaml"));
        let body = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  key: value-{i}\n");
        writeln!(input, "M 100644 inline {path}\ndata {}\n{body}", body.len()).unwrap();
    }
    drop(input);
    assert!(child.wait().unwrap().success());
    bare
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The git CLI way: shallow clone, edit, commit, push, remove the clone.
fn cli_promote(dir: &Path, bare: &Path, version: &str) -> Duration {
    let work = dir.join("cli-work");
    let _ = std::fs::remove_dir_all(&work);
    let start = Instant::now();
    git(dir, &["clone", "-q", "--depth", "1", "--branch", "main", &format!("file://{}", bare.display()), work.to_str().unwrap()]);
    let file = work.join(TARGET);
    let text = std::fs::read_to_string(&file).unwrap();
    let at = text.find("newTag: ").unwrap() + 8;
    let end = at + text[at..].find(' ').unwrap();
    std::fs::write(&file, format!("{}{version}{}", &text[..at], &text[end..])).unwrap();
    git(&work, &["commit", "-q", "-am", &format!("promote checkout {version} to prod")]);
    git(&work, &["push", "-q", "origin", "main"]);
    let took = start.elapsed();
    std::fs::remove_dir_all(&work).unwrap();
    took
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let all: &[usize] = if quick { &[1_000] } else { &[1_000, 20_000, 100_000] };
    let only: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-git");
    std::fs::create_dir_all(&root).unwrap();
    let (runs, cli_runs, commit_runs) = if quick { (5, 1, 50) } else { (41, 5, 2001) };
    println!("{:>8} {:>14} {:>14} {:>16} {:>16} {:>10} {:>14}", "files", "first fetch", "promote p50", "promote p90", "git CLI p50", "speedup", "commit p50");
    let sizes: Vec<usize> = all.iter().copied().filter(|&f| only.is_none_or(|o| o == f)).collect();
    // Phase 1: the repos, and each writer's cache (the first promotion fetches the whole repo into
    // it: once per repo, ever).
    struct Size {
        files: usize,
        bare: PathBuf,
        writer: Writer,
        dest: Destination,
        first: Duration,
        times: Vec<Duration>,
    }
    let mut setups: Vec<Size> = sizes
        .iter()
        .map(|&files| {
            let bare = make_repo(&root, files);
            let cache = root.join(format!("cache-{files}"));
            let _ = std::fs::remove_dir_all(&cache);
            let dest = Destination {
                remote: Remote::resolve(bare.to_str().unwrap(), Path::new("/")),
                branch: "main".into(),
                file: TARGET.into(),
                target: EditTarget::KustomizeImage { name: "registry.example.com/acme/checkout".into(), digest: false },
            };
            Size { files, bare, writer: Writer::new(WriterConfig::new(&cache)), dest, first: Duration::ZERO, times: Vec::new() }
        })
        .collect();
    // Sealed as promote seals them: the "already done" look verifies seals as it walks history.
    let key = promote::seal::Key::from_bytes([1; 32]);
    let promote = |s: &Size, i: usize| {
        let (run, version) = (format!("run-{}-{i}", s.files), format!("2.0.{i}"));
        let p = Promotion {
            pipeline: "checkout",
            environment: "prod",
            run: &run,
            stage: "deploy-prod",
            version: &version,
            value: &version,
            approved_by: &[],
            check: None,
            seal: Some(&key),
        };
        let start = Instant::now();
        s.writer.promote(&s.dest, &p).unwrap();
        start.elapsed()
    };
    for s in &mut setups {
        s.first = promote(s, 0);
    }
    // Phase 2: promotions, sizes interleaved so that disk noise falls on all of them alike; the
    // git CLI runs only afterwards (its clones of 100,000 files keep the disk busy for a while).
    let _ = Command::new("sync").status();
    for i in 1..=runs {
        for s in &mut setups {
            let t = promote(s, i);
            s.times.push(t);
        }
    }
    // Phase 3: the commit alone: blob + trees on the path + commit object, in the cache.
    let commits: Vec<Duration> = setups
        .iter()
        .map(|s| {
            let repo = git2::Repository::open_bare(s.writer.cache_path(&s.dest.remote)).unwrap();
            let tip = repo.find_commit(repo.refname_to_id("refs/promote/fetched/main").unwrap()).unwrap();
            let base = tip.tree().unwrap();
            let blob = base.get_path(Path::new(TARGET)).unwrap().to_object(&repo).unwrap().peel_to_blob().unwrap();
            let text = String::from_utf8(blob.content().to_vec()).unwrap();
            let author = promote::git::Identity::default();
            median(
                (0..commit_runs)
                    .map(|i| {
                        let edited = promote::git::edit::apply(TARGET, &text, s.dest.target.as_target(), &format!("9.9.{i}")).unwrap();
                        let start = Instant::now();
                        let tree = promote::git::replace_file(&repo, &base, TARGET, edited.text.as_bytes()).unwrap();
                        let message = promote::git::message("promote checkout 9.9 to prod", &[("Promote-Run", "bench")]);
                        promote::git::create_commit(&repo, &tip, tree, &message, &author, &author, None).unwrap();
                        start.elapsed()
                    })
                    .collect(),
            )
        })
        .collect();
    // Phase 4: the git CLI way, on the same repos. BENCH_NO_CLI=1 leaves it out.
    let clis: Vec<Duration> = setups
        .iter()
        .map(|s| {
            if std::env::var_os("BENCH_NO_CLI").is_some() {
                return Duration::ZERO;
            }
            median((0..cli_runs).map(|i| cli_promote(&root, &s.bare, &format!("3.0.{i}"))).collect())
        })
        .collect();
    let mut p50s = Vec::new();
    for ((s, commit), cli) in setups.iter_mut().zip(commits).zip(clis) {
        s.times.sort();
        let p50 = s.times[s.times.len() / 2];
        let p90 = s.times[s.times.len() * 9 / 10];
        println!(
            "{:>8} {:>14} {:>14} {:>16} {:>16} {:>9.0}x {:>14}",
            s.files,
            ms(s.first),
            ms(p50),
            ms(p90),
            ms(cli),
            cli.as_secs_f64() / p50.as_secs_f64(),
            format!("{:.3} ms", commit.as_secs_f64() * 1000.0)
        );
        p50s.push((s.files, p50));
    }
    if let (Some((small, a)), Some((large, b))) = (p50s.first(), p50s.last())
        && small != large
    {
        println!("{large} files vs {small}: {:.2}x the time per promotion (goal: at most 2x)", b.as_secs_f64() / a.as_secs_f64());
    }
}
