//! An online log template miner in the manner of Drain (He et al., ICWS 2017): lines are masked,
//! routed through a fixed-depth tree by their token count and first tokens, and joined to the most
//! similar template of the leaf, or start a new one. One pass, memory bounded by the templates.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::mask::{WILDCARD, tokens};

/// The miner's one configuration (the same for every input).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
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
}

impl Default for Config {
    fn default() -> Self {
        Config { prefix_tokens: 2, similarity: 0.5, max_children: 100, word_changes: 0.2 }
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

#[derive(Debug, Default, Clone)]
struct Node {
    children: HashMap<String, Node>,
    templates: Vec<usize>,
}

/// The miner's state; save it with [`Miner::templates`] and restore it with [`Miner::with_templates`].
#[derive(Debug, Clone)]
pub struct Miner {
    config: Config,
    by_length: HashMap<usize, Node>,
    templates: Vec<Template>,
}

impl Miner {
    /// An empty miner.
    pub fn new(config: Config) -> Miner {
        Miner { config, by_length: HashMap::new(), templates: Vec::new() }
    }

    /// A miner that knows `templates` already (their ids are kept; new ones follow).
    pub fn with_templates(config: Config, templates: Vec<Template>) -> Miner {
        let mut m = Miner::new(config);
        for t in templates {
            let i = m.templates.len();
            m.leaf_mut(&t.tokens).templates.push(i);
            m.templates.push(t);
        }
        m
    }

    /// The templates, in id order.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// Mines one line: returns the id of its template (new or existing).
    pub fn add(&mut self, line: &str) -> u32 {
        let toks = tokens(line);
        let leaf = self.leaf_mut(&toks);
        let candidates = leaf.templates.clone();
        match self.best(&candidates, &toks) {
            Some(i) => {
                let t = &mut self.templates[i];
                for (a, b) in t.tokens.iter_mut().zip(&toks) {
                    if a != b && a != WILDCARD {
                        *a = WILDCARD.to_string();
                    }
                }
                t.count += 1;
                t.id
            }
            None => {
                let id = self.templates.iter().map(|t| t.id + 1).max().unwrap_or(0);
                let i = self.templates.len();
                self.templates.push(Template { id, tokens: toks.clone(), count: 1 });
                self.leaf_mut(&toks).templates.push(i);
                id
            }
        }
    }

    /// The template a line would join, without changing anything.
    pub fn find(&self, line: &str) -> Option<&Template> {
        let toks = tokens(line);
        let mut node = self.by_length.get(&toks.len())?;
        for tok in toks.iter().take(self.config.prefix_tokens) {
            node = node.children.get(route(tok)).or_else(|| node.children.get(WILDCARD))?;
        }
        self.best(&node.templates, &toks).map(|i| &self.templates[i])
    }

    /// The most similar template among `candidates` that is similar enough.
    fn best(&self, candidates: &[usize], toks: &[String]) -> Option<usize> {
        let mut best: Option<(f64, usize, usize)> = None;
        for &i in candidates {
            let t = &self.templates[i].tokens;
            // Words the line would turn into `<*>`: at most one per `1 / word_changes` tokens.
            let allowed = ((t.len() as f64 * self.config.word_changes) as usize).max(1);
            // Tokens that must match (same, or under a `<*>`) for the similarity to be reached.
            let needed = (self.config.similarity * t.len() as f64).ceil() as usize;
            let (mut same, mut wild, mut words, mut missed) = (0, 0, 0, 0);
            let mut rejected = false;
            for (a, b) in t.iter().zip(toks) {
                if a == WILDCARD {
                    wild += 1;
                    continue;
                } else if a == b {
                    same += 1;
                    continue;
                } else if !a.contains(WILDCARD) && !b.contains(WILDCARD) {
                    words += 1;
                }
                missed += 1;
                // Stop as soon as the template cannot be the answer.
                if words > allowed || t.len() - missed < needed {
                    rejected = true;
                    break;
                }
            }
            if rejected {
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
    fn leaf_mut(&mut self, toks: &[String]) -> &mut Node {
        let max = self.config.max_children;
        let mut node = self.by_length.entry(toks.len()).or_default();
        for tok in toks.iter().take(self.config.prefix_tokens) {
            let key = route(tok);
            let key = if node.children.contains_key(key) || node.children.len() < max { key } else { WILDCARD };
            node = node.children.entry(key.to_string()).or_default();
        }
        node
    }
}

/// The tree key of a token: a variable routes as `<*>`, a token with a variable part by its shape.
fn route(tok: &str) -> &str {
    tok
}
