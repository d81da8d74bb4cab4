//! Log lines mined into templates: the masking rules and the online miner.

pub mod mask;
pub mod miner;

pub use miner::{Config, Miner, Template};
