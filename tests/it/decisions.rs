//! The decision suite: releases built from real labelled data nobody on the project wrote, judged
//! by promote's judges. Metrics: NAB's series (tests/fixtures/nab, copied from ../shared/data/nab:
//! Numenta Anomaly Benchmark, MIT, its LICENSE.txt beside it) served from a real Prometheus
//! backfilled with promtool, each release a `compare` of a new window against its baseline. Logs:
//! the LogHub samples of tests/fixtures/loghub.
//!
//! How the releases are chosen (fixed before any verdict was seen; `W` = 30 points):
//! - bad: for each labelled anomaly point, the new window is the W points centred on it, the
//!   baseline the W points just before the labelled anomaly window that holds it (both inside the
//!   file; the baseline outside every window);
//! - good: in each file, from each quarter's start (0, 1/4, 1/2, 3/4 of its points), the first 2W
//!   points outside every anomaly window and not overlapping the last one taken: the first W the
//!   baseline, the next W the new window.

use std::path::PathBuf;

/// Points per window.
pub const W: usize = 30;

/// One release to judge.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The NAB folder (realTweets, realTraffic, ...).
    pub family: String,
    pub bad: bool,
    pub baseline: Vec<f64>,
    pub new: Vec<f64>,
}

pub fn nab() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nab")
}

fn read_series(path: &std::path::Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e} (the decision suite reads tests/fixtures/nab)", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (t, v) = l.split_once(',')?;
            Some((t.chars().take(19).collect(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Every release of the rule above, bad ones first.
pub fn metric_cases() -> Vec<Case> {
    let dir = nab();
    let windows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("combined_windows.json")).unwrap()).unwrap();
    let labels: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("combined_labels.json")).unwrap()).unwrap();
    let mut files: Vec<&String> = windows.as_object().unwrap().keys().collect();
    files.sort();
    let (mut bad, mut good) = (Vec::new(), Vec::new());
    for file in files {
        let series = read_series(&dir.join(file));
        let wins: Vec<(String, String)> = windows[file]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w[0].as_str().unwrap().chars().take(19).collect(), w[1].as_str().unwrap().chars().take(19).collect()))
            .collect();
        let inside = |t: &str| wins.iter().any(|(s, e)| t >= s.as_str() && t <= e.as_str());
        let values = |a: usize, b: usize| series[a..b].iter().map(|(_, v)| *v).collect::<Vec<f64>>();
        let short = file.rsplit('/').next().unwrap().trim_end_matches(".csv");
        let family = file.split('/').next().unwrap().to_string();
        for (k, l) in labels[file].as_array().into_iter().flatten().enumerate() {
            let l: String = l.as_str().unwrap().chars().take(19).collect();
            let Some(i) = series.iter().position(|(t, _)| *t >= l) else { continue };
            let Some((s, _)) = wins.iter().find(|(s, e)| l >= *s && l <= *e) else { continue };
            let Some(bs) = series.iter().position(|(t, _)| t >= s) else { continue };
            if i < W / 2 || i + W / 2 > series.len() || bs < W || series[bs - W..bs].iter().any(|(t, _)| inside(t)) {
                continue;
            }
            bad.push(Case {
                name: format!("{short}#a{k}"),
                family: family.clone(),
                bad: true,
                baseline: values(bs - W, bs),
                new: values(i - W / 2, i + W / 2),
            });
        }
        let mut taken_until = 0;
        for q in 0..4 {
            let mut at = (series.len() * q / 4).max(taken_until);
            while at + 2 * W <= series.len() {
                if let Some(off) = series[at..at + 2 * W].iter().rposition(|(t, _)| inside(t)) {
                    at += off + 1;
                    continue;
                }
                good.push(Case {
                    name: format!("{short}#g{q}"),
                    family: family.clone(),
                    bad: false,
                    baseline: values(at, at + W),
                    new: values(at + W, at + 2 * W),
                });
                taken_until = at + 2 * W;
                break;
            }
        }
    }
    bad.extend(good);
    bad
}

/// The settings of the suite's check: `compare` with direction `either`, `requireData`, no
/// conditions (Kayenta's defaults otherwise).
pub fn settings() -> promote::analysis::kayenta::CompareSettings {
    promote::analysis::kayenta::CompareSettings {
        direction: promote::model::Direction::Either,
        confidence: 0.98,
        min_effect: 2.5,
        allowed_increase: 1.0,
        allowed_decrease: 1.0,
        critical_increase: 1.0,
        critical_decrease: 1.0,
        critical: false,
        require_data: true,
    }
}

/// Judges every case through a real Prometheus (backfilled with promtool, one series per case,
/// a sample a minute, the new window ending now) with the `compare` settings of the suite, as the
/// metrics stage does: a range query for each window, then the comparison.
async fn judge_through_prometheus(cases: &[Case]) -> Vec<promote::analysis::kayenta::Classification> {
    use promote::providers::MetricProvider;
    let end = (crate::prom::now_s() as i64 / 60) * 60;
    let mut lines = String::new();
    for c in cases {
        let all: Vec<f64> = c.baseline.iter().chain(&c.new).copied().collect();
        let first = end - 60 * (all.len() as i64 - 1);
        for (i, v) in all.iter().enumerate() {
            lines.push_str(&format!("nab{{case=\"{}\"}} {v} {}\n", c.name, first + 60 * i as i64));
        }
    }
    let prom = crate::prom::Prometheus::start(&[("nab", lines)]);
    let provider = promote::providers::Prometheus::new(&prom.url(), None, std::time::Duration::from_secs(10)).unwrap();
    let at = |t: i64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64);
    let step = std::time::Duration::from_secs(60);
    let s = settings();
    let mut out = Vec::new();
    for c in cases {
        let q = format!("nab{{case=\"{}\"}}", c.name);
        let new_from = end - 60 * (c.new.len() as i64 - 1);
        let base_from = new_from - 60 * c.baseline.len() as i64;
        let new = provider.range(&q, at(new_from), at(end), step).await.unwrap();
        let base = provider.range(&q, at(base_from), at(new_from - 60), step).await.unwrap();
        assert_eq!((new.len(), base.len()), (c.new.len(), c.baseline.len()), "{}: Prometheus gave every sample back", c.name);
        out.push(promote::analysis::kayenta::classify(&new, &base, &s));
    }
    out
}

/// The two rates, and a table a person reads (case, truth, verdict, the message).
fn table(cases: &[Case], verdicts: &[promote::analysis::kayenta::Classification]) -> (usize, usize, usize, usize) {
    let (mut bad, mut bad_stopped, mut good, mut good_stopped) = (0, 0, 0, 0);
    println!("{:32} {:5} {:7} message", "case", "truth", "verdict");
    for (c, v) in cases.iter().zip(verdicts) {
        let stopped = !matches!(v.class, promote::analysis::kayenta::Class::Pass);
        if c.bad {
            bad += 1;
            bad_stopped += usize::from(stopped);
        } else {
            good += 1;
            good_stopped += usize::from(stopped);
        }
        let wrong = if stopped == c.bad { "" } else { " (wrong)" };
        println!("{:32} {:5} {:7} {}{wrong}", c.name, if c.bad { "bad" } else { "good" }, if stopped { "stopped" } else { "passed" }, v.reason);
    }
    println!(
        "bad releases stopped: {bad_stopped} of {bad} ({:.1}%); good releases stopped: {good_stopped} of {good} ({:.1}%)",
        100.0 * bad_stopped as f64 / bad as f64,
        100.0 * good_stopped as f64 / good as f64
    );
    (bad, bad_stopped, good, good_stopped)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_judge_on_real_labelled_series_served_by_prometheus() {
    let cases = metric_cases();
    let verdicts = judge_through_prometheus(&cases).await;
    let (bad, bad_stopped, good, good_stopped) = table(&cases, &verdicts);
    assert!(bad >= 60 && good >= 120, "the rule gives {bad} bad and {good} good releases");
    // Where the suite stands (docs/metrics.md: the goal is every bad release stopped; some of
    // NAB's labelled points look like their baseline, moved by less than 0.5 sd). A judge that
    // stops fewer bad or more good releases than this fails.
    assert!(good_stopped * 50 <= good, "at most 2% of good releases stopped: {good_stopped} of {good}");
    assert!(bad_stopped >= 45, "bad releases stopped: {bad_stopped} of {bad} (45 when this was written)");
    // Every verdict, pass or stop, says the numbers it was decided on.
    for v in &verdicts {
        assert!(v.reason.contains("mean ") && v.reason.contains("p = "), "{}", v.reason);
    }
}

/// The kinds of release the first outside suite found misjudged, in its words (issue 18).
#[test]
fn large_significant_shifts_stop_and_tied_noise_passes() {
    use promote::analysis::kayenta::{Class, classify};
    let s = settings();
    // A new mean 169 times the baseline's.
    let base: Vec<f64> = (0..30).map(|i| 0.001 + 0.0001 * (i % 5) as f64).collect();
    let new: Vec<f64> = (0..30).map(|i| if i % 3 == 0 { 0.5 } else { 0.0011 + 0.0001 * (i % 4) as f64 }).collect();
    let c = classify(&new, &base, &s);
    assert_eq!(c.class, Class::High, "{}", c.reason);
    // Bursts to 40% against a 0.1% baseline in a quarter of the samples, the rest as before.
    let new: Vec<f64> = (0..30).map(|i| if i % 4 == 0 { 0.4 } else { 0.001 + 0.0001 * (i % 5) as f64 }).collect();
    let c = classify(&new, &base, &s);
    assert_eq!(c.class, Class::High, "{}", c.reason);
    assert!(c.reason.contains("8 new samples far above every baseline sample"), "the ranks barely move; the bursts decide: {}", c.reason);
    // An all-zero baseline against large values: no ratio of 1.
    let zeros = vec![0.0; 30];
    let big: Vec<f64> = (0..30).map(|i| 50.0 + i as f64).collect();
    let c = classify(&big, &zeros, &s);
    assert_eq!(c.class, Class::High, "{}", c.reason);
    assert!(c.ratio.is_nan() && c.reason.contains("the baseline's mean is 0"), "{}", c.reason);
    // Heavily tied counts, the new a little higher but not significantly: passes, saying why.
    let base: Vec<f64> = (0..40).map(|i| if i % 10 == 0 { 0.004 } else { 0.0 }).collect();
    let new: Vec<f64> = (0..40).map(|i| if i % 8 == 0 { 0.004 } else { 0.0 }).collect();
    let c = classify(&new, &base, &s);
    assert_eq!(c.class, Class::Pass, "{}", c.reason);
    assert!(c.reason.contains("not significant"), "{}", c.reason);
}

/// Log releases from LogHub (`tests/fixtures/loghub`). For each system: the baseline is its lines
/// at even positions and the release's window those at odd positions, as recorded: the same
/// traffic of the same period (good; a first rule took the first 1,000 lines against the next
/// 1,000 and stopped 6 of 8: those second halves hold incidents of the source logs, Hadoop's
/// "ERROR IN CONTACTING RM" 13.7 times as often, HPC's boot timeouts, which are not good
/// releases); bad: the same window with ten real error lines of another system
/// (those LogHub labels `error`, `ERROR`, `FATAL` or `SEVERE`, the first ten) spread through it, and
/// the same window with the system's own most frequent error-labelled template of the baseline
/// among those under 5% of it (a share can only grow so much) and of at least 3 lines (a first
/// rule took any: Hadoop's had 1, and 1 line grown to 6 is, by the test growth needs, p = 0.06,
/// not evidence) grown: its baseline lines repeated into the window until it has six times its baseline count
/// there (at most 1,000 lines added).
///
/// The kinds the third outside suite found passed (issue 32), chosen by LogHub's labels and the
/// three words the issue names (`fail`, `exception`, `error` in LogHub's template, any case), not
/// by the judge's vocabulary: the same window with ten real lines of another system whose level
/// LogHub does not label an error (warning, info, or none: a log without levels) and whose
/// template says one of those words, spread through it; and the system's own most frequent such
/// template of the baseline (at least 3 lines, under 5% of it) grown to ten times its baseline
/// count.
pub fn log_cases() -> Vec<(String, bool, Vec<String>, Vec<String>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loghub");
    let systems = ["Apache", "BGL", "HDFS", "HPC", "Hadoop", "OpenSSH", "Spark", "Zookeeper"];
    let error_levels = ["error", "ERROR", "FATAL", "SEVERE"];
    // (raw lines, per line: (event id, whether labelled an error)).
    let read = |s: &str| {
        let raw: Vec<String> = std::fs::read_to_string(root.join(s).join(format!("{s}_2k.log"))).unwrap().lines().map(String::from).collect();
        let mut rdr = std::fs::read_to_string(root.join(s).join(format!("{s}_2k.log_structured.csv"))).unwrap();
        let text = std::mem::take(&mut rdr);
        let mut rows = Vec::new();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let level_at = header.iter().position(|h| *h == "Level");
        for l in lines {
            // The event id is the second-to-last field, its template the last; the level, where
            // there is one, a plain field.
            let fields = split_csv(l);
            let event = fields[fields.len() - 2].clone();
            let is_error = level_at.is_some_and(|i| error_levels.contains(&fields[i].as_str()));
            let template = fields[fields.len() - 1].to_lowercase();
            let says = !is_error && ["fail", "exception", "error"].iter().any(|w| template.contains(w));
            rows.push((event, is_error, says));
        }
        assert_eq!(raw.len(), rows.len(), "{s}");
        (raw, rows)
    };
    type Lines = (Vec<String>, Vec<(String, bool, bool)>);
    let all: Vec<(&str, Lines)> = systems.iter().map(|s| (*s, read(s))).collect();
    let mut cases = Vec::new();
    for (s, (raw, rows)) in &all {
        let before: Vec<String> = raw.iter().step_by(2).cloned().collect();
        let after: Vec<String> = raw.iter().skip(1).step_by(2).cloned().collect();
        let before_rows: Vec<&(String, bool, bool)> = rows.iter().step_by(2).collect();
        cases.push((format!("{s} as recorded"), false, before.clone(), after.clone()));
        for (donor, (draw, drows)) in &all {
            if donor == s {
                continue;
            }
            let errors: Vec<&String> = draw.iter().zip(drows).filter(|(_, r)| r.1).map(|(l, _)| l).take(10).collect();
            if errors.len() < 10 {
                continue;
            }
            let mut window = after.clone();
            for (k, e) in errors.iter().enumerate() {
                window.insert(50 + k * 95, (*e).clone());
            }
            cases.push((format!("{s} + 10 {donor} errors"), true, before.clone(), window));
            let failing: Vec<&String> = draw.iter().zip(drows).filter(|(_, r)| r.2).map(|(l, _)| l).take(10).collect();
            if failing.len() == 10 {
                let mut window = after.clone();
                for (k, e) in failing.iter().enumerate() {
                    window.insert(50 + k * 95, (*e).clone());
                }
                cases.push((format!("{s} + 10 {donor} failures below error"), true, before.clone(), window));
            }
        }
        // (which rows, growth, name).
        type Kind = (fn(&(String, bool, bool)) -> bool, usize, &'static str);
        let kinds: [Kind; 2] = [(|r| r.1, 6, "grown 6x"), (|r| r.2, 10, "(says failure below error) grown 10x")];
        for (chosen, times, what) in kinds {
            let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
            for r in before_rows.iter().filter(|r| chosen(r)) {
                *counts.entry(r.0.as_str()).or_default() += 1;
            }
            if let Some((event, _)) = counts.iter().filter(|(_, n)| **n >= 3 && **n * 20 < before.len()).max_by_key(|(e, n)| (**n, std::cmp::Reverse(**e))) {
                let own: Vec<&String> = before.iter().zip(&before_rows).filter(|(_, r)| r.0 == *event).map(|(l, _)| l).collect();
                let mut window = after.clone();
                let have = after.iter().zip(rows.iter().skip(1).step_by(2)).filter(|(_, r)| r.0 == *event).count();
                let add = (times * own.len()).saturating_sub(have).min(1000);
                for k in 0..add {
                    let at = (k * window.len() / add.max(1)).min(window.len());
                    window.insert(at, own[k % own.len()].clone());
                }
                cases.push((format!("{s} {event} {what}"), true, before.clone(), window));
            }
        }
    }
    cases
}

/// The fields of a CSV line (quotes as LogHub writes them).
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn the_logs_judge_on_real_system_logs_with_real_errors_injected_and_grown() {
    use promote::logs::verdict::{Level, Rules, judge};
    // `sensitivity: medium`: new error templates fail, error templates grown past 5x fail.
    let rules = Rules { new_at: Level::Error, grown_at: Some((Level::Error, 5.0)), patterns: vec![], ignored: vec![] };
    let cases = log_cases();
    let (mut bad, mut bad_stopped, mut good, mut good_stopped) = (0, 0, 0, 0);
    println!("{:40} {:5} {:7} message", "case", "truth", "verdict");
    for (name, is_bad, before, after) in &cases {
        let v = judge(before, after, &rules);
        let stopped = !v.passed;
        let why: Vec<String> = v.findings.iter().filter(|f| f.fails).take(2).map(|f| format!("`{}` {}", f.template, f.why)).collect();
        let shown = if why.is_empty() { format!("{} lines, {} templates, none failing", v.lines_after, v.templates) } else { why.join(" | ") };
        println!(
            "{name:40} {:5} {:7} {shown}{}",
            if *is_bad { "bad" } else { "good" },
            if stopped { "stopped" } else { "passed" },
            if stopped == *is_bad { "" } else { " (wrong)" }
        );
        if *is_bad {
            bad += 1;
            bad_stopped += usize::from(stopped);
        } else {
            good += 1;
            good_stopped += usize::from(stopped);
        }
    }
    println!("bad releases stopped: {bad_stopped} of {bad}; good releases stopped: {good_stopped} of {good}");
    // Where the suite stands (docs/logs.md): every bad release stopped; of the recorded traffic,
    // BGL's window holds 11 lines of FATAL templates its baseline has not (p = 0.0005), and
    // Zookeeper's one ERROR line of a template its baseline, which never wrote a one-off error, has not.
    assert_eq!(bad_stopped, bad, "every bad release stopped");
    assert!(good_stopped <= 2, "good releases stopped: {good_stopped} of {good} (2 when this was written)");
}

/// How `minEffect`'s default was chosen, kept so that it can be checked: on the tweets and the
/// artificial series only, the smallest effect (of 1.5 .. 5 by halves) that keeps at most 2% of
/// their good releases stopped; then on the traffic and ad-exchange series, which played no part.
#[test]
fn min_effect_chosen_on_half_the_files_holds_on_the_other_half() {
    use promote::analysis::kayenta::{Class, classify};
    let cases = metric_cases();
    let chosen_on = ["realTweets", "artificialWithAnomaly", "artificialNoAnomaly"];
    let rates = |k: f64, tuning: bool| {
        let mut s = settings();
        s.min_effect = k;
        let (mut b, mut bs, mut g, mut gs) = (0, 0, 0, 0);
        for c in cases.iter().filter(|c| chosen_on.contains(&c.family.as_str()) == tuning) {
            let stopped = classify(&c.new, &c.baseline, &s).class != Class::Pass;
            if c.bad {
                b += 1;
                bs += usize::from(stopped);
            } else {
                g += 1;
                gs += usize::from(stopped);
            }
        }
        (b, bs, g, gs)
    };
    let candidates = [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0];
    // Smallest effect (most bad releases stopped) whose good releases stopped stay within 2%.
    let k = candidates.iter().copied().find(|&k| {
        let (_, _, g, gs) = rates(k, true);
        gs * 50 <= g
    });
    assert_eq!(k, Some(2.5), "the default minEffect is what this procedure chooses");
    let (b, bs, g, gs) = rates(2.5, false);
    println!("held out: bad {bs} of {b}, good {gs} of {g}");
    assert!(gs * 50 <= g, "held out: {gs} of {g} good releases stopped");
}

/// The third measure of size (a third of the new samples past the baseline's far fence, material
/// by itself: docs/metrics.md) on each half of the suite's files: the releases it alone stops, none
/// of them good on either half.
#[test]
fn a_third_past_the_far_fence_stops_no_good_release_on_either_half() {
    use promote::analysis::kayenta::{Class, classify};
    let tuning = ["realTweets", "artificialWithAnomaly", "artificialNoAnomaly"];
    let mut added = [(0, 0), (0, 0)];
    for c in metric_cases() {
        let v = classify(&c.new, &c.baseline, &settings());
        if v.class == Class::Pass || !v.reason.contains("past its far fence)") {
            continue;
        }
        println!("{:32} {:5} {}", c.name, if c.bad { "bad" } else { "good" }, v.reason);
        let half = &mut added[usize::from(!tuning.contains(&c.family.as_str()))];
        if c.bad {
            half.0 += 1;
        } else {
            half.1 += 1;
        }
    }
    println!("stopped by this measure alone: tuning half {:?}, held out {:?} (bad, good)", added[0], added[1]);
    assert_eq!((added[0].1, added[1].1), (0, 0), "good releases stopped by a third past the far fence");
    assert!(added[0].0 >= 1, "the measure stops what it was made for (art_daily_jumpsup#a0)");
}

/// The kinds the third outside suite found passed (issue 32): a mean three times its baseline, at
/// 36% of it, at 29% of it, on noisy real series. Made from the suite's good releases: the same
/// real new window, every sample multiplied by the factor (a level change with the series' own
/// noise); windows that the factor leaves unchanged (all zeros) are left out.
pub fn scaled_cases() -> Vec<(f64, Case)> {
    let mut out = Vec::new();
    for c in metric_cases().into_iter().filter(|c| !c.bad) {
        for f in [3.0, 0.36, 0.29] {
            let new: Vec<f64> = c.new.iter().map(|v| v * f).collect();
            if new != c.new {
                out.push((f, Case { name: format!("{} x{f}", c.name), bad: true, new, ..c.clone() }));
            }
        }
    }
    out
}

/// Judged directly (the Prometheus path is the suite above's): how many of each factor stop, and
/// the message of each that passes. The material rule's second measure (a factor of 2.5 with a
/// third of the new samples beyond the baseline's range, docs/metrics.md) was chosen on the tweets
/// and artificial series and checked on the traffic and ad-exchange ones.
#[test]
fn the_metrics_judge_on_real_series_whose_level_changed() {
    use promote::analysis::kayenta::{Class, classify};
    let s = settings();
    let cases = scaled_cases();
    let mut by_factor: Vec<(f64, usize, usize)> = Vec::new();
    let mut held_out = (0, 0);
    for (f, c) in &cases {
        let v = classify(&c.new, &c.baseline, &s);
        let stopped = v.class != Class::Pass;
        if !stopped {
            println!("{:36} passed  {}", c.name, v.reason);
        }
        match by_factor.iter_mut().find(|b| b.0 == *f) {
            Some(b) => (b.1, b.2) = (b.1 + 1, b.2 + usize::from(stopped)),
            None => by_factor.push((*f, 1, usize::from(stopped))),
        }
        if ["realTraffic", "realAdExchange"].contains(&c.family.as_str()) {
            held_out = (held_out.0 + 1, held_out.1 + usize::from(stopped));
        }
        assert!(v.reason.contains("mean ") && v.reason.contains("p = ") && v.reason.contains("the baseline's range"), "{}", v.reason);
    }
    for (f, n, k) in &by_factor {
        println!("level x{f}: stopped {k} of {n}");
    }
    let stopped: usize = by_factor.iter().map(|b| b.2).sum();
    println!("all: {stopped} of {}; traffic and ad exchange (held out): {} of {}", cases.len(), held_out.1, held_out.0);
    // Where this stands (docs/metrics.md; the goal is every one): 298 of 393 with the second and
    // third measures, 215 with the sd rule alone; held out, 131 of 156 (81 with the sd rule alone).
    assert!(stopped >= 298, "level changes stopped: {stopped} of {} (298 when this was written)", cases.len());
    assert!(held_out.1 >= 131, "held out: {} of {} (131 when this was written)", held_out.1, held_out.0);
}

/// The measures a judge of two windows can read, per direction (up, down): the evidence (the
/// Mann-Whitney p-value when the shift is that way, or the bursts' chance, whichever is smaller,
/// negated so that larger is more), the mean's move in baseline sd, the log of the means' ratio,
/// the new samples beyond the baseline's range, and those beyond its far fence.
fn measures(c: &Case) -> [[f64; 5]; 2] {
    use promote::analysis::kayenta::classify;
    let v = classify(&c.new, &c.baseline, &settings());
    let p = v.p_value.unwrap_or(1.0);
    let (lo, hi) = (v.lower.unwrap_or(0.0), v.upper.unwrap_or(0.0));
    let mut b = c.baseline.clone();
    b.sort_by(f64::total_cmp);
    let (n, m) = (c.new.len() as f64, b.len() as f64);
    let (mb, mn) = (b.iter().sum::<f64>() / m, c.new.iter().sum::<f64>() / n);
    let sd = (b.iter().map(|x| (x - mb).powi(2)).sum::<f64>() / (m - 1.0)).sqrt();
    let delta = mn - mb;
    let up = lo > 0.0 || (hi >= 0.0 && lo <= 0.0 && delta > 0.0);
    let down = hi < 0.0 || (hi >= 0.0 && lo <= 0.0 && delta < 0.0);
    let q = |p: f64| b[((b.len() - 1) as f64 * p).round() as usize];
    let (q1, q3, blo, bhi) = (q(0.25), q(0.75), b[0], b[b.len() - 1]);
    let spread = if q3 > q1 { q3 - q1 } else { bhi - blo };
    let (fence_hi, fence_lo) = ((q3 + 3.0 * spread).max(bhi), (q1 - 3.0 * spread).min(blo));
    let count = |f: &dyn Fn(f64) -> bool| c.new.iter().filter(|v| f(**v)).count() as f64;
    let (far_up, far_down) = (count(&|v| v > fence_hi), count(&|v| v < fence_lo));
    let (above, below) = (count(&|v| v > bhi), count(&|v| v < blo));
    let chance = |k: f64| if k == 0.0 { 1.0 } else { (0..k as usize).map(|i| (n - i as f64) / (n + m - i as f64)).product::<f64>() };
    let effect = if sd > 0.0 { delta / sd } else { delta.signum() * f64::MAX };
    let level = if mb > 0.0 && mn > 0.0 {
        (mn / mb).ln()
    } else if mb == 0.0 {
        mn.signum() * f64::MAX
    } else {
        0.0
    };
    let p_up = if up { p } else { 1.0 }.min(chance(far_up));
    let p_down = if down { p } else { 1.0 }.min(chance(far_down));
    [[-p_up, effect, level, above, far_up], [-p_down, -effect, -level, below, far_down]]
}

/// How far the goal (every bad release stopped, at most 2% of good ones) is from what any judge of
/// these measures can do on this suite. A judge that reads the measures above the sensible way (a
/// release at least as extreme as another on every one of them, the same way, is stopped if the
/// other is) and stops a bad release stops every good release that is at least as extreme. The
/// best such judge, chosen knowing the answers (the two good releases it may stop picked over all
/// pairs), is a ceiling; docs/metrics.md gives it beside the judge's own figure.
#[test]
fn no_judge_of_these_measures_stops_every_bad_release_on_this_suite() {
    use promote::analysis::kayenta::{Class, classify};
    let cases = metric_cases();
    let m: Vec<[[f64; 5]; 2]> = cases.iter().map(measures).collect();
    let goods: Vec<usize> = (0..cases.len()).filter(|i| !cases[*i].bad).collect();
    let bads: Vec<usize> = (0..cases.len()).filter(|i| cases[*i].bad).collect();
    let at_least = |g: usize, b: usize, d: usize| (0..5).all(|k| m[g][d][k] >= m[b][d][k]);
    // Per bad release and direction: the good releases at least as extreme.
    let beaten: Vec<[Vec<usize>; 2]> = bads.iter().map(|&b| [0, 1].map(|d| goods.iter().copied().filter(|&g| at_least(g, b, d)).collect())).collect();
    let allowed = goods.len() / 50; // 2%
    let stoppable = |spent: &[usize]| beaten.iter().filter(|per| per.iter().any(|gs| gs.iter().all(|g| spent.contains(g)))).count();
    let mut best = (stoppable(&[]), Vec::new());
    for (a, &ga) in goods.iter().enumerate() {
        for &gb in &goods[a..] {
            let spent = if allowed >= 2 { vec![ga, gb] } else { vec![ga] };
            let k = stoppable(&spent);
            if k > best.0 {
                best = (k, spent);
            }
        }
    }
    let out_of_reach: Vec<&str> =
        bads.iter().zip(&beaten).filter(|(_, per)| per.iter().all(|gs| gs.len() > allowed)).map(|(b, _)| cases[*b].name.as_str()).collect();
    let judged = bads.iter().filter(|&&b| classify(&cases[b].new, &cases[b].baseline, &settings()).class != Class::Pass).count();
    println!("out of reach of any such judge within {allowed} good releases ({}): {out_of_reach:?}", out_of_reach.len());
    println!(
        "the best such judge, knowing the answers: {} of {} bad releases, stopping {:?}; promote's: {judged}",
        best.0,
        bads.len(),
        best.1.iter().map(|g| cases[*g].name.as_str()).collect::<Vec<_>>()
    );
    assert!(best.0 < bads.len(), "the goal is out of reach of a judge of these measures on this suite");
    assert!(judged <= best.0, "promote's judge is such a judge: {judged} > {}", best.0);
}
