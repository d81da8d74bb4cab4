//! The Prometheus HTTP API: instant queries (`/api/v1/query`) and range queries
//! (`/api/v1/query_range`); vector, scalar and matrix results.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{Credential, MetricProvider, ProviderError, http_client, refused, send, shown_url};
use crate::analysis::Sample;

/// A Prometheus server.
pub struct Prometheus {
    base: String,
    credential: Option<Credential>,
    client: reqwest::Client,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Prometheus writes sample values as strings: `"1.5"`, `"NaN"`, `"+Inf"`.
fn number(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("`{s}` is not a number")),
    }
}

fn secs(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

impl Prometheus {
    /// A client for the server at `address` (`http://prometheus:9090`).
    pub fn new(address: &str, auth: Option<&crate::model::Auth>, timeout: Duration) -> Result<Prometheus, ProviderError> {
        let credential = auth.map(Credential::resolve).transpose()?.flatten();
        Ok(Prometheus { base: address.trim_end_matches('/').to_string(), credential, client: http_client(), timeout })
    }

    async fn call(&self, path: &str, query: &str, params: &[(&str, String)]) -> Result<Data, ProviderError> {
        let url = format!("{}{path}", self.base);
        let shown = shown_url(&self.base);
        let req = self.client.post(&url).timeout(self.timeout).form(params);
        let (status, body) = send(req, self.credential.as_ref(), query, &shown).await?;
        let scrub = |s: String| self.credential.as_ref().map_or(s.clone(), |c| c.scrub(&s));
        let answer: Answer = match serde_json::from_str(&body) {
            Ok(a) => a,
            Err(_) if !status.is_success() => return Err(refused(self.credential.as_ref(), query, shown, status, &body)),
            Err(e) => return Err(ProviderError::Decode { query: query.into(), url: shown, why: format!("not a Prometheus API answer ({e})") }),
        };
        if answer.status != "success" {
            let kind = answer.error_type.unwrap_or_default();
            let why = answer.error.unwrap_or_else(|| "no message".into());
            return Err(ProviderError::Refused { query: query.into(), url: shown, why: scrub(format!("HTTP {status}, {kind}: {why}")) });
        }
        answer.data.ok_or_else(|| ProviderError::Decode { query: query.into(), url: shown, why: "no `data`".into() })
    }
}

fn decode(data: Data) -> Result<Sample, String> {
    match data.result_type.as_str() {
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            Ok(Sample::Scalar(number(&v)?))
        }
        "vector" => {
            let series: Vec<Series> = serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            let values = series.iter().filter_map(|s| s.value.as_ref()).map(|(_, v)| number(v)).collect::<Result<_, _>>()?;
            Ok(Sample::Vector(values))
        }
        "matrix" => {
            let series: Vec<Series> = serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            let values = series.iter().flat_map(|s| &s.values).map(|(_, v)| number(v)).collect::<Result<_, _>>()?;
            Ok(Sample::Vector(values))
        }
        "string" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result).map_err(|e| e.to_string())?;
            Ok(Sample::Json(serde_json::Value::String(v)))
        }
        other => Err(format!("unknown result type `{other}`")),
    }
}

impl MetricProvider for Prometheus {
    async fn instant(&self, query: &str) -> Result<Sample, ProviderError> {
        let data = self.call("/api/v1/query", query, &[("query", query.to_string()), ("time", secs(SystemTime::now()))]).await?;
        decode(data).map_err(|why| ProviderError::Decode { query: query.into(), url: shown_url(&self.base), why })
    }

    async fn range(&self, query: &str, start: SystemTime, end: SystemTime, step: Duration) -> Result<Vec<f64>, ProviderError> {
        let step = format!("{}", step.as_secs_f64().max(0.001));
        let params = [("query", query.to_string()), ("start", secs(start)), ("end", secs(end)), ("step", step)];
        let data = self.call("/api/v1/query_range", query, &params).await?;
        match decode(data) {
            Ok(Sample::Vector(v)) => Ok(v),
            Ok(Sample::Scalar(v)) => Ok(vec![v]),
            Ok(other) => Err(ProviderError::Decode { query: query.into(), url: shown_url(&self.base), why: format!("a range query gave {other}") }),
            Err(why) => Err(ProviderError::Decode { query: query.into(), url: shown_url(&self.base), why }),
        }
    }
}
