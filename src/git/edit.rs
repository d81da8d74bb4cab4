//! Format-preserving edits of YAML files: one scalar's text is replaced; every other byte
//! (comments, key order, quoting, indentation, anchors) stays as it was.

use crate::diag::Diagnostics;
use crate::model::path::{self, Segment};
use crate::model::yaml::{self, Node, NodeKind};

/// Which value of the file receives the version.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The `images:` entry of a kustomization whose `name` is this; its `newTag` (or `digest`).
    KustomizeImage {
        /// The entry's `name`.
        name: &'a str,
        /// Write `digest` instead of `newTag`.
        digest: bool,
    },
    /// A path such as `spec.template.spec.containers[0].image` or, for Helm values, `image.tag`.
    Path(&'a str),
}

/// The result of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The new text of the file.
    pub text: String,
    /// The value that was there before (`None` when the key was added).
    pub old_value: Option<String>,
    /// The line (from 1) that changed.
    pub line: usize,
}

/// Why an edit was refused; the file is never half-written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The file is not YAML promote can read (syntax error, several documents, duplicate keys).
    #[error("{file}:{line}:{col}: not a YAML document promote can edit: {message}")]
    NotYaml {
        /// The file.
        file: String,
        /// Where.
        line: usize,
        /// Where.
        col: usize,
        /// What the parser said.
        message: String,
    },
    /// The path is malformed.
    #[error("{file}: malformed path `{path}`: {why}")]
    BadPath {
        /// The file.
        file: String,
        /// The path as written.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A step of the path does not exist.
    #[error("{file}:{line}: path `{path}` not found: {missing} (check the environment's `update` in the pipeline)")]
    NotFound {
        /// The file.
        file: String,
        /// The path as written.
        path: String,
        /// Which step is missing, for a person.
        missing: String,
        /// The line of the last node that was found.
        line: usize,
    },
    /// The value at the path is not a single-line scalar, or cannot be edited in place.
    #[error("{file}:{line}: `{path}` cannot be edited: {why}")]
    NotEditable {
        /// The file.
        file: String,
        /// The path as written.
        path: String,
        /// Why.
        why: String,
        /// Where the value is.
        line: usize,
    },
}

/// Writes `value` at `target` in `text` (the contents of `file`), keeping everything else byte for
/// byte (a byte-order mark and CRLF line endings included). A kustomize image entry without
/// `newTag`/`digest` gets one added under its `name`. In a file of several documents (`---`, as
/// `helm template` writes them), the one document where the target exists is edited.
pub fn apply(file: &str, text: &str, target: Target<'_>, value: &str) -> Result<Edited, EditError> {
    let docs = parse_documents(file, text)?;
    match pick_document(file, &docs, target)? {
        Spot::Value { node, what } => replace_scalar(file, &what, text, node, value),
        Spot::Missing { entry, field, what } => insert_after_name(file, &what, text, entry, field, value),
    }
}

/// The value at `target` in `text` (the contents of `file`): `None` when a kustomize image entry has
/// no `newTag`/`digest` yet. Used to find what a rollback restores.
pub fn read(file: &str, text: &str, target: Target<'_>) -> Result<Option<String>, EditError> {
    let docs = parse_documents(file, text)?;
    match pick_document(file, &docs, target)? {
        Spot::Value { node, what } => match &node.kind {
            NodeKind::Scalar(s) => Ok(Some(s.value.clone())),
            _ => Err(EditError::NotEditable {
                file: file.into(),
                path: what,
                why: format!("it is {}, not a single value", node.describe()),
                line: node.pos.line,
            }),
        },
        Spot::Missing { .. } => Ok(None),
    }
}

/// Where `target` is among the documents of a file: the one document that holds it. Empty and
/// comment-only documents hold nothing; several documents holding it are refused, naming them.
fn pick_document<'a>(file: &str, docs: &'a [Node], target: Target<'_>) -> Result<Spot<'a>, EditError> {
    if let [only] = docs {
        return locate(file, only, target);
    }
    let mut found = Vec::new();
    let mut first_miss = None;
    for (i, root) in docs.iter().enumerate() {
        match locate(file, root, target) {
            Ok(spot) => found.push((i, spot)),
            Err(e) => first_miss = first_miss.or(Some(e)),
        }
    }
    let line_of = |spot: &Spot<'_>| match spot {
        Spot::Value { node, .. } => node.pos.line,
        Spot::Missing { entry, .. } => entry.pos.line,
    };
    match found.len() {
        1 => Ok(found.pop().expect("one").1),
        0 => Err(match first_miss {
            Some(EditError::NotFound { file, path, missing, line }) if docs.len() > 1 => {
                EditError::NotFound { file, path, missing: format!("in none of the {} documents ({missing} in the first)", docs.len()), line }
            }
            Some(e) => e,
            None => EditError::NotFound { file: file.into(), path: target_name(target), missing: "the file holds no YAML document".into(), line: 1 },
        }),
        _ => Err(EditError::NotEditable {
            file: file.into(),
            path: target_name(target),
            why: format!(
                "it exists in documents {} of the file (lines {}); promote writes one value, so give each its own file or a more specific path",
                found.iter().map(|(i, _)| (i + 1).to_string()).collect::<Vec<_>>().join(", "),
                found.iter().map(|(_, s)| line_of(s).to_string()).collect::<Vec<_>>().join(", ")
            ),
            line: line_of(&found[1].1),
        }),
    }
}

fn target_name(target: Target<'_>) -> String {
    match target {
        Target::Path(p) => p.to_string(),
        Target::KustomizeImage { name, digest } => format!("images[name={name}].{}", if digest { "digest" } else { "newTag" }),
    }
}

/// Every document of the file, positions counted from the file's start. Tags (`!!int`, `!Ref`)
/// are accepted: they belong to whoever reads the file; only the target must not carry one.
fn parse_documents(file: &str, text: &str) -> Result<Vec<Node>, EditError> {
    let mut diags = Diagnostics::new(file);
    let docs = yaml::parse_stream(text, &mut diags);
    if let Some(d) = diags.iter().next() {
        return Err(EditError::NotYaml { file: file.into(), line: d.pos.line, col: d.pos.col, message: d.message.clone() });
    }
    Ok(docs)
}

/// Where a target is in a document.
enum Spot<'a> {
    /// The node holding the value; `what` names it for messages.
    Value { node: &'a Node, what: String },
    /// A kustomize image entry that has no `field` yet.
    Missing { entry: &'a Node, field: &'static str, what: String },
}

fn locate<'a>(file: &str, root: &'a Node, target: Target<'_>) -> Result<Spot<'a>, EditError> {
    match target {
        Target::Path(p) => {
            let steps = path::parse(p).map_err(|why| EditError::BadPath { file: file.into(), path: p.into(), why })?;
            Ok(Spot::Value { node: walk(file, p, root, &steps)?, what: p.to_string() })
        }
        Target::KustomizeImage { name, digest } => {
            let field = if digest { "digest" } else { "newTag" };
            let what = format!("images[name={name}].{field}");
            let not_found = |missing: String, line| EditError::NotFound { file: file.into(), path: what.clone(), missing, line };
            let images = lookup(root, "images").ok_or_else(|| not_found("the file has no `images:` list".into(), root.pos.line))?;
            let NodeKind::Seq(entries) = &images.kind else {
                return Err(not_found("`images` is not a list".into(), images.pos.line));
            };
            let entry = entries.iter().find(|e| lookup(e, "name").and_then(Node::as_str) == Some(name)).ok_or_else(|| {
                let names: Vec<&str> = entries.iter().filter_map(|e| lookup(e, "name").and_then(Node::as_str)).collect();
                not_found(format!("no `images` entry is named `{name}` (entries: {})", names.join(", ")), images.pos.line)
            })?;
            // A digest pins the image whatever the tag says (`name:tag@digest`): a new tag beside an
            // old digest would leave the old image running.
            if !digest && let Some(d) = lookup(entry, "digest") {
                return Err(EditError::NotEditable {
                    file: file.into(),
                    path: what,
                    why: format!(
                        "the entry also has `digest: {}`, which kustomize would keep (`{name}:TAG@{}` runs the old image): remove the digest, or promote digests (`update: {{kustomizeImage: {name}, digest: true}}`)",
                        d.as_str().unwrap_or("?"),
                        d.as_str().unwrap_or("?")
                    ),
                    line: d.pos.line,
                });
            }
            Ok(match lookup(entry, field) {
                Some(node) => Spot::Value { node, what },
                None => Spot::Missing { entry, field, what },
            })
        }
    }
}

fn lookup<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    node.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

fn walk<'a>(file: &str, p: &str, root: &'a Node, steps: &[Segment]) -> Result<&'a Node, EditError> {
    let mut node = root;
    let mut done = String::new();
    for step in steps {
        let next = match (step, &node.kind) {
            (Segment::Key(k), NodeKind::Map(_)) => lookup(node, k),
            (Segment::Index(i), NodeKind::Seq(items)) => items.get(*i),
            _ => None,
        };
        let shown = match step {
            Segment::Key(k) if done.is_empty() => k.clone(),
            Segment::Key(k) => format!("{done}.{k}"),
            Segment::Index(i) => format!("{done}[{i}]"),
        };
        node = next.ok_or_else(|| {
            let why = match (step, &node.kind) {
                (Segment::Key(_), NodeKind::Map(_)) | (Segment::Index(_), NodeKind::Seq(_)) => format!("`{shown}` does not exist"),
                (Segment::Key(_), _) => format!("`{}` is {}, not a mapping", if done.is_empty() { "the document" } else { &done }, node.describe()),
                (Segment::Index(_), _) => format!("`{}` is {}, not a list", if done.is_empty() { "the document" } else { &done }, node.describe()),
            };
            EditError::NotFound { file: file.into(), path: p.into(), missing: why, line: node.pos.line }
        })?;
        done = shown;
    }
    Ok(node)
}

/// Byte offsets of two character indexes of `text`.
fn byte_range(text: &str, start: usize, end: usize) -> (usize, usize) {
    let mut it = text.char_indices().map(|(b, _)| b).chain(std::iter::once(text.len()));
    let s = it.nth(start).unwrap_or(text.len());
    let e = if end > start { it.nth(end - start - 1).unwrap_or(text.len()) } else { s };
    (s, e)
}

fn replace_scalar(file: &str, p: &str, text: &str, node: &Node, value: &str) -> Result<Edited, EditError> {
    let refuse = |why: String| EditError::NotEditable { file: file.into(), path: p.into(), why, line: node.pos.line };
    let NodeKind::Scalar(scalar) = &node.kind else {
        return Err(refuse(format!("it is {}, not a single value", node.describe())));
    };
    let (mut start, _) = byte_range(text, node.span.0, node.span.1);
    let line = text[..start].matches('\n').count() + 1;
    if let Some(tag) = &scalar.tag {
        return Err(refuse(format!("it is tagged `{tag}`, so its reader expects that type, not a version: remove the tag, or quote the value")));
    }
    if node.aliased {
        return Err(refuse(format!("its value comes from the anchor at line {line}: editing it would change every place that uses the anchor")));
    }
    // Skip an anchor or tag written before the value (`&tag 1.4.1`).
    while matches!(text.as_bytes().get(start), Some(b'&' | b'!')) {
        let rest = &text[start..text[start..].find('\n').map_or(text.len(), |i| start + i)];
        let skip = rest.find([' ', '\t']).ok_or_else(|| refuse("it has no value after its anchor".into()))?;
        start += skip + rest[skip..].len() - rest[skip..].trim_start().len();
    }
    let end =
        start + scalar_len(&text[start..], &scalar.value).ok_or_else(|| refuse("it is a multi-line value; promote edits single-line values only".into()))?;
    let written = &text[start..end];
    if written.is_empty() && !scalar.quoted && scalar.value.is_empty() {
        return Ok(fill_empty(text, start, value, line));
    }
    if written.starts_with(['|', '>']) || written.contains('\n') {
        return Err(refuse("it is a multi-line value; promote edits single-line values only".into()));
    }
    let new = match written.as_bytes().first() {
        Some(b'\'') => format!("'{}'", value.replace('\'', "''")),
        Some(b'"') => double_quoted(value),
        _ if plain_is_string(value) => value.to_string(),
        _ => double_quoted(value),
    };
    let mut out = String::with_capacity(text.len() + new.len());
    out.push_str(&text[..start]);
    out.push_str(&new);
    out.push_str(&text[end..]);
    Ok(Edited { text: out, old_value: Some(scalar.value.clone()), line })
}

/// A key written with no value (`tag:`, as some charts ship it): the value goes after the colon,
/// one space from it, and a comment after it stays one space away.
fn fill_empty(text: &str, at: usize, value: &str, line: usize) -> Edited {
    let new = if plain_is_string(value) { value.to_string() } else { double_quoted(value) };
    let mut p = at;
    if text[p..].starts_with(':') {
        p += 1;
    }
    let lead = if text[p..].starts_with(' ') {
        p += 1;
        ""
    } else if text[..p].ends_with([' ', '{', '[', ',']) {
        ""
    } else {
        " "
    };
    let trail = if text[p..].starts_with('#') { " " } else { "" };
    let text = format!("{}{lead}{new}{trail}{}", &text[..p], &text[p..]);
    Edited { text, old_value: None, line }
}

/// The length in bytes of the scalar written at the start of `src` whose value is `value`, when it
/// is written on one line (plain, single- or double-quoted); `None` for block and multi-line ones.
fn scalar_len(src: &str, value: &str) -> Option<usize> {
    let bytes = src.as_bytes();
    match bytes.first()? {
        b'|' | b'>' => None,
        b'\'' => {
            let mut i = 1;
            loop {
                match bytes.get(i)? {
                    b'\n' => return None,
                    b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    b'\'' => return Some(i + 1),
                    _ => i += 1,
                }
            }
        }
        b'"' => {
            let mut i = 1;
            loop {
                match bytes.get(i)? {
                    b'\n' => return None,
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
        }
        _ => src.starts_with(value).then_some(value.len()),
    }
}

fn double_quoted(value: &str) -> String {
    let mut s = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// True when `value` written plain is read back as the same string by YAML 1.1 and 1.2 readers
/// (so not `1.10`, `true`, `no`, `null`, `0x1F`, nor anything with YAML syntax in it).
fn plain_is_string(value: &str) -> bool {
    let Some(first) = value.chars().next() else { return false };
    if "-?:,[]{}#&*!|>'\"%@` ".contains(first) && !(first == '-' && value.len() > 1 && !value[1..].starts_with(' ')) {
        return false;
    }
    if value.ends_with([' ', ':']) || value.contains(": ") || value.contains(" #") || value.contains(['\n', '\t']) {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    if matches!(lower.as_str(), "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | ".inf" | "-.inf" | ".nan") {
        return false;
    }
    let digits = value.trim_start_matches(['+', '-']).replace('_', "");
    let numeric = !digits.is_empty()
        && (digits.parse::<f64>().is_ok()
            || digits.starts_with("0x")
            || digits.starts_with("0o")
            || digits.split(':').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())));
    !numeric
}

fn insert_after_name(file: &str, p: &str, text: &str, entry: &Node, field: &str, value: &str) -> Result<Edited, EditError> {
    let name = lookup(entry, "name").expect("entry was found by name");
    let name_key = entry.as_map().and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("name"))).map(|(k, _)| k).expect("name key");
    let (name_start, _) = byte_range(text, name_key.span.0, name_key.span.1);
    let (_, name_end) = byte_range(text, name.span.0, name.span.1);
    let line_start = text[..name_start].rfind('\n').map_or(0, |i| i + 1);
    if text[line_start..name_start].contains(['{', ',']) {
        return Err(EditError::NotEditable {
            file: file.into(),
            path: p.into(),
            why: format!("the entry has no `{field}` and is written in flow style; add `{field}` to it by hand once"),
            line: name.pos.line,
        });
    }
    let mut line_end = text[name_end..].find('\n').map_or(text.len(), |i| name_end + i);
    // The new line ends as the file's lines do (CRLF files stay CRLF).
    let eol = if text[..line_end].ends_with('\r') || (line_end == text.len() && text.contains("\r\n")) { "\r\n" } else { "\n" };
    if text[..line_end].ends_with('\r') {
        line_end -= 1;
    }
    let indent = " ".repeat(text[line_start..name_start].chars().count());
    let written = if plain_is_string(value) { value.to_string() } else { double_quoted(value) };
    let mut out = String::with_capacity(text.len() + indent.len() + written.len() + field.len() + 3);
    out.push_str(&text[..line_end]);
    out.push_str(eol);
    out.push_str(&indent);
    out.push_str(field);
    out.push_str(": ");
    out.push_str(&written);
    out.push_str(&text[line_end..]);
    let line = name.pos.line + 1;
    Ok(Edited { text: out, old_value: None, line })
}
