//! `provider.web`: GET a URL answering JSON, and pick the value with a JSON path.

use std::time::{Duration, SystemTime};

use super::{Credential, MetricProvider, ProviderError, http_client, refused, send, shown_url};
use crate::analysis::Sample;
use crate::model::WebProvider;

/// Values for `${name}` in URLs and queries.
pub type Vars = std::collections::BTreeMap<&'static str, String>;

/// A JSON endpoint.
pub struct Web {
    url: String,
    path: String,
    headers: Vec<(String, String)>,
    credential: Option<Credential>,
    client: reqwest::Client,
    timeout: Duration,
}

impl Web {
    /// From the pipeline's `provider.web`; `vars` interpolates the URL (`${query}` is filled per call).
    pub fn new(w: &WebProvider, vars: &Vars) -> Result<Web, ProviderError> {
        let credential = w.auth.as_ref().map(Credential::resolve).transpose()?.flatten();
        // `${query}` stays for `instant` to fill; the rest is known now.
        let url = crate::model::interpolate(&w.url.value, |n| if n == "query" { Some("${query}") } else { vars.get(n).map(String::as_str) })
            .map_err(|v| ProviderError::Unsupported(format!("the web provider's url uses `${{{v}}}`, which has no value here")))?;
        Ok(Web {
            url,
            path: w.json_path.value.clone(),
            headers: w.headers.clone().into_iter().collect(),
            credential,
            client: http_client(),
            timeout: w.timeout.0,
        })
    }
}

/// Whether a JSON path names the whole answer (`$`, `{$}`).
fn is_root(path: &str) -> bool {
    let p = path.trim();
    matches!(p.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(p).trim(), "$" | "")
}

/// Picks a value out of JSON with a path such as `$.data.value`, `$.items[0].count` or Argo's
/// `{$.data.value}`.
pub fn json_path<'a>(doc: &'a serde_json::Value, path: &str) -> Result<&'a serde_json::Value, String> {
    let p = path.trim();
    let p = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(p);
    let mut rest = p.strip_prefix('$').ok_or_else(|| format!("the JSON path `{path}` must start with `$`"))?;
    let mut at = doc;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() {
                return Err(format!("the JSON path `{path}` has an empty name"));
            }
            at = at.get(key).ok_or_else(|| format!("`{key}` is not in the answer (JSON path `{path}`)"))?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| format!("the JSON path `{path}` has an unclosed `[`"))?;
            let inner = r[..end].trim();
            let key = inner.trim_matches(|c| c == '\'' || c == '"');
            at = if let Ok(i) = inner.parse::<usize>() {
                at.get(i).ok_or_else(|| format!("index {i} is not in the answer (JSON path `{path}`)"))?
            } else {
                at.get(key).ok_or_else(|| format!("`{key}` is not in the answer (JSON path `{path}`)"))?
            };
            rest = &r[end + 1..];
        } else {
            return Err(format!("the JSON path `{path}` cannot be read at `{rest}`"));
        }
    }
    Ok(at)
}

/// A JSON value as a sample: numbers (and numeric strings) become numbers, lists of numbers a vector.
fn to_sample(v: &serde_json::Value) -> Sample {
    let num = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            s => s.parse().ok(),
        },
        _ => None,
    };
    match v {
        serde_json::Value::Array(a) => match a.iter().map(num).collect::<Option<Vec<f64>>>() {
            Some(v) => Sample::Vector(v),
            None => Sample::Json(serde_json::Value::Array(a.clone())),
        },
        other => num(other).map(Sample::Scalar).unwrap_or_else(|| Sample::Json(other.clone())),
    }
}

impl MetricProvider for Web {
    async fn instant(&self, query: &str) -> Result<Sample, ProviderError> {
        let url = self.url.replace("${query}", &urlencode(query));
        let shown = shown_url(&url);
        let mut req = self.client.get(&url).timeout(self.timeout);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let (status, body) = send(req, self.credential.as_ref(), query, &shown).await?;
        if !status.is_success() {
            return Err(refused(self.credential.as_ref(), query, shown, status, &body));
        }
        let doc: serde_json::Value = match serde_json::from_str(&body) {
            Ok(doc) => doc,
            // Argo takes a body that is not JSON as a string; here the conditions judge it
            // (`result == "OK"`) rather than it passing unjudged. A path into it cannot be read.
            Err(_) if is_root(&self.path) => return Ok(Sample::Json(serde_json::Value::String(body.trim().to_string()))),
            Err(e) => {
                return Err(ProviderError::Decode { query: query.into(), url: shown, why: format!("not JSON ({e}), so `{}` cannot be read in it", self.path) });
            }
        };
        let v = json_path(&doc, &self.path).map_err(|why| ProviderError::Decode { query: query.into(), url: shown, why })?;
        Ok(to_sample(v))
    }

    async fn range(&self, query: &str, _: SystemTime, _: SystemTime, _: Duration) -> Result<Vec<f64>, ProviderError> {
        Err(ProviderError::Unsupported(format!("query `{query}`: the web provider has no time ranges; comparisons need `prometheus`")))
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths() {
        let doc = serde_json::json!({"data": {"value": 3, "items": [{"n": "1.5"}, {"n": 2}]}, "500": 7});
        assert_eq!(json_path(&doc, "$.data.value").unwrap(), &serde_json::json!(3));
        assert_eq!(json_path(&doc, "{$.data.items[1].n}").unwrap(), &serde_json::json!(2));
        assert_eq!(json_path(&doc, "$['500']").unwrap(), &serde_json::json!(7));
        assert!(json_path(&doc, "$.data.nope").unwrap_err().contains("`nope` is not in the answer"));
        assert_eq!(to_sample(json_path(&doc, "$.data.items[0].n").unwrap()), Sample::Scalar(1.5));
    }
}
