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

/// The level a line's text shows.
pub fn level(text: &str) -> Level {
    let words = text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    let mut warn = false;
    for w in words {
        let upper = w.to_ascii_uppercase();
        match upper.as_str() {
            "ERROR" | "ERR" | "FATAL" | "SEVERE" | "CRITICAL" | "CRIT" | "PANIC" | "TRACEBACK" | "EMERG" | "ALERT" => return Level::Error,
            "WARN" | "WARNING" => warn = true,
            _ if upper.ends_with("EXCEPTION") || (upper.ends_with("ERROR") && w.len() > 5) => return Level::Error,
            _ => {}
        }
    }
    if warn { Level::Warning } else { Level::Info }
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
        let (fails, why) = match change {
            Change::New if ignored => (false, "new, but marked not a risk".to_string()),
            Change::New if pattern.is_some() => (true, format!("new, and matches `{}`", pattern.unwrap().as_str())),
            Change::New if lvl >= rules.new_at => (true, format!("new at {lvl:?} level").to_lowercase()),
            Change::New => (false, format!("new at {lvl:?} level (below what fails)").to_lowercase()),
            Change::Grown => match (rules.grown_at, factor) {
                (Some((at, limit)), Some(f)) if f > limit && lvl >= at && !ignored => {
                    (true, format!("{} level, {f:.1}x as frequent (limit {limit}x)", format!("{lvl:?}").to_lowercase()))
                }
                (_, Some(f)) if f > 1.0 => (false, format!("{f:.1}x as frequent")),
                _ => continue,
            },
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
}
