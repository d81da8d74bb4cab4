//! Reads a pipeline file's text into a [`Pipeline`], recording every problem of shape it finds.

use super::de::{from_entries, from_node, list};
use super::yaml::{self, Node, NodeKind};
use super::*;
use crate::diag::{Diagnostics, Pos, did_you_mean};

/// Names that `${...}` may use.
pub const KNOWN_VARIABLES: &[&str] = &["version", "previousVersion", "image", "pipeline", "run", "environment", "stage"];

const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "name",
    "description",
    "artifact",
    "environments",
    "stages",
    "onFailure",
    "order",
    "compliance",
    "users",
    "access",
    "notifications",
    "triggers",
];
const API_VERSION: &str = "promote/v1";

/// Reads `src` (the text of the file the user calls `diags.file()`). Every problem of shape is
/// recorded in `diags`; the result is `None` only when no pipeline could be made of the text at all
/// (a syntax error, a document that is not a mapping). Whether the parts fit together (names,
/// cycles, expressions) is `plan`'s job.
pub fn load(src: &str, diags: &mut Diagnostics) -> Option<Pipeline> {
    let root = yaml::parse(src, diags)?;
    let Some(entries) = root.as_map() else {
        diags.error(
            root.pos,
            format!("a pipeline file is a mapping (`apiVersion: {API_VERSION}`, `kind: Pipeline`, `name`, `stages`, ...), found {}", root.describe()),
        );
        return None;
    };

    let mut api_version = None;
    let mut kind_seen = false;
    let mut name = None;
    let mut description = None;
    let mut artifact = None;
    let mut environments = Vec::new();
    let mut stages = None;
    let mut on_failure = None;
    let mut order = None;
    let mut compliance = None;
    let mut users = None;
    let mut access = None;
    let mut notifications = Vec::new();
    let mut triggers = Vec::new();
    let mut unreadable = Vec::new();
    // A large file's variables are checked on another thread while its parts are read.
    let big = src.len() >= yaml::PIPELINED;
    let interpolations = std::thread::scope(|scope| {
        let checked = big.then(|| {
            let mut own = diags.empty_like();
            scope.spawn(move || {
                check_interpolations(src, entries, &mut own);
                own
            })
        });
        for (key, value) in entries {
            let Some(k) = key.as_str() else { continue };
            match k {
                "apiVersion" => {
                    api_version = from_node::<Spanned<String>>(value, diags);
                    if let Some(v) = &api_version
                        && v.value != API_VERSION
                    {
                        diags.error(v.pos, format!("unsupported apiVersion `{}`: this promote reads `{API_VERSION}`", v.value));
                    }
                }
                "kind" => {
                    kind_seen = true;
                    if let Some(v) = from_node::<Spanned<String>>(value, diags)
                        && v.value != "Pipeline"
                    {
                        diags.error(v.pos, format!("`kind: {}`: a pipeline file has `kind: Pipeline`", v.value));
                    }
                }
                "name" => {
                    name = from_node::<Spanned<String>>(value, diags);
                    if let Some(n) = &name {
                        check_name(n, "pipeline", diags);
                    }
                }
                "description" => description = from_node::<String>(value, diags),
                "artifact" => artifact = from_node::<Artifact>(value, diags),
                "environments" => environments = load_environments(value, &mut unreadable, diags),
                "stages" => stages = load_stages(value, &mut unreadable, diags),
                "onFailure" => on_failure = from_node::<OnFailure>(value, diags),
                "order" => order = from_node::<Order>(value, diags),
                "compliance" => compliance = from_node::<Compliance>(value, diags),
                "users" => users = from_node::<Spanned<String>>(value, diags),
                "access" => access = from_node::<Access>(value, diags),
                "notifications" => notifications = from_node::<Vec<Notification>>(value, diags).unwrap_or_default(),
                "triggers" => {
                    triggers = from_node::<Vec<Spanned<triggers::Trigger>>>(value, diags).unwrap_or_default();
                    triggers::check(&triggers, diags);
                }
                // Extension fields, as in Compose files: a place for YAML anchors, ignored.
                other if other.starts_with("x-") => {}
                other => unknown_key(key.pos, other, TOP_FIELDS, "", diags),
            }
        }
        checked.map(|h| h.join().expect("the variable check does not panic"))
    });
    for (field, missing) in [("apiVersion", api_version.is_none()), ("kind", !kind_seen), ("name", name.is_none()), ("stages", stages.is_none())] {
        if missing && !entries.iter().any(|(k, _)| k.as_str() == Some(field)) {
            let hint = match field {
                "apiVersion" => format!(": add `apiVersion: {API_VERSION}`"),
                "kind" => ": add `kind: Pipeline`".to_string(),
                _ => String::new(),
            };
            diags.error(root.pos, format!("missing field `{field}`{hint}"));
        }
    }
    match interpolations {
        Some(found) => diags.append(found),
        None => check_interpolations(src, entries, diags),
    }
    // A large file's tree (tens of MB for thousands of stages) is freed on another thread: the
    // caller goes on at once.
    if big {
        std::thread::spawn(move || drop(root));
    }

    let stages = stages.unwrap_or_default();
    Some(Pipeline {
        api_version: api_version.unwrap_or_default(),
        name: name.unwrap_or_default(),
        description,
        artifact: artifact.unwrap_or_default(),
        environments,
        stages,
        on_failure: on_failure.unwrap_or_default(),
        order: order.unwrap_or_default(),
        compliance: compliance.unwrap_or_default(),
        users,
        access,
        notifications,
        triggers,
        unreadable,
    })
}

fn unknown_key(pos: Pos, key: &str, expected: &[&str], what: &str, diags: &mut Diagnostics) {
    let hint = did_you_mean(key, expected.iter().copied());
    if hint.is_empty() {
        diags.error(pos, format!("unknown field `{key}`{what}: expected {}", list(expected)));
    } else {
        diags.error(pos, format!("unknown field `{key}`{what}{hint}"));
    }
}

/// Names become commit trailers, refs and graph labels: letters, digits, `-`, `_`, `.`.
fn check_name(name: &Spanned<String>, what: &str, diags: &mut Diagnostics) {
    let ok = name.value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        diags.error(name.pos, format!("invalid {what} name `{}`: use letters, digits, `-`, `_` and `.`, starting with a letter or digit", name.value));
    }
}

fn entries_of<'a>(node: &'a Node, what: &str, diags: &mut Diagnostics) -> &'a [(Node, Node)] {
    match &node.kind {
        NodeKind::Map(entries) => entries,
        NodeKind::Scalar(s) if s.is_null() => &[],
        _ => {
            diags.error(node.pos, format!("`{what}` is a mapping from names to {what}, found {}", node.describe()));
            &[]
        }
    }
}

fn load_environments(node: &Node, unreadable: &mut Vec<String>, diags: &mut Diagnostics) -> Vec<Environment> {
    let mut out = Vec::new();
    for (key, value) in entries_of(node, "environments", diags) {
        let Some(name) = from_node::<Spanned<String>>(key, diags) else {
            continue;
        };
        check_name(&name, "environment", diags);
        let Some(spec) = from_node::<EnvironmentSpec>(value, diags) else {
            unreadable.push(name.value);
            continue;
        };
        check_update(&spec.update, diags);
        out.push(Environment { name, spec });
    }
    out
}

fn check_update(update: &Spanned<Update>, diags: &mut Diagnostics) {
    let u = &update.value;
    let set: Vec<&str> = [("kustomizeImage", u.kustomize_image.is_some()), ("yamlPath", u.yaml_path.is_some()), ("helmValues", u.helm_values.is_some())]
        .into_iter()
        .filter_map(|(n, s)| s.then_some(n))
        .collect();
    match set.len() {
        1 => {}
        0 => diags.error(update.pos, "`update` needs one of `kustomizeImage`, `yamlPath` or `helmValues`"),
        _ => {
            diags.error(update.pos, format!("`update` sets both {}: give exactly one", set.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" and ")))
        }
    }
    if u.kustomize_image.is_some() {
        if let Some(v) = &u.value {
            diags.error(v.pos, "`value` goes with `yamlPath` or `helmValues`; `kustomizeImage` always writes the version");
        }
    } else if u.digest {
        diags.error(update.pos, "`digest` goes with `kustomizeImage` only");
    }
    for path in [&u.yaml_path, &u.helm_values].into_iter().flatten() {
        if let Err(why) = super::path::parse(&path.value) {
            diags.error(
                path.pos,
                format!("malformed path `{}`: {why}; write keys separated by dots and list indexes in brackets, like `spec.containers[0].image`", path.value),
            );
        }
    }
}

fn load_stages(node: &Node, unreadable: &mut Vec<String>, diags: &mut Diagnostics) -> Option<Vec<Stage>> {
    if let NodeKind::Seq(_) = node.kind {
        diags.error(node.pos, "`stages` is a mapping from stage names to stages (`deploy-qa: {deploy: {environment: qa}}`), not a list");
        return Some(Vec::new());
    }
    let entries = entries_of(node, "stages", diags);
    if entries.is_empty() && !diags.has_errors() {
        diags.error(node.pos, "`stages` is empty: a pipeline needs at least one stage");
    }
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Some(name) = from_node::<Spanned<String>>(key, diags) else {
            continue;
        };
        check_name(&name, "stage", diags);
        let written = name.value.clone();
        match load_stage(name, value, diags) {
            Some(stage) => out.push(stage),
            None => unreadable.push(written),
        }
    }
    Some(out)
}

fn load_stage(name: Spanned<String>, node: &Node, diags: &mut Diagnostics) -> Option<Stage> {
    let Some(entries) = node.as_map() else {
        diags.error(
            node.pos,
            format!(
                "stage `{}` is {}: a stage is a mapping with one kind ({}) and optionally {}",
                name.value,
                node.describe(),
                list(STAGE_KINDS),
                list(STAGE_FIELDS)
            ),
        );
        return None;
    };
    let mut common = Vec::new();
    let mut kind: Option<&(Node, Node)> = None;
    for entry in entries {
        let Some(k) = entry.0.as_str() else { continue };
        if STAGE_KINDS.contains(&k) {
            match kind {
                None => kind = Some(entry),
                Some(first) => diags.error(
                    entry.0.pos,
                    format!(
                        "stage `{}` has two kinds, `{}` and `{k}`: a stage does one thing; split it into two stages, one needing the other",
                        name.value,
                        first.0.as_str().unwrap_or("?")
                    ),
                ),
            }
        } else if STAGE_FIELDS.contains(&k) {
            common.push(entry);
        } else {
            let candidates = STAGE_KINDS.iter().chain(STAGE_FIELDS).copied();
            match crate::diag::suggest(k, candidates) {
                Some(s) if STAGE_KINDS.contains(&s) => diags.error(entry.0.pos, format!("unknown stage kind `{k}`; did you mean `{s}`?")),
                Some(s) => diags.error(entry.0.pos, format!("unknown field `{k}` in stage `{}`; did you mean `{s}`?", name.value)),
                None => diags.error(
                    entry.0.pos,
                    format!(
                        "unknown stage kind or field `{k}` in stage `{}`: kinds are {}; other fields are {}",
                        name.value,
                        list(STAGE_KINDS),
                        list(STAGE_FIELDS)
                    ),
                ),
            }
        }
    }
    let common = from_entries::<StageCommon>(node.pos, &common, diags).unwrap_or_default();
    let Some((kind_key, body)) = kind else {
        if !entries.iter().any(|(k, _)| k.as_str().is_some_and(|k| !STAGE_FIELDS.contains(&k))) {
            diags.error(name.pos, format!("stage `{}` has no kind: give it one of {}", name.value, list(STAGE_KINDS)));
        }
        return None;
    };
    let kind = StageKind::load(kind_key.as_str().unwrap_or_default(), body, diags)?;
    if let Some(retry) = &common.retry
        && retry.attempts.value == 0
    {
        diags.error(retry.attempts.pos, "`retry.attempts` counts every attempt, the first included: it must be at least 1");
    }
    Some(Stage {
        name,
        needs: common.needs,
        condition: common.condition,
        timeout: common.timeout,
        retry: common.retry,
        description: common.description,
        kind_pos: kind_key.pos,
        kind,
    })
}

/// Every `${name}` in the environments and stages must name a known variable (`$${` writes a
/// literal `${`).
fn check_interpolations(src: &str, entries: &[(Node, Node)], diags: &mut Diagnostics) {
    let lines: Vec<&str> = src.lines().collect();
    for (key, value) in entries {
        if !matches!(key.as_str(), Some("environments" | "stages" | "artifact")) {
            continue;
        }
        value.for_each_value_scalar_at(&mut Vec::new(), &mut |node, scalar, path| {
            if !scalar.value.contains("${") {
                return;
            }
            // A web provider's URL also takes the check's query.
            let web_url = path.ends_with(&["web", "url"]);
            let mut search_from = (node.pos.line, node.pos.col);
            let mut rest = scalar.value.as_str();
            while let Some(start) = rest.find("${") {
                let escaped = start > 0 && rest.as_bytes()[start - 1] == b'$';
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    let pos = locate(&lines, search_from, "${").unwrap_or(node.pos);
                    diags.error(pos, "`${` is not closed with `}`: write `${version}`, or `$${` for a literal `${`");
                    return;
                };
                let name = &after[..end];
                let written = format!("${{{name}}}");
                let pos = locate(&lines, search_from, &written).unwrap_or(node.pos);
                // A webhook stage's call also takes the URL its verdict comes back to.
                let in_webhook = path.contains(&"webhook");
                let known = KNOWN_VARIABLES.contains(&name) || (web_url && name == "query") || (in_webhook && name == "callbackUrl");
                // The version held before a deploy is known where evidence is judged after one.
                let judged = path.iter().any(|p| matches!(*p, "metrics" | "logs" | "webhook" | "watch"));
                if !escaped && known && name == "previousVersion" && !judged {
                    diags.error(
                        pos,
                        "`${previousVersion}` has a value only in `metrics`, `logs` and `webhook` stages and in watches (the value the environment held before the deploy they judge)",
                    );
                } else if !escaped && !known {
                    let hint = did_you_mean(name, KNOWN_VARIABLES.iter().copied());
                    let hint = if hint.is_empty() { format!(": known variables are {}", list(KNOWN_VARIABLES)) } else { hint };
                    diags.error(pos, format!("unknown variable `${{{name}}}`{hint}"));
                }
                search_from = (pos.line, pos.col + 1);
                rest = &after[end + 1..];
            }
        });
    }
}

/// Finds `needle` in the source at or after `from` (1-based line, column in characters).
fn locate(lines: &[&str], from: (usize, usize), needle: &str) -> Option<Pos> {
    let (line, col) = from;
    for (i, text) in lines.iter().enumerate().skip(line.saturating_sub(1)) {
        let skip_chars = if i + 1 == line { col.saturating_sub(1) } else { 0 };
        let byte_start = text.char_indices().nth(skip_chars).map(|(b, _)| b).unwrap_or(text.len());
        if let Some(b) = text[byte_start..].find(needle) {
            let chars = text[..byte_start + b].chars().count();
            return Some(Pos::new(i + 1, chars + 1));
        }
    }
    None
}
