//! The log verdict: the lines after a deploy against a baseline, template by template. Each
//! template is known, known but more frequent, or new; new templates at error level (or matching
//! a configured pattern) and error templates whose rate grew fail the check.

use serde::Serialize;

use super::miner::{Config, Miner};

/// How a template's level is read from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Neither of the others.
    Info,
    /// `WARN`, `WARNING`.
    Warning,
    /// `ERROR`, `FATAL`, `SEVERE`, `CRITICAL`, `PANIC`, an exception or a traceback.
    Error,
}

/// Severity words, as log formats write a line's level.
const ERROR_LEVELS: &[&str] = &["ERROR", "ERR", "FATAL", "SEVERE", "CRITICAL", "CRIT", "PANIC", "EMERG", "EMERGENCY", "ALERT"];
const WARNING_LEVELS: &[&str] = &["WARN", "WARNING"];
const LOW_LEVELS: &[&str] = &["INFO", "INFORMATION", "NOTICE", "DEBUG", "TRACE", "VERBOSE", "FINE", "FINER", "FINEST", "CONFIG"];

/// Words and phrases that say something went wrong, in any format: a line without a level of its
/// own is at error level when it says one of these.
const FAILURE_WORDS: &[&str] = &[
    "fail",
    "failed",
    "fails",
    "failing",
    "failure",
    "failures",
    "crash",
    "crashed",
    "crashes",
    "crashing",
    "refused",
    "refuse",
    "denied",
    "unable",
    "cannot",
    "timeout",
    "timeouts",
    "unreachable",
    "abort",
    "aborted",
    "aborting",
    "panic",
    "panicked",
    "segfault",
    "corrupt",
    "corrupted",
    "exhausted",
    "rejected",
    "unavailable",
    "killed",
    "oom",
    "fatal",
    "errno",
];
const FAILURE_PHRASES: &[&str] =
    &["timed out", "time out", "could not", "couldn't", "can't", "out of memory", "segmentation fault", "not responding", "no space left"];

/// The level a line's text shows. A level the line writes itself decides: a severity word in
/// capitals (`ERROR`, `WARN`), or in any case where formats put one (`[error]`, `<warn>`,
/// `level=error`, `error:` at the start), or a one-letter level among the first fields (`E`, `W`
/// as logcat writes them, `E/Tag`). The level a line writes wins: `INFO ... KeeperException` is at info level. Without one, an
/// exception class (`IOException`, `Exception in thread`), a traceback, or a line that says
/// something failed (`failed`, `refused`, `timed out`, `unable to`, an HRESULT or NTSTATUS failure
/// code) is an error.
pub fn level(text: &str) -> Level {
    let mut written: Option<Level> = None;
    let note = |l: Level, written: &mut Option<Level>| *written = Some(written.map_or(l, |w| w.max(l)));
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut exception = false;
    for (i, raw) in tokens.iter().enumerate() {
        // One-letter levels (logcat's `E`, `W`, `I`): after the header fields only (every token
        // before it has a digit: date, time, pid), or as `E/Tag` — never an `A` or `I` in prose.
        if i < 8 {
            let letter = raw.split('/').next().unwrap_or("");
            let after_header = tokens[..i].iter().all(|t| t.bytes().any(|b| b.is_ascii_digit())) && i > 0;
            let tag = raw.split_once('/').map_or("", |(_, t)| t);
            let tagged = letter.len() == 1 && tag.len() >= 2 && tag.starts_with(|c: char| c.is_ascii_uppercase());
            if (raw.len() == 1 && after_header) || tagged {
                match letter {
                    "E" | "F" | "A" => note(Level::Error, &mut written),
                    "W" => note(Level::Warning, &mut written),
                    "I" | "D" | "V" => note(Level::Info, &mut written),
                    _ => {}
                }
            }
        }
        let bracketed = raw.starts_with(['[', '<', '(']) || raw.ends_with([']', '>', ')']);
        let keyed = raw.to_ascii_lowercase().starts_with("level=") || raw.to_ascii_lowercase().starts_with("severity=");
        let leading_colon = i < 8 && raw.ends_with(':');
        for w in raw.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').filter(|w| !w.is_empty()) {
            let upper = w.to_ascii_uppercase();
            let capitals = w == upper && w.chars().any(|c| c.is_ascii_alphabetic());
            let placed = capitals || bracketed || keyed || leading_colon;
            if placed && ERROR_LEVELS.contains(&upper.as_str()) && (capitals || upper != "ALERT") {
                note(Level::Error, &mut written);
            } else if placed && WARNING_LEVELS.contains(&upper.as_str()) {
                note(Level::Warning, &mut written);
            } else if placed && LOW_LEVELS.contains(&upper.as_str()) {
                note(Level::Info, &mut written);
            }
            // An exception class or a traceback: `NullPointerException`, `Exception`, `EXCEPTION`.
            if (w.ends_with("Exception") && w.len() >= 9)
                || w == "EXCEPTION"
                || w == "Traceback"
                || (w.ends_with("Error") && w.len() > 5 && w.starts_with(|c: char| c.is_ascii_uppercase()))
            {
                exception = true;
            }
        }
    }
    if let Some(l) = written {
        return l;
    }
    if exception || failure_code(text) || says_failure(text) { Level::Error } else { Level::Info }
}

/// Whether the text says something failed (a failure word or phrase, any case).
fn says_failure(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.split(|c: char| !c.is_ascii_alphanumeric() && c != '\'').any(|w| FAILURE_WORDS.contains(&w)) || FAILURE_PHRASES.iter().any(|p| lower.contains(p))
}

/// An HRESULT or NTSTATUS code with its failure bit (`0x80070005`, `0xC0000005`).
fn failure_code(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
        let hex = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X"));
        hex.is_some_and(|h| h.len() == 8 && h.chars().all(|c| c.is_ascii_hexdigit()) && matches!(h.as_bytes()[0], b'8' | b'9' | b'a'..=b'f' | b'A'..=b'F'))
    })
}

/// How unlikely a template's growth must be by chance to count.
pub const GROWTH_ALPHA: f64 = 0.01;

/// P(X >= k) for X ~ Binomial(n, p), summed in log space (exact; n is a template's lines).
pub fn binomial_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let ln_choose = |n: u64, i: u64| libm::lgamma(n as f64 + 1.0) - libm::lgamma(i as f64 + 1.0) - libm::lgamma((n - i) as f64 + 1.0);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let terms: Vec<f64> = (k..=n).map(|i| ln_choose(n, i) + i as f64 * lp + (n - i) as f64 * lq).collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()).exp().min(1.0)
}

/// P(X >= k) for X ~ Poisson(lambda) (1 for k = 0; 0 for k > 0 at lambda = 0).
pub fn poisson_tail(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    // 1 - P(X < k), summed in logs.
    let below: f64 = (0..k).map(|i| (i as f64 * lambda.ln() - lambda - libm::lgamma(i as f64 + 1.0)).exp()).sum();
    (1.0 - below).clamp(0.0, 1.0)
}

/// What the verdict looks for.
#[derive(Debug, Clone)]
pub struct Rules {
    /// New templates at this level or above fail.
    pub new_at: Level,
    /// Templates at this level or above fail when their rate grows by more than `factor`
    /// (`None`: growth does not fail).
    pub grown_at: Option<(Level, f64)>,
    /// A new template matching one of these fails whatever its level.
    pub patterns: Vec<regex::Regex>,
    /// Template texts a person marked "not a risk": ignored.
    pub ignored: Vec<String>,
}

/// Why a template is in the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Not seen in the baseline.
    New,
    /// Seen in the baseline, more often now.
    Grown,
}

/// A template worth a look.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The template's text.
    pub template: String,
    /// Its level.
    pub level: Level,
    /// New or grown.
    pub change: Change,
    /// Lines in the baseline.
    pub before: u64,
    /// Lines after the deploy.
    pub after: u64,
    /// Its share of the lines after / its share before (None when new).
    pub factor: Option<f64>,
    /// Up to three lines of it, after the deploy.
    pub samples: Vec<String>,
    /// Whether it fails the check (else it is reported only).
    pub fails: bool,
    /// Why it fails, or why not.
    pub why: String,
}

/// The verdict with its evidence.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Lines read before and after.
    pub lines_before: usize,
    /// Lines after.
    pub lines_after: usize,
    /// Templates in all.
    pub templates: usize,
    /// New and grown templates (failing ones first).
    pub findings: Vec<Finding>,
    /// Whether the check passes.
    pub passed: bool,
}

/// Judges the lines `after` the deploy against the `before` ones. Rates are shares of all lines of
/// a window, so that more or less traffic alone changes nothing.
pub fn judge(before: &[String], after: &[String], rules: &Rules) -> Verdict {
    // Pass 1 mines both windows; pass 2 puts every line in its final template, so that a line is
    // counted where lines like it ended up, whichever window it came from.
    let mut miner = Miner::new(Config::default());
    let first: Vec<u32> = before.iter().chain(after).map(|l| miner.add(l)).collect();
    miner.finish();
    let n = miner.templates().len();
    let (mut count_before, mut count_after) = (vec![0u64; n], vec![0u64; n]);
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); n];
    for (i, l) in before.iter().chain(after).enumerate() {
        let id = miner.find(l).map_or(first[i], |t| t.id) as usize;
        if i < before.len() {
            count_before[id] += 1;
        } else {
            count_after[id] += 1;
            if samples[id].len() < 3 {
                samples[id].push(l.clone());
            }
        }
    }
    // New templates at a failing level are judged together, on evidence: how likely it is that
    // all their lines would fall after the deploy by chance, given the two windows' sizes (a rare
    // error of the recorded traffic lands in either window; ten lines of one never seen before do
    // not). With no baseline there is nothing to tell chance by: they fail.
    let share = after.len() as f64 / (before.len() + after.len()).max(1) as f64;
    let new_error_lines: u64 = miner
        .templates()
        .iter()
        .filter(|t| {
            let id = t.id as usize;
            count_before.get(id) == Some(&0)
                && count_after.get(id).is_some_and(|a| *a > 0)
                && samples[id].iter().map(|s| level(s)).max().unwrap_or(Level::Info) >= rules.new_at
                && !rules.ignored.contains(&t.text())
        })
        .map(|t| count_after[t.id as usize])
        .sum();
    // Two ways to know chance, and either is evidence enough: (1) the windows' sizes, the chance
    // that all those lines fall after the deploy (binomial); (2) how often the baseline itself
    // wrote a one-off error (Good-Turing: error templates seen once there, per baseline line),
    // the chance of this many new error lines in a window this long at that rate (Poisson). A
    // baseline that never wrote a one-off error makes one new error line enough.
    let singletons = miner.templates().iter().filter(|t| count_before.get(t.id as usize) == Some(&1) && level(&t.text()) >= rules.new_at).count();
    let lambda = after.len() as f64 * singletons as f64 / before.len().max(1) as f64;
    let p_volume = binomial_tail(new_error_lines, new_error_lines, share);
    let p_rate = poisson_tail(new_error_lines, lambda);
    let p_new = if before.is_empty() { 0.0 } else { p_volume.min(p_rate) };
    let mut findings = Vec::new();
    for t in miner.templates() {
        let id = t.id as usize;
        let (b, a) = (count_before.get(id).copied().unwrap_or(0), count_after.get(id).copied().unwrap_or(0));
        if a == 0 {
            continue;
        }
        let text = t.text();
        let lvl = samples[id].iter().map(|s| level(s)).max().unwrap_or(Level::Info);
        let ignored = rules.ignored.contains(&text);
        let (change, factor) = if b == 0 {
            (Change::New, None)
        } else {
            let f = (a as f64 / after.len() as f64) / (b as f64 / before.len() as f64);
            (Change::Grown, Some(f))
        };
        let pattern = rules.patterns.iter().find(|p| samples[id].iter().any(|s| p.is_match(s)) || p.is_match(&text));
        // Growth needs evidence, not a ratio: given the template's lines in both windows, how
        // likely this many of them would fall after the deploy if its share had not changed.
        let p_grown = (b > 0).then(|| binomial_tail(a, a + b, after.len() as f64 / (before.len() + after.len()) as f64));
        let (fails, why) = match change {
            Change::New if ignored => (false, "new, but marked not a risk".to_string()),
            Change::New if pattern.is_some() => (true, format!("new, and matches `{}`", pattern.unwrap().as_str())),
            Change::New if lvl >= rules.new_at => {
                let lvl = format!("{lvl:?}").to_lowercase();
                let f = crate::analysis::fmt_f64;
                let evidence = format!(
                    "{new_error_lines} line(s) of new templates at a failing level after the deploy: p = {} by the windows' sizes, p = {} by the baseline's {singletons} one-off error template(s); p = {}",
                    f(p_volume),
                    f(p_rate),
                    f(p_new)
                );
                if p_new < GROWTH_ALPHA {
                    (true, format!("new at {lvl} level ({evidence} < {GROWTH_ALPHA})"))
                } else {
                    (false, format!("new at {lvl} level, but too few lines to tell from chance ({evidence} >= {GROWTH_ALPHA})"))
                }
            }
            Change::New => (false, format!("new at {lvl:?} level (below what fails)").to_lowercase()),
            Change::Grown => {
                let p = p_grown.unwrap_or(1.0);
                let evidence = format!("{f:.1}x as frequent, p = {}", crate::analysis::fmt_f64(p), f = factor.unwrap_or(1.0));
                match (rules.grown_at, factor) {
                    (Some((at, limit)), Some(f)) if f > limit && p < GROWTH_ALPHA && (lvl >= at || pattern.is_some()) && !ignored => {
                        let what = match pattern {
                            Some(pat) if lvl < at => format!("matches `{}`", pat.as_str()),
                            _ => format!("{} level", format!("{lvl:?}").to_lowercase()),
                        };
                        (true, format!("{what}, {evidence} (limit {limit}x, p < {GROWTH_ALPHA})"))
                    }
                    (Some((_, limit)), Some(f)) if f > limit && p >= GROWTH_ALPHA => {
                        (false, format!("{evidence}: too few lines to tell from chance (p >= {GROWTH_ALPHA})"))
                    }
                    (_, Some(f)) if f > 1.0 => (false, evidence),
                    _ => continue,
                }
            }
        };
        findings.push(Finding { template: text, level: lvl, change, before: b, after: a, factor, samples: samples[id].clone(), fails, why });
    }
    findings.sort_by(|x, y| y.fails.cmp(&x.fails).then(y.level.cmp(&x.level)).then(y.after.cmp(&x.after)));
    let passed = !findings.iter().any(|f| f.fails);
    Verdict { lines_before: before.len(), lines_after: after.len(), templates: miner.templates().len(), findings, passed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_from_text() {
        assert_eq!(level("2024-01-01 ERROR something broke"), Level::Error);
        assert_eq!(level("java.lang.NullPointerException: x"), Level::Error);
        assert_eq!(level("[WARN] slow disk"), Level::Warning);
        assert_eq!(level("INFO all good, no errors"), Level::Info);
    }

    fn lines(pattern: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| pattern.replace("{}", &i.to_string())).collect()
    }

    #[test]
    fn growth_needs_evidence_not_a_ratio() {
        let rules = Rules { new_at: Level::Error, grown_at: Some((Level::Error, 5.0)), patterns: vec![], ignored: vec![] };
        let normal = lines("INFO request {} served", 500);
        // One baseline error line, eight after: 8x, but p = 0.02.
        let mut before = normal.clone();
        before.push("ERROR db call 1 failed".into());
        let mut after = normal.clone();
        after.extend(lines("ERROR db call {} failed", 8));
        let v = judge(&before, &after, &rules);
        assert!(v.passed, "{:?}", v.findings);
        assert!(v.findings[0].why.contains("too few lines to tell from chance"), "{}", v.findings[0].why);
        // Thirty after: it counts.
        let mut after = normal.clone();
        after.extend(lines("ERROR db call {} failed", 30));
        let v = judge(&before, &after, &rules);
        assert!(!v.passed && v.findings[0].why.contains("p < 0.01"), "{:?}", v.findings);
        assert!((binomial_tail(8, 9, 0.5) - 10.0 / 512.0).abs() < 1e-12);
    }

    #[test]
    fn a_new_error_needs_evidence_from_the_windows_or_the_baselines_habit() {
        let rules = Rules { new_at: Level::Error, grown_at: None, patterns: vec![], ignored: vec![] };
        let mut before = lines("INFO served request", 200);
        let crash = |n: usize| (0..n).map(|i| format!("ERROR worker {i} crashed: disk full")).collect::<Vec<_>>();
        // A baseline that never wrote a one-off error: one new error line is enough.
        let mut after = lines("INFO served request", 200);
        after.extend(crash(1));
        let v = judge(&before, &after, &rules);
        assert!(!v.passed && v.findings[0].why.contains("the baseline's 0 one-off error template(s)"), "{:?}", v.findings);
        // A baseline that writes one-off errors of its own, as long as the window: one is chance,
        // eight are not (0.5^8 < 0.01).
        before.extend(["ERROR cache miss storm", "ERROR slow disk on sdb", "ERROR lost heartbeat from peer"].map(String::from));
        let v = judge(&before, &after, &rules);
        assert!(v.passed && v.findings[0].why.contains("too few lines to tell from chance"), "{:?}", v.findings);
        let mut after = lines("INFO served request", 200);
        after.extend(crash(8));
        assert!(!judge(&before, &after, &rules).passed);
        assert_eq!(poisson_tail(0, 2.0), 1.0);
        assert!((poisson_tail(1, 2.0) - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        assert_eq!(poisson_tail(1, 0.0), 0.0);
    }

    #[test]
    fn an_error_pattern_counts_for_growth_too() {
        let rules =
            Rules { new_at: Level::Error, grown_at: Some((Level::Error, 2.0)), patterns: vec![regex::Regex::new("slow query").unwrap()], ignored: vec![] };
        let normal = lines("INFO request {} served", 200);
        let mut before = normal.clone();
        before.extend(lines("INFO slow query {} ms", 2));
        let mut after = normal.clone();
        after.extend(lines("INFO slow query {} ms", 40));
        let v = judge(&before, &after, &rules);
        assert!(!v.passed, "{:?}", v.findings);
        assert!(v.findings[0].why.starts_with("matches `slow query`"), "{}", v.findings[0].why);
    }

    #[test]
    fn failures_said_in_other_words_are_errors() {
        for line in [
            "sshd[24200]: Failed password for root from 5.36.59.76 port 42393 ssh2",
            "connect to 10.0.0.7:5432 refused",
            "worker 3 crashed, restarting",
            "permission denied while opening /var/lib/app",
            "request to payments timed out after 30s",
            "unable to resolve host db-1",
            "03-17 16:13:38.811  1702  2395 E WindowManager: removeWindowToken: Attempted to remove non-existing token",
            "E/AndroidRuntime( 1234): FATAL EXCEPTION: main",
            "CBS Failed to process single phase execution. [HRESULT = 0x800f0816 - CBS_E_DPX_JOB_STATE_SAVED]",
            "Loading driver returned status 0xC0000034",
        ] {
            assert_eq!(level(line), Level::Error, "{line}");
        }
        assert_eq!(level("03-17 16:13:38.811  1702  8671 W ActivityManager: Unable to start service"), Level::Warning);
        assert_eq!(level("[error] [client 10.1.1.1] Directory index forbidden by rule"), Level::Error);
    }

    #[test]
    fn words_that_only_look_like_errors_are_not() {
        for line in [
            "jk2_init() Found child 6725 in scoreboard slot 10; C++ exception support enabled... done",
            "TLS: received CLOSE_NOTIFY alert, closing connection",
            "INFO retry 2 of 3 after a failed attempt",
            "03-17 16:13:38.811  1702  2395 I PowerManager: screen on",
            "processed 120 requests, 0 errors",
            "A new session was opened for alice",
            "I/O scheduler cfq registered",
            "status 0x00000000 ok",
        ] {
            assert_ne!(level(line), Level::Error, "{line}");
        }
    }
}
