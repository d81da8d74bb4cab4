//! Which image tags a trigger admits, and in what order they are new: the one reading of an image
//! trigger's `tags` (a semver range) and `tagPattern` (a regular expression), shared by the
//! registry webhooks and the registry poll. No I/O.
//!
//! A range is what Kargo, Flux and npm users write: comparators separated by spaces or commas
//! (`>=1.0.0 <2.0.0`, `^1.4`, `~1.4.2`, `1.x`, `*`, `1.2.3 - 1.4.0`), alternatives joined by `||`.
//! A tag is a version when it is `MAJOR.MINOR.PATCH` with an optional pre-release and an optional
//! leading `v` (`v1.4.2`, `1.5.0-rc.1`). A pre-release is admitted only where a comparator of the
//! range names one of the same `MAJOR.MINOR.PATCH` (`>=1.5.0-rc.0` admits `1.5.0-rc.1`, not
//! `1.6.0-rc.1`): the rule of npm and of the `semver` crate, whose matching this uses.

use std::cmp::Ordering;

/// How a trigger's tags are told apart and ordered.
#[derive(Debug, Clone)]
pub enum TagFilter {
    /// Every tag (no `tags`, no `tagPattern`), ordered naturally.
    Any,
    /// A semver range (`tags`), ordered by version.
    Range(Range),
    /// A regular expression (`tagPattern`, or an old `tags` that is not a range), ordered
    /// naturally by the capture group `order` if it has one, else by the whole tag.
    Pattern(regex::Regex),
}

/// A semver range: any of its alternatives.
#[derive(Debug, Clone)]
pub struct Range(Vec<semver::VersionReq>);

/// Why a range does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(String);

impl Range {
    /// Parses `>=1.0.0 <2.0.0`, `^1.4 || ^2`, `1.2.3 - 1.4.0`, `=1.2.3`, `1.2.3` (exactly that).
    pub fn parse(text: &str) -> Result<Range, RangeError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(RangeError("an empty range".into()));
        }
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            let tokens: Vec<&str> = alt.split([' ', ',', '\t']).filter(|t| !t.is_empty()).collect();
            if tokens.is_empty() {
                return Err(RangeError(format!("an empty alternative in `{text}`")));
            }
            let mut comparators: Vec<String> = Vec::new();
            let mut i = 0;
            while i < tokens.len() {
                let t = tokens[i];
                // A hyphen range: `A - B` is `>=A, <=B`.
                if tokens.get(i + 1) == Some(&"-") {
                    let Some(upper) = tokens.get(i + 2) else { return Err(RangeError(format!("`{t} -` has no upper end"))) };
                    comparators.push(format!(">={}", strip_v(t)));
                    comparators.push(format!("<={}", strip_v(upper)));
                    i += 3;
                    continue;
                }
                // An operator written apart from its version: `>= 1.0.0`.
                let (op, version) = if t.chars().all(|c| "<>=^~".contains(c)) {
                    let Some(v) = tokens.get(i + 1) else { return Err(RangeError(format!("`{t}` has no version after it"))) };
                    i += 1;
                    (t, *v)
                } else {
                    let split = t.find(|c: char| !"<>=^~".contains(c)).unwrap_or(t.len());
                    t.split_at(split)
                };
                let version = strip_v(version);
                // A bare full version means exactly that version (npm, Masterminds), not `^` (Cargo).
                let op = if op.is_empty() && version != "*" && !version.contains(['x', 'X', '*']) && version.split('.').count() == 3 { "=" } else { op };
                comparators.push(format!("{op}{version}"));
                i += 1;
            }
            let joined = comparators.join(", ");
            let req = semver::VersionReq::parse(&joined).map_err(|e| RangeError(format!("`{}` is not a semver range: {e}", alt.trim())))?;
            alternatives.push(req);
        }
        Ok(Range(alternatives))
    }

    /// Whether the version is in the range (a pre-release only where the range names one).
    pub fn matches(&self, version: &semver::Version) -> bool {
        self.0.iter().any(|r| r.matches(version))
    }
}

fn strip_v(s: &str) -> &str {
    s.strip_prefix(['v', 'V']).filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit())).unwrap_or(s)
}

/// The version a tag names: `MAJOR.MINOR.PATCH[-PRE]`, with an optional leading `v`.
pub fn version_of(tag: &str) -> Option<semver::Version> {
    let v = semver::Version::parse(strip_v(tag)).ok()?;
    v.build.is_empty().then_some(v)
}

/// What a trigger's `tags` (a range, or for files written before ranges a regular expression)
/// and `tagPattern` mean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `tags` is neither a range nor a regular expression.
    #[error("`tags` is a semver range (`>=1.0.0 <2.0.0`, `^1.4`): {0}")]
    Range(RangeError),
    /// `tagPattern` is not a regular expression.
    #[error("`tagPattern` is a regular expression: {0}")]
    Pattern(String),
    /// Both were given.
    #[error("`tags` (a semver range) and `tagPattern` (a regular expression) are two ways to choose tags: give one")]
    Both,
}

/// How a filter came to be: whether `tags` was read as an old regular expression (a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// As written.
    Plain,
    /// `tags` did not parse as a range and was taken as a regular expression.
    TagsAsRegex,
}

fn regex_error(e: &regex::Error) -> String {
    e.to_string().lines().last().unwrap_or("").trim().to_string()
}

impl TagFilter {
    /// The filter of a trigger's `tags` and `tagPattern`.
    pub fn new(tags: Option<&str>, pattern: Option<&str>) -> Result<(TagFilter, Reading), FilterError> {
        match (tags, pattern) {
            (Some(_), Some(_)) => Err(FilterError::Both),
            (None, None) => Ok((TagFilter::Any, Reading::Plain)),
            (None, Some(p)) => regex::Regex::new(p).map(|r| (TagFilter::Pattern(r), Reading::Plain)).map_err(|e| FilterError::Pattern(regex_error(&e))),
            (Some(t), None) => match Range::parse(t) {
                Ok(r) => Ok((TagFilter::Range(r), Reading::Plain)),
                // Files written when `tags` was a regular expression keep working.
                Err(range_error) => match regex::Regex::new(t) {
                    Ok(r) if looks_like_regex(t) || !looks_like_range(t) => Ok((TagFilter::Pattern(r), Reading::TagsAsRegex)),
                    _ => Err(FilterError::Range(range_error)),
                },
            },
        }
    }

    /// Whether the filter admits the tag.
    pub fn admits(&self, tag: &str) -> bool {
        match self {
            TagFilter::Any => true,
            TagFilter::Range(r) => version_of(tag).is_some_and(|v| r.matches(&v)),
            TagFilter::Pattern(re) => re.is_match(tag),
        }
    }

    /// The order of two admitted tags, older first: by version for a range, naturally (runs of
    /// digits as numbers) by the `order` group or the whole tag otherwise.
    pub fn compare(&self, a: &str, b: &str) -> Ordering {
        match self {
            TagFilter::Range(_) => match (version_of(a), version_of(b)) {
                (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
                _ => natural(a, b),
            },
            TagFilter::Pattern(re) if re.capture_names().any(|n| n == Some("order")) => {
                let key = |t: &'_ str| re.captures(t).and_then(|c| c.name("order")).map(|m| m.as_str().to_string()).unwrap_or_default();
                natural(&key(a), &key(b)).then_with(|| natural(a, b))
            }
            _ => natural(a, b),
        }
    }

    /// The admitted tags of `tags`, oldest first.
    pub fn admitted<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let mut out: Vec<&str> = tags.into_iter().filter(|t| self.admits(t)).collect();
        out.sort_by(|a, b| self.compare(a, b));
        out
    }
}

/// Whether a `tags` that is not a range was meant as a regular expression (it has a regex
/// character a range never has), rather than a mistyped range.
fn looks_like_regex(t: &str) -> bool {
    t.contains(['[', ']', '(', ')', '\\', '$', '+', '?', '{', '}', '|'])
        || t.contains(".*")
        || t.starts_with('^') && !t[1..].starts_with(|c: char| c.is_ascii_digit())
}

/// Whether a `tags` that does not parse was meant as a range (an operator, a space, a leading
/// digit): then it is a mistake, not a regular expression.
fn looks_like_range(t: &str) -> bool {
    t.contains(['<', '>', '=', '~', ' ']) || strip_v(t).starts_with(|c: char| c.is_ascii_digit())
}

/// Natural order: runs of digits compare as numbers (`build-9` < `build-10`), the rest as text.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let n = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let m = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (p, q) = (trim_zeros(&x[..n]), trim_zeros(&y[..m]));
                let o = p.len().cmp(&q.len()).then_with(|| p.cmp(q));
                if o != Ordering::Equal {
                    return o;
                }
                (x, y) = (&x[n..], &y[m..]);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(t: &str) -> TagFilter {
        let (f, r) = TagFilter::new(Some(t), None).unwrap();
        assert_eq!(r, Reading::Plain, "{t}");
        f
    }

    #[test]
    fn ranges_admit_what_kargo_and_flux_users_expect() {
        let f = range(">=1.0.0 <2.0.0");
        for t in ["1.0.0", "v1.4.2", "1.99.0"] {
            assert!(f.admits(t), "{t}");
        }
        for t in ["0.9.9", "2.0.0", "1.5.0-rc.1", "latest", "1.4", "1.4.2-x+b"] {
            assert!(!f.admits(t), "{t}");
        }
        assert!(range(">=1.5.0-rc.0").admits("1.5.0-rc.1"));
        assert!(!range(">=1.5.0-rc.0").admits("1.6.0-rc.1"));
        assert!(range("1.2.3").admits("1.2.3") && !range("1.2.3").admits("1.2.4"));
        assert!(range("^1.4 || ^3").admits("3.1.0") && !range("^1.4 || ^3").admits("2.0.0"));
        assert!(range("1.2.0 - 1.4.0").admits("1.4.0") && !range("1.2.0 - 1.4.0").admits("1.4.1"));
        assert!(range(">= 1.0.0, < 2").admits("1.2.0"));
        assert!(range("*").admits("7.0.0") && !range("*").admits("7.0.0-beta"));
        assert!(range("1.x").admits("1.9.0"));
    }

    #[test]
    fn old_regular_expressions_in_tags_keep_their_meaning() {
        let (f, r) = TagFilter::new(Some(r"^[0-9]+\.[0-9]+\.[0-9]+$"), None).unwrap();
        assert_eq!(r, Reading::TagsAsRegex);
        assert!(f.admits("1.2.3") && !f.admits("v1.2.3"));
        assert!(matches!(TagFilter::new(Some(">=1.0.0 <"), None), Err(FilterError::Range(_))));
        assert!(matches!(TagFilter::new(Some("latest"), None), Ok((_, Reading::TagsAsRegex))));
        assert!(matches!(TagFilter::new(Some("1"), Some("a")), Err(FilterError::Both)));
        assert!(matches!(TagFilter::new(None, Some("(")), Err(FilterError::Pattern(_))));
    }

    #[test]
    fn order_is_oldest_first() {
        let f = range(">=1.0.0");
        assert_eq!(f.admitted(["1.10.0", "1.9.0", "1.0.0", "v1.2.0", "1.10.0-rc.1"]), vec!["1.0.0", "v1.2.0", "1.9.0", "1.10.0"]);
        let (p, _) = TagFilter::new(None, Some(r"^build-(?P<order>\d+)$")).unwrap();
        assert_eq!(p.admitted(["build-10", "build-9", "x", "build-100"]), vec!["build-9", "build-10", "build-100"]);
        let (d, _) = TagFilter::new(None, Some(r"^main-\d{8}-[0-9a-f]+$")).unwrap();
        assert_eq!(d.admitted(["main-20260102-ab", "main-20251231-ff"]), vec!["main-20251231-ff", "main-20260102-ab"]);
        assert_eq!(natural("a2", "a10"), Ordering::Less);
        assert_eq!(natural("007", "7"), Ordering::Less);
    }
}
