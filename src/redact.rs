//! Redaction by structure: the one pass that every text promote stores ([`crate::store::Store`]
//! writes), logs (the tracing writer) or prints as an error goes through.
//!
//! Exact strings are not enough: an HTTP client normalises a URL before it shows it (`:80`
//! dropped, the host lowercased), a server echoes `Authorization: Basic ...` back in base64, a
//! query string carries `api_key=`. So:
//! - every URL in the text is parsed and rebuilt without its user info and with every query value
//!   replaced, and a path known to be secret (a notification webhook's) is replaced;
//! - every `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie` and API-key header value,
//!   and every `Bearer`/`Basic` credential, is replaced;
//! - every secret promote has read ([`crate::secret::Secret`] registers itself) is replaced in
//!   each form it may travel in: as is, percent-encoded, base64 (standard and URL-safe), inside
//!   `user:password` base64, and for a secret URL its normalised form and its long path segments;
//! - `token=`/`password=`-style values and promote API tokens (`prt_...`).

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

use base64::Engine as _;

/// What replaces a secret.
pub const MASK: &str = "[redacted]";

/// The shortest secret looked for by value (shorter ones would mask ordinary words).
const MIN_SECRET: usize = 6;

static KNOWN: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

fn add(forms: impl IntoIterator<Item = String>) {
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    for f in forms {
        if f.len() >= MIN_SECRET && !known.contains(&f) {
            known.push(f);
        }
    }
    // Longest first: a form inside another is replaced after it.
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// The forms a secret value may travel in.
fn forms(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    vec![
        value.to_string(),
        url::form_urlencoded::byte_serialize(b).collect(),
        percent(value),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
    ]
}

fn percent(value: &str) -> String {
    value.bytes().map(|c| if c.is_ascii_alphanumeric() || b"-._~".contains(&c) { (c as char).to_string() } else { format!("%{c:02X}") }).collect()
}

/// Remembers a secret value so that it is redacted wherever it appears, in any of its forms.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET {
        return;
    }
    let mut all = forms(value);
    // A secret URL (a webhook): its normalised form and the path segments that make it secret.
    if let Ok(u) = url::Url::parse(value)
        && u.has_host()
    {
        all.push(u.to_string());
        all.push(u.as_str().trim_end_matches('/').to_string());
        for seg in u.path_segments().into_iter().flatten().filter(|s| s.len() >= 8) {
            all.extend(forms(seg));
        }
    }
    add(all);
}

/// Remembers a user and password sent as HTTP basic authentication (`base64(user:password)`).
pub fn register_basic(user: &str, password: &str) {
    register(password);
    if !password.is_empty() {
        add(forms(&format!("{user}:{password}")).into_iter().skip(3));
    }
}

struct Patterns {
    url: regex::Regex,
    header: regex::Regex,
    cookie: regex::Regex,
    webhook: regex::Regex,
    credential: regex::Regex,
    pairs: regex::Regex,
    token: regex::Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    Patterns {
    url: regex::Regex::new(r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>`()\[\]{}|\\^]+"#).expect("valid"),
    header: regex::Regex::new(
        r#"(?i)\b(authorization|proxy-authorization|x-api-key|api-key|x-auth-token|private-token)("?\s*[:=]\s*"?(?:(?:bearer|basic|digest|token|negotiate)\s+)?)[^\s",;]+"#,
    )
    .expect("valid"),
    cookie: regex::Regex::new(r#"(?i)\b(cookie|set-cookie)("?\s*[:=]\s*"?)[^"\r\n]+"#).expect("valid"),
    // Paths that are the credential of well-known webhooks (Slack, Discord, Teams, generic
    // `/hooks/TOKEN`), and the one-time URLs of promote's webhook stages (`/callbacks/...`).
    webhook: regex::Regex::new(r"(?i)(hooks\.slack\.com/services/|/api/webhooks/|webhook\.office\.com/webhookb2/|/hooks/|/callbacks/)[A-Za-z0-9/_@.-]+").expect("valid"),
    credential: regex::Regex::new(r"(?i)\b(bearer|basic|token|digest)(\s+)[A-Za-z0-9._~+/=-]{6,}").expect("valid"),
    pairs: regex::Regex::new(r"(?i)\b(token|password|passwd|secret|api_key|apikey|api-key|access_token|client_secret|sig|signature)(\s*[=:]\s*)[^\s&,;]+")
        .expect("valid"),
    token: regex::Regex::new(r"\bprt_[0-9A-Za-z_]{16,}").expect("valid"),
}
});

/// `text` with every secret it holds replaced by [`MASK`], by structure and by value.
pub fn text(text: &str) -> Cow<'_, str> {
    let p = &*PATTERNS;
    let mut out = Cow::Borrowed(text);
    {
        let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
        for k in known.iter() {
            if out.contains(k.as_str()) {
                out = Cow::Owned(out.replace(k.as_str(), MASK));
            }
        }
    }
    if p.url.is_match(&out) {
        out = Cow::Owned(p.url.replace_all(&out, |c: &regex::Captures<'_>| url_without_secrets(&c[0])).into_owned());
    }
    for (re, with) in [
        (&p.webhook, "$1[redacted]"),
        (&p.header, "$1$2[redacted]"),
        (&p.cookie, "$1$2[redacted]"),
        (&p.credential, "$1$2[redacted]"),
        (&p.pairs, "$1$2[redacted]"),
        (&p.token, MASK),
    ] {
        if re.is_match(&out) {
            out = Cow::Owned(re.replace_all(&out, with).into_owned());
        }
    }
    out
}

/// A URL without user info, with every query value masked; unchanged when it does not parse.
fn url_without_secrets(raw: &str) -> String {
    // Trailing punctuation belongs to the sentence, not the URL.
    let trimmed = raw.trim_end_matches(['.', ',', ';', ':', '!', '?']);
    let rest = &raw[trimmed.len()..];
    let Ok(mut u) = url::Url::parse(trimmed) else { return raw.to_string() };
    let mut changed = false;
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("");
        let _ = u.set_password(None);
        changed = true;
    }
    if let Some(q) = u.query().filter(|q| !q.is_empty()) {
        // Each value masked, each key kept as written (`k=`, `k=v`, `k`).
        let q = q
            .split('&')
            .map(|part| match part.split_once('=') {
                Some((k, v)) if !v.is_empty() && v != MASK => format!("{k}={MASK}"),
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
        u.set_query(Some(&q));
        changed = true;
    }
    if !changed {
        return raw.to_string();
    }
    // The rebuilt URL percent-encodes the mask's brackets; show it as people read it.
    let shown = u.to_string().replace("%5Bredacted%5D", MASK).replace("[redacted]@", "");
    let shown = if !trimmed.ends_with('/') && shown.ends_with('/') && !trimmed[trimmed.find("://").map_or(0, |i| i + 3)..].contains('/') {
        shown.trim_end_matches('/').to_string()
    } else {
        shown
    };
    format!("{shown}{rest}")
}

/// Redacts every string of a JSON value in place.
pub fn json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(r) = text(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(json),
        serde_json::Value::Object(m) => m.values_mut().for_each(json),
        _ => {}
    }
}

/// Redacts a string in place.
pub fn string(s: &mut String) {
    if let Cow::Owned(r) = text(s) {
        *s = r;
    }
}

/// A writer for logs that redacts each write before it reaches stderr.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(text(&s).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_structure() {
        let t = text(
            "GET http://u:pw@Prom.Example.com:80/api/v1/query?query=up&api_key=K3yK3y123 failed; Authorization: Basic dXNlcjpodW50ZXIy; cookie=sess-abcdef; Bearer abc.def.ghi and prt_0123456789abcdef0123",
        );
        for leak in ["pw@", "K3yK3y123", "dXNlcjpodW50ZXIy", "sess-abcdef", "abc.def.ghi", "prt_0123"] {
            assert!(!t.contains(leak), "{leak} leaked: {t}");
        }
        assert!(t.contains("query=[redacted]&api_key=[redacted]"), "{t}");
    }

    #[test]
    fn by_value_in_every_form() {
        register("https://Hooks.Example.COM:443/services/T0AAAAAAA/B0BBBBBBB/zzzzSecretPath99");
        register_basic("robot", "hunter2 very/secret!");
        let b64 = base64::engine::general_purpose::STANDARD.encode("robot:hunter2 very/secret!");
        let given = format!(
            "error sending request for url (https://hooks.example.com/services/T0AAAAAAA/B0BBBBBBB/zzzzSecretPath99) and echo {b64} and {}",
            percent("hunter2 very/secret!")
        );
        let t = text(&given);
        for leak in ["zzzzSecretPath99", &b64, "hunter2"] {
            assert!(!t.contains(leak), "{leak} leaked: {t}");
        }
        assert_eq!(text("nothing secret at https://example.com/docs."), "nothing secret at https://example.com/docs.");
    }
}
