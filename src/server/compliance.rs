//! Compliance sweeps: every loaded pipeline's environments judged by its policies when the
//! policies change (their files' digest, looked at every [`TICK`]: a policy change is judged
//! everywhere within seconds), every `compliance.every` (the shortest of the pipeline's and its
//! environments'), when an exception ends (so that it opens again at once), and after a drift
//! (`Server::check_drift`). Of several replicas each sweeps;
//! a violation is recorded, told and reverted once (the store's unique key and conditional claims).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Server;
use super::pipelines::Loaded;

/// Pipelines swept at once.
const PIPELINES: usize = 4;

/// How often the policies' files are looked at for a change.
pub const TICK: Duration = Duration::from_secs(2);

/// Sweeps until the server stops.
pub(super) async fn run(server: Server) {
    // By pipeline: the policies' digest at the last sweep, and when the next is due.
    let mut last: HashMap<String, (String, Instant)> = HashMap::new();
    loop {
        let pipelines = server.pipelines();
        // Pipelines with an exception that ended: judged now, so that it opens again at once.
        let now = crate::clock::now_ms();
        let accepted = crate::store::ViolationFilter { state: Some(crate::store::ViolationState::Accepted), ..Default::default() };
        let expired: std::collections::HashSet<String> = match server.exec.store.violations(accepted).await {
            Ok(all) => all.into_iter().filter(|v| v.until.is_some_and(|u| u <= now)).map(|v| v.pipeline).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the compliance exceptions");
                Default::default()
            }
        };
        let mut due_now = Vec::new();
        for loaded in pipelines.by_name.values() {
            let name = &loaded.plan.pipeline.name.value;
            let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
            let (plan, base2) = (loaded.plan.clone(), base.to_path_buf());
            let Ok(Some(digest)) = tokio::task::spawn_blocking(move || crate::ops::compliance::Sweep::digest(&plan, &base2)).await else { continue };
            let due = expired.contains(name)
                || match last.get(name) {
                    Some((d, at)) => *d != digest || Instant::now() >= *at,
                    None => true,
                };
            if !due {
                continue;
            }
            last.insert(name.clone(), (digest, Instant::now() + every(loaded)));
            due_now.push(loaded);
        }
        // The pipelines due are judged a few at once (each judges a few environments at a time):
        // at most PIPELINES x 8 fetches and evaluations in flight, however many are loaded.
        for batch in due_now.chunks(PIPELINES) {
            let mut sweeping = Vec::with_capacity(batch.len());
            for loaded in batch {
                sweeping.push(server.check_compliance(loaded, None));
            }
            futures_util::future::join_all(sweeping).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = server.stop.cancelled() => return,
        }
    }
}

/// The shortest `compliance.every` of a pipeline and its environments.
fn every(loaded: &Loaded) -> Duration {
    let p = &loaded.plan.pipeline;
    p.environments
        .iter()
        .map(|e| p.compliance_of(e).every.0)
        .chain([p.compliance.every.0])
        .min()
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_secs(1))
}

impl Server {
    /// Judges one pipeline's environments (or one of them) by its policies; logs what it found.
    pub(super) async fn check_compliance(&self, loaded: &Loaded, only: Option<&str>) {
        let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
        let look = crate::ops::compliance::Look {
            store: &self.exec.store,
            writer: &self.exec.writer,
            plan: &loaded.plan,
            base,
            public_url: self.exec.public_url.as_deref(),
            only,
        };
        match crate::ops::compliance::check(&look, &self.compliance).await {
            Ok(found) => {
                for f in found.iter().filter(|f| f.violation.is_some()) {
                    tracing::warn!(pipeline = %loaded.plan.pipeline.name.value, environment = %f.environment, "{}", f.line);
                }
            }
            Err(e) => tracing::warn!(pipeline = %loaded.plan.pipeline.name.value, error = %e, "could not judge compliance"),
        }
    }
}
