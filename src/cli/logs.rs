//! `promote logs mine FILE... [--json] [--templates FILE]`: the log template miner on files, so
//! that anyone can check what it does.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_BAD_INPUT;
use crate::logs::{Config, Miner, Template};

/// `promote logs ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LogsCommand,
}

impl Args {
    /// The state and log options, for the subcommand that has a state.
    pub fn local(&self) -> Option<&super::Local> {
        match &self.command {
            LogsCommand::NotARisk(n) => Some(&n.local),
            LogsCommand::Mine(_) => None,
        }
    }
}

/// The `logs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Mine log files into templates: each line's template id, then the templates with counts.
    Mine(MineArgs),
    /// Mark a template a `logs` stage reported as not a risk: the pipeline's later runs ignore it.
    NotARisk(NotARiskArgs),
}

/// Arguments of `logs not-a-risk`.
#[derive(Debug, clap::Args)]
pub struct NotARiskArgs {
    /// The run whose `logs` stage reported the template.
    pub run: String,
    /// The `logs` stage.
    pub stage: String,
    /// The template's number in the stage's report (`#2` -> 2).
    pub number: usize,
    /// Who decides.
    #[arg(long = "as", value_name = "USER")]
    pub user: String,
    /// Why it is not a risk (kept with it).
    #[arg(long)]
    pub reason: String,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
}

/// Arguments of `logs mine`.
#[derive(Debug, clap::Args)]
pub struct MineArgs {
    /// Log files, read line by line (`-` is stdin).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Machine-readable output: {"lines": [...], "templates": [...]}.
    #[arg(long)]
    pub json: bool,
    /// Templates to start from (a file written by an earlier `--templates`), updated in place:
    /// the same line gets the same template id across runs.
    #[arg(long, value_name = "FILE")]
    pub templates: Option<PathBuf>,
}

/// Runs `logs`.
pub fn run(args: Args, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    match args.command {
        LogsCommand::Mine(m) => mine(m),
        LogsCommand::NotARisk(n) => not_a_risk(n, state),
    }
}

fn not_a_risk(args: NotARiskArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let store = super::open_store(state).await?;
        let request = crate::ops::decide::NotARisk {
            run: &args.run,
            stage: &args.stage,
            number: args.number,
            caller: crate::ops::access::Caller::Local { user: &args.user, token: None },
            reason: &args.reason,
        };
        let done = crate::ops::decide::not_a_risk(&store, &request).await;
        store.close().await;
        super::report(done)
    })
}

fn mine(args: MineArgs) -> anyhow::Result<ExitCode> {
    let known: Vec<Template> = match &args.templates {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)?;
            match serde_json::from_str(&text) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!(
                        "promote: error: {}:{}:{}: not a templates file ({e}); it is written by `promote logs mine --templates FILE`",
                        path.display(),
                        e.line(),
                        e.column()
                    );
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
            }
        }
        _ => Vec::new(),
    };
    let mut miner = Miner::with_templates(Config::default(), known);
    // Two passes: every line mined, the templates finished (closed sets of words split), then
    // each line given its final template. Files are read again; standard input is kept.
    let mut stdin_lines: Option<Vec<String>> = None;
    let read = |file: &PathBuf, stdin_lines: &mut Option<Vec<String>>, each: &mut dyn FnMut(usize, &str)| -> anyhow::Result<bool> {
        if file.as_os_str() == "-" {
            let kept = match stdin_lines.take() {
                Some(kept) => kept,
                None => std::io::BufReader::new(std::io::stdin())
                    .split(b'\n')
                    .map(|l| l.map(|l| String::from_utf8_lossy(&l).trim_end_matches('\r').to_string()))
                    .collect::<Result<_, _>>()?,
            };
            kept.iter().enumerate().for_each(|(n, l)| each(n, l));
            *stdin_lines = Some(kept);
            return Ok(true);
        }
        let f = match std::fs::File::open(file) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("promote: error: {}: {e}", file.display());
                return Ok(false);
            }
        };
        for (n, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
            let line = line?;
            // Logs are not always UTF-8: undecodable bytes become U+FFFD, never an error.
            let text = String::from_utf8_lossy(&line);
            each(n, text.trim_end_matches('\r'));
        }
        Ok(true)
    };
    // Each line's template when mined: kept for a line that no longer reaches the similarity of
    // its template (which gained `<*>` since), as the judge does.
    let mut first: Vec<u32> = Vec::new();
    for file in &args.files {
        if !read(file, &mut stdin_lines, &mut |_, text| {
            first.push(miner.add(text));
        })? {
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    }
    miner.finish();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        write!(out, "{{\"lines\": [")?;
    }
    let mut first_written = true;
    let mut at = 0usize;
    for file in &args.files {
        let shown = file.display().to_string();
        let mut failed: Option<std::io::Error> = None;
        let found = read(file, &mut stdin_lines, &mut |n, text| {
            // A file that grew since the first pass: its new lines have no first template.
            let id = miner.find(text).map(|t| t.id).or(first.get(at).copied());
            at += 1;
            let written = if args.json {
                let sep = if std::mem::take(&mut first_written) { "" } else { "," };
                write!(out, "{sep}\n  {}", serde_json::json!({"file": shown, "line": n + 1, "template": id}))
            } else {
                writeln!(out, "{shown}:{}\tT{}", n + 1, id.map_or("?".to_string(), |i| i.to_string()))
            };
            if let Err(e) = written {
                failed.get_or_insert(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        if !found {
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    }
    let mut templates: Vec<&Template> = miner.templates().iter().collect();
    templates.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    if args.json {
        let list: Vec<serde_json::Value> = templates.iter().map(|t| serde_json::json!({"id": t.id, "count": t.count, "template": t.text()})).collect();
        writeln!(out, "\n], \"templates\": {}}}", serde_json::to_string_pretty(&list)?)?;
    } else {
        writeln!(out, "\n{} templates:", templates.len())?;
        for t in templates {
            writeln!(out, "T{:<6} {:>8}  {}", t.id, t.count, t.text())?;
        }
    }
    out.flush()?;
    if let Some(path) = &args.templates {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string(miner.templates())?)?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(ExitCode::SUCCESS)
}
