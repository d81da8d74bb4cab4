//! `promote key generate [PATH]`: a new sealing key, in a file the key loader accepts.

use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_BAD_INPUT;

/// `promote key ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// The `key` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Write a new random key (64 hex digits) to PATH, mode 0600 (its folder made 0700); refused
    /// when PATH exists: a new key makes everything the old one sealed unbelievable.
    Generate {
        /// Where (default: `PROMOTE_KEY_FILE`, else `~/.config/promote/key`).
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
}

/// Runs `key`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        KeyCommand::Generate { path } => {
            let path = path.unwrap_or_else(crate::seal::Key::default_path);
            match crate::seal::Key::generate(&path) {
                Ok(key) => {
                    println!("wrote a new key to {} (mode 0600): back it up with the state; it is what makes sealed records believable", key.path());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("promote: error: {e}");
                    Ok(ExitCode::from(EXIT_BAD_INPUT))
                }
            }
        }
    }
}
