//! What varies in a log line, masked by one fixed set of rules (no per-system tuning): numbers,
//! hex ids, UUIDs, IPs and ports, paths, URLs, timestamps, durations, sizes.

/// The placeholder for a variable part.
pub const WILDCARD: &str = "<*>";

/// Characters that separate the parts of a word (`size=42`, `host:port`, `(id)`): kept, but the
/// parts between them are judged alone.
fn is_separator(c: char) -> bool {
    matches!(c, '=' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}' | '"' | '\'' | '<' | '>' | '|')
}

/// Whether a part (no whitespace, no separator) is a variable.
fn is_variable(part: &str) -> bool {
    if part.is_empty() || part == WILDCARD {
        return false;
    }
    // Anything with a digit: numbers, hex ids, UUIDs, IPs, ports, timestamps, durations (12ms),
    // sizes (64KB), versions, ids such as blk_123 or node-246.
    if part.bytes().any(|b| b.is_ascii_digit()) {
        return true;
    }
    // Paths and URLs.
    if part.contains("://") || (part.starts_with('/') && part.len() > 1) || part.starts_with("~/") {
        return true;
    }
    // Long hex strings without digits are rare; hex with digits is caught above.
    false
}

/// Splits a line into tokens (on whitespace) and masks the variable parts of each token; a run of
/// tokens that are wholly variable becomes one `<*>` (a list of ids is one variable, whatever its
/// length).
pub fn tokens(line: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in line.split_whitespace() {
        let masked = mask_word(word);
        if masked == WILDCARD && out.last().is_some_and(|l| l == WILDCARD) {
            continue;
        }
        out.push(masked);
    }
    out
}

/// One whitespace-separated word, its variable parts replaced by `<*>`; a word that is a
/// variable as a whole becomes exactly `<*>`.
pub fn mask_word(word: &str) -> String {
    if word.contains("://") {
        return WILDCARD.to_string();
    }
    if !word.contains(is_separator) {
        return if is_variable(word) { WILDCARD.to_string() } else { word.to_string() };
    }
    let mut out = String::with_capacity(word.len());
    let mut part = String::new();
    let flush = |part: &mut String, out: &mut String| {
        if is_variable(part) {
            out.push_str(WILDCARD);
        } else {
            out.push_str(part);
        }
        part.clear();
    };
    for c in word.chars() {
        if is_separator(c) {
            flush(&mut part, &mut out);
            out.push(c);
        } else {
            part.push(c);
        }
    }
    flush(&mut part, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_what_varies() {
        let t = |s: &str| tokens(s).join(" ");
        assert_eq!(t("PacketResponder 1 for block blk_-6952295868487656571 terminating"), "PacketResponder <*> for block <*> terminating");
        assert_eq!(t("Received connection request /10.10.34.11:45307"), "Received connection request <*>");
        assert_eq!(t("size=67108864 path=/tmp/x user=bob"), "size=<*> path=<*> user=bob");
        assert_eq!(t("took 12ms at 2015-10-18T18:01:47,978 id 550e8400-e29b-41d4-a716-446655440000"), "took <*> at <*>,<*> id <*>");
        assert_eq!(t("GET https://example.com/a?b=c [OK]"), "GET <*> [OK]");
    }
}
