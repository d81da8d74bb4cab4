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

/// Appends `text` to `out`, escaped for XML and HTML.
fn escape_into(out: &mut String, text: &str) {
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
}

/// The SVG of `plan`, each stage in the state `state_of(index)` gives (`pending`, `running`, ...).
pub fn svg<S: std::fmt::Display>(plan: &Plan, state_of: impl Fn(usize) -> S) -> String {
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
    let mut out = String::with_capacity(n * 200 + plan.needs.iter().map(Vec::len).sum::<usize>() * 40 + 512);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="group" aria-label="{n} stages by wave, each with its state" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#
    );
    // The boxes' size and the edges' arrow are the stylesheet's (`svg.dag`), not each element's:
    // a 5,000-stage run's page is half the markup for the browser to parse.
    out.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#7a8391"/></marker></defs><g class="edges">"##);
    for (i, needs) in plan.needs.iter().enumerate() {
        for &from in needs {
            let (x1, y1) = (pos[from].0 + W, pos[from].1 + H / 2);
            let (dx, dy) = (pos[i].0 as i64 - x1 as i64, (pos[i].1 + H / 2) as i64 - y1 as i64);
            let h = dx / 2;
            let _ = write!(out, r#"<path d="M{x1},{y1}c{h},0 {h},{dy} {dx},{dy}"/>"#);
        }
    }
    out.push_str("</g><g class=\"nodes\">");
    let mut name = String::new();
    for (i, stage) in plan.pipeline.stages.iter().enumerate() {
        // The box's texts start TEXT_X in: the group is placed there, its rect drawn back by it.
        let (x, y) = (pos[i].0 + TEXT_X, pos[i].1);
        name.clear();
        escape_into(&mut name, &stage.name.value);
        let state = state_of(i);
        let kind = stage.kind.name();
        let _ = write!(
            out,
            r#"<g class="stage {state}" data-stage="{name}" role="img" aria-label="{name}: {kind}, {state}" transform="translate({x},{y})"><rect/><text y="18">"#
        );
        if stage.name.value.chars().count() <= NAME_CHARS {
            out.push_str(&name);
        } else {
            escape_into(&mut out, &stage.name.value.chars().take(NAME_CHARS - 1).collect::<String>());
            out.push('…');
        }
        let _ = write!(out, r#"</text><text y="35">{kind} · {state}</text></g>"#);
    }
    out.push_str("</g></svg>");
    out
}

/// How far in from a box's left its texts start (the stylesheet draws the rect from -TEXT_X).
const TEXT_X: usize = 10;

/// The most characters of a stage's name a box shows (a longer one ends in `…`; its
/// `aria-label` and `data-stage` carry it whole).
const NAME_CHARS: usize = 22;
