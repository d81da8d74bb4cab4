//! Judging numbers, with no I/O: Argo Rollouts' measurement phases and limits, the Mann-Whitney
//! test, and Kayenta's classification and score.

pub mod kayenta;
pub mod mannwhitney;
pub mod measure;

pub use measure::{Conditions, Limits, Phase, Sample, Tally, fmt_f64};
