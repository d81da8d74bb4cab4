//! The whole-pipeline checks: each one records every problem it finds and goes on.

use std::collections::{HashMap, HashSet};

use petgraph::Direction;
use petgraph::graph::DiGraph;

use super::node;
use crate::diag::{Diagnostics, did_you_mean};
use crate::model::{Compare, Pipeline, Provider, Spanned, Stage, StageKind, list};

/// `needs`: every name is a stage, not the stage itself, listed once. Adds the edges and returns
/// each stage's needs as indexes.
pub fn needs(p: &Pipeline, index: &HashMap<&str, usize>, graph: &mut DiGraph<usize, ()>, diags: &mut Diagnostics) -> Vec<Vec<usize>> {
    let mut all = Vec::with_capacity(p.stages.len());
    for (i, stage) in p.stages.iter().enumerate() {
        let mut resolved = Vec::with_capacity(stage.needs.len());
        let mut seen = HashSet::new();
        for need in &stage.needs {
            if need.value == stage.name.value {
                diags.error(need.pos, format!("stage `{}` needs itself: remove `{}` from its `needs`", stage.name.value, need.value));
                continue;
            }
            if !seen.insert(need.value.as_str()) {
                diags.warning(need.pos, format!("`{}` is listed twice in the `needs` of stage `{}`", need.value, stage.name.value));
                continue;
            }
            match index.get(need.value.as_str()) {
                Some(&j) => {
                    graph.add_edge(node(j), node(i), ());
                    resolved.push(j);
                }
                None if p.unreadable.contains(&need.value) => {}
                None => {
                    let hint = did_you_mean(&need.value, p.stages.iter().map(|s| s.name.value.as_str()).filter(|n| *n != stage.name.value));
                    diags.error(need.pos, format!("stage `{}` needs `{}`, which is not a stage of this pipeline{hint}", stage.name.value, need.value));
                }
            }
        }
        all.push(resolved);
    }
    all
}

/// Reports each cycle of `needs` once, as its loop `a -> b -> c -> a` (each stage needs the next).
/// Returns true when there is none.
pub fn cycles(p: &Pipeline, graph: &DiGraph<usize, ()>, diags: &mut Diagnostics) -> bool {
    let mut acyclic = true;
    for scc in petgraph::algo::tarjan_scc(graph) {
        if scc.len() < 2 {
            continue;
        }
        acyclic = false;
        let members: HashSet<usize> = scc.iter().map(|n| n.index()).collect();
        // Start from the member written first, then follow `needs` inside the component back to it.
        let start = *members.iter().min().expect("non-empty");
        let path = loop_from(graph, start, &members);
        let names: Vec<&str> = path.iter().map(|&i| p.stages[i].name.value.as_str()).collect();
        let first = &p.stages[start];
        let pos = first.needs.iter().find(|n| n.value == names[1]).map_or(first.name.pos, |n| n.pos);
        diags.error(pos, format!("`needs` forms a cycle: {} (each stage needs the next); remove one of these needs", names.join(" -> ")));
    }
    acyclic
}

/// The shortest loop through `start` following `needs` edges (reverse graph edges) within `members`.
fn loop_from(graph: &DiGraph<usize, ()>, start: usize, members: &HashSet<usize>) -> Vec<usize> {
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(cur) = queue.pop_front() {
        let mut needed: Vec<usize> = graph.neighbors_directed(node(cur), Direction::Incoming).map(|n| n.index()).filter(|n| members.contains(n)).collect();
        needed.sort_unstable();
        for n in needed {
            if n == start {
                let mut path = vec![start];
                let mut at = cur;
                while at != start {
                    path.push(at);
                    at = prev[&at];
                }
                path[1..].reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(n) {
                e.insert(cur);
                queue.push_back(n);
            }
        }
    }
    unreachable!("a strongly connected component has a loop through each member")
}

fn is_url_scheme(s: &str, schemes: &[&str]) -> bool {
    schemes.iter().any(|sc| s.strip_prefix(sc).is_some_and(|r| r.starts_with("://")))
}

/// Why a `repo` is a form git would turn into a command or an option, if it is: a
/// `TRANSPORT::ADDRESS` (git's `ext::` runs a program), or a value, host or path that begins with
/// `-` (taken for an option by ssh or git).
fn odd_repo(v: &str) -> Option<String> {
    if let Some(i) = v.find("::")
        && !v[..i].contains(['/', ':', '@'])
    {
        return Some(format!("names git's `{}::` transport, which runs a program", &v[..i]));
    }
    if v.starts_with('-') {
        return Some("begins with `-`, which git or ssh would take as an option".to_string());
    }
    let (host, path) = match v.split_once("://") {
        Some((_, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            (authority.rsplit('@').next().unwrap_or(authority), path)
        }
        None => match v.split_once(':') {
            // user@host:path
            Some((before, path)) if before.contains('@') && !before.contains('/') => (before.rsplit('@').next().unwrap_or(before), path),
            _ => return None,
        },
    };
    if host.starts_with('-') || path.starts_with('-') {
        return Some("has a host or path that begins with `-`, which ssh would take as an option".to_string());
    }
    None
}

/// Deploys name known environments, each at most once; environments are well formed and used.
pub fn environments(p: &Pipeline, diags: &mut Diagnostics) {
    let names: Vec<&str> = p.environments.iter().map(|e| e.name.value.as_str()).collect();
    // Looked up once per deploy: sets, so that validation stays linear in stages + environments.
    let known: HashSet<&str> = names.iter().copied().collect();
    let unreadable: HashSet<&str> = p.unreadable.iter().map(String::as_str).collect();
    for env in &p.environments {
        let repo = &env.spec.repo;
        if repo.value.contains("://") && !is_url_scheme(&repo.value, &["file", "git", "ssh", "https", "http"]) {
            diags.error(repo.pos, format!("unsupported repo URL `{}`: use a path, or a file://, git://, ssh:// or https:// URL", repo.value));
        }
        if repo.value.trim().is_empty() {
            diags.error(repo.pos, "`repo` is empty: give a path or a URL of the environment repo");
        }
        if let Some(why) = odd_repo(&repo.value) {
            diags.error(repo.pos, format!("`repo: {}` {why}: use a path, a file://, git://, ssh:// or https:// URL, or user@host:path", repo.value));
        }
        if env.spec.file.value.starts_with('/') || env.spec.file.value.split('/').any(|s| s == "..") {
            diags.error(env.spec.file.pos, format!("`file: {}` must be a path inside the repo, relative to its root, without `..`", env.spec.file.value));
        }
        if let Some(pr) = &env.spec.pull_request {
            pull_request(pr, diags);
        }
    }
    let mut deployed: HashMap<&str, &Spanned<String>> = HashMap::new();
    for stage in &p.stages {
        let Some(d) = stage.kind.promotes() else {
            continue;
        };
        let env = &d.environment;
        if unreadable.contains(env.value.as_str()) {
            continue;
        }
        if !known.contains(env.value.as_str()) {
            let hint = did_you_mean(&env.value, names.iter().copied());
            let known = if names.is_empty() {
                "; this pipeline defines no `environments`".to_string()
            } else if hint.is_empty() {
                format!(": known environments are {}", list(&names))
            } else {
                hint
            };
            diags.error(env.pos, format!("stage `{}` deploys to unknown environment `{}`{known}", stage.name.value, env.value));
            continue;
        }
        match deployed.get(env.value.as_str()) {
            Some(first) => diags.error(
                env.pos,
                format!("stage `{}` deploys to `{}` again (stage `{}` already does, line {}): one pipeline writes each environment once; remove one, or define a second environment", stage.name.value, env.value, first.value, first.pos.line),
            ),
            None => {
                deployed.insert(env.value.as_str(), &stage.name);
            }
        }
    }
    for env in &p.environments {
        if !deployed.contains_key(env.name.value.as_str()) {
            diags.warning(env.name.pos, format!("environment `{}` is defined but no stage deploys to it", env.name.value));
        }
    }
}

/// A `pullRequest`: a known host, `OWNER/NAME`, a token named by its variable, an API for Gitea.
fn pull_request(pr: &crate::model::PullRequest, diags: &mut Diagnostics) {
    use crate::providers::pullrequest::{Host, PullRequests};
    let host = Host::parse(&pr.provider.value);
    if host.is_none() {
        diags
            .error(pr.provider.pos, format!("`pullRequest.provider: {}` is not a host promote knows: use github, gitlab, gitea or forgejo", pr.provider.value));
    }
    let parts: Vec<&str> = pr.repo.value.split('/').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty() || p.starts_with('.') || p.contains(char::is_whitespace)) {
        diags.error(pr.repo.pos, format!("`pullRequest.repo: {}` must be OWNER/NAME (GitLab: GROUP/.../NAME)", pr.repo.value));
    }
    match (&pr.token_env, &pr.token_file) {
        (Some(var), None) => {
            let v = &var.value;
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || v.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                diags.error(
                    var.pos,
                    format!("`pullRequest.tokenEnv: {v}` must name an environment variable (letters, digits, `_`): the token itself never goes in the file"),
                );
            }
        }
        (None, Some(_)) => {}
        (Some(var), Some(_)) => diags.error(var.pos, "`pullRequest` names its token with one of `tokenEnv` or `tokenFile`, not both"),
        (None, None) => diags.error(pr.provider.pos, "`pullRequest` needs its host's API token: `tokenEnv: VARIABLE` or `tokenFile: PATH`"),
    }
    match (&pr.api, host) {
        (Some(api), _) if !(api.value.starts_with("https://") || api.value.starts_with("http://")) => {
            diags.error(api.pos, format!("`pullRequest.api: {}` must be an http(s) URL of the host's API", api.value));
        }
        (None, Some(h)) if PullRequests::default_api(h).is_none() => {
            diags.error(pr.provider.pos, format!("`pullRequest.provider: {}` is self-hosted: give `api` (https://HOST/api/v1)", pr.provider.value));
        }
        _ => {}
    }
}

/// Variables each kind of expression can read.
const IF_VARIABLES: &[&str] = &["version", "pipeline", "run", "image", "stages", "trigger"];
pub(crate) const RESULT_VARIABLES: &[&str] = &["result", "version", "pipeline", "run", "image"];
pub(crate) const RESPONSE_VARIABLES: &[&str] = &["response", "version", "pipeline", "run", "image"];

/// What compiling one CEL expression found: its syntax errors, or the variables it reads.
enum CelOutcome {
    Invalid(Vec<String>),
    Reads(Vec<String>),
}

fn compile_cel(text: &str) -> CelOutcome {
    match cel::Program::compile(text) {
        Err(errors) => {
            CelOutcome::Invalid(errors.errors.iter().map(|e| format!("{} (at character {} of the expression)", cel_message(&e.msg), e.pos.1.max(1))).collect())
        }
        Ok(program) => {
            let bound = comprehension_variables(text);
            let mut vars: Vec<String> = program.references().variables().into_iter().filter(|v| !bound.contains(v)).map(str::to_string).collect();
            vars.sort_unstable();
            CelOutcome::Reads(vars)
        }
    }
}

/// Every CEL expression compiles and reads only variables it will have. Each distinct expression
/// is compiled once, and the compiles are spread over the machine's cores.
pub fn expressions(p: &Pipeline, diags: &mut Diagnostics) {
    let mut jobs: Vec<(&Spanned<String>, &str, &[&str])> = Vec::new();
    for stage in &p.stages {
        if let Some(cond) = &stage.condition {
            jobs.push((cond, "if", IF_VARIABLES));
        }
        jobs.extend(kind_expressions(&stage.kind));
        if let Some(d) = stage.kind.promotes()
            && let Some(m) = d.watch.as_ref().and_then(|w| w.metrics.as_ref())
        {
            jobs.extend(m.expressions());
        }
    }
    for m in p.environments.iter().filter_map(|e| e.spec.watch.as_ref().and_then(|w| w.metrics.as_ref())) {
        jobs.extend(m.expressions());
    }
    let mut distinct: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<&str> = Vec::new();
    for (e, _, _) in &jobs {
        distinct.entry(e.value.as_str()).or_insert_with(|| {
            texts.push(e.value.as_str());
            texts.len() - 1
        });
    }
    // Threads only for many expressions: a pipeline of a few is compiled where it is (asking for
    // the machine's parallelism reads the cgroup's files, and a thread costs more than a few
    // compiles; a server plans a run's pipeline on its start path).
    let compile = |part: &[&str]| part.iter().map(|t| compile_cel(t)).collect::<Vec<CelOutcome>>();
    let threads = if texts.len() < 64 { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()).min(texts.len() / 64 + 1) };
    let outcomes: Vec<CelOutcome> = if threads == 1 {
        compile(&texts)
    } else {
        let chunk = texts.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = texts.chunks(chunk).map(|part| scope.spawn(move || compile(part))).collect();
            handles.into_iter().flat_map(|h| h.join().expect("CEL compile thread")).collect()
        })
    };
    for (expr, field, variables) in jobs {
        match &outcomes[distinct[expr.value.as_str()]] {
            CelOutcome::Invalid(msgs) => diags.error(expr.pos, format!("`{field}` is not a valid CEL expression: {}", msgs.join("; "))),
            CelOutcome::Reads(vars) => {
                for v in vars.iter().filter(|v| !variables.contains(&v.as_str())) {
                    let hint = did_you_mean(v, variables.iter().copied());
                    let hint = if hint.is_empty() { format!(": `{field}` can read {}", list(variables)) } else { hint };
                    diags.error(expr.pos, format!("`{field}` reads unknown variable `{v}`{hint}"));
                }
            }
        }
    }
}

/// The parser's message without its list of every token it would have accepted.
fn cel_message(msg: &str) -> String {
    let short = msg.split(" expecting {").next().unwrap_or(msg);
    short.replace("mismatched input '<EOF>'", "the expression ends too early")
}

/// Names bound by CEL macros (`x` in `list.all(x, x > 0)`), which are not free variables.
fn comprehension_variables(expr: &str) -> Vec<&str> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"\b(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,").expect("valid regex"));
    re.captures_iter(expr).filter_map(|c| c.get(1)).map(|m| m.as_str()).collect()
}

/// What the plan checks of one kind's own settings, and the CEL expressions they hold. Every kind
/// implements it (an empty `impl` where there is nothing to check): the dispatch below is made
/// from the model's one list of kinds, so a kind without it does not compile.
pub trait Checks {
    /// Checks the settings; `stage` is the stage they belong to.
    fn check(&self, _stage: &Stage, _diags: &mut Diagnostics) {}
    /// The CEL expressions in the settings: (expression, its field, the variables it may read).
    fn expressions(&self) -> Vec<(&Spanned<String>, &'static str, &'static [&'static str])> {
        Vec::new()
    }
}

macro_rules! checks_dispatch {
    ($($(#[$doc:meta])* $module:ident => $variant:ident($ty:ty),)*) => {
        /// The kind's own checks.
        fn check_kind(stage: &Stage, diags: &mut Diagnostics) {
            match &stage.kind { $(StageKind::$variant(k) => <$ty as Checks>::check(k, stage, diags),)* }
        }

        /// The kind's CEL expressions.
        fn kind_expressions(kind: &StageKind) -> Vec<(&Spanned<String>, &'static str, &'static [&'static str])> {
            match kind { $(StageKind::$variant(k) => <$ty as Checks>::expressions(k),)* }
        }
    };
}
crate::model::with_kinds!(checks_dispatch);

/// The settings of each kind make sense together.
pub fn kinds(p: &Pipeline, diags: &mut Diagnostics) {
    for stage in &p.stages {
        check_kind(stage, diags);
    }
}

/// Every `watch` (of an environment, of a deploy) judges something, at an interval within its
/// length, with checks that would be valid in a `metrics` or `logs` stage.
pub fn watches(p: &Pipeline, diags: &mut Diagnostics) {
    let mut all: Vec<(String, crate::diag::Pos, &crate::model::Watch)> = Vec::new();
    for e in &p.environments {
        if let Some(w) = &e.spec.watch {
            all.push((format!("the watch of environment `{}`", e.name.value), e.name.pos, w));
        }
    }
    for s in &p.stages {
        if let Some(d) = s.kind.promotes()
            && let Some(w) = &d.watch
        {
            all.push((format!("the watch of stage `{}`", s.name.value), s.kind_pos, w));
        }
    }
    for (what, pos, w) in all {
        if w.duration.0.is_zero() {
            diags.error(pos, format!("{what}: `for` is 0s: say how long the release is watched after its run (`for: 30m`)"));
        }
        if w.interval.0.is_zero() {
            diags.error(pos, format!("{what}: `interval` is 0s: give the time between looks (`interval: 1m`)"));
        } else if w.interval.0 > w.duration.0 && !w.duration.0.is_zero() {
            diags.error(
                pos,
                format!(
                    "{what}: `interval: {}` is longer than `for: {}`: it would never look",
                    crate::clock::humanize(w.interval.0),
                    crate::clock::humanize(w.duration.0)
                ),
            );
        }
        if w.metrics.is_none() && w.logs.is_none() {
            diags.error(pos, format!("{what} judges nothing: give it `metrics` (checks, as in a metrics stage) or `logs` (a source, as in a logs stage)"));
        }
        // The kinds' own checks, on a stage standing for the watch (their messages name it).
        let stand_in = |kind| Stage {
            name: Spanned::new(pos, what.clone()),
            needs: Vec::new(),
            condition: None,
            timeout: None,
            retry: None,
            description: None,
            kind_pos: pos,
            kind,
        };
        if let Some(m) = &w.metrics {
            if m.count != 1 {
                diags.error(
                    pos,
                    format!("{what}: `metrics.count: {}`: a watch measures each check once per look; its `for` and `interval` say how many looks", m.count),
                );
            }
            if !m.initial_delay.0.is_zero() {
                diags.error(pos, format!("{what}: `metrics.initialDelay` has no meaning in a watch (it starts when the run has ended): remove it"));
            }
            m.check(&stand_in(StageKind::Metrics(m.clone())), diags);
        }
        if let Some(l) = &w.logs {
            l.check(&stand_in(StageKind::Logs(l.clone())), diags);
        }
        for who in &w.approvers {
            if who.value.strip_prefix("group:").is_some_and(str::is_empty) || who.value.trim().is_empty() {
                diags.error(who.pos, format!("{what}: empty approver `{}`", who.value));
            }
        }
    }
}

#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub(crate) fn check_compare(cmp: &Compare, check: &Spanned<String>, diags: &mut Diagnostics) {
    match (&cmp.baseline_query, &cmp.baseline_window) {
        (Some(_), Some(_)) => diags.error(check.pos, format!("check `{}`: `compare` takes `baselineQuery` or `baselineWindow`, not both", check.value)),
        (None, None) => diags.error(
            check.pos,
            format!(
                "check `{}`: `compare` needs `baselineQuery` (the old version's query) or `baselineWindow` (the same query before the deploy)",
                check.value
            ),
        ),
        _ => {}
    }
    if !(cmp.confidence > 0.0 && cmp.confidence < 1.0) {
        diags.error(check.pos, format!("check `{}`: `confidence: {}` must be between 0 and 1, like 0.98", check.value, cmp.confidence));
    }
    if let Some(t) = &cmp.tolerance {
        diags.warning(
            t.pos,
            format!("check `{}`: `tolerance` no longer decides a comparison: a change counts when it is significant and material (the mean moved more than `minEffect`, default 2.5, of the baseline's standard deviations, or by a factor of 2.5 with a third of the new samples beyond the baseline's range, or with a third of them past its far fence); remove it (docs/metrics.md)", check.value),
        );
    }
    if !(cmp.min_effect >= 0.0) {
        diags.error(check.pos, format!("check `{}`: `minEffect: {}` must be 0 or more", check.value, cmp.min_effect));
    }
    if cmp.step.0.is_zero() {
        diags.error(check.pos, format!("check `{}`: `step` must be longer than 0s (the time between compared samples, like 1m)", check.value));
    }
    if cmp.window.is_some_and(|w| w.0 < cmp.step.0) {
        diags.error(check.pos, format!("check `{}`: `window` is shorter than `step`: it would hold no sample", check.value));
    }
    if !(cmp.weight > 0.0) {
        diags.error(check.pos, format!("check `{}`: `weight: {}` must be more than 0", check.value, cmp.weight));
    }
}

/// Whether `result` is compared as a whole (`result < 0.01`), not indexed or called on.
pub(crate) fn compares_result_directly(expr: &str) -> bool {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    expr.match_indices("result").any(|(i, _)| {
        let before_ok = i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'.');
        let after = expr[i + 6..].trim_start();
        let next = after.bytes().next();
        before_ok && next.is_none_or(|c| !ident(c)) && after.starts_with(['<', '>', '=', '!'])
    })
}

pub(crate) fn check_provider(provider: &Provider, diags: &mut Diagnostics) {
    match provider {
        Provider::Prometheus(prom) => check_http_url(&prom.address, "address", diags),
        Provider::Web(web) => check_http_url(&web.url, "url", diags),
    }
}

pub(crate) fn check_http_url(url: &Spanned<String>, field: &str, diags: &mut Diagnostics) {
    if !(url.value.starts_with("http://") || url.value.starts_with("https://") || url.value.starts_with("${")) {
        diags.error(url.pos, format!("`{field}: {}` is not an http:// or https:// URL", url.value));
    }
}

/// Words that make an environment look like production.
fn looks_like_production(name: &str) -> bool {
    name.to_ascii_lowercase().split(['-', '_', '.']).any(|w| matches!(w, "prod" | "production" | "prd" | "live"))
}

/// Warns about a deploy into a production-like environment with no approval or policy stage
/// before it.
pub fn production_gates(p: &Pipeline, graph: &DiGraph<usize, ()>, diags: &mut Diagnostics) {
    for (i, stage) in p.stages.iter().enumerate() {
        let Some(d) = stage.kind.promotes() else {
            continue;
        };
        if !looks_like_production(&d.environment.value) {
            continue;
        }
        let mut seen = HashSet::from([i]);
        let mut stack = vec![i];
        let mut gated = false;
        while let Some(cur) = stack.pop() {
            for n in graph.neighbors_directed(node(cur), Direction::Incoming) {
                let j = n.index();
                if seen.insert(j) {
                    if p.stages[j].kind.gates() {
                        gated = true;
                        break;
                    }
                    stack.push(j);
                }
            }
            if gated {
                break;
            }
        }
        if !gated {
            diags.warning(
                d.environment.pos,
                format!(
                    "stage `{}` deploys to `{}`, which looks like production, with no approval or policy stage before it: add one to its `needs` chain",
                    stage.name.value, d.environment.value
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn result_compared_as_a_whole() {
        use super::compares_result_directly as f;
        assert!(f("result < 0.01"));
        assert!(f("x && result >= 2"));
        assert!(f("result == 1.0"));
        assert!(!f("result[0] < 0.01"));
        assert!(!f("result.all(x, x < 1)"));
        assert!(!f("size(result) > 0"));
        assert!(!f("my_result < 1"));
    }
}
