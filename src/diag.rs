//! Diagnostics: positioned errors and warnings about a user's file, printed as `FILE:LINE:COL: error: MESSAGE`.

use std::fmt;

use serde::Serialize;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub col: usize,
}

impl Pos {
    /// A position from a 1-based line and a 1-based column.
    pub fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used; `validate` exits 2.
    Error,
    /// Legal but suspicious; reported, does not change the exit code.
    Warning,
}

/// One problem found in a file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// Where in the file.
    #[serde(flatten)]
    pub pos: Pos,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and, where we can tell, what to do about it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {}: {}", self.file, self.pos, sev, self.message)
    }
}

/// The diagnostics of one file, collected in one pass.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    file: String,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty collection for `file` (the name printed in front of every line).
    pub fn new(file: impl Into<String>) -> Diagnostics {
        Diagnostics { file: file.into(), items: Vec::new() }
    }

    /// Records an error at `pos`.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(pos, Severity::Error, message.into());
    }

    /// Records a warning at `pos`.
    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(pos, Severity::Warning, message.into());
    }

    /// Records an error in another file the pipeline names (a policy, the users file).
    pub fn error_in(&mut self, file: impl Into<String>, pos: Pos, message: impl Into<String>) {
        self.items.push(Diagnostic { file: file.into(), pos, severity: Severity::Error, message: message.into() });
    }

    fn push(&mut self, pos: Pos, severity: Severity, message: String) {
        self.items.push(Diagnostic { file: self.file.clone(), pos, severity, message });
    }

    /// An empty collection for the same file (work done elsewhere, appended later).
    pub fn empty_like(&self) -> Diagnostics {
        Diagnostics::new(self.file.clone())
    }

    /// Adds what `other` recorded.
    pub fn append(&mut self, mut other: Diagnostics) {
        self.items.append(&mut other.items);
    }

    /// True when at least one error (not warning) was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics sorted by position (stable: same position keeps discovery order).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| d.pos);
        self.items
    }

    /// The diagnostics in discovery order.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }
}

/// `text` for one line of a terminal: control characters (a newline in a comment, an escape
/// sequence) are shown escaped (`\\n`, `\\u{1b}`), so no text can forge a line or move the cursor.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `1 stage`, `5 stages`.
pub fn plural(count: usize, word: &str) -> String {
    if count == 1 { format!("1 {word}") } else { format!("{count} {word}s") }
}

/// The nearest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&word.to_ascii_lowercase(), &c.to_ascii_lowercase());
        let dist = strsim::levenshtein(&word.to_ascii_lowercase(), &c.to_ascii_lowercase());
        let close = score >= 0.8 || dist <= word.len().max(c.len()) / 3 || c.contains(word) && word.len() >= 3;
        if close && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// `", did you mean `x`?"` when there is a near candidate, otherwise `""`.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match suggest(word, candidates) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}
