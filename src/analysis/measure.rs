//! Argo Rollouts' measurement semantics: a measurement's phase from its conditions, and a
//! metric's phase from its measurements and limits.

use std::fmt;

use serde::Serialize;

/// What one measurement returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A single number (Prometheus scalar, a web value that is a number).
    Scalar(f64),
    /// One number per series (Prometheus instant vector): `result[0]` in conditions.
    Vector(Vec<f64>),
    /// Any other JSON a web provider returned.
    Json(serde_json::Value),
}

impl Sample {
    /// Why this sample cannot be judged (no data, NaN), if so. Never passes silently.
    pub fn no_data(&self) -> Option<String> {
        match self {
            Sample::Scalar(v) if v.is_nan() => Some("the result is NaN (for example 0/0: no traffic?)".into()),
            Sample::Vector(v) if v.is_empty() => Some("no data: the query returned no series".into()),
            Sample::Vector(v) if v.iter().any(|x| x.is_nan()) => Some("the result contains NaN (for example 0/0: no traffic?)".into()),
            Sample::Json(serde_json::Value::Null) => Some("no data: the value is null".into()),
            _ => None,
        }
    }

    /// The value as CEL sees it.
    fn to_cel(&self) -> cel::Value {
        match self {
            Sample::Scalar(v) => cel::Value::Float(*v),
            Sample::Vector(v) => cel::Value::List(std::sync::Arc::new(v.iter().map(|x| cel::Value::Float(*x)).collect())),
            // The same conversion `if` expressions get (cel's serde serializer).
            Sample::Json(j) => cel::to_value(j).unwrap_or(cel::Value::Null),
        }
    }

    /// The value for the evidence (JSON has no NaN or infinity: those are written as strings).
    pub fn to_json(&self) -> serde_json::Value {
        fn num(v: f64) -> serde_json::Value {
            if v.is_finite() { serde_json::json!(v) } else { serde_json::json!(fmt_f64(v)) }
        }
        match self {
            Sample::Scalar(v) => num(*v),
            Sample::Vector(v) => serde_json::Value::Array(v.iter().map(|x| num(*x)).collect()),
            Sample::Json(j) => j.clone(),
        }
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sample::Scalar(v) => f.write_str(&fmt_f64(*v)),
            Sample::Vector(v) => write!(f, "[{}]", v.iter().map(|x| fmt_f64(*x)).collect::<Vec<_>>().join(", ")),
            Sample::Json(j) => write!(f, "{j}"),
        }
    }
}

/// Numbers as Prometheus writes them (`NaN`, `+Inf`), with at most 6 significant decimals.
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A measurement's or a metric's phase, as Argo Rollouts names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Phase {
    /// The condition held.
    Successful,
    /// Neither condition decided (or no data): a person decides.
    Inconclusive,
    /// The query could not be made or evaluated.
    Error,
    /// The failure condition held (or the success condition did not).
    Failed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Successful => "Successful",
            Phase::Inconclusive => "Inconclusive",
            Phase::Error => "Error",
            Phase::Failed => "Failed",
        })
    }
}

/// A check's conditions, compiled once.
pub struct Conditions {
    success: Option<(String, cel::Program)>,
    failure: Option<(String, cel::Program)>,
    /// The standard library and the run's variables, built once per stage (building it per
    /// measurement cost more than judging).
    root: std::sync::Arc<cel::Context<'static, 'static>>,
}

impl Conditions {
    /// The context every condition of a stage starts from: CEL's standard library and `vars`,
    /// the other variables conditions may read (`version`, `pipeline`, `run`, `image`).
    pub fn context(vars: &[(&str, &str)]) -> std::sync::Arc<cel::Context<'static, 'static>> {
        let mut root = cel::Context::default();
        for (k, v) in vars {
            root.add_variable_from_value(k.to_string(), cel::Value::String(std::sync::Arc::new(v.to_string())));
        }
        std::sync::Arc::new(root)
    }

    /// Compiles the conditions (the plan has already checked that they parse).
    pub fn new(success: Option<&str>, failure: Option<&str>, root: std::sync::Arc<cel::Context<'static, 'static>>) -> Result<Conditions, String> {
        let compile = |s: &str| cel::Program::compile(s).map(|p| (s.to_string(), p)).map_err(|e| format!("`{s}`: {e}"));
        Ok(Conditions { success: success.map(compile).transpose()?, failure: failure.map(compile).transpose()?, root })
    }

    /// The phase of one measurement, with the reason: Argo's `EvaluateResult`, except that no
    /// data and NaN are Inconclusive whatever the conditions say (a failure condition over NaN is
    /// false, which would otherwise pass).
    pub fn judge(&self, sample: &Sample) -> (Phase, String) {
        if let Some(why) = sample.no_data() {
            return (Phase::Inconclusive, why);
        }
        let mut ctx = self.root.new_inner_scope();
        ctx.add_variable_from_value("result", sample.to_cel());
        let eval = |c: &Option<(String, cel::Program)>| -> Result<Option<bool>, String> {
            let Some((text, p)) = c else { return Ok(None) };
            match p.execute(&ctx) {
                Ok(cel::Value::Bool(b)) => Ok(Some(b)),
                Ok(other) => Err(format!("`{text}` gave {other:?}, not true or false (result = {sample})")),
                Err(e) => Err(format!("`{text}` could not be evaluated with result = {sample}: {e}")),
            }
        };
        let (s, f) = match (eval(&self.success), eval(&self.failure)) {
            (Ok(s), Ok(f)) => (s, f),
            (Err(e), _) | (_, Err(e)) => return (Phase::Error, e),
        };
        let text = |c: &Option<(String, cel::Program)>| c.as_ref().map(|(t, _)| t.as_str()).unwrap_or_default().to_string();
        match (s, f) {
            (None, None) => (Phase::Successful, format!("result = {sample} (no condition)")),
            (_, Some(true)) => (Phase::Failed, format!("result = {sample}: failureCondition `{}` is true", text(&self.failure))),
            (Some(true), _) => (Phase::Successful, format!("result = {sample}: successCondition `{}` is true", text(&self.success))),
            (Some(false), None) => (Phase::Failed, format!("result = {sample}: successCondition `{}` is false", text(&self.success))),
            (None, Some(false)) => (Phase::Successful, format!("result = {sample}: failureCondition `{}` is false", text(&self.failure))),
            (Some(false), Some(false)) => (
                Phase::Inconclusive,
                format!("result = {sample}: neither successCondition `{}` nor failureCondition `{}` is true", text(&self.success), text(&self.failure)),
            ),
        }
    }
}

/// Limits of a metric (Argo's `failureLimit`, `inconclusiveLimit`, `consecutiveErrorLimit`, `count`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Measurements to take (errors are not counted).
    pub count: u32,
    /// Failed when failed measurements exceed this.
    pub failure: u32,
    /// Inconclusive when inconclusive measurements exceed this.
    pub inconclusive: u32,
    /// Error when errors in a row exceed this.
    pub consecutive_errors: u32,
}

/// The tallies of a metric's measurements.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// Measurements that were not errors.
    pub count: u32,
    /// Successful measurements.
    pub successful: u32,
    /// Failed measurements.
    pub failed: u32,
    /// Inconclusive measurements.
    pub inconclusive: u32,
    /// Errors.
    pub error: u32,
    /// Errors since the last measurement that was not one.
    pub consecutive_error: u32,
}

impl Tally {
    /// Adds a measurement.
    pub fn add(&mut self, phase: Phase) {
        match phase {
            Phase::Error => {
                self.error += 1;
                self.consecutive_error += 1;
                return;
            }
            Phase::Successful => self.successful += 1,
            Phase::Failed => self.failed += 1,
            Phase::Inconclusive => self.inconclusive += 1,
        }
        self.count += 1;
        self.consecutive_error = 0;
    }

    /// The metric's phase so far: `Some` once it is decided (Argo's `assessMetricStatus`: errors
    /// beyond the limit win over inconclusive, which wins over failed; reaching `count` is success).
    pub fn assess(&self, l: &Limits) -> Option<(Phase, String)> {
        let mut decided = None;
        if self.failed > l.failure {
            decided = Some((Phase::Failed, format!("failed ({}) > failureLimit ({})", self.failed, l.failure)));
        }
        if self.inconclusive > l.inconclusive {
            decided = Some((Phase::Inconclusive, format!("inconclusive ({}) > inconclusiveLimit ({})", self.inconclusive, l.inconclusive)));
        }
        if self.consecutive_error > l.consecutive_errors {
            decided = Some((Phase::Error, format!("consecutive errors ({}) > consecutiveErrorLimit ({})", self.consecutive_error, l.consecutive_errors)));
        }
        if decided.is_none() && self.count >= l.count {
            decided = Some((
                Phase::Successful,
                format!("count ({}) reached: {} successful, {} failed, {} inconclusive", l.count, self.successful, self.failed, self.inconclusive),
            ));
        }
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(s: Option<&str>, f: Option<&str>, sample: Sample) -> Phase {
        Conditions::new(s, f, Conditions::context(&[("version", "1.2.3")])).unwrap().judge(&sample).0
    }

    #[test]
    fn conditions_follow_argo() {
        let v = |x: f64| Sample::Vector(vec![x]);
        assert_eq!(judge(Some("result[0] >= 0.95"), None, v(0.99)), Phase::Successful);
        assert_eq!(judge(Some("result[0] >= 0.95"), None, v(0.5)), Phase::Failed);
        assert_eq!(judge(None, Some("result[0] > 0.05"), v(0.01)), Phase::Successful);
        assert_eq!(judge(None, Some("result[0] > 0.05"), v(0.5)), Phase::Failed);
        assert_eq!(judge(Some("result[0] < 0.01"), Some("result[0] > 0.05"), v(0.03)), Phase::Inconclusive);
        assert_eq!(judge(Some("result[0] < 1.0"), Some("result[0] > 0.05"), v(0.5)), Phase::Failed, "failure wins");
        assert_eq!(judge(None, None, v(0.5)), Phase::Successful);
        assert_eq!(judge(Some("result < 2"), None, Sample::Scalar(1.0)), Phase::Successful);
        assert_eq!(judge(Some("version == '1.2.3' && result < 2.0"), None, Sample::Scalar(1.0)), Phase::Successful);
        let json = Sample::Json(serde_json::json!({"status": "ok", "queues": [{"depth": 3}]}));
        assert_eq!(judge(Some("result.status == 'ok' && result.queues[0].depth < 5"), None, json), Phase::Successful);
    }

    #[test]
    fn no_data_and_nan_never_pass() {
        assert_eq!(judge(None, Some("result[0] > 0.05"), Sample::Vector(vec![f64::NAN])), Phase::Inconclusive);
        assert_eq!(judge(None, Some("result.all(x, x > 0.05)"), Sample::Vector(vec![])), Phase::Inconclusive);
        assert_eq!(judge(Some("result[0] < 1.0"), None, Sample::Vector(vec![f64::INFINITY])), Phase::Failed);
        assert_eq!(judge(Some("result['x'] < 1.0"), None, Sample::Vector(vec![1.0])), Phase::Error);
    }

    #[test]
    fn limits_follow_argo() {
        let l = Limits { count: 3, failure: 1, inconclusive: 0, consecutive_errors: 4 };
        let mut t = Tally::default();
        t.add(Phase::Failed);
        assert_eq!(t.assess(&l), None, "one failure is within failureLimit 1");
        t.add(Phase::Successful);
        t.add(Phase::Successful);
        assert_eq!(t.assess(&l).unwrap().0, Phase::Successful);
        let mut t = Tally::default();
        for _ in 0..5 {
            assert_eq!(t.assess(&l), None);
            t.add(Phase::Error);
        }
        assert_eq!(t.assess(&l).unwrap().0, Phase::Error, "5 errors in a row > 4");
        let mut t = Tally::default();
        t.add(Phase::Inconclusive);
        assert_eq!(t.assess(&l).unwrap().0, Phase::Inconclusive);
    }
}
