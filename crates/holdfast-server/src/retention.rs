//! Retention on endpoints whose agents reach storage through the server (`agent_access:
//! server`): nothing can be deleted through the proxy, so the server applies the plan's keep
//! policy itself when a backup succeeds, on the endpoint and on the plan's copy endpoint,
//! judging each snapshot by when the proxy received it, never by the time its client wrote
//! into it.

use std::time::Duration;

use holdfast_core::job::JobKind;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Job, Kind};

use crate::AppState;
use crate::model::AgentAccess;

/// How long the server spends on one endpoint's retention before it lets the job end (the
/// next backup applies it again).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Applies the retention of backup `job`'s plan where its agent could not; each outcome goes
/// to the job's log. Returns how many restore points the plan keeps on its endpoint, when the
/// server applied the retention there.
pub async fn after_backup(s: &AppState, job: &Job) -> Option<u64> {
    if job.kind != JobKind::Backup {
        return None;
    }
    let plan: PlanSpec = {
        let name = job.plan.as_deref()?;
        let r = s.store.get(Kind::Plan, name).await.ok()??;
        serde_json::from_str(&r.spec).ok()?
    };
    let mut kept = None;
    let main = (plan.endpoint.clone(), plan.retention.keep_policy(), true);
    let copy = plan.copy.as_ref().map(|c| {
        let policy = c
            .retention
            .as_ref()
            .unwrap_or(&plan.retention)
            .keep_policy();
        (c.endpoint.clone(), policy, false)
    });
    for (endpoint, policy, is_main) in std::iter::once(main).chain(copy) {
        match s.store.get(Kind::Endpoint, &endpoint).await {
            Ok(Some(ep)) if crate::api::access_of(&ep).ok() == Some(AgentAccess::Server) => {}
            _ => continue,
        }
        let where_ = if is_main {
            String::new()
        } else {
            format!(" on copy endpoint `{endpoint}`")
        };
        let line = match apply(s, &endpoint, &plan.name, policy).await {
            Ok(r) => {
                if is_main {
                    kept = Some(r.kept.len() as u64);
                }
                format!(
                    "retention{where_}: kept {} restore point(s), forgot {} (by the server, by \
                     the time it received each)",
                    r.kept.len(),
                    r.removed.len()
                )
            }
            Err(e) => format!("retention{where_} failed (the backup is saved): {e}"),
        };
        if let Err(e) = s.store.append_log(job.id, s.now(), &line).await {
            tracing::warn!(job = job.id, "cannot write the job's log: {e}");
        }
    }
    kept
}

async fn apply(
    s: &AppState,
    endpoint: &str,
    plan: &str,
    policy: holdfast_core::KeepPolicy,
) -> Result<holdfast_engine::repo::ForgetReport, String> {
    let repo = s.repo(endpoint).await.map_err(|e| e.to_string())?;
    let received = s
        .store
        .received(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let tag = format!("plan={plan}");
    let run = tokio::task::spawn_blocking(move || {
        repo.forget_by(&policy, false, Some(&tag), Some(&received))
    });
    match tokio::time::timeout(TIMEOUT, run).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the repository did not answer within {} s; the next backup applies it",
            TIMEOUT.as_secs()
        )),
    }
}
