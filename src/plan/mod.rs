//! The validated plan: how a pipeline's parts fit together, checked all at once, and its stage DAG.

pub(crate) mod checks;
pub use checks::Checks;
mod render;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diagnostics, plural};
use crate::model::{Environment, Pipeline};

pub use render::{Format, render};

/// A pipeline whose every reference, expression and edge has been checked, with its stage DAG.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pipeline as written.
    pub pipeline: Pipeline,
    /// Node `i` is stage `i` of `pipeline.stages`; an edge `a -> b` means `b` needs `a`.
    pub graph: DiGraph<usize, ()>,
    /// Stage indexes grouped by wave: every stage of wave `n` needs only stages of earlier waves,
    /// so the stages of one wave can run at the same time.
    pub waves: Vec<Vec<usize>>,
    /// The wave of each stage.
    pub wave_of: Vec<usize>,
    /// For each stage, the indexes of the stages it needs, in the order written.
    pub needs: Vec<Vec<usize>>,
    /// Each environment's index in `pipeline.environments`, by name.
    environment_ids: HashMap<String, usize>,
    /// For each stage, the index of the environment it deploys to (deploys only).
    deploys: Vec<Option<usize>>,
}

impl Plan {
    /// `6 stages in 5 waves`.
    pub fn describe(&self) -> String {
        format!("{} in {}", plural(self.pipeline.stages.len(), "stage"), plural(self.waves.len(), "wave"))
    }

    /// The stage indexes that stage `i` needs, in the order written.
    pub fn needs(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.needs[i].iter().copied()
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environment_ids.get(name).map(|&i| &self.pipeline.environments[i])
    }

    /// The environment stage `i` deploys to (`None` for a stage of another kind): resolved when
    /// the plan was made, so a deploy of a plan always has one.
    pub fn deploy_environment(&self, i: usize) -> Option<&Environment> {
        self.deploys[i].map(|e| &self.pipeline.environments[e])
    }

    /// Whether stage `a` is upstream of stage `b` (b needs it, directly or through others).
    pub fn is_upstream(&self, a: usize, b: usize) -> bool {
        self.upstream_of(b)[a]
    }

    /// For each stage, whether it is upstream of stage `b`: one walk up from `b`.
    fn upstream_of(&self, b: usize) -> Vec<bool> {
        let mut stack = vec![b];
        let mut seen = vec![false; self.needs.len()];
        while let Some(n) = stack.pop() {
            for &m in &self.needs[n] {
                if !std::mem::replace(&mut seen[m], true) {
                    stack.push(m);
                }
            }
        }
        seen
    }

    /// The approval stages upstream of stage `i`, in file order: the sign-offs that gate it (one
    /// walk up from `i`, whatever the number of approvals).
    pub fn gating_approvals(&self, i: usize) -> Vec<usize> {
        let up = self.upstream_of(i);
        (0..self.pipeline.stages.len()).filter(|&a| up[a] && self.pipeline.stages[a].kind.is_sign_off()).collect()
    }
}

/// Loads pipeline text `source` (from `file`) and plans it: the one way from text to a plan
/// (`promote validate`, a start, a resumed run, a stored run's pages). Every problem is recorded
/// in `diags`; `None` when any of them is an error.
pub fn compile(source: &str, diags: &mut Diagnostics) -> Option<Plan> {
    let plan = crate::model::load(source, diags).and_then(|p| plan(p, diags));
    plan.filter(|_| !diags.has_errors())
}

/// Checks `pipeline` as a whole and builds its plan. Every problem is recorded in `diags`;
/// `None` when any of them is an error.
pub fn plan(pipeline: Pipeline, diags: &mut Diagnostics) -> Option<Plan> {
    let index: HashMap<&str, usize> = pipeline.stages.iter().enumerate().map(|(i, s)| (s.name.value.as_str(), i)).collect();
    let mut graph = DiGraph::<usize, ()>::with_capacity(pipeline.stages.len(), pipeline.stages.len());
    for i in 0..pipeline.stages.len() {
        graph.add_node(i);
    }
    let needs = checks::needs(&pipeline, &index, &mut graph, diags);
    let acyclic = checks::cycles(&pipeline, &graph, diags);
    checks::environments(&pipeline, diags);
    checks::expressions(&pipeline, diags);
    checks::kinds(&pipeline, diags);
    checks::watches(&pipeline, diags);
    if acyclic {
        checks::production_gates(&pipeline, &graph, diags);
    }
    if diags.has_errors() {
        return None;
    }
    let (waves, wave_of) = waves(&graph);
    let environment_ids: HashMap<String, usize> = pipeline.environments.iter().enumerate().map(|(i, e)| (e.name.value.clone(), i)).collect();
    let deploys = pipeline.stages.iter().map(|s| s.kind.promotes().and_then(|d| environment_ids.get(&d.environment.value).copied())).collect();
    Some(Plan { pipeline, graph, waves, wave_of, needs, environment_ids, deploys })
}

/// Longest-path layering of an acyclic graph: a stage's wave is one more than its latest need's.
fn waves(graph: &DiGraph<usize, ()>) -> (Vec<Vec<usize>>, Vec<usize>) {
    let order = petgraph::algo::toposort(graph, None).expect("cycles were reported before");
    let mut wave_of = vec![0usize; graph.node_count()];
    for n in &order {
        let w = graph.neighbors_directed(*n, petgraph::Direction::Incoming).map(|p| wave_of[p.index()] + 1).max().unwrap_or(0);
        wave_of[n.index()] = w;
    }
    let count = wave_of.iter().copied().max().map_or(0, |m| m + 1);
    let mut waves = vec![Vec::new(); count];
    for (i, w) in wave_of.iter().enumerate() {
        waves[*w].push(i);
    }
    (waves, wave_of)
}

pub(crate) fn node(i: usize) -> NodeIndex {
    NodeIndex::new(i)
}
