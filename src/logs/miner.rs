//! An online log template miner in the manner of Drain (He et al., ICWS 2017): lines are masked,
//! routed through a fixed-depth tree by their token count and first tokens, and joined to the most
//! similar template of the leaf, or start a new one. One pass, memory bounded by the templates.
//!
//! Tokens are interned (each distinct masked token is a number), so that matching compares
//! numbers, and a word is copied once per distinct word, not once per line.
//!
//! Where a template joined lines that differ in a word (not a masked value), the words seen at
//! that position are counted; [`Miner::finish`] splits a template whose position holds a small
//! closed set of words, each seen again and again (a verb, a protocol, a state: `session opened`
//! and `session closed` are two events), and keeps one where the words keep coming (a user name).

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::mask::{WILDCARD, for_each_masked, for_each_masked_with, is_field_name, is_separator};

/// The miner's one configuration (the same for every input).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Tokens of a line used to route it in the tree (after its length).
    pub prefix_tokens: usize,
    /// A line joins a template when at least this share of the template's fixed tokens match.
    pub similarity: f64,
    /// Children per tree node before further tokens are routed as `<*>`.
    pub max_children: usize,
    /// Of a template's tokens, the share (at least one) that a joining line may change from one
    /// word to another: words are what a template is made of, values are masked already.
    pub word_changes: f64,
    /// A position where lines differ by a word splits its template when it holds at most this
    /// many distinct words (0: never split): a closed set (verbs, protocols, states).
    pub closed_words: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { prefix_tokens: 2, similarity: 0.5, max_children: 100, word_changes: 0.2, closed_words: 6 }
    }
}

/// A template: its tokens (`<*>` where lines differ) and how many lines it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// Stable id: the order in which templates were first seen, kept when saved and reloaded.
    pub id: u32,
    /// The template's tokens.
    pub tokens: Vec<String>,
    /// Lines mined into it.
    pub count: u64,
}

impl Template {
    /// The template as text.
    pub fn text(&self) -> String {
        self.tokens.join(" ")
    }
}

/// A token's words (letters, digits, `_`), its masked parts left out.
fn parts(token: &str) -> impl Iterator<Item = &str> {
    token.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|p| !p.is_empty())
}

/// Whether a token is a field's name and its masked value: `key=<*>` or `key=` (a name as
/// [`is_field_name`] says).
fn is_field(tok: &str) -> bool {
    let name = tok.strip_suffix(WILDCARD).unwrap_or(tok);
    name.strip_suffix('=').is_some_and(is_field_name)
}

/// The interned id of `<*>`.
const WILD: u32 = 0;

/// Distinct words a position counts before it is known not to be a closed set.
const SLOT_CAP: usize = 16;

/// Masked tokens as numbers.
#[derive(Debug, Clone)]
struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    /// Whether the token has a masked part (a value, not a word).
    valued: Vec<bool>,
    /// Whether the token can be one of a set of words: a word (`HTTPS`, `opened,`), or a name
    /// with a number and nothing else masked (`SOCKS<*>`, `blk_<*>`); not `<*>`, `<*>,` or
    /// `chdir(<*>)`, values with some text around them.
    wordlike: Vec<bool>,
    /// Whether the token is a field's name with its value masked (`method=<*>`, `user=`): the
    /// name is part of the event (see [`Miner::best`]).
    field: Vec<bool>,
    /// The tokens' text, by id.
    texts: Vec<Box<str>>,
    /// The token without the punctuation that ends an item of a list (`<*>,` and `<*>.` are
    /// `<*>`), by id: a list of values is one value whatever its length.
    stems: Vec<u32>,
    /// Whether the token opens a bracketed list of values and ends on its first item (`voters=(<*>`,
    /// `[<*>,`): a bracket it does not close, a value last.
    opens_list: Vec<bool>,
    /// Whether the token is a list's item alone, with what ends it (`<*>`, `<*>,`, `<*>)`, `<*>]);`).
    item: Vec<bool>,
}

/// What a line's next token does to the one before it.
enum Next {
    /// A token of its own.
    Push,
    /// One more item of the list the last token holds: left out.
    Skip,
    /// The last item of a bracketed list: the list's token becomes this one (`voters=(<*>` and
    /// `<*>)` make `voters=(<*>)`, the token a list of one item would have been).
    Close(String),
}

impl Interner {
    fn new() -> Interner {
        let mut i = Interner {
            ids: FxHashMap::default(),
            valued: Vec::new(),
            wordlike: Vec::new(),
            field: Vec::new(),
            texts: Vec::new(),
            stems: Vec::new(),
            opens_list: Vec::new(),
            item: Vec::new(),
        };
        i.id(WILDCARD);
        i
    }

    fn id(&mut self, tok: &str) -> u32 {
        if let Some(&id) = self.ids.get(tok) {
            return id;
        }
        let id = self.valued.len() as u32;
        self.ids.insert(tok.into(), id);
        self.valued.push(tok.contains(WILDCARD));
        let rest = tok.replace(WILDCARD, "");
        self.wordlike.push(!tok.contains(WILDCARD) || (rest.chars().any(char::is_alphabetic) && !rest.chars().any(is_separator)));
        self.field.push(is_field(tok));
        self.texts.push(tok.into());
        self.opens_list.push(super::mask::opens_list(tok));
        self.item.push(super::mask::list_item(tok).is_some());
        self.stems.push(id);
        let stem = tok.trim_end_matches([',', ';', '.']);
        if stem.len() < tok.len() && !stem.is_empty() {
            self.stems[id as usize] = self.id(stem);
        }
        id
    }

    /// Whether `tok` goes on the list of values that `last` ends.
    fn continues(&self, last: Option<&u32>, tok: u32) -> bool {
        let stem = |t: u32| self.stems.get(t as usize).copied();
        self.valued.get(tok as usize).copied().unwrap_or(false) && last.is_some_and(|&l| l == tok || (stem(l).is_some() && stem(l) == stem(tok)))
    }

    /// What `tok` does after `last`: a list's next item (of the same shape, or an item inside the
    /// brackets `last` opened) is left out, and a bracketed list's last item closes it.
    fn next(&self, last: Option<&u32>, tok: u32) -> Next {
        if self.continues(last, tok) {
            return Next::Skip;
        }
        let Some(&l) = last else { return Next::Push };
        let flag = |v: &Vec<bool>, t: u32| v.get(t as usize).copied().unwrap_or(false);
        if !(flag(&self.opens_list, l) && flag(&self.item, tok)) {
            return Next::Push;
        }
        let close = &self.texts[tok as usize][WILDCARD.len()..];
        if !close.contains([')', ']', '}']) {
            return Next::Skip;
        }
        Next::Close(format!("{}{close}", self.texts[l as usize].trim_end_matches([',', ';', '.'])))
    }

    fn get(&self, tok: &str) -> Option<u32> {
        self.ids.get(tok).copied()
    }
}

/// The words a position of a template held, where lines differed in a word.
#[derive(Debug, Clone)]
struct Slot {
    pos: usize,
    /// (word, lines), in first-seen order; the template's first word counted for all its lines
    /// before the position varied.
    words: Vec<(u32, u64)>,
    /// Too many distinct words, or a value among them: not a closed set.
    open: bool,
}

impl Slot {
    fn count(&mut self, word: u32, valued: bool) {
        if self.open {
            return;
        }
        if valued {
            self.open = true;
            return;
        }
        if let Some((_, n)) = self.words.iter_mut().find(|(w, _)| *w == word) {
            *n += 1;
        } else if self.words.len() >= SLOT_CAP {
            self.open = true;
        } else {
            self.words.push((word, 1));
        }
    }

    /// A small set of words.
    fn closed(&self, c: &Config) -> bool {
        !self.open && self.words.len() >= 2 && self.words.len() <= c.closed_words
    }
}

#[derive(Debug, Clone)]
struct Cluster {
    tokens: Vec<u32>,
    slots: Vec<Slot>,
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: FxHashMap<u32, Node>,
    templates: Vec<usize>,
}

/// The miner's state; save it with [`Miner::templates`] and restore it with [`Miner::with_templates`].
#[derive(Debug, Clone)]
pub struct Miner {
    config: Config,
    words: Interner,
    by_length: HashMap<usize, Node>,
    /// Parallel to `templates`: the interned tokens and the varying words.
    clusters: Vec<Cluster>,
    templates: Vec<Template>,
    next_id: u32,
    /// The current line's tokens, and a masked word (kept to spare allocations per line).
    line: Vec<u32>,
    buf: String,
    /// Words that structured lines wrote as a field's value (`user=root`), at most
    /// [`VALUE_WORDS`]: a closed set of such words names things, not events (see `finish`).
    value_words: FxHashSet<Box<str>>,
}

/// At most this many distinct words written as field values are kept, each of at most
/// [`VALUE_WORD_LEN`] bytes.
const VALUE_WORDS: usize = 4096;
const VALUE_WORD_LEN: usize = 64;

impl Miner {
    /// An empty miner.
    pub fn new(config: Config) -> Miner {
        Miner {
            config,
            words: Interner::new(),
            by_length: HashMap::new(),
            clusters: Vec::new(),
            templates: Vec::new(),
            next_id: 0,
            line: Vec::new(),
            buf: String::new(),
            value_words: FxHashSet::default(),
        }
    }

    /// A miner that knows `templates` already (their ids are kept; new ones follow).
    pub fn with_templates(config: Config, templates: Vec<Template>) -> Miner {
        let mut m = Miner::new(config);
        for t in templates {
            let toks: Vec<u32> = t.tokens.iter().map(|s| m.words.id(s)).collect();
            m.next_id = m.next_id.max(t.id + 1);
            m.push(t, toks);
        }
        m
    }

    /// The templates, in id order.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    fn push(&mut self, t: Template, toks: Vec<u32>) -> usize {
        let i = self.templates.len();
        self.leaf_mut(&toks).templates.push(i);
        self.clusters.push(Cluster { tokens: toks, slots: Vec::new() });
        self.templates.push(t);
        i
    }

    /// The line's masked tokens, interned, into `self.line`; a run of tokens of one masked shape
    /// (but for the punctuation that ends a list's item) becomes one: a list of ids is one value,
    /// whatever its length.
    fn tokenize(&mut self, line: &str) {
        self.line.clear();
        let (words, toks, values) = (&mut self.words, &mut self.line, &mut self.value_words);
        for_each_masked_with(
            line,
            &mut self.buf,
            |masked| {
                let id = words.id(masked);
                match words.next(toks.last(), id) {
                    Next::Push => toks.push(id),
                    Next::Skip => {}
                    Next::Close(list) => {
                        let closed = words.id(&list);
                        *toks.last_mut().expect("a list follows a token") = closed;
                    }
                }
            },
            |value| {
                // Words only (a closed set is of words), and short ones.
                if values.len() < VALUE_WORDS
                    && (1..=VALUE_WORD_LEN).contains(&value.len())
                    && value.chars().all(|c| c.is_alphabetic() || c == '_')
                    && !values.contains(value)
                {
                    values.insert(value.into());
                }
            },
        );
    }

    /// Mines one line: returns the id of its template (new or existing).
    pub fn add(&mut self, line: &str) -> u32 {
        self.tokenize(line);
        let toks = std::mem::take(&mut self.line);
        self.leaf_mut(&toks);
        let found = self.leaf(&toks).and_then(|leaf| self.best(&leaf.templates, &toks));
        let id = match found {
            Some(i) => {
                let wordlike = &self.words.wordlike;
                let cluster = &mut self.clusters[i];
                let t = &mut self.templates[i];
                for (p, &b) in toks.iter().enumerate() {
                    let a = cluster.tokens[p];
                    if a == WILD {
                        if let Some(slot) = cluster.slots.iter_mut().find(|s| s.pos == p) {
                            slot.count(b, !wordlike[b as usize]);
                        }
                        continue;
                    }
                    if a == b {
                        continue;
                    }
                    // A word gave way to another word: both counted at the position (the first
                    // for every line before); a value: no set of words there.
                    if wordlike[a as usize] && wordlike[b as usize] {
                        cluster.slots.push(Slot { pos: p, words: vec![(a, t.count), (b, 1)], open: false });
                    }
                    cluster.tokens[p] = WILD;
                    t.tokens[p] = WILDCARD.to_string();
                }
                t.count += 1;
                t.id
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let text = toks.iter().map(|&w| self.words.texts[w as usize].to_string()).collect();
                self.push(Template { id, tokens: text, count: 1 }, toks.clone());
                id
            }
        };
        self.line = toks;
        id
    }

    /// Splits every template at its first position whose words form a closed set (see
    /// [`Config::closed_words`]): one template per word, with that word's lines; the template
    /// keeps its id for its most frequent word. Call it when a batch of lines has been mined,
    /// then [`Miner::find`] each line's final template.
    pub fn finish(&mut self) {
        let c = self.config;
        // Where each word is found: in which template (`u32::MAX`: in more than one), among its
        // fixed tokens' parts and the words its positions held.
        let mut found: FxHashMap<&str, u32> = FxHashMap::default();
        for (i, cluster) in self.clusters.iter().enumerate() {
            let ids = cluster.tokens.iter().copied().chain(cluster.slots.iter().flat_map(|s| s.words.iter().map(|w| w.0)));
            for id in ids {
                for part in parts(&self.words.texts[id as usize]) {
                    let at = found.entry(part).or_insert(i as u32);
                    if *at != i as u32 {
                        *at = u32::MAX;
                    }
                }
            }
        }
        // A word a structured line wrote as a field's value is a value wherever it is found.
        for v in &self.value_words {
            found.insert(v, u32::MAX);
        }
        // A set whose every word is found in other templates too names things (users, hosts,
        // queues) that several events speak of: values, not the words of an event.
        let elsewhere =
            |i: usize, slot: &Slot| slot.words.iter().all(|w| parts(&self.words.texts[w.0 as usize]).all(|p| found.get(p).is_some_and(|at| *at != i as u32)));
        let split: Vec<(usize, usize)> =
            (0..self.clusters.len()).filter_map(|i| self.clusters[i].slots.iter().position(|s| s.closed(&c) && !elsewhere(i, s)).map(|k| (i, k))).collect();
        for (i, k) in split {
            let mut slot = self.clusters[i].slots.swap_remove(k);
            slot.words.sort_by_key(|w| std::cmp::Reverse(w.1));
            let pos = slot.pos;
            for (j, &(w, n)) in slot.words.iter().enumerate() {
                let text = self.words.texts[w as usize].to_string();
                if j == 0 {
                    self.clusters[i].tokens[pos] = w;
                    self.templates[i].tokens[pos] = text;
                    self.templates[i].count = n;
                    continue;
                }
                let mut toks = self.clusters[i].tokens.clone();
                toks[pos] = w;
                let mut tokens = self.templates[i].tokens.clone();
                tokens[pos] = text;
                let id = self.next_id;
                self.next_id += 1;
                self.push(Template { id, tokens, count: n }, toks);
            }
            // The other positions' counts were of all the words' lines together: begun anew.
            self.clusters[i].slots.clear();
        }
    }

    /// The template a line would join, without changing anything.
    pub fn find(&self, line: &str) -> Option<&Template> {
        let mut toks = Vec::new();
        for_each_masked(line, &mut String::new(), |masked| {
            // A token never seen matches no fixed token: any id that is not a word will do.
            let id = self.words.get(masked).unwrap_or(u32::MAX);
            match self.words.next(toks.last(), id) {
                Next::Push => toks.push(id),
                Next::Skip => {}
                Next::Close(list) => *toks.last_mut().expect("a list follows a token") = self.words.get(&list).unwrap_or(u32::MAX),
            }
        });
        let node = self.leaf(&toks)?;
        self.best(&node.templates, &toks).map(|i| &self.templates[i])
    }

    /// The leaf a line's tokens route to, if there is one.
    fn leaf(&self, toks: &[u32]) -> Option<&Node> {
        let mut node = self.by_length.get(&toks.len())?;
        for tok in toks.iter().take(self.config.prefix_tokens) {
            node = node.children.get(tok).or_else(|| node.children.get(&WILD))?;
        }
        Some(node)
    }

    /// The most similar template among `candidates` that is similar enough.
    fn best(&self, candidates: &[usize], toks: &[u32]) -> Option<usize> {
        let mut best: Option<(f64, usize, usize)> = None;
        let valued = |w: u32| self.words.valued.get(w as usize).copied().unwrap_or(false);
        // A field's name is never made a `<*>`: a line whose field differs from the template's
        // (`vars.name=<*>` against `vars.reference=<*>`) is another event's, or the same
        // message with other fields, which its programs write at another call site.
        let field = |w: u32| self.words.field.get(w as usize).copied().unwrap_or(false);
        for &i in candidates {
            let t = &self.clusters[i].tokens;
            // Words the line would turn into `<*>`: at most one per `1 / word_changes` tokens.
            let allowed = ((t.len() as f64 * self.config.word_changes) as usize).max(1);
            // Tokens that must match (same, or under a `<*>`) for the similarity to be reached.
            let needed = (self.config.similarity * t.len() as f64).ceil() as usize;
            let (mut same, mut wild, mut words, mut missed, mut kept, mut lost) = (0, 0, 0, 0, 0, 0);
            let mut rejected = false;
            for (&a, &b) in t.iter().zip(toks) {
                if a == WILD {
                    wild += 1;
                    continue;
                } else if a == b {
                    same += 1;
                    kept += usize::from(!valued(a));
                    continue;
                } else if field(a) || field(b) {
                    rejected = true;
                    break;
                } else if !valued(a) && !valued(b) {
                    words += 1;
                }
                missed += 1;
                lost += usize::from(!valued(a));
                // Stop as soon as the template cannot be the answer.
                if words > allowed || t.len() - missed < needed {
                    rejected = true;
                    break;
                }
            }
            // A template keeps a word: a join that would turn its last words into `<*>` (the
            // line has other words, or values, there) leaves no event, only values (`<peer>
            // sender: <*>` and `<peer> recip: <*>` are two events, not `<peer> <*> <*>`, which
            // every line of that shape would then join).
            if rejected || (kept == 0 && lost > 0) {
                continue;
            }
            let fixed = t.len() - wild;
            let sim = if fixed == 0 { 1.0 } else { same as f64 / t.len() as f64 };
            if sim >= self.config.similarity && best.is_none_or(|(s, w, _)| sim > s || (sim == s && wild > w)) {
                best = Some((sim, wild, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// The leaf for a line's tokens, made if needed.
    fn leaf_mut(&mut self, toks: &[u32]) -> &mut Node {
        // Made as `leaf` reads it: a token's own child if it has one or there is room, else `<*>`.
        let max = self.config.max_children;
        let mut node = self.by_length.entry(toks.len()).or_default();
        for &tok in toks.iter().take(self.config.prefix_tokens) {
            let key = if node.children.contains_key(&tok) || node.children.len() < max { tok } else { WILD };
            node = node.children.entry(key).or_default();
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mined(lines: &[String]) -> (Miner, Vec<u32>) {
        let mut m = Miner::new(Config::default());
        for l in lines {
            m.add(l);
        }
        m.finish();
        let ids = lines.iter().map(|l| m.find(l).expect("a mined line finds its template").id).collect();
        (m, ids)
    }

    #[test]
    fn a_bracketed_list_of_values_is_one_value_whatever_its_length() {
        // etcd's raft: the voters of a configuration, one to three of them.
        let lines: Vec<String> = ["(5127206355118178733)", "(5127206355118178733 7427138582951170011)", "(5127206355118178733 7427138582951170011 141946)"]
            .iter()
            .cycle()
            .take(9)
            .enumerate()
            .map(|(i, v)| format!("4727{i}f03cef1c1ad switched to configuration voters={v}"))
            .collect();
        let (m, ids) = mined(&lines);
        assert!(ids.iter().all(|i| *i == ids[0]), "{:?}", m.templates().iter().map(|t| t.text()).collect::<Vec<_>>());
        assert_eq!(m.templates()[ids[0] as usize].text(), "<*> switched to configuration voters=(<*>)");
    }

    #[test]
    fn a_template_keeps_a_word() {
        // aiosmtpd: a peer, then one or two words. `sender: <*>` and `recip: <*>` differ in their
        // only word: joined, they would be `<peer> <*> <*>`, which every line of four tokens
        // after a peer would join.
        let peer = |i: usize| format!("('127.0.0.1', {})", 40000 + i);
        let mut lines = Vec::new();
        for i in 0..5 {
            lines.push(format!("{} sender: a{i}@example.test", peer(i)));
            lines.push(format!("{} recip: b{i}@example.test", peer(i)));
            lines.push(format!("{} handling connection", peer(i)));
            lines.push(format!("{} connection lost", peer(i)));
        }
        let (m, ids) = mined(&lines);
        let texts: Vec<String> = ids[..4].iter().map(|i| m.templates()[*i as usize].text()).collect();
        assert_eq!(texts, ["('<*>', <*>) sender: <*>", "('<*>', <*>) recip: <*>", "('<*>', <*>) handling connection", "('<*>', <*>) connection lost"]);
    }

    #[test]
    fn a_closed_set_of_words_splits_and_an_open_one_does_not() {
        let users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
        // The verb takes two words, again and again.
        let lines: Vec<String> =
            (0..40).map(|i| format!("pam_unix(sshd:session): session {} for user root by uid {i}", if i % 3 == 0 { "closed" } else { "opened" })).collect();
        let (m, ids) = mined(&lines);
        let texts: Vec<String> = m.templates().iter().map(|t| format!("{} {}", t.text(), t.count)).collect();
        // The template keeps its id for its most frequent word.
        assert_eq!(
            texts,
            ["pam_unix(sshd:session): session opened for user root by uid <*> 26", "pam_unix(sshd:session): session closed for user root by uid <*> 14"],
            "{texts:?}"
        );
        assert!(lines.iter().zip(&ids).all(|(l, id)| (*id == 0) == l.contains("opened")));
        // A protocol: two values, each its own event.
        let lines: Vec<String> = (0..20).map(|i| format!("chrome.exe open through proxy p{} {}", i % 3, if i % 2 == 0 { "HTTPS" } else { "SOCKS5" })).collect();
        assert_eq!(mined(&lines).0.templates().len(), 2);
        // A word that keeps changing is a value.
        let lines: Vec<String> = (0..20).map(|i| format!("Invalid user {} from 10.0.0.{i}", users[i % 8])).collect();
        let (m, _) = mined(&lines);
        assert_eq!(m.templates().iter().map(|t| t.text()).collect::<Vec<_>>(), ["Invalid user <*> from <*>"]);
    }

    #[test]
    fn structured_lines_are_one_event_per_message_and_fields() {
        let methods = ["GET", "HEAD", "PUT"];
        // One message with one set of fields, whatever its values (a method too); the same
        // message with another field is another template; a JSON line is read the same way.
        let mut lines: Vec<String> =
            (0..30).map(|i| format!(r#"level=info msg="response completed" method={} status={} uri=/v2/x/{i}"#, methods[i % 3], 200 + i % 2)).collect();
        lines.extend(
            (0..10)
                .map(|i| format!(r#"level=info msg="response completed" method={} status=404 contenttype="application/json; charset=utf-8""#, methods[i % 3])),
        );
        lines.extend((0..10).map(|i| format!(r#"{{"level":"error","msg":"dial failed","peer":"10.0.0.{i}:80","err":"connection refused"}}"#)));
        let (m, ids) = mined(&lines);
        let texts: Vec<String> = m.templates().iter().map(|t| t.text()).collect();
        assert_eq!(
            texts,
            [
                "msg= response completed level=<*> method=<*> status=<*> uri=<*>",
                "msg= response completed level=<*> method=<*> status=<*> contenttype=<*>",
                "msg= dial failed err=<*> level=<*> peer=<*>"
            ],
            "{texts:?}"
        );
        assert_eq!(ids.iter().filter(|&&i| i == ids[0]).count(), 30);
        // A word a structured line writes as a field's value is a value in prose lines too:
        // `Failed password for X` is not split per user when `user=X` is a field elsewhere.
        let users = ["root", "ftp", "git"];
        let mut lines: Vec<String> = (0..30).map(|i| format!("Failed password for {} from 10.0.0.{i} port 22", users[i % 3])).collect();
        lines.extend((0..6).map(|i| format!("msg=auth uid={i} tty=ssh user={}", users[i % 3])));
        let (m, _) = mined(&lines);
        assert_eq!(
            m.templates().iter().map(|t| t.text()).collect::<Vec<_>>(),
            ["Failed password for <*> from <*> port <*>", "msg= auth uid=<*> tty=<*> user=<*>"]
        );
    }

    #[test]
    fn finished_templates_are_kept_by_saving_and_reloading() {
        let lines: Vec<String> = (0..30).map(|i| format!("link {} on port {i}", if i % 2 == 0 { "up" } else { "down" })).collect();
        let (m, ids) = mined(&lines);
        let reloaded = Miner::with_templates(Config::default(), m.templates().to_vec());
        for (l, id) in lines.iter().zip(&ids) {
            assert_eq!(reloaded.find(l).map(|t| t.id), Some(*id), "{l}");
        }
    }
}
