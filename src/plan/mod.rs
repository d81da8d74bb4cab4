//! The validated plan: how a pipeline's parts fit together, checked all at once, and its stage DAG.

mod checks;
pub use checks::Checks;
mod render;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diagnostics, plural};
use crate::model::Pipeline;

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
    Some(Plan { pipeline, graph, waves, wave_of, needs })
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
