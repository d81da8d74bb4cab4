//! A plan drawn as SVG: one column per wave (every stage of a column needs only stages to its
//! left), one box per stage coloured by its state, a curve per need. Each box carries its stage's
//! name (`data-stage`) so that the run page's script recolours it as events arrive, and says its
//! name, kind and state to a screen reader (`role="img"` with an `aria-label`).

use std::fmt::Write as _;

use crate::plan::Plan;

const W: usize = 170;
const H: usize = 44;
const GAP_X: usize = 60;
const GAP_Y: usize = 16;

/// Escapes text for XML and HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The SVG of `plan`, each stage in the state `state_of(index)` gives (`pending`, `running`, ...).
pub fn svg(plan: &Plan, state_of: impl Fn(usize) -> String) -> String {
    let n = plan.pipeline.stages.len();
    let mut pos = vec![(0usize, 0usize); n];
    let tallest = plan.waves.iter().map(Vec::len).max().unwrap_or(0);
    for (w, wave) in plan.waves.iter().enumerate() {
        for (row, &i) in wave.iter().enumerate() {
            pos[i] = (20 + w * (W + GAP_X), 20 + row * (H + GAP_Y));
        }
    }
    let width = 40 + plan.waves.len() * (W + GAP_X);
    let height = 40 + tallest * (H + GAP_Y);
    let mut out = String::with_capacity(n * 400);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="group" aria-label="{n} stages by wave, each with its state" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    out.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#7a8391"/></marker></defs><g class="edges">"##);
    for (i, needs) in plan.needs.iter().enumerate() {
        for &from in needs {
            let (x1, y1) = (pos[from].0 + W, pos[from].1 + H / 2);
            let (x2, y2) = (pos[i].0, pos[i].1 + H / 2);
            let mid = (x1 + x2) / 2;
            let _ = write!(out, r#"<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" marker-end="url(#arrow)"/>"#);
        }
    }
    out.push_str("</g><g class=\"nodes\">");
    for (i, stage) in plan.pipeline.stages.iter().enumerate() {
        let (x, y) = pos[i];
        let name = escape(&stage.name.value);
        let state = escape(&state_of(i));
        let _ = write!(
            out,
            r#"<g class="stage {state}" data-stage="{name}" role="img" aria-label="{name}: {kind}, {state}" transform="translate({x},{y})"><rect width="{W}" height="{H}" rx="6"/><text x="10" y="18" class="name">{shown}</text><text x="10" y="35" class="kind">{kind} · <tspan class="state">{state}</tspan></text></g>"#,
            shown = escape(&ellipsis(&stage.name.value, 22)),
            kind = stage.kind.name(),
        );
    }
    out.push_str("</g></svg>");
    out
}

fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max { text.to_string() } else { format!("{}…", text.chars().take(max - 1).collect::<String>()) }
}
