//! Where log lines come from: files and globs (what was there before, what is appended after),
//! Loki's `query_range`, and the pods of a label selector through kube. A source that cannot be
//! read is an error, never an empty log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Credential, ProviderError, http_client, refused, send, shown_url};
use crate::model::{KubernetesLogSource, LokiSource};

/// Lines kept from a baseline at most (the most recent ones).
pub const MAX_BASELINE_LINES: usize = 200_000;
/// Bytes of a file read for its baseline at most (the last ones before the mark).
pub const MAX_BASELINE_BYTES: u64 = 64 << 20;
/// Bytes of a file read after the mark at most (the first ones: a watch reads the file again at
/// each look, so neither side grows with the file).
pub const MAX_WINDOW_BYTES: u64 = 256 << 20;

/// Files matched by globs, with the length each had when the window opened.
#[derive(Debug, Clone)]
pub struct FileMarks {
    files: Vec<(PathBuf, u64)>,
}

fn unreadable(what: String) -> ProviderError {
    ProviderError::Unreadable(what)
}

impl FileMarks {
    /// Expands `patterns` (relative to `base`) and notes each file's length now. A pattern that
    /// matches no file is an error.
    pub fn open(base: &Path, patterns: &[String]) -> Result<FileMarks, ProviderError> {
        let mut files = Vec::new();
        for p in patterns {
            let full = if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
            let pattern = full.to_string_lossy().to_string();
            let matched: Vec<PathBuf> = glob::glob(&pattern)
                .map_err(|e| unreadable(format!("log files `{p}`: not a valid pattern: {e}")))?
                .filter_map(Result::ok)
                .filter(|f| f.is_file())
                .collect();
            if matched.is_empty() {
                return Err(unreadable(format!("log files `{p}`: no file matches {pattern}")));
            }
            for f in matched {
                let len = std::fs::metadata(&f).map_err(|e| unreadable(format!("log file {}: {e}", f.display())))?.len();
                files.push((f, len));
            }
        }
        Ok(FileMarks { files })
    }

    /// The files and their noted lengths, as JSON (`[[path, length], ...]`), to be kept.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.files.iter().map(|(p, n)| serde_json::json!([p.display().to_string(), n])).collect())
    }

    /// Marks kept with [`to_json`](Self::to_json); `None` when `v` is not such a list.
    pub fn from_json(v: &serde_json::Value) -> Option<FileMarks> {
        let files = v.as_array()?.iter().map(|e| Some((PathBuf::from(e[0].as_str()?), e[1].as_u64()?))).collect::<Option<Vec<_>>>()?;
        Some(FileMarks { files })
    }

    /// (the lines each file had when the window opened — the most recent ones, the lines
    /// appended since). A file that shrank (rotated) is read from its start.
    pub fn read(&self) -> Result<(Vec<String>, Vec<String>), ProviderError> {
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (path, mark) in &self.files {
            use std::io::{Seek, SeekFrom};
            let shown = path.display();
            let fail = |e: std::io::Error| unreadable(format!("log file {shown}: {e}"));
            let mut f = std::fs::File::open(path).map_err(fail)?;
            let len = f.metadata().map_err(fail)?.len();
            let mark = if len < *mark { 0 } else { *mark };
            // Only the end of the baseline and the start of the window are read.
            let from = mark.saturating_sub(MAX_BASELINE_BYTES);
            f.seek(SeekFrom::Start(from)).map_err(fail)?;
            let mut bytes = Vec::new();
            f.take(mark - from + MAX_WINDOW_BYTES).read_to_end(&mut bytes).map_err(fail)?;
            let split = ((mark - from) as usize).min(bytes.len());
            let mut head = &bytes[..split];
            if from > 0 {
                // Started inside a line: drop its end.
                head = head.iter().position(|b| *b == b'\n').map_or(&[][..], |i| &head[i + 1..]);
            }
            let mut tail = &bytes[split..];
            if (tail.len() as u64) == MAX_WINDOW_BYTES {
                // Stopped inside a line: drop its start.
                tail = tail.iter().rposition(|b| *b == b'\n').map_or(&[][..], |i| &tail[..i]);
            }
            before.extend(lines(head));
            after.extend(lines(tail));
        }
        if before.len() > MAX_BASELINE_LINES {
            before.drain(..before.len() - MAX_BASELINE_LINES);
        }
        Ok((before, after))
    }
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| String::from_utf8_lossy(l).trim_end_matches('\r').to_string())
}

/// Loki's `query_range`: the lines of `query` between two times (Unix ms), oldest first.
pub async fn loki(source: &LokiSource, query: &str, start_ms: i64, end_ms: i64, timeout: Duration) -> Result<Vec<String>, ProviderError> {
    let base = source.address.value.trim_end_matches('/');
    let shown = shown_url(base);
    let credential = source.auth.as_ref().map(Credential::resolve).transpose()?.flatten();
    let mut out = Vec::new();
    let mut start_ns = start_ms as i128 * 1_000_000;
    let end_ns = end_ms as i128 * 1_000_000;
    // Pages of 5,000 (Loki's usual limit), each starting after the last line seen.
    loop {
        let params = [
            ("query", query.to_string()),
            ("start", start_ns.to_string()),
            ("end", end_ns.to_string()),
            ("direction", "forward".to_string()),
            ("limit", "5000".to_string()),
        ];
        let req = http_client().get(format!("{base}/loki/api/v1/query_range")).query(&params).timeout(timeout);
        let (status, body) = send(req, credential.as_ref(), query, &shown).await?;
        if !status.is_success() {
            return Err(refused(credential.as_ref(), query, shown, status, &body));
        }
        let doc: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| ProviderError::Decode { query: query.into(), url: shown.clone(), why: format!("not JSON ({e})") })?;
        if doc["status"] != "success" {
            return Err(ProviderError::Decode { query: query.into(), url: shown, why: format!("status {}", doc["status"]) });
        }
        let mut page: Vec<(i128, String)> = Vec::new();
        for stream in doc["data"]["result"].as_array().into_iter().flatten() {
            for v in stream["values"].as_array().into_iter().flatten() {
                let ts: i128 = v[0].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
                page.push((ts, v[1].as_str().unwrap_or("").to_string()));
            }
        }
        page.sort_by_key(|(ts, _)| *ts);
        let n = page.len();
        let last = page.last().map(|(ts, _)| *ts);
        out.extend(page.into_iter().map(|(_, l)| l));
        match last {
            Some(ts) if n >= 5000 && ts + 1 < end_ns => start_ns = ts + 1,
            _ => break,
        }
    }
    Ok(out)
}

/// Parses `2026-11-25T21:56:40.123456789Z` (RFC 3339 in UTC, as the Kubernetes API writes it) to
/// Unix ms.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    let mut ms = 0;
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        let padded = format!("{:0<3}", &digits[..digits.len().min(3)]);
        ms = padded.parse().ok()?;
        rest = &frac[digits.len()..];
    }
    if rest != "Z" {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// The lines of every pod matching the selector (their first container, or `container`), split
/// at `split_ms` into (before, after), each side `window_ms` long at most.
pub async fn kubernetes(client: &kube::Client, s: &KubernetesLogSource, split_ms: i64, window_ms: i64) -> Result<(Vec<String>, Vec<String>), ProviderError> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, LogParams};
    let api: Api<Pod> = Api::namespaced(client.clone(), &s.namespace);
    let what = format!("pods {} in {}", s.selector, s.namespace);
    let pods = api.list(&ListParams::default().labels(&s.selector)).await.map_err(|e| unreadable(format!("{what}: {e}")))?;
    if pods.items.is_empty() {
        return Err(unreadable(format!("{what}: no pod matches")));
    }
    let since = ((crate::clock::now_ms() - split_ms + window_ms) / 1000 + 1).max(1);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for pod in pods.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = LogParams { container: s.container.clone(), timestamps: true, since_seconds: Some(since), ..Default::default() };
        let text = api.logs(&name, &params).await.map_err(|e| unreadable(format!("logs of pod {}/{name}: {e}", s.namespace)))?;
        for line in text.lines() {
            let Some((ts, rest)) = line.split_once(' ') else { continue };
            let Some(at) = rfc3339_ms(ts) else { continue };
            if at >= split_ms - window_ms && at < split_ms {
                before.push(rest.to_string());
            } else if at >= split_ms && at < split_ms + window_ms {
                after.push(rest.to_string());
            }
        }
    }
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubernetes_timestamps() {
        assert_eq!(super::rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(super::rfc3339_ms("2026-11-25T21:56:40.123456789Z"), Some(1_795_643_800_123));
        assert_eq!(super::rfc3339_ms("2026-11-25 21:56:40Z"), None);
    }
}
