//! The environments board: for each pipeline a person may view, what each environment holds now
//! (the version, since when, from which run, signed off by whom) and its last promotions. The
//! rules (which promotion counts, who approved it) are here; the page and any other surface only
//! render it.

use std::sync::Arc;

use super::OpsError;
use super::access::{Permission, Person};
use crate::plan::Plan;
use crate::stages::DeployOutput;
use crate::store::{RunRecord, StageOf, StageState, Store};

/// How many past promotions an environment shows.
pub const HISTORY: usize = 10;

/// One pipeline's environments, in the order its file writes them.
#[derive(Debug, Clone)]
pub struct Row {
    /// The pipeline.
    pub pipeline: String,
    /// Each environment's name and what it holds (`None`: no promotion of promote's yet).
    pub environments: Vec<(String, Option<Holding>)>,
}

/// What an environment holds: its newest promotion whose deploy succeeded.
#[derive(Debug, Clone)]
pub struct Holding {
    /// The value written.
    pub version: String,
    /// When its commit landed (else its stage's end, else its run's start), Unix ms.
    pub since: i64,
    /// The run that promoted it.
    pub run: String,
    /// Who approved it: the decisions of the approval stages its deploy needed (as its commit's
    /// `Approved-By` says), not every approval of the run.
    pub approved_by: Vec<String>,
    /// Its last promotions, newest first (at most [`HISTORY`]): (run, version, how the deploy stands).
    pub history: Vec<(String, String, StageState)>,
}

/// The board `person` may see: the pipelines `loaded` whose `access` lets them view. `plan_of`
/// gives a run's plan (from its stored text), to know which approvals gated a promotion.
pub async fn board<'a>(
    store: &Store,
    person: &Person,
    loaded: impl IntoIterator<Item = (&'a str, &'a Plan)>,
    plan_of: impl Fn(&RunRecord) -> Option<Arc<Plan>>,
) -> Result<Vec<Row>, OpsError> {
    let deploys = store.stages_where(Some("deploy"), None).await?;
    let mut rows = Vec::new();
    for (name, plan) in loaded.into_iter().filter(|(_, p)| super::access::holds(&p.pipeline, Permission::View, None, person)) {
        let mut environments = Vec::new();
        for env in &plan.pipeline.environments {
            // Newest first: every promotion of this pipeline into this environment that holds a commit.
            let mut history: Vec<(&StageOf, DeployOutput)> = deploys
                .iter()
                .filter(|d| d.pipeline == name)
                .filter_map(|d| DeployOutput::of(d.stage.output.as_ref()).map(|o| (d, o)))
                .filter(|(_, o)| o.environment == env.name.value && o.outcome.holds_commit())
                .collect();
            history.reverse();
            let holding = match history.iter().find(|(d, _)| d.stage.state == StageState::Succeeded) {
                Some((d, out)) => Some(Holding {
                    version: out.new_value.clone(),
                    since: out.committed_at.or(d.stage.finished_at).unwrap_or(d.run_created_at),
                    run: d.run.clone(),
                    approved_by: approved_by(store, d, &plan_of).await?,
                    history: history.iter().take(HISTORY).map(|(h, o)| (h.run.clone(), o.new_value.clone(), h.stage.state)).collect(),
                }),
                None => None,
            };
            environments.push((env.name.value.clone(), holding));
        }
        rows.push(Row { pipeline: name.to_string(), environments });
    }
    Ok(rows)
}

/// Who approved the sign-offs that gated deploy `d` in its run's plan (`Plan::gating_approvals`).
async fn approved_by(store: &Store, d: &StageOf, plan_of: &impl Fn(&RunRecord) -> Option<Arc<Plan>>) -> Result<Vec<String>, OpsError> {
    let run = store.run(&d.run).await?;
    let Some(plan) = plan_of(&run) else { return Ok(Vec::new()) };
    let Some(index) = plan.pipeline.stages.iter().position(|s| s.name.value == d.stage.name) else { return Ok(Vec::new()) };
    let mut people = Vec::new();
    for a in plan.gating_approvals(index) {
        for decision in store.decisions(&d.run, &plan.pipeline.stages[a].name.value).await? {
            if decision.approve && !people.contains(&decision.user) {
                people.push(decision.user);
            }
        }
    }
    Ok(people)
}

/// The value in each environment a run of `pipeline` with `plan` deploys to, as its newest
/// promotion not rolled back wrote it (what a page shows a change from), added to `into` where not
/// there yet. Each costs the promotions' index and that run's stages (kept while it writes
/// nothing): never the history.
pub async fn last_values(
    store: &Store,
    pipeline: &str,
    plan: &crate::plan::Plan,
    into: &mut std::collections::HashMap<(String, String), String>,
) -> Result<(), OpsError> {
    for i in 0..plan.pipeline.stages.len() {
        let Some(env) = plan.deploy_environment(i) else { continue };
        let key = (pipeline.to_string(), env.name.value.clone());
        if into.contains_key(&key) {
            continue;
        }
        let Some((run, version)) = store.last_promotion(pipeline, &env.name.value).await? else { continue };
        let written = store.stages_kept(&run).await?.iter().rev().find_map(|st| {
            let out = DeployOutput::of(st.output.as_ref().filter(|_| st.kind == "deploy" && st.state == StageState::Succeeded))?;
            (out.environment == env.name.value).then_some(out.new_value)
        });
        into.insert(key, written.unwrap_or(version));
    }
    Ok(())
}
