//! What varies in a log line, masked by one fixed set of rules (no per-system tuning): classes of
//! token by their shape, not by any system's words: numbers, hex ids (`0x7f3a`, `d3adb33f`,
//! `4f2a-9c1e`), UUIDs, IPs and ports, paths, URLs, mail and host addresses, timestamps,
//! durations (`12ms`), sizes (`64KB`); and structured lines (logfmt, JSON) by their fields: the
//! message's words, every other field's name with its value masked.

/// The placeholder for a variable part.
pub const WILDCARD: &str = "<*>";

/// Characters that separate the parts of a word (`size=42`, `host:port`, `(id)`): kept, but the
/// parts between them are judged alone.
pub fn is_separator(c: char) -> bool {
    matches!(c, '=' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}' | '"' | '\'' | '<' | '>' | '|')
}

/// A part with digits that is not a variable as a whole (`broadcast_9_piece0`): its digit runs
/// masked, its shape kept (`broadcast_<*>_piece<*>`).
fn mask_digits(part: &str, out: &mut String) {
    let b = part.as_bytes();
    let mut in_run = false;
    let mut kept = 0;
    for i in 0..b.len() {
        let c = b[i];
        // A sign belongs to the number (`blk_-42` and `blk_42` have one shape).
        let sign = (c == b'-' || c == b'+') && b.get(i + 1).is_some_and(|n| n.is_ascii_digit()) && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if c.is_ascii_digit() || sign {
            if !in_run {
                // Digits and signs are ASCII: `kept..i` falls on character boundaries.
                out.push_str(&part[kept..i]);
                out.push_str(WILDCARD);
                in_run = true;
            }
            kept = i + 1;
        } else {
            in_run = false;
        }
    }
    out.push_str(&part[kept..]);
}

/// Whether a part is an identifier with a few numbers in it rather than a value: it starts with
/// a letter and has at least three letters in a row.
fn is_named(part: &str) -> bool {
    let b = part.as_bytes();
    if !b[0].is_ascii_alphabetic() {
        return false;
    }
    let (mut run, mut best) = (0, 0);
    for c in b {
        run = if c.is_ascii_alphabetic() { run + 1 } else { 0 };
        best = best.max(run);
    }
    best >= 3 && !part.contains(['.', ':', '/'])
}

/// Days and months as dates write them (`Fri Jul 01 08:16:53`), part of a timestamp (`May`, a
/// word too, is left).
fn is_date_word(w: &str) -> bool {
    // A `match` (by length, then bytes): this is asked of every capitalised word.
    matches!(
        w,
        "Mon"
            | "Tue"
            | "Wed"
            | "Thu"
            | "Fri"
            | "Sat"
            | "Sun"
            | "Jan"
            | "Feb"
            | "Mar"
            | "Apr"
            | "Jun"
            | "Jul"
            | "Aug"
            | "Sep"
            | "Sept"
            | "Oct"
            | "Nov"
            | "Dec"
            | "Monday"
            | "Tuesday"
            | "Wednesday"
            | "Thursday"
            | "Friday"
            | "Saturday"
            | "Sunday"
            | "January"
            | "February"
            | "March"
            | "April"
            | "June"
            | "July"
            | "August"
            | "September"
            | "October"
            | "November"
            | "December"
    )
}

/// Whether a part (no whitespace, no separator) is a variable.
fn is_variable(part: &str) -> bool {
    if part.is_empty() || part == WILDCARD {
        return false;
    }
    if is_date_word(part) {
        return true;
    }
    // Anything with a digit: numbers, hex ids, UUIDs, IPs, ports, timestamps, durations (12ms),
    // sizes (64KB), versions, ids such as blk_123 or node-246.
    if part.bytes().any(|b| b.is_ascii_digit()) {
        return true;
    }
    // Paths (POSIX and Windows: `C:\x`, `\\host\share`, `DOMAIN\user`) and URLs.
    if part.contains("://") || (part.starts_with('/') && part.len() > 1) || part.starts_with("~/") || (part.contains('\\') && part.len() > 2) {
        return true;
    }
    // Mail addresses and host names without digits (`mail.example.org`, `a@b.c`).
    if is_address(part) {
        return true;
    }
    // Long hex strings without digits are rare; hex with digits is caught above.
    false
}

/// Whether a part is an identifier made of hex groups (`d3adb33f`, `a1b2-c3d4`, `fe80::1ff:fe23`,
/// `0a:1b:2c`): every group hex digits, separated by `-`, `:` or `.`, with a digit and a letter
/// among them (so neither a number, masked anyway, nor a word such as `face` or `decade`) and
/// either a group of at least 6 or at least two groups of 2 or more. Such an id is one value: its
/// shape (`a<*>b<*>-c<*>`) says nothing of the event.
fn is_hex_id(part: &str) -> bool {
    let (mut digit, mut letter, mut long, mut groups) = (false, false, false, 0);
    for g in part.split(['-', ':', '.']) {
        if g.is_empty() || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        digit |= g.bytes().any(|b| b.is_ascii_digit());
        letter |= g.bytes().any(|b| b.is_ascii_alphabetic());
        long |= g.len() >= 6;
        groups += usize::from(g.len() >= 2);
    }
    digit && letter && (long || groups >= 2)
}

/// Whether a part without digits names a host or a mailbox: a `@` between a name and a domain, or
/// a lower-case dotted name under a generic top-level domain (`mail.example.org`, `a.b.local`) or
/// a country's second level (`cs.cuhk.edu.hk`, `x.co.uk`). Other dotted names (`mapred.task.id`,
/// `n.leader`, `org.apache.X`) are too often a setting, a field or a class: kept.
fn is_address(part: &str) -> bool {
    const GENERIC: [&str; 12] = ["com", "net", "org", "edu", "gov", "mil", "int", "io", "local", "lan", "internal", "arpa"];
    const SECOND: [&str; 8] = ["com", "net", "org", "edu", "gov", "ac", "co", "ne"];
    if !part.contains('.') {
        return false;
    }
    let domain = |d: &str| {
        let lower = d.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        let mut labels = d.rsplit('.');
        let (last, second, third) = (labels.next().unwrap_or(""), labels.next(), labels.next());
        lower && second.is_some() && (GENERIC.contains(&last) || (third.is_some() && last.len() == 2 && second.is_some_and(|s| SECOND.contains(&s))))
    };
    match part.split_once('@') {
        Some((user, host)) => !user.is_empty() && domain(host),
        None => domain(part),
    }
}

/// `key:value` with an identifier as its key (`onExtend:1514038530000`, `pid:42`): the key kept,
/// the value judged alone. Addresses and times (`10.0.0.1:80`, `host.lan:80`, `18:01:47`) have
/// no identifier before their first colon and stay one value.
fn split_key(part: &str) -> Option<(&str, &str)> {
    let (key, value) = part.split_once(':')?;
    let identifier = key.len() >= 2 && key.as_bytes()[0].is_ascii_alphabetic() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (identifier && is_named(key) && !value.is_empty() && !value.starts_with('/')).then_some((key, value))
}

/// One part, onto `out`: kept, masked whole, or (a named identifier with numbers) its digit runs
/// masked.
fn mask_part(part: &str, out: &mut String) {
    if !is_variable(part) {
        out.push_str(part);
    } else if let Some((key, value)) = split_key(part) {
        mask_part(key, out);
        out.push(':');
        mask_part(value, out);
    } else if part.bytes().any(|b| b.is_ascii_digit()) && is_named(part) && !is_hex_id(part) {
        mask_digits(part, out);
    } else {
        out.push_str(WILDCARD);
    }
}

/// Splits a line into tokens (on whitespace) and masks the variable parts of each token; a run of
/// tokens of the same masked shape, but for the punctuation that ends a list's item, becomes one
/// (a list of ids is one variable, whatever its length: `queue: 7, 9, 12.` is `queue: <*>,`), and
/// so does a bracketed list of values (`voters=(5127 7427 1419)` is `voters=(<*>)`, as
/// `voters=(5127)` is). The miner's own tokens follow the same rules (`miner::Interner::next`).
pub fn tokens(line: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let stem = |t: &str| t.trim_end_matches([',', ';', '.']).to_string();
    for_each_masked(line, &mut String::new(), |masked| {
        // `<*>,` `<*>,` `<*>.`: the items of one list.
        if masked.contains(WILDCARD) && out.last().is_some_and(|l| l == masked || stem(l) == stem(masked)) {
            return;
        }
        // `(<*>` `<*>` `<*>)`: the items of a bracketed list, closed by its last.
        if let (Some(close), Some(last)) = (list_item(masked), out.last_mut())
            && opens_list(last)
        {
            if close.contains([')', ']', '}']) {
                *last = format!("{}{close}", stem(last));
            }
            return;
        }
        out.push(masked.to_string());
    });
    out
}

/// Whether a masked token opens a bracket it does not close and ends (but for a list's
/// punctuation) on a value: the first item of a bracketed list (`voters=(<*>`, `[<*>,`).
pub(crate) fn opens_list(tok: &str) -> bool {
    let depth = |open: char, close: char| tok.matches(open).count() > tok.matches(close).count();
    tok.trim_end_matches([',', ';', '.']).ends_with(WILDCARD) && (depth('(', ')') || depth('[', ']') || depth('{', '}'))
}

/// A masked token that is a list's item alone: what ends it (`<*>` gives ``, `<*>,` `,`, `<*>)`
/// `)`, `<*>]);` `]);`).
pub(crate) fn list_item(tok: &str) -> Option<&str> {
    tok.strip_prefix(WILDCARD).filter(|rest| rest.chars().all(|c| matches!(c, ',' | ';' | '.' | ')' | ']' | '}')))
}

/// Units that a program scales to the value it prints (`93.0 B`, `5.2 KB`, `12 ms`, `3 min`): after
/// a number they are part of the value, not words of the event.
const UNITS: &[&str] =
    &["B", "KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "kB", "ns", "us", "µs", "ms", "s", "sec", "secs", "min", "mins", "h", "hrs"];

/// The words of a line, masked, each given to `each`: each by [`mask_word`], and a unit right
/// after a masked number (`<*> KB,` becomes `<*> <*>,`) masked with it.
/// `buf` holds a masked word while `each` reads it (kept between calls to spare allocations).
pub fn for_each_masked(line: &str, buf: &mut String, each: impl FnMut(&str)) {
    for_each_masked_with(line, buf, each, |_| {});
}

/// [`for_each_masked`], also giving `value` each field value of a structured line that was
/// masked whole (`GET` of `method=GET`): the program wrote it as a value.
pub fn for_each_masked_with(line: &str, buf: &mut String, mut each: impl FnMut(&str), mut value: impl FnMut(&str)) {
    if structured::read(line, buf, &mut each, &mut value) {
        return;
    }
    words(line, buf, &mut each);
}

/// The words of `text` (no structure read), masked, each given to `each`.
fn words(text: &str, buf: &mut String, each: &mut impl FnMut(&str)) {
    let mut after_number = false;
    let mut rest = text.split_whitespace();
    // The word's place, and how far a lookahead that found no end has read: a word inside that
    // stretch is not looked ahead from again, so a line's lookaheads read each word at most twice
    // whatever it holds (a line of openers that never close costs no more than its length).
    let (mut at, mut object_read_to, mut quote_read_to) = (0usize, 0usize, 0usize);
    while let Some(word) = rest.next() {
        at += 1;
        // An object printed whole over several words (`<function f at 0x7f…>`, `<bound method A.b
        // of <A object at 0x…>>`, `{'Region': 'us-east-1', 'UseFIPS': False}`): a program's value,
        // what one `%s` or `{}` of its format became. Not the text's first word: a line that is
        // one object is the event itself (an object that is not valid JSON stays words).
        if let Some((before, open, close)) = opens_object(word).filter(|_| at > 1 && at > object_read_to) {
            let depth = |w: &str| w.matches(open).count() as i64 - w.matches(close).count() as i64;
            let mut open_now = depth(&word[before.len()..]);
            let opens = open_now > 0;
            let ends = |w: &str| {
                open_now += depth(w);
                open_now <= 0
            };
            match if opens { span(&rest, MAX_OBJECT_WORDS, ends) } else { Err(0) } {
                // The object's last word: its closing bracket, then only a list's punctuation.
                Ok((last, after, read)) => {
                    if let Some(end) = last.rfind(close).filter(|&i| last[i + 1..].chars().all(|c| CLOSING.contains(&c))) {
                        (rest, at, after_number) = (after, at + read, false);
                        value(before, &last[end + 1..], buf, each);
                        continue;
                    }
                }
                Err(read) => object_read_to = at + read,
            }
        }
        // A quoted literal of several words (`b'250 OK'`, `"no such key",`, `key='a b'`): text the
        // program quoted as a whole, one value. A literal of one word stays a word (a closed set
        // of them, `'GET'`, is the miner's to judge).
        if let Some((before, quote)) = opens_quote(word).filter(|_| at > quote_read_to) {
            let inside = &word[before.len() + quote_prefix(&word[before.len()..]) + 1..];
            let closes = |w: &str| w.trim_end_matches(CLOSING).ends_with(quote);
            match if closes(inside) { Err(0) } else { span(&rest, MAX_QUOTED_WORDS, closes) } {
                Ok((last, after, read)) => {
                    (rest, at, after_number) = (after, at + read, false);
                    value(before, &last[last.trim_end_matches(CLOSING).len()..], buf, each);
                    continue;
                }
                Err(read) => quote_read_to = at + read,
            }
        }
        let unit = || word.trim_end_matches([',', ';', ')', ']', '.']);
        let masked: &str = if after_number && UNITS.contains(&unit()) {
            buf.clear();
            buf.push_str(WILDCARD);
            buf.push_str(&word[unit().len()..]);
            buf
        } else if plain(word) {
            word
        } else {
            buf.clear();
            mask_word_into(word, buf);
            buf
        };
        after_number = masked.ends_with(WILDCARD);
        each(masked);
    }
}

/// Looks up to `max` words past `rest` for the one that `ends` a span: `Ok` with that word, the
/// words after it and how many the span read; `Err` with how many were read.
type Span<'a> = Result<(&'a str, std::str::SplitWhitespace<'a>, usize), usize>;

fn span<'a>(rest: &std::str::SplitWhitespace<'a>, max: usize, mut ends: impl FnMut(&str) -> bool) -> Span<'a> {
    let mut ahead = rest.clone();
    for read in 1..=max {
        let Some(w) = ahead.next() else { return Err(read - 1) };
        if ends(w) {
            return Ok((w, ahead, read));
        }
    }
    Err(max)
}

/// A span of words given as one value: `before` (a bracket, `key=`), `<*>`, then what followed
/// the span's end in its last word.
fn value(before: &str, after: &str, buf: &mut String, each: &mut impl FnMut(&str)) {
    buf.clear();
    buf.push_str(before);
    buf.push_str(WILDCARD);
    buf.push_str(after);
    each(buf);
}

/// The most words a quoted literal is looked for in.
const MAX_QUOTED_WORDS: usize = 64;

/// The most words an object printed whole is looked for in (a request's headers run to a
/// hundred and more).
const MAX_OBJECT_WORDS: usize = 256;

/// What may follow a literal's closing quote in its word.
const CLOSING: &[char] = &[',', ';', '.', ')', ']', '}', ':'];

/// The length of a string literal's prefix before its quote (`b'`, `u"`, `r'`): 1, else 0.
fn quote_prefix(s: &str) -> usize {
    let b = s.as_bytes();
    usize::from(b.len() >= 2 && matches!(b[0], b'b' | b'u' | b'r') && matches!(b[1], b'\'' | b'"'))
}

/// Where a word opens a quoted literal: what comes before it (brackets, `key=`, `key:`) and its
/// quote. The literal starts the word (after brackets and a `b`/`u`/`r` prefix) or a field's value;
/// a message field's (`msg="Stopping scrape manager..."`) is the event's text, not a value.
fn opens_quote(word: &str) -> Option<(&str, char)> {
    let start = word.len() - word.trim_start_matches(['(', '[', '{']).len();
    let at = value_at(word, start, true)?;
    let lit = &word[at..];
    let q = lit[quote_prefix(lit)..].chars().next()?;
    matches!(q, '\'' | '"').then_some((&word[..at], q))
}

/// Where a word's value starts, reading from `start`: after `key=` (or `key:` with `colon`) when
/// the word begins with a field's name, else at `start`; `None` for a message field's (`msg=`),
/// whose value is the event's text.
fn value_at(word: &str, start: usize, colon: bool) -> Option<usize> {
    match if colon { word.find(['=', ':']) } else { word.find('=') } {
        Some(i) if i > start && word[start..i].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') => {
            (!structured::MESSAGE.contains(&&word[start..i])).then_some(i + 1)
        }
        _ => Some(start),
    }
}

/// Where a word opens an object printed whole: what comes before it (nothing, or `key=`), and the
/// object's brackets. An object's repr opens with `<` and a letter (`<function`, `<Request`), a
/// dict or JSON object with `{` and a quoted key; a message field's value is the event's text.
fn opens_object(word: &str) -> Option<(&str, char, char)> {
    let at = value_at(word, 0, false)?;
    let mut rest = word[at..].chars();
    match (rest.next()?, rest.next()?) {
        ('<', c) if c.is_ascii_alphabetic() => Some((&word[..at], '<', '>')),
        ('{', '\'' | '"') => Some((&word[..at], '{', '}')),
        _ => None,
    }
}

/// Lines longer than this are read as words, not as structured lines: what a line's parse may
/// cost (a JSON value, a logfmt line's items) stays within a few times this.
pub const MAX_STRUCTURED_LINE: usize = 64 * 1024;

/// Whether a field's name is one a program gives (`method`, `http.request.id`, `@timestamp`,
/// `_source`): 1 to 64 bytes, a letter, `_` or `@` first, then letters, digits, `_ . - / @`. A
/// JSON key that is not (a header's, a query's, with spaces or control characters) is data,
/// and stands as a value.
pub fn is_field_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b'@')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/' | b'@'))
}

/// Structured lines: `key=value` pairs (logfmt: logrus, go-kit, slog's text handler, ...) and
/// JSON objects (zap, slog's JSON handler, bunyan, PostgreSQL's `jsonlog`, ...). Their programs
/// put the event's constant text in a message field and what varies in fields of its own, named:
/// so a field's value is a value (`method=<*>`, `err=<*>`, `user=<*>` empty or not, whatever its
/// words: a closed set of verbs, an error's text), its name is part of the event, and only the
/// message is read as words. A JSON line's fields are taken in the order of their names (nested
/// ones as `outer.inner`), so that one event whose library writes its fields in another order is
/// one template.
mod structured {
    use super::{MAX_STRUCTURED_LINE, WILDCARD, is_field_name, words};

    /// The fields whose value is the event's text, whatever its shape (`msg=Starting`).
    pub(super) const MESSAGE: &[&str] = &["msg", "message", "MESSAGE", "Message", "event"];

    /// A line with at least this many `key=value` pairs, making at least half of its items, is
    /// read as logfmt (a prose line with one or two `size=42` is not).
    const MIN_PAIRS: usize = 3;

    /// At most this many fields of a JSON line are read, the first by name (the rest are left out
    /// of its template); nested objects are read to this depth (a deeper one is one value).
    const MAX_FIELDS: usize = 64;
    const MAX_DEPTH: usize = 4;

    /// Reads `line` as a structured line when it is one, giving its tokens to `each`: `true` if
    /// it was one.
    pub(super) fn read(line: &str, buf: &mut String, each: &mut impl FnMut(&str), value: &mut impl FnMut(&str)) -> bool {
        let t = line.trim();
        if t.len() > MAX_STRUCTURED_LINE {
            return false;
        }
        if t.len() > 1 && t.starts_with('{') && t.ends_with('}') {
            if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(t) {
                let mut left = MAX_FIELDS;
                for (k, v) in fields.iter().filter(|(k, _)| MESSAGE.contains(&k.as_str())) {
                    if let serde_json::Value::String(text) = v {
                        field(k, text, buf, each, value);
                        left -= 1;
                    }
                }
                object("", &fields, 0, &mut left, buf, each, value);
                return true;
            }
            return false;
        }
        // Cheap first: most lines have fewer than three `=`.
        if t.bytes().filter(|&b| b == b'=').count() < MIN_PAIRS {
            return false;
        }
        let items = logfmt(t);
        let pairs = items.iter().filter(|i| matches!(i, Item::Pair { .. })).count();
        if pairs < MIN_PAIRS || pairs * 2 < items.len() {
            return false;
        }
        // The message first (where a library puts it varies; it names the event), then the rest
        // in their order.
        for first in [true, false] {
            for item in &items {
                match *item {
                    Item::Pair { key, value: v, .. } if MESSAGE.contains(&key) == first => field(key, v, buf, each, value),
                    Item::Word(w) if !first => words(w, buf, each),
                    _ => {}
                }
            }
        }
        true
    }

    /// One field: the message's `key=` then its words, or `key=<*>`; a name that is data
    /// ([`is_field_name`]) stands as `<*>`.
    fn field(key: &str, value: &str, buf: &mut String, each: &mut impl FnMut(&str), values: &mut impl FnMut(&str)) {
        if !key.split('.').all(is_field_name) {
            each(WILDCARD);
            return;
        }
        buf.clear();
        buf.push_str(key);
        buf.push('=');
        if MESSAGE.contains(&key) {
            each(buf);
            if value.contains("\\\"") {
                words(&value.replace("\\\"", "\""), buf, each);
            } else {
                words(value, buf, each);
            }
        } else {
            buf.push_str(WILDCARD);
            each(buf);
            if !value.is_empty() {
                values(value);
            }
        }
    }

    /// A JSON object's fields in the order of their names, nested ones as `outer.inner`.
    fn object(
        prefix: &str,
        fields: &serde_json::Map<String, serde_json::Value>,
        depth: usize,
        left: &mut usize,
        buf: &mut String,
        each: &mut impl FnMut(&str),
        values: &mut impl FnMut(&str),
    ) {
        // (serde_json's map is ordered by name unless its `preserve_order` is on: said here.)
        let mut sorted: Vec<(&String, &serde_json::Value)> = fields.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in sorted {
            if *left == 0 {
                return;
            }
            if depth == 0 && MESSAGE.contains(&k.as_str()) && v.is_string() {
                continue;
            }
            *left -= 1;
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                serde_json::Value::Object(inner) if depth + 1 < MAX_DEPTH => object(&key, inner, depth + 1, left, buf, each, values),
                serde_json::Value::String(s) => field(&key, s, buf, each, values),
                serde_json::Value::Null => field(&key, "", buf, each, values),
                _ => field(&key, "0", buf, each, values),
            }
        }
    }

    /// An item of a logfmt line.
    #[derive(Debug, PartialEq)]
    pub(super) enum Item<'a> {
        Word(&'a str),
        Pair { key: &'a str, value: &'a str },
    }

    /// A logfmt line's items: `key=value`, `key="quoted \"text\""` (the quotes and escapes
    /// kept out of the value's words), and words.
    pub(super) fn logfmt(line: &str) -> Vec<Item<'_>> {
        let b = line.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let start = i;
            // A key: a letter or `_`, then letters, digits, `_ . - /`, then `=`.
            let mut k = i;
            if b[k].is_ascii_alphabetic() || b[k] == b'_' {
                while k < b.len() && (b[k].is_ascii_alphanumeric() || matches!(b[k], b'_' | b'.' | b'-' | b'/')) {
                    k += 1;
                }
            }
            if k > start && k < b.len() && b[k] == b'=' {
                let key = &line[start..k];
                let v = k + 1;
                if v < b.len() && b[v] == b'"' {
                    let mut e = v + 1;
                    while e < b.len() && b[e] != b'"' {
                        e += if b[e] == b'\\' { 2 } else { 1 };
                    }
                    let end = e.min(b.len());
                    out.push(Item::Pair { key, value: &line[v + 1..end] });
                    i = (end + 1).min(b.len());
                } else {
                    let mut e = v;
                    while e < b.len() && !b[e].is_ascii_whitespace() {
                        e += 1;
                    }
                    out.push(Item::Pair { key, value: &line[v..e] });
                    i = e;
                }
                continue;
            }
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(Item::Word(&line[start..i]));
        }
        out
    }
}

/// Whether a word is kept as it is without looking further: no digit, no separator, nothing of a
/// path, an address or a URL (most words of most lines).
fn plain(word: &str) -> bool {
    word.bytes().all(|b| !NOT_PLAIN[b as usize]) && !(word.starts_with(|c: char| c.is_ascii_uppercase()) && is_date_word(word))
}

/// The bytes that make a word worth a closer look: digits, separators, and what paths,
/// addresses and URLs are made of.
const NOT_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = c.is_ascii_digit()
            || matches!(
                c,
                b'/' | b'\\' | b'.' | b'@' | b':' | b'=' | b',' | b';' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b'\'' | b'<' | b'>' | b'|'
            );
        b += 1;
    }
    t
};

/// One whitespace-separated word, its variable parts replaced by `<*>`; a word that is a
/// variable as a whole becomes exactly `<*>`.
pub fn mask_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    mask_word_into(word, &mut out);
    out
}

/// [`mask_word`] onto `out`.
fn mask_word_into(word: &str, out: &mut String) {
    if word.as_bytes().windows(3).any(|w| w == b"://") {
        out.push_str(WILDCARD);
        return;
    }
    let mut start = 0;
    for (i, c) in word.char_indices() {
        if is_separator(c) {
            mask_part(&word[start..i], out);
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    mask_part(&word[start..], out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_what_varies() {
        let t = |s: &str| tokens(s).join(" ");
        assert_eq!(t("PacketResponder 1 for block blk_-6952295868487656571 terminating"), "PacketResponder <*> for block blk_<*> terminating");
        assert_eq!(t("Block broadcast_9_piece0 stored"), "Block broadcast_<*>_piece<*> stored");
        assert_eq!(t("Received connection request /10.10.34.11:45307"), "Received connection request <*>");
        assert_eq!(t("sent size=67108864 path=/tmp/x for bob"), "sent size=<*> path=<*> for bob");
        assert_eq!(t("size 93.0 B, free 5.2 KB took 3 ms in 2 s"), "size <*> free <*> took <*> in <*>");
        assert_eq!(t("sent 12 bytes in B mode"), "sent <*> bytes in B mode");
        assert_eq!(t("Wait queue: 9088, 9091, 9093."), "Wait queue: <*>,");
        assert_eq!(t("Wait queue: 9088."), "Wait queue: <*>");
        // A bracketed list of values is one value, whatever its length (etcd's raft).
        assert_eq!(t("m switched to configuration voters=(5127 7427 1419)"), "m switched to configuration voters=(<*>)");
        assert_eq!(t("m switched to configuration voters=(5127)"), "m switched to configuration voters=(<*>)");
        assert_eq!(t("peers [10.0.0.1:80, 10.0.0.2:80] up"), "peers [<*>] up");
        assert_eq!(t("peers [10.0.0.1:80] up"), "peers [<*>] up");
        // A quoted literal of several words is one value; of one word, a word; a message
        // field's quoted text is the event's words.
        assert_eq!(t("('127.0.0.1', 45400) << b'250 2.0.0 OK'"), "('<*>', <*>) << <*>");
        assert_eq!(t("unknown key \"no such thing\", retrying with key='a b'"), "unknown key <*>, retrying with key=<*>");
        assert_eq!(t("method 'GET' refused"), "method 'GET' refused");
        assert_eq!(t("level=info msg=\"Stopping scrape manager...\""), "level=info msg=\"Stopping scrape manager...\"");
        assert_eq!(t("it's a \"quote that never ends"), "it's a \"quote that never ends");
        // An object printed whole (a repr, a dict or JSON object with quoted keys) is one value,
        // nested or not, within a bounded number of words; a `<` or `{` that opens none is a word.
        assert_eq!(t("Event x: calling handler <function handle at 0x7fbb276a0f40>"), "Event x: calling handler <*>");
        assert_eq!(
            t("calling handler <bound method RequestSigner.handler of <botocore.signers.RequestSigner object at 0x7f>>, done"),
            "calling handler <*>, done"
        );
        assert_eq!(t("parameters: {'Region': 'us-east-1', 'UseFIPS': False}"), "parameters: <*>");
        assert_eq!(t(r#"got body={"a": {"b": 1}, "c": 2} ok"#), "got body=<*> ok");
        assert_eq!(t("if a < b and c > d"), "if a < b and c > d");
        assert_eq!(t("open <never closed and more"), "open <never closed and more");
        let unbounded = format!("params: {{'k': {}}}", "v ".repeat(MAX_OBJECT_WORDS + 1));
        assert!(tokens(&unbounded).len() > MAX_OBJECT_WORDS, "an object past the bound is words");
        // Words in brackets are not a list of values.
        assert_eq!(t("state [StateProbe match=1 next=2 paused]"), "state [StateProbe match=<*> next=<*> paused]");
        assert_eq!(t("status=M Fri Jul 01 08:16:53 PDT 2005 on Sun"), "status=M <*> PDT <*> on <*>");
        assert_eq!(t("took 12ms at 2015-10-18T18:01:47,978 id 550e8400-e29b-41d4-a716-446655440000"), "took <*> at <*>,<*> id <*>");
        assert_eq!(t("GET https://example.com/a?b=c [OK]"), "GET <*> [OK]");
        // Windows paths, mail and host names without digits, `key:value` with a named key.
        assert_eq!(t(r"Loading C:\Windows\servicing\Packages from \\srv\share"), "Loading <*> from <*>");
        assert_eq!(t("rhost=csnsu.nsuok.edu user=bob@mail.example.org"), "rhost=<*> user=<*>");
        assert_eq!(t("mapred.task.id is deprecated, n.leader x.cuhk.edu.hk"), "mapred.task.id is deprecated, n.leader <*>");
        assert_eq!(t("onExtend:1514038530000 pid:42 at 10.0.0.1:80 host.lan:443 18:01:47"), "onExtend:<*> pid:<*> at <*>");
        // Ids of hex groups are one value whatever letters they start with; words stay.
        assert_eq!(t("session d3adb33f ea1c-42fb c0ffee12 for decade face"), "session <*> for decade face");
        assert_eq!(t("Block broadcast_9_piece0 blk_-42 node-246 ab12"), "Block broadcast_<*>_piece<*> blk_<*> node-<*> <*>");
    }

    #[test]
    fn structured_lines_are_read_by_their_fields() {
        let t = |s: &str| tokens(s).join(" ");
        // logfmt: the message's words, each other field's name with its value masked (a verb
        // too), free text read as words.
        assert_eq!(
            t(r#"level=info msg="Starting Prometheus" method=GET err="open /x: no such file" user= took=12ms"#),
            "msg= Starting Prometheus level=<*> method=<*> err=<*> user=<*> took=<*>"
        );
        assert_eq!(t("msg=GetImageManifest http.request.method=HEAD vars.name=shop/cart"), "msg= GetImageManifest http.request.method=<*> vars.name=<*>");
        assert_eq!(t(r#"msg="a \"quoted\" word" x=1 y=2"#), r#"msg= a "quoted" word x=<*> y=<*>"#);
        // JSON: the same, nested fields by their path.
        assert_eq!(
            t(r#"{"level":"error","msg":"dial failed","peer":{"addr":"10.0.0.1:80","id":7},"retry":true,"err":null}"#),
            "msg= dial failed err=<*> level=<*> peer.addr=<*> peer.id=<*> retry=<*>"
        );
        // Keys that are data (a header's, with a space) stand as values; a line too long is words.
        assert_eq!(t(r#"{"msg":"got","headers":{"X Custom":"a","Accept":"b"}}"#), "msg= got headers.Accept=<*> <*>");
        let long = format!(r#"{{"msg":"big","blob":"{}"}}"#, "x".repeat(MAX_STRUCTURED_LINE));
        assert!(tokens(&long)[0].starts_with(r#"{"msg":"big""#));
        // What only looks like JSON is words.
        assert_eq!(t(r#"{"msg": broken}"#), r#"{"msg": broken}"#);
        // Not structured: a prose line with two pairs, and what only looks like JSON.
        assert_eq!(t("Received block size=42 from host=a"), "Received block size=<*> from host=a");
        assert_eq!(t("{not json} a=1 b=2"), "{not json} a=<*> b=<*>");
        assert_eq!(structured::logfmt(r#"a="x y" b c=1"#).len(), 3);
    }

    #[test]
    fn plain_words_are_kept_as_they_are() {
        for c in (0u8..128).map(char::from) {
            assert_eq!(NOT_PLAIN[c as usize], c.is_ascii_digit() || "/\\.@:".contains(c) || is_separator(c), "{c:?}");
        }
        for w in ["Receiving", "block", "terminating", "-", "ünïcode", "a-b_c"] {
            assert!(plain(w) && mask_word(w) == w, "{w}");
        }
        for w in ["size=42", "(id)", "a.b", "x:1", "1", "path/x", "Fri"] {
            assert!(!plain(w), "{w}");
        }
    }
}
