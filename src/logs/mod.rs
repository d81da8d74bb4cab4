//! Log lines mined into templates (the masking rules, the online miner) and judged against a
//! baseline (the verdict).

pub mod mask;
pub mod miner;
pub mod verdict;

pub use miner::{Config, Miner, Template};
