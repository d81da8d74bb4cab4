//! A YAML document as a tree of nodes that remember where they stand, with duplicate keys refused.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::{Diagnostics, Pos};

/// Above this many nodes (aliases expanded), a document is refused: it protects against
/// "billion laughs" alias bombs.
const MAX_NODES: usize = 10_000_000;
/// Above this much copied by aliases (each copy's scalar text plus 128 bytes a node, about what a
/// node takes in memory), a document is refused before the copy is made: a few aliases of a long
/// string, or the billion laughs, would otherwise take gigabytes. What is written out in the file
/// is bounded by the file's size instead.
const MAX_ALIASED_BYTES: usize = 16 << 20;
/// What one node counts for `MAX_ALIASED_BYTES`, beside its text.
const NODE_BYTES: usize = 128;
/// Deeper than this (sequences and mappings inside each other), a document is refused: nothing
/// promote reads is nested nearly so deep, and the tree is walked recursively.
pub const MAX_DEPTH: usize = 128;

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts in the file.
    pub pos: Pos,
    /// For a scalar, the characters it occupies in the source (character indexes, end excluded;
    /// quotes included, and any anchor or tag written before it); elsewhere, empty at the start.
    pub span: (usize, usize),
    /// True when this node is a copy made by an alias (`*name`) or a merge key (`<<: *name`).
    pub aliased: bool,
    /// What it holds.
    pub kind: NodeKind,
}

/// The three kinds of YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar, as written (its type is decided by what reads it).
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, without duplicate keys.
    Map(Vec<(Node, Node)>),
}

/// A scalar's text and how it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The text after YAML unescaping and folding.
    pub value: String,
    /// True for quoted, block and `!!str` scalars: they are always strings.
    pub quoted: bool,
    /// A tag other than `!!str` written before it (`!!int`, `!Ref`), as written; only files read
    /// with [`parse_stream`] keep such scalars.
    pub tag: Option<String>,
}

impl Scalar {
    /// True when a plain scalar means null (`null`, `~`, or nothing).
    pub fn is_null(&self) -> bool {
        !self.quoted && matches!(self.value.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

impl Node {
    /// A short name of the node's type, for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(s) if s.is_null() => "nothing (null)",
            NodeKind::Scalar(_) => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The scalar's text, when this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(&s.value),
            _ => None,
        }
    }

    /// The entries, when this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Calls `f` on every scalar that is a value (not a mapping key), depth first, with the map
    /// keys that lead to it.
    pub fn for_each_value_scalar_at<'a>(&'a self, path: &mut Vec<&'a str>, f: &mut impl FnMut(&'a Node, &'a Scalar, &[&'a str])) {
        match &self.kind {
            NodeKind::Scalar(s) => f(self, s, path),
            NodeKind::Seq(items) => items.iter().for_each(|n| n.for_each_value_scalar_at(path, f)),
            NodeKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                path.push(k.as_str().unwrap_or(""));
                v.for_each_value_scalar_at(path, f);
                path.pop();
            }),
        }
    }
}

impl Node {
    fn mark_aliased(&mut self) {
        self.aliased = true;
        match &mut self.kind {
            NodeKind::Scalar(_) => {}
            NodeKind::Seq(items) => items.iter_mut().for_each(Node::mark_aliased),
            NodeKind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.mark_aliased();
                v.mark_aliased();
            }),
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

enum Frame {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Node, Node)>, key: Option<Node>, index: Option<HashMap<String, usize>>, skip_value: bool },
}

/// How strict a read is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A file promote's own format defines (a pipeline): one document, no tags but `!!str`.
    Own,
    /// A file someone else's tool defines (an environment file promote edits): any number of
    /// documents, any tags (kept on the scalar so that an edit can refuse a tagged target).
    Foreign,
}

/// Parses one YAML document. Syntax errors, duplicate keys, unsupported tags and extra documents
/// are recorded in `diags`; `None` when nothing usable could be read.
pub fn parse(src: &str, diags: &mut Diagnostics) -> Option<Node> {
    let mut docs = parse_with(src, diags, Mode::Own);
    if docs.is_empty() {
        if !diags.has_errors() {
            diags.error(Pos::new(1, 1), "the file is empty: a pipeline starts with `apiVersion: promote/v1` and `kind: Pipeline`");
        }
        return None;
    }
    docs.pop()
}

/// Parses every document of a file written for another tool (`---` separated, as `helm template`
/// writes them; empty and comment-only documents included, as null scalars), with the same limits
/// as [`parse`] (aliases, depth, duplicate keys) but any tag accepted. Positions and spans are
/// the file's, whatever the document. Empty when the file has a syntax error (in `diags`).
pub fn parse_stream(src: &str, diags: &mut Diagnostics) -> Vec<Node> {
    parse_with(src, diags, Mode::Foreign)
}

/// Above this size, the scanner runs on a thread of its own and hands its events over in batches
/// while this one builds the tree (the two take about the same time); below it, a thread costs
/// more than it gives.
pub const PIPELINED: usize = 64 << 10;
/// Events handed over at once.
const BATCH: usize = 4096;

/// One scanned event, as the parser gives it.
type Scanned<'a> = Result<(Event<'a>, Span), saphyr_parser::ScanError>;

fn parse_with(src: &str, diags: &mut Diagnostics, mode: Mode) -> Vec<Node> {
    let mut parser = Parser::new_from_str(src);
    if src.len() < PIPELINED {
        return build(std::iter::from_fn(|| parser.next_event()), diags, mode);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Scanned<'_>>>(8);
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(ev) = parser.next_event() {
                let failed = ev.is_err();
                batch.push(ev);
                if (batch.len() == BATCH || failed) && tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).is_err() {
                    // The builder stopped (an error): nothing more is read.
                    return;
                }
                if failed {
                    return;
                }
            }
            let _ = tx.send(batch);
        });
        // The receiver is dropped when the builder returns, which stops the scanner at its next
        // batch if the builder stopped early.
        build(rx.into_iter().flatten(), diags, mode)
    })
}

/// Builds the documents from the parser's events.
fn build<'a>(events: impl Iterator<Item = Scanned<'a>>, diags: &mut Diagnostics, mode: Mode) -> Vec<Node> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Each anchor's node, its size (see MAX_ALIASED_BYTES) and its node count, measured once when
    // it is defined, not at each alias.
    let mut anchors: HashMap<usize, (Node, usize, usize)> = HashMap::new();
    let mut aliased = 0usize;
    let mut documents = 0;
    let mut nodes = 0usize;

    for next in events {
        let (event, span) = match next {
            Ok(ev) => ev,
            Err(e) => {
                let m = e.marker();
                diags.error(Pos::new(m.line(), m.col() + 1), format!("YAML syntax: {}", e.info()));
                return Vec::new();
            }
        };
        let pos = pos_of(&span);
        let done: Option<(Node, usize)> = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 && mode == Mode::Own {
                    diags.error(pos, "a second YAML document (`---`): a pipeline file holds exactly one pipeline; move the other one into its own file");
                    break;
                }
                // Anchors name nodes of their own document only.
                anchors.clear();
                None
            }
            Event::Scalar(value, style, anchor, tag) => {
                let mut quoted = !matches!(style, ScalarStyle::Plain);
                let mut kept = None;
                if let Some(tag) = tag {
                    if tag.suffix == "str" && (tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!") {
                        quoted = true;
                    } else if mode == Mode::Foreign {
                        kept = Some(format!("{}{}", if tag.handle == "tag:yaml.org,2002:" { "!!" } else { &tag.handle }, tag.suffix));
                    } else {
                        diags.error(pos, format!("YAML tag `{}{}` is not supported here: remove it (only `!!str` is accepted)", tag.handle, tag.suffix));
                    }
                }
                nodes += 1;
                Some((
                    Node {
                        pos,
                        span: (span.start.index(), span.end.index()),
                        aliased: false,
                        kind: NodeKind::Scalar(Scalar { value: value.into_owned(), quoted, tag: kept }),
                    },
                    anchor,
                ))
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                diags.error(pos, format!("nested more than {MAX_DEPTH} levels deep: refused (nothing promote reads needs that)"));
                return Vec::new();
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq { pos, anchor, items: Vec::new() });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map { pos, anchor, entries: Vec::new(), key: None, index: None, skip_value: false });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => Some((Node { pos, span: (0, 0), aliased: false, kind: NodeKind::Seq(items) }, anchor)),
                _ => unreachable!("parser balances sequences"),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { pos, anchor, entries, .. }) => {
                    Some((Node { pos, span: (0, 0), aliased: false, kind: NodeKind::Map(merge_keys(entries, diags)) }, anchor))
                }
                _ => unreachable!("parser balances mappings"),
            },
            Event::Alias(id) => match anchors.get(&id) {
                Some((n, size, n_nodes)) => {
                    // Counted before it is copied: a bomb is refused without being built.
                    nodes += n_nodes;
                    aliased += size;
                    if aliased > MAX_ALIASED_BYTES || nodes > MAX_NODES {
                        diags.error(pos, format!("aliases expand to more than {} MB: refused (an alias bomb?)", MAX_ALIASED_BYTES >> 20));
                        return Vec::new();
                    }
                    let mut n = n.clone();
                    n.mark_aliased();
                    n.pos = pos;
                    Some((n, 0))
                }
                None => {
                    diags.error(pos, "alias to an unknown anchor");
                    return Vec::new();
                }
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
        };
        if nodes > MAX_NODES {
            diags.error(pos, format!("document expands to more than {MAX_NODES} nodes (aliases?): refused"));
            return Vec::new();
        }
        let Some((node, anchor)) = done else { continue };
        if anchor != 0 {
            let (size, n_nodes) = (size(&node), count(&node));
            anchors.insert(anchor, (node.clone(), size, n_nodes));
        }
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, index, skip_value, .. }) => match key.take() {
                None => {
                    if let NodeKind::Scalar(s) = &node.kind {
                        if let Some(first) = find_key(entries, index, &s.value) {
                            diags.error(
                                node.pos,
                                format!(
                                    "duplicate key `{}` (first at line {}): YAML would silently keep only the last one; remove or rename one of them",
                                    s.value, first.line
                                ),
                            );
                            *skip_value = true;
                        }
                    } else {
                        diags.error(node.pos, format!("a mapping key must be a plain name, not {}", node.describe()));
                        *skip_value = true;
                    }
                    *key = Some(node);
                }
                Some(k) => {
                    if std::mem::take(skip_value) {
                        continue;
                    }
                    if let (Some(index), Some(name)) = (index.as_mut(), k.as_str()) {
                        index.insert(name.to_string(), entries.len());
                    }
                    entries.push((k, node));
                }
            },
        }
    }
    docs
}

/// Where `key` already stands in a mapping being built. Small mappings are scanned; large ones
/// (thousands of stages) get an index on first need.
fn find_key(entries: &[(Node, Node)], index: &mut Option<HashMap<String, usize>>, key: &str) -> Option<Pos> {
    const SCAN: usize = 16;
    if entries.len() < SCAN {
        return entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k.pos);
    }
    let index = index.get_or_insert_with(|| entries.iter().enumerate().filter_map(|(i, (k, _))| Some((k.as_str()?.to_string(), i))).collect());
    index.get(key).map(|&i| entries[i].0.pos)
}

/// Applies YAML merge keys (`<<: *base` or `<<: [*a, *b]`): the merged mappings' entries are
/// added where the mapping does not set the key itself.
fn merge_keys(entries: Vec<(Node, Node)>, diags: &mut Diagnostics) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.kind, NodeKind::Scalar(s) if !s.quoted && s.value == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| is_merge(k));
    for (_, value) in merges {
        let sources = match value.kind {
            NodeKind::Map(_) => vec![value],
            NodeKind::Seq(items) => items,
            NodeKind::Scalar(_) => {
                diags.error(value.pos, "`<<` merges a mapping (`<<: *anchor`), not a scalar");
                continue;
            }
        };
        for source in sources {
            let NodeKind::Map(src_entries) = source.kind else {
                diags.error(source.pos, "`<<` merges mappings only");
                continue;
            };
            for (k, v) in src_entries {
                if !own.iter().any(|(o, _)| o.as_str() == k.as_str()) {
                    own.push((k, v));
                }
            }
        }
    }
    own
}

/// A node's size as `MAX_ALIASED_BYTES` counts it.
fn size(n: &Node) -> usize {
    match &n.kind {
        NodeKind::Scalar(s) => NODE_BYTES + s.value.len(),
        NodeKind::Seq(items) => NODE_BYTES + items.iter().map(size).sum::<usize>(),
        NodeKind::Map(e) => NODE_BYTES + e.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>(),
    }
}

fn count(n: &Node) -> usize {
    match &n.kind {
        NodeKind::Scalar(_) => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        NodeKind::Map(e) => 1 + e.iter().map(|(k, v)| count(k) + count(v)).sum::<usize>(),
    }
}

/// Checks that a YAML file read by another YAML library (the users file, Rego data, the
/// manifests a policy sees) stays within this reader's limits (alias expansion, depth), so that
/// an alias bomb or deep nesting is refused here, at its position, before that library builds it.
/// Returns the first problem's position and message.
pub fn within_limits(src: &str) -> Result<(), (Pos, String)> {
    let mut diags = Diagnostics::new("");
    parse_stream(src, &mut diags);
    match diags.iter().next() {
        Some(d) => Err((d.pos, d.message.clone())),
        None => Ok(()),
    }
}
