//! `promote run FILE --version V [--detach]` and `promote resume RUN`: walk a run, live progress
//! on stderr, a summary on stdout.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{EXIT_BAD_INPUT, check_file, print_diagnostics};
use crate::clock::humanize;
use crate::diag::printable;
use crate::exec::{ExecError, Progress, Summary};
use crate::store::{RunState, StageState};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The version to promote.
    #[arg(long)]
    pub version: String,
    /// Print the run id and leave the run going in the background.
    #[arg(long)]
    pub detach: bool,
    /// Accept a rewritten (force-pushed) history of this environment's branch before the run:
    /// promote writes on top of the new head; the vanished commits stay kept in its cache.
    #[arg(long, value_name = "ENV")]
    pub accept_rewrite: Vec<String>,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
    /// Through a server.
    #[command(flatten)]
    pub remote: super::Remote,
}

/// Arguments of `resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The run id.
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Where the state is, how to log.
    #[command(flatten)]
    pub local: super::Local,
}

/// Who starts a run: `PROMOTE_USER`, else `USER`.
pub fn current_user() -> String {
    std::env::var("PROMOTE_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into())
}

/// Runs `run`.
pub fn run(args: RunArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let checked = check_file(&args.file);
    print_diagnostics(&checked.diagnostics);
    let Some(plan) = checked.plan else { return Ok(ExitCode::from(EXIT_BAD_INPUT)) };
    let source = checked.source;
    let file = std::path::absolute(&args.file)?;
    let who = current_user();
    let token = std::env::var("PROMOTE_TOKEN").ok().filter(|t| !t.is_empty());
    let request = crate::ops::start::Request {
        file: &file,
        source: &source,
        plan: &plan,
        shown: &checked.file,
        version: &args.version,
        caller: crate::ops::access::Caller::Local { user: &who, token: token.as_deref() },
        accept_rewrite: &args.accept_rewrite,
        // Driven by `drive` below, which claims it, or by the detached `resume`.
        driven: false,
    };
    let refused = crate::ops::start::refusals(&request);
    if !refused.is_empty() {
        for line in refused {
            eprintln!("{line}");
        }
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let rt = super::runtime()?;
    rt.block_on(async {
        let exec = super::executor(state).await?;
        let started = match crate::ops::start::start(&exec, &request).await {
            Ok(started) => started,
            Err(crate::ops::OpsError::Refused(why)) => {
                eprintln!("promote: error: {why}");
                exec.store.close().await;
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
            Err(e) => return Err(e.into()),
        };
        for line in &started.accepted {
            eprintln!("{line}");
        }
        let run = started.run;
        if args.detach {
            let exe = std::env::current_exe()?;
            std::process::Command::new(exe)
                .args(["resume", &run.id])
                .arg("--state")
                .arg(state)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            println!("{}", run.id);
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "run {} ({} {}): `promote status {}` from another terminal; `promote resume {}` if this stops",
            run.id, run.pipeline, run.version, run.id, run.id
        );
        drive(&exec, &run.id).await
    })
}

/// Runs `resume`.
pub fn resume(args: ResumeArgs, state: &std::path::Path) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let exec = super::executor(state).await?;
        match drive(&exec, &args.run).await {
            Err(e) => match e.downcast_ref::<ExecError>() {
                Some(ExecError::Finished { .. } | ExecError::Driven { .. } | ExecError::Store(crate::store::StoreError::UnknownRun { .. })) => {
                    eprintln!("promote: error: {e}");
                    Ok(ExitCode::from(EXIT_BAD_INPUT))
                }
                _ => Err(e),
            },
            ok => ok,
        }
    })
}

async fn drive(exec: &crate::exec::Executor, id: &str) -> anyhow::Result<ExitCode> {
    let view = Arc::new(Mutex::new(View::new()));
    let v = view.clone();
    let progress = Arc::new(move |p: Progress| v.lock().unwrap_or_else(|e| e.into_inner()).update(p));
    let ticker = {
        let view = view.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                view.lock().unwrap_or_else(|e| e.into_inner()).redraw();
            }
        })
    };
    // Ctrl-C or SIGTERM stops the walk at a durable point; `promote resume` carries it on.
    let stop = tokio_util::sync::CancellationToken::new();
    let signals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            super::interrupted().await;
            stop.cancel();
        })
    };
    let result = exec.drive_until(id, progress, stop).await;
    // The trail's head is pushed to Git in the background: wait for it before exiting.
    crate::exec::settle_heads().await;
    signals.abort();
    ticker.abort();
    view.lock().unwrap_or_else(|e| e.into_inner()).redraw();
    if let Err(e @ ExecError::Stopped { .. }) = &result {
        eprintln!("promote: {e}");
        return Ok(ExitCode::from(130));
    }
    let summary = result?;
    print!("{}", render_summary(&summary));
    Ok(if summary.run.state == RunState::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The live view: on a terminal, one line per stage redrawn in place with its elapsed time;
/// otherwise one plain line per transition.
struct View {
    tty: bool,
    start: Instant,
    rows: Vec<(String, StageState, String, Instant)>,
    drawn: usize,
}

impl View {
    fn new() -> View {
        View { tty: std::io::stderr().is_terminal(), start: Instant::now(), rows: Vec::new(), drawn: 0 }
    }

    fn update(&mut self, p: Progress) {
        if !self.tty {
            let msg = if p.message.is_empty() { String::new() } else { format!("  {}", printable(&p.message)) };
            eprintln!("[{:>7}] {:<24} {}{msg}", humanize(self.start.elapsed()), p.stage, p.state);
            return;
        }
        match self.rows.iter_mut().find(|r| r.0 == p.stage) {
            Some(r) => {
                if r.1 != p.state && p.state == StageState::Running {
                    r.3 = Instant::now();
                }
                r.1 = p.state;
                r.2 = p.message;
            }
            None => self.rows.push((p.stage, p.state, p.message, Instant::now())),
        }
        self.redraw();
    }

    fn redraw(&mut self) {
        if !self.tty {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for (stage, state, msg, since) in &self.rows {
            let elapsed = if state.is_final() { String::new() } else { humanize(since.elapsed()) };
            let _ = writeln!(err, "\x1b[2K{:<24} {:<12} {:>8}  {}", stage, state.as_str(), elapsed, printable(msg));
        }
        self.drawn = self.rows.len();
    }
}

/// The one-screen summary.
pub fn render_summary(s: &Summary) -> String {
    let took = s.run.finished_at.map(|f| humanize(std::time::Duration::from_millis((f - s.run.created_at).max(0) as u64))).unwrap_or_default();
    let mut out = format!("run {} {} {}: {} in {took}\n", s.run.id, s.run.pipeline, s.run.version, s.run.state);
    let width = s.stages.iter().map(|st| st.name.len()).max().unwrap_or(0);
    for st in &s.stages {
        let d = match (st.started_at, st.finished_at) {
            (Some(a), Some(b)) => humanize(std::time::Duration::from_millis((b - a).max(0) as u64)),
            _ => String::new(),
        };
        let tries = if st.attempt > 1 { format!(" ({} attempts)", st.attempt) } else { String::new() };
        out.push_str(&format!("  {:<width$}  {:<11} {:>7}  {}{tries}\n", st.name, st.state.as_str(), d, printable(st.message.as_deref().unwrap_or(""))));
    }
    if let Some(m) = &s.run.message {
        out.push_str(&format!("{}\n", printable(m)));
    }
    out
}
