//! Pictures of a plan: waves as text, Graphviz DOT, Mermaid.

use std::fmt::Write;

use super::Plan;

/// The output formats of `promote graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The waves, one line a stage, with what each needs.
    Text,
    /// Graphviz: `promote graph p.yaml --format dot | dot -Tsvg > p.svg`.
    Dot,
    /// Mermaid flowchart (renders on GitHub and GitLab inside a ```mermaid block).
    Mermaid,
    /// The waves and edges as JSON.
    Json,
}

/// Renders `plan` in `format`.
pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Text => text(plan),
        Format::Dot => dot(plan),
        Format::Mermaid => mermaid(plan),
        Format::Json => json(plan),
    }
}

fn text(plan: &Plan) -> String {
    let p = &plan.pipeline;
    let mut out = String::new();
    let _ = writeln!(out, "pipeline {}: {}", p.name.value, plan.describe());
    let width = p.stages.iter().map(|s| s.name.value.len()).max().unwrap_or(0);
    for (w, wave) in plan.waves.iter().enumerate() {
        let _ = writeln!(out, "wave {}{}", w + 1, if wave.len() > 1 { format!(" ({} at once)", wave.len()) } else { String::new() });
        for &i in wave {
            let s = &p.stages[i];
            let mut line = format!("  {:width$}  {}", s.name.value, s.kind.summary());
            if !s.needs.is_empty() {
                let needs: Vec<&str> = s.needs.iter().map(|n| n.value.as_str()).collect();
                let _ = write!(line, "  (needs {})", needs.join(", "));
            }
            if let Some(c) = &s.condition {
                let _ = write!(line, "  if {}", c.value);
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan) -> String {
    let p = &plan.pipeline;
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", quote(&p.name.value));
    let _ = writeln!(out, "  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];");
    for (w, wave) in plan.waves.iter().enumerate() {
        let _ = writeln!(out, "  subgraph wave{} {{\n    rank=same;", w + 1);
        for &i in wave {
            let s = &p.stages[i];
            let _ = writeln!(out, "    \"{}\" [label=\"{}\\n{}\"];", quote(&s.name.value), quote(&s.name.value), quote(&s.kind.summary()));
        }
        let _ = writeln!(out, "  }}");
    }
    for (i, s) in p.stages.iter().enumerate() {
        for j in plan.needs(i) {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", quote(&p.stages[j].name.value), quote(&s.name.value));
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_label(s: &str) -> String {
    s.replace('"', "#quot;")
}

fn mermaid(plan: &Plan) -> String {
    let p = &plan.pipeline;
    let mut out = String::from("flowchart LR\n");
    for (i, s) in p.stages.iter().enumerate() {
        let label = format!("{}<br/>{}", mermaid_label(&s.name.value), mermaid_label(&s.kind.summary()));
        let shape = s.kind.shape();
        let _ = writeln!(out, "  s{i}{}{label}{}", shape.0, shape.1);
    }
    for i in 0..p.stages.len() {
        for j in plan.needs(i) {
            let _ = writeln!(out, "  s{j} --> s{i}");
        }
    }
    out
}

fn json(plan: &Plan) -> String {
    let p = &plan.pipeline;
    let stages: Vec<serde_json::Value> = p
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "name": s.name.value,
                "kind": s.kind.name(),
                "wave": plan.wave_of[i] + 1,
                "needs": s.needs.iter().map(|n| n.value.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let waves: Vec<Vec<&str>> = plan.waves.iter().map(|w| w.iter().map(|&i| p.stages[i].name.value.as_str()).collect()).collect();
    let doc = serde_json::json!({ "pipeline": p.name.value, "stages": stages, "waves": waves });
    serde_json::to_string_pretty(&doc).expect("json") + "\n"
}
