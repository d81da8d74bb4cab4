//! The log verdict: the lines after a deploy against a baseline, template by template. Each
//! template is known, known but more frequent, or new; new templates at error level or whose
//! words say failure (or matching a configured pattern), and such templates whose rate grew, fail
//! the check, on evidence. A line's level is read where its log's format puts it.

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

/// The vocabulary of failure: words that say something went wrong, whatever the level a line
/// was written at, in the languages logs are written in. English (most logs): ...
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
    "traceback",
    "unhandled",
    "uncaught",
    "deadlock",
    "overflow",
    "broken",
    // ... German, French, Spanish, Portuguese, Italian, Russian (lower case: compared so) ...
    "fehler",
    "fehlgeschlagen",
    "abgestürzt",
    "erreur",
    "échec",
    "échoué",
    "fallo",
    "falló",
    "fallido",
    "falha",
    "falhou",
    "erro",
    "errore",
    "fallito",
    "ошибка",
    "сбой",
    "отказ",
];
/// ... phrases, and (matched anywhere: these scripts do not separate words by spaces) Chinese,
/// Japanese and Korean; the idioms of runtimes: Java's `Caused by:`, Go's `goroutine ... [running]`
/// after a `panic:`, a C program's `core dumped`, .NET's `Unhandled exception`.
const FAILURE_PHRASES: &[&str] = &[
    "timed out",
    "time out",
    "could not",
    "couldn't",
    "can't",
    "out of memory",
    "segmentation fault",
    "not responding",
    "no space left",
    "exception thrown",
    "threw an exception",
    "threw exception",
    "exception occurred",
    "exception caught",
    "caught exception",
    "got exception",
    "end of stream exception",
    "caused by:",
    "core dumped",
    "stack trace",
    "错误",
    "失败",
    "异常",
    "崩溃",
    "エラー",
    "失敗",
    "例外",
    "오류",
    "실패",
];

/// Words after which `error` or `errors` is a count or a denial (`0 errors`, `no error`), not a
/// failure.
const NOT_AN_ERROR_BEFORE: &[&str] = &["0", "no", "zero", "without", "ignoring", "ignore"];

/// The level a line's text shows, as [`Format::level`] reads it with no knowledge of its log's
/// format (every column allowed), and the vocabulary of failure where it writes none. A level the
/// line writes wins for its level: `INFO ... KeeperException` is at info level (but says failure:
/// see [`failure`]).
pub fn level(text: &str) -> Level {
    Format::ANY.level(text)
}

/// Where a log's format puts a line's level: the columns (whitespace-separated fields, among the
/// first ten) that hold a severity word on at least a tenth of its lines, at most half of them
/// error levels. A severity word
/// anywhere else is text (`A new session`, `I/O error`, a node called `E`), and a log whose
/// lines write no level has none: failure is then read from the words alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The level columns; `None`: any column (the format is not known).
    columns: Option<Vec<usize>>,
}

/// Columns a level may stand in, from the start of a line.
const LEVEL_COLUMNS: usize = 10;

impl Format {
    /// No knowledge of the format: a level is read in any of the first columns.
    pub const ANY: Format = Format { columns: None };

    /// The format of a log, from its lines.
    pub fn detect<'a>(lines: impl IntoIterator<Item = &'a str>) -> Format {
        // Per column: fields naming a level, and of them those below error.
        let mut counts = [(0usize, 0usize); LEVEL_COLUMNS];
        let mut n = 0usize;
        for line in lines {
            n += 1;
            for (i, tok) in line.split_whitespace().take(LEVEL_COLUMNS).enumerate() {
                if let Some(l) = severity(tok) {
                    counts[i].0 += 1;
                    counts[i].1 += usize::from(l < Level::Error);
                }
            }
        }
        // Most lines of a log are not errors: a column that says error on most of its lines is
        // a field of another kind (a node class `A`, a flag `E`), not the level.
        Format { columns: Some((0..LEVEL_COLUMNS).filter(|&i| counts[i].0 > 0 && counts[i].0 * 10 >= n && counts[i].1 * 2 >= counts[i].0).collect()) }
    }

    /// The level the line writes where its format puts it (or as `level=` / `severity=`, which
    /// say what they are anywhere), else the vocabulary's: error when it says failure, info
    /// otherwise.
    pub fn level(&self, text: &str) -> Level {
        self.written(text).unwrap_or(if failure(text).is_some() { Level::Error } else { Level::Info })
    }

    /// The level the line writes, if it writes one where its format puts it.
    pub fn written(&self, text: &str) -> Option<Level> {
        let mut written: Option<Level> = None;
        let mut note = |l: Level| written = Some(written.map_or(l, |w| w.max(l)));
        if let Some(l) = json_level(text) {
            note(l);
        }
        for (i, tok) in text.split_whitespace().enumerate() {
            let lower = tok.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("level=").or_else(|| lower.strip_prefix("severity=")).or_else(|| lower.strip_prefix("lvl=")) {
                if let Some(l) = severity(v) {
                    note(l);
                }
                continue;
            }
            let placed = match &self.columns {
                Some(cols) => cols.contains(&i),
                None => i < 8,
            };
            if !placed {
                // A severity word in capitals among the first fields says what it is in any
                // format (a line of another format among this log's: `ERROR`, `[FATAL]`); a
                // letter or a word in lower case does not.
                let word = tok.trim_matches(|c: char| !c.is_ascii_alphanumeric());
                if i < 8
                    && word.len() >= 4
                    && word.bytes().all(|b| b.is_ascii_uppercase())
                    && let Some(l) = severity(word)
                {
                    note(l);
                }
                continue;
            }
            match &self.columns {
                Some(_) => {
                    if let Some(l) = severity(tok) {
                        note(l);
                    }
                }
                // Not knowing the format: capitals, brackets, a colon, or a one-letter level
                // after the header fields (every field before it has a digit) or as `E/Tag`.
                None => {
                    let letter = tok.len() == 1 || tok.split_once('/').is_some_and(|(l, t)| l.len() == 1 && t.starts_with(|c: char| c.is_ascii_uppercase()));
                    let after_header = i > 0 && text.split_whitespace().take(i).all(|t| t.bytes().any(|b| b.is_ascii_digit()));
                    let word = tok.trim_matches(|c: char| !c.is_ascii_alphanumeric());
                    let shaped =
                        (word.len() > 1 && word.bytes().all(|b| b.is_ascii_uppercase())) || tok.starts_with(['[', '<', '(']) || tok.ends_with([']', '>', ':']);
                    if ((letter && (after_header || tok.contains('/'))) || (!letter && shaped))
                        && let Some(l) = severity(tok)
                    {
                        note(l);
                    }
                }
            }
        }
        written
    }
}

/// A JSON line's top-level fields that name its level, as logging libraries write them, in the
/// order they are asked: zap's and slog's `level`, Google Cloud's `severity`, log15's `lvl`,
/// Python's `levelname`, Elastic's `log.level`, PostgreSQL's `error_severity` (bunyan and pino
/// write `level` as a number: 50 and up an error, 40 a warning). Other fields are skipped
/// unread; a nested `severity` (an alert's, a setting's) is not the line's.
#[derive(serde::Deserialize)]
struct JsonLevel {
    level: Option<serde_json::Value>,
    severity: Option<serde_json::Value>,
    lvl: Option<serde_json::Value>,
    levelname: Option<serde_json::Value>,
    #[serde(rename = "log.level")]
    log_level: Option<serde_json::Value>,
    error_severity: Option<serde_json::Value>,
}

/// Lines longer than this are not read as JSON for their level (nor mined as structured lines):
/// what a line's parse may cost stays bounded.
pub const MAX_STRUCTURED_LINE: usize = super::mask::MAX_STRUCTURED_LINE;

/// The level a JSON line's level field names (`"level":"error"`, `"severity": "WARNING"`,
/// `"level":50`), if the line is a JSON object with one at its top level: the first of
/// [`JsonLevel`]'s fields that it has and that names a level.
fn json_level(text: &str) -> Option<Level> {
    let t = text.trim();
    if !(t.starts_with('{') && t.ends_with('}')) || t.len() > MAX_STRUCTURED_LINE {
        return None;
    }
    let j: JsonLevel = serde_json::from_str(t).ok()?;
    let named = |v: &Option<serde_json::Value>, numeric: bool| match v {
        Some(serde_json::Value::String(s)) => severity(s),
        Some(serde_json::Value::Number(n)) if numeric => n.as_f64().map(|n| match n {
            n if n >= 50.0 => Level::Error,
            n if n >= 40.0 => Level::Warning,
            _ => Level::Info,
        }),
        _ => None,
    };
    named(&j.level, true)
        .or_else(|| named(&j.severity, false))
        .or_else(|| named(&j.lvl, false))
        .or_else(|| named(&j.levelname, false))
        .or_else(|| named(&j.log_level, false))
        .or_else(|| named(&j.error_severity, false))
}

/// The level a field names: a severity word (any case, in brackets or not: `ERROR`, `[error]`,
/// `<warn>`, `Info,`), or a one-letter level as Android's logcat writes it (`E`, `W`, `I`, `D`,
/// `V`, `F`, `A`; also `E/Tag`).
fn severity(field: &str) -> Option<Level> {
    let letter = field.split('/').next().unwrap_or("");
    if letter.len() == 1 && (field.len() == 1 || field.split_once('/').is_some_and(|(_, t)| t.len() >= 2 && t.starts_with(|c: char| c.is_ascii_uppercase()))) {
        return match letter {
            "E" | "F" | "A" => Some(Level::Error),
            "W" => Some(Level::Warning),
            "I" | "D" | "V" => Some(Level::Info),
            _ => None,
        };
    }
    let word = field.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if word.len() < 3 || word.len() > 11 || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let upper = word.to_ascii_uppercase();
    // A lower-case `alert` is a TLS alert, not a level.
    if ERROR_LEVELS.contains(&upper.as_str()) && (upper != "ALERT" || word == upper) {
        Some(Level::Error)
    } else if WARNING_LEVELS.contains(&upper.as_str()) {
        Some(Level::Warning)
    } else if LOW_LEVELS.contains(&upper.as_str()) {
        Some(Level::Info)
    } else {
        None
    }
}

/// What in a line says that something failed, if anything: an exception class
/// (`NullPointerException`, `EXCEPTION`) or an error class (`IOError`), a failure word or phrase
/// of the vocabulary (also inside an identifier: `onConnectionFailed`), `error` or `errors` not
/// counted or denied (`error : disk`, not `0 errors`), or a Windows failure code (an HRESULT or
/// NTSTATUS with its failure bit). The word found, for the verdict to show.
pub fn failure(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    if let Some(p) = FAILURE_PHRASES.iter().find(|p| lower.contains(*p)) {
        return Some(p.to_string());
    }
    let mut previous = String::new();
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\'')).filter(|w| !w.is_empty()) {
        if (raw.ends_with("Exception") && raw.len() >= 9)
            || raw == "EXCEPTION"
            || (raw.ends_with("Error") && raw.len() > 5 && raw.starts_with(|c: char| c.is_ascii_uppercase()))
        {
            return Some(raw.to_string());
        }
        let w = raw.to_lowercase();
        if FAILURE_WORDS.contains(&w.as_str()) {
            return Some(w);
        }
        let counted = NOT_AN_ERROR_BEFORE.contains(&previous.as_str()) || (!previous.is_empty() && previous.bytes().all(|b| b.is_ascii_digit()));
        if (w == "error" || w == "errors") && !counted {
            return Some(w);
        }
        // Words inside an identifier: `onConnectionFailed`, `task_failed` (not `timeout`: a
        // setting's name, `maxSessionTimeout`).
        if let Some(part) = camel_parts(raw).map(str::to_lowercase).find(|p| matches!(p.as_str(), "failed" | "failure" | "crashed" | "refused" | "aborted")) {
            return Some(part);
        }
        previous = w;
    }
    failure_code(text).then(|| "a failure code".to_string())
}

/// The parts of an identifier, split at `_` and where a lower-case letter meets a capital.
fn camel_parts(word: &str) -> impl Iterator<Item = &str> {
    let mut cuts = vec![0];
    let b = word.as_bytes();
    for i in 1..b.len() {
        if b[i] == b'_' || (b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase()) {
            cuts.push(i);
        }
    }
    cuts.push(b.len());
    (0..cuts.len() - 1).map(move |k| word[cuts[k]..cuts[k + 1]].trim_start_matches('_')).filter(|p| !p.is_empty())
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
    // A line of each template from the baseline, for the templates seen only there.
    let mut seen: Vec<Option<&String>> = vec![None; n];
    for (i, l) in before.iter().chain(after).enumerate() {
        let id = miner.find(l).map_or(first[i], |t| t.id) as usize;
        if i < before.len() {
            count_before[id] += 1;
            seen[id].get_or_insert(l);
        } else {
            count_after[id] += 1;
            if samples[id].len() < 3 {
                samples[id].push(l.clone());
            }
        }
    }
    // Where this log writes its levels; each template's level and what in it says failure (a
    // template whose words say failure is judged whatever its level).
    let format = Format::detect(before.iter().chain(after).map(String::as_str));
    let lines_of = |id: usize| samples[id].iter().chain(seen[id]);
    let levels: Vec<Level> = (0..n).map(|id| lines_of(id).map(|l| format.level(l)).max().unwrap_or(Level::Info)).collect();
    let failures: Vec<Option<String>> = (0..n).map(|id| lines_of(id).find_map(|l| failure(l))).collect();
    let judged = |id: usize, at: Level| levels[id] >= at || failures[id].is_some();
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
            count_before.get(id) == Some(&0) && count_after.get(id).is_some_and(|a| *a > 0) && judged(id, rules.new_at) && !rules.ignored.contains(&t.text())
        })
        .map(|t| count_after[t.id as usize])
        .sum();
    // Two ways to know chance, and either is evidence enough: (1) the windows' sizes, the chance
    // that all those lines fall after the deploy (binomial); (2) how often the baseline itself
    // wrote a one-off error (Good-Turing: error templates seen once there, per baseline line),
    // the chance of this many new error lines in a window this long at that rate (Poisson). A
    // baseline that never wrote a one-off error makes one new error line enough.
    let singletons = miner.templates().iter().filter(|t| count_before.get(t.id as usize) == Some(&1) && judged(t.id as usize, rules.new_at)).count();
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
        let lvl = levels[id];
        let says = failures[id].as_deref().map(|w| format!(", says `{w}`")).unwrap_or_default();
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
            Change::New if judged(id, rules.new_at) => {
                let lvl = format!("{lvl:?}").to_lowercase();
                let f = crate::analysis::fmt_f64;
                let evidence = format!(
                    "{new_error_lines} line(s) of new templates at a failing level or saying failure after the deploy: p = {} by the windows' sizes, p = {} by the baseline's {singletons} one-off error template(s); p = {}",
                    f(p_volume),
                    f(p_rate),
                    f(p_new)
                );
                if p_new < GROWTH_ALPHA {
                    (true, format!("new at {lvl} level{says} ({evidence} < {GROWTH_ALPHA})"))
                } else {
                    (false, format!("new at {lvl} level{says}, but too few lines to tell from chance ({evidence} >= {GROWTH_ALPHA})"))
                }
            }
            Change::New => (false, format!("new at {lvl:?} level (below what fails)").to_lowercase()),
            Change::Grown => {
                let p = p_grown.unwrap_or(1.0);
                let evidence = format!("{f:.1}x as frequent, p = {}", crate::analysis::fmt_f64(p), f = factor.unwrap_or(1.0));
                match (rules.grown_at, factor) {
                    (Some((at, limit)), Some(f)) if f > limit && p < GROWTH_ALPHA && (judged(id, at) || pattern.is_some()) && !ignored => {
                        let what = match pattern {
                            Some(pat) if !judged(id, at) => format!("matches `{}`", pat.as_str()),
                            _ => format!("{} level{says}", format!("{lvl:?}").to_lowercase()),
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

    #[test]
    fn failure_is_read_from_the_words_whatever_the_level() {
        for (line, word) in [
            ("2015-10-18 18:01:47,978 INFO [main] Task: exception thrown while committing", "exception thrown"),
            ("INFO session.onConnectionFailed id=4", "failed"),
            ("error : cannot open /var/lib/x", "error"),
            ("error : disk quota", "error"),
            ("WARN worker service crashed, restarting", "crashed"),
            ("Verbindung fehlgeschlagen: Zeitüberschreitung", "fehlgeschlagen"),
            ("échec de la connexion au serveur", "échec"),
            ("数据库连接失败", "失败"),
            ("Caused by: java.net.ConnectException: Connection refused", "caused by:"),
            ("Loading driver returned status 0xC0000034", "a failure code"),
        ] {
            assert_eq!(failure(line).as_deref(), Some(word), "{line}");
        }
        for line in [
            "processed 120 requests, 0 errors",
            "no error found",
            "jk2_init() Found child 6725 in scoreboard slot 10; C++ exception support enabled",
            "status 0x00000000 ok",
        ] {
            assert_eq!(failure(line), None, "{line}");
        }
    }

    #[test]
    fn levels_are_read_where_the_format_puts_them() {
        // Level in the third column on most lines: a one-letter field elsewhere is not a level.
        let log: Vec<String> = (0..20).map(|i| format!("17/06/09 20:10:{i:02} INFO storage.BlockManager: stored block {i}")).collect();
        let format = Format::detect(log.iter().map(String::as_str));
        assert_eq!(format.written("17/06/09 20:10:40 ERROR executor.Executor: lost"), Some(Level::Error));
        assert_eq!(format.written("17/06/09 20:10:40 INFO node E is up"), Some(Level::Info));
        // A log that writes no level: a header field that looks like one is text.
        let log: Vec<String> = (0..20).map(|i| format!("2016 0{} 12 A sshd[{i}]: session opened for user root", i % 9)).collect();
        let format = Format::detect(log.iter().map(String::as_str));
        assert_eq!(format.written("2016 01 12 A sshd[1]: session opened for user root"), None);
        assert_eq!(format.level("2016 01 12 E sshd[1]: connection closed"), Level::Info);
        assert_eq!(Format::ANY.written("2016 01 12 E sshd[1]: connection closed"), Some(Level::Error), "without the log, the letter is taken");
        assert_eq!(format.written("ts=1 level=error msg=boom"), Some(Level::Error), "level= says what it is anywhere");
        // JSON lines name their level in a field, as their libraries call it.
        for (line, level) in [
            (r#"{"ts":1,"level":"error","msg":"payment declined"}"#, Some(Level::Error)),
            (r#"{"timestamp":"x","error_severity":"FATAL","message":"the database system is shutting down"}"#, Some(Level::Error)),
            (r#"{"severity": "WARNING", "message": "slow"}"#, Some(Level::Warning)),
            (r#"{"msg":"level is fine","n":1}"#, None),
            (r#"not json "level":"error""#, None),
            // A nested level is not the line's; bunyan's numbers are levels.
            (r#"{"level":"info","msg":"alert received","alert":{"severity":"critical"}}"#, Some(Level::Info)),
            (r#"{"msg":"logging set","logging":{"level":"error"}}"#, None),
            (r#"{"name":"api","level":50,"msg":"request failed"}"#, Some(Level::Error)),
            (r#"{"name":"api","level":30,"msg":"request served"}"#, Some(Level::Info)),
        ] {
            assert_eq!(format.written(line), level, "{line}");
        }
    }

    #[test]
    fn structured_error_lines_are_judged_by_their_level_field() {
        let rules = Rules { new_at: Level::Error, grown_at: Some((Level::Error, 5.0)), patterns: vec![], ignored: vec![] };
        let normal: Vec<String> = (0..400).map(|i| format!(r#"{{"level":"info","msg":"order placed","order":{i},"took_ms":{}}}"#, i % 17)).collect();
        let mut after = normal.clone();
        // No failure word: only the level field says it is an error.
        after.extend((0..10).map(|i| format!(r#"{{"level":"error","msg":"payment declined","order":{i},"provider":"acme"}}"#)));
        let v = judge(&normal, &after, &rules);
        assert!(!v.passed && v.findings[0].template.contains("payment declined") && v.findings[0].why.starts_with("new at error level"), "{:?}", v.findings);
        assert!(judge(&normal, &normal, &rules).passed, "the same traffic passes");
    }

    #[test]
    fn templates_that_say_failure_are_judged_at_any_level() {
        let rules = Rules { new_at: Level::Error, grown_at: Some((Level::Error, 5.0)), patterns: vec![], ignored: vec![] };
        let normal = lines("2015-10-18 18:01:{} INFO [main] request served", 400);
        // An INFO template that says an exception was thrown, 3 lines before, 30 after.
        let mut before = normal.clone();
        before.extend(lines("2015-10-18 18:02:{} INFO [main] exception thrown in handler", 3));
        let mut after = normal.clone();
        after.extend(lines("2015-10-18 18:03:{} INFO [main] exception thrown in handler", 30));
        let v = judge(&before, &after, &rules);
        assert!(!v.passed && v.findings[0].why.contains("says `exception thrown`") && v.findings[0].why.contains("9.4x as frequent"), "{:?}", v.findings);
        // A new warning that says a service crashed, ten times.
        let mut after = normal.clone();
        after.extend(lines("2015-10-18 18:03:{} WARN [main] payments service crashed", 10));
        let v = judge(&normal, &after, &rules);
        assert!(!v.passed && v.findings[0].why.starts_with("new at warning level, says `crashed`"), "{:?}", v.findings);
        // The same at INFO without a word of failure passes.
        let mut after = normal.clone();
        after.extend(lines("2015-10-18 18:03:{} WARN [main] payments service slow", 10));
        assert!(judge(&normal, &after, &rules).passed);
    }
}
