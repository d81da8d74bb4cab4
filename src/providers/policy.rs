//! Policy as code: Rego (v1) files and folders compiled with regorus, evaluated over the input
//! document (docs/policy.md); every package's `deny` refuses, its `warn` is recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{Diagnostics, Pos};
use crate::model::Spanned;

/// A compiled set of policies and their data.
#[derive(Clone)]
pub struct PolicySet {
    engine: regorus::Engine,
    /// (package, has deny, has warn, file).
    packages: Arc<Vec<(String, bool, bool, String)>>,
    /// The files read, for messages.
    pub files: Arc<Vec<String>>,
}

/// What the policies said.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Every `deny` message (the commit or stage is refused when there is one).
    pub deny: Vec<String>,
    /// Every `warn` message.
    pub warn: Vec<String>,
}

impl PolicySet {
    /// Reads and compiles the policy files (`*.rego`, folders searched recursively, `*_test.rego`
    /// left out) and data files (JSON or YAML). Every problem is recorded at its place, a Rego
    /// syntax error at the policy's own file, line and column; `None` if any.
    pub fn load(base_dir: &Path, sources: &[Spanned<String>], data: &[Spanned<String>], diags: &mut Diagnostics) -> Option<PolicySet> {
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(true);
        let mut ok = true;
        let mut packages = Vec::new();
        let mut files = Vec::new();
        for src in sources {
            let path = base_dir.join(&src.value);
            let mut found = Vec::new();
            if path.is_dir() {
                collect_rego(&path, &mut found);
                found.sort();
                if found.is_empty() {
                    diags.error(src.pos, format!("policy folder `{}` has no .rego files", src.value));
                    ok = false;
                }
            } else if path.is_file() {
                found.push(path.clone());
            } else {
                diags.error(src.pos, format!("policy `{}` does not exist (relative to the pipeline file: {})", src.value, path.display()));
                ok = false;
            }
            for f in found {
                let shown = shown_path(base_dir, &src.value, &path, &f);
                let text = match crate::files::read_text(&f, crate::files::MAX_TEXT) {
                    Ok(t) => t,
                    Err(e) => {
                        diags.error(src.pos, format!("cannot read policy {shown}: {e}"));
                        ok = false;
                        continue;
                    }
                };
                match engine.add_policy(shown.clone(), text.clone()) {
                    Ok(pkg) => {
                        let has = |rule: &str| {
                            text.lines().any(|l| l.trim_start().starts_with(rule) && l.trim_start()[rule.len()..].starts_with([' ', '[', ':', '=', '{', '\t']))
                        };
                        let (deny, warn) = (has("deny"), has("warn"));
                        if !deny && !warn {
                            diags.error_in(
                                shown.clone(),
                                Pos::new(1, 1),
                                format!("policy {shown} ({pkg}) has no `deny` or `warn` rule: promote would never use it"),
                            );
                            ok = false;
                        }
                        packages.push((pkg, deny, warn, shown.clone()));
                        files.push(shown);
                    }
                    Err(e) => {
                        let (pos, msg) = locate(&e.to_string(), &shown);
                        diags.error_in(shown, pos, format!("Rego: {msg}"));
                        ok = false;
                    }
                }
            }
        }
        for d in data {
            let path = base_dir.join(&d.value);
            let parsed = crate::files::read_text(&path, crate::files::MAX_TEXT).map_err(|e| e.why).and_then(|t| {
                if d.value.ends_with(".json") {
                    serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string())
                } else {
                    crate::model::yaml::within_limits(&t).map_err(|(pos, why)| format!("line {}, column {}: {why}", pos.line, pos.col))?;
                    serde_saphyr::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string())
                }
            });
            match parsed {
                Ok(v) if v.is_object() => {
                    if let Err(e) = engine.add_data(regorus::Value::from(v)) {
                        diags.error(d.pos, format!("policy data `{}`: {e}", d.value));
                        ok = false;
                    }
                }
                Ok(_) => {
                    diags.error(d.pos, format!("policy data `{}` must be a mapping at the top", d.value));
                    ok = false;
                }
                Err(e) => {
                    diags.error(d.pos, format!("policy data `{}`: {}", d.value, e.lines().next().unwrap_or("")));
                    ok = false;
                }
            }
        }
        ok.then(|| PolicySet { engine, packages: Arc::new(packages), files: Arc::new(files) })
    }

    /// Evaluates every package's `deny` and `warn` over `input`. A Rego error (a failing
    /// built-in, a conflict) is an error naming the file and line, never a pass.
    pub fn evaluate(&self, input: regorus::Value) -> Result<Decision, String> {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        let mut out = Decision::default();
        for (pkg, deny, warn, file) in self.packages.iter() {
            for (rule, wanted, into) in [("deny", *deny, &mut out.deny), ("warn", *warn, &mut out.warn)] {
                if !wanted {
                    continue;
                }
                let v = engine.eval_rule(format!("{pkg}.{rule}")).map_err(|e| {
                    let (pos, msg) = locate(&e.to_string(), file);
                    format!("{file}:{pos}: evaluating {pkg}.{rule}: {msg}")
                })?;
                messages(&v, into);
            }
        }
        Ok(out)
    }
}

/// A digest of the policy and data files `sources` and `data` name as they are now (names and
/// contents; a file that cannot be read counts as its error): a change to any of them changes it,
/// so that a compliance sweep knows the policies changed without compiling them.
pub fn digest(base_dir: &Path, sources: &[Spanned<String>], data: &[Spanned<String>]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut add = |path: &Path| {
        h.update(path.to_string_lossy().as_bytes());
        h.update([0]);
        match crate::files::read_text(path, crate::files::MAX_TEXT) {
            Ok(t) => h.update(t.as_bytes()),
            Err(e) => h.update(e.why.as_bytes()),
        }
        h.update([0]);
    };
    for src in sources {
        let path = base_dir.join(&src.value);
        let mut found = Vec::new();
        if path.is_dir() {
            collect_rego(&path, &mut found);
            found.sort();
        } else {
            found.push(path);
        }
        found.iter().for_each(|f| add(f));
    }
    for d in data {
        add(&base_dir.join(&d.value));
    }
    hex::encode(&h.finalize()[..12])
}

/// A JSON value as regorus' value.
pub fn to_value(v: &serde_json::Value) -> regorus::Value {
    regorus::Value::from(v.clone())
}

fn messages(v: &regorus::Value, into: &mut Vec<String>) {
    let one = |m: &regorus::Value| -> String {
        match m {
            regorus::Value::String(s) => s.to_string(),
            regorus::Value::Object(o) => match o.get(&regorus::Value::from("msg")) {
                Some(regorus::Value::String(s)) => s.to_string(),
                _ => m.to_json_str().unwrap_or_default(),
            },
            other => other.to_json_str().unwrap_or_default(),
        }
    };
    match v {
        regorus::Value::Set(s) => into.extend(s.iter().map(one)),
        regorus::Value::Array(a) => into.extend(a.iter().map(one)),
        regorus::Value::Undefined | regorus::Value::Null => {}
        regorus::Value::Bool(false) => {}
        other => into.push(one(other)),
    }
}

fn collect_rego(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rego(&p, out);
        } else if p.extension().is_some_and(|x| x == "rego") && !p.to_string_lossy().ends_with("_test.rego") {
            out.push(p);
        }
    }
}

/// The policy's name as the user wrote it (the folder they named, then the file in it).
fn shown_path(_base: &Path, written: &str, root: &Path, file: &Path) -> String {
    match file.strip_prefix(root) {
        Ok(rest) if !rest.as_os_str().is_empty() => format!("{}/{}", written.trim_end_matches('/'), rest.display()),
        _ => written.to_string(),
    }
}

/// Finds `FILE:LINE:COL` in a regorus message; returns the position and the message's first
/// meaningful line.
fn locate(message: &str, file: &str) -> (Pos, String) {
    let mut pos = Pos::new(1, 1);
    let needle = format!("{file}:");
    if let Some(at) = message.find(&needle) {
        let rest = &message[at + needle.len()..];
        let mut nums = rest.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).take(2).map(|n| n.parse::<usize>().unwrap_or(1));
        if let (Some(l), Some(c)) = (nums.next(), nums.next()) {
            pos = Pos::new(l, c);
        }
    }
    let text = message
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| message.lines().last().unwrap_or(message).trim().to_string());
    (pos, text)
}
