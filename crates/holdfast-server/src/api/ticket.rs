//! What an agent gets with a job it claimed: the ticket (the plan, the source and the
//! repository, with the storage credentials for a `direct` endpoint or a capability for the
//! server's proxy instead), and the repository made ready before the job is handed out.

use std::time::Duration;

use holdfast_core::agent::*;
use holdfast_core::job::JobKind;
use holdfast_core::lifecycle::RELEASED;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Job, Kind};

use super::{ApiError, ApiResult};
use crate::AppState;
use crate::model::*;
use crate::proxy::rules::Access;

/// The plan a job names, read from the store.
pub(super) async fn job_plan(s: &AppState, j: &Job) -> ApiResult<PlanSpec> {
    let p = j
        .plan
        .as_deref()
        .ok_or_else(|| ApiError::Internal(format!("{} job {} names no plan", j.kind, j.id)))?;
    let r = s
        .store
        .get(Kind::Plan, p)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("plan `{p}` was deleted")))?;
    serde_json::from_str(&r.spec)
        .map_err(|e| ApiError::Internal(format!("stored plan `{p}` is unreadable: {e}")))
}

/// Everything the agent needs for job `j`. Reads only the store (no storage I/O: a slow or
/// unreachable repository must never hold up the claim of a job already marked as taken).
pub(super) async fn ticket(
    s: &AppState,
    j: &Job,
    agent: &str,
    embedded: bool,
) -> ApiResult<Ticket> {
    let plan = match j.kind {
        JobKind::Backup | JobKind::Restore | JobKind::Verify => Some(job_plan(s, j).await?),
        JobKind::Prune => None,
    };
    let endpoint = j
        .endpoint
        .clone()
        .or_else(|| plan.as_ref().map(|p| p.endpoint.clone()))
        .ok_or_else(|| ApiError::Internal(format!("job {} names no endpoint", j.id)))?;
    let ep = s.store.must_get(Kind::Endpoint, &endpoint).await?;
    let compression = plan.as_ref().map(|p| p.compression);
    // What a capability of this job may do, and what its snapshots must say of their source.
    let grant = |ep: &str, access: Access, plan: &PlanSpec, kind: Option<String>| {
        crate::proxy::capability_for(j, agent, ep, access, &plan.name, kind)
    };
    let source_kind = match (&plan, j.kind) {
        (Some(p), JobKind::Backup) if p.hooks.backup.is_none() => {
            let src = s.store.must_get(Kind::Source, &p.source).await?;
            serde_json::from_str::<StoredSource>(&src.spec)
                .ok()
                .map(|x| x.kind.to_string())
        }
        _ => None,
    };
    let cap = match (&plan, j.kind) {
        (Some(p), JobKind::Backup) => {
            Some(grant(&endpoint, Access::Backup, p, source_kind.clone()))
        }
        // A drill only reads the repository, as a restore does.
        (Some(p), JobKind::Restore | JobKind::Verify) => {
            Some(grant(&endpoint, Access::Restore, p, None))
        }
        _ => None,
    };
    if j.kind == JobKind::Prune && !embedded && access_of(&ep)? == AgentAccess::Server {
        return Err(ApiError::Forbidden(format!(
            "endpoint `{endpoint}` is reached through the server (agent_access: server): only \
             the server prunes it"
        )));
    }
    let repository = agent_repo(s, &ep, compression, cap)?;
    let work = match (j.kind, plan) {
        (JobKind::Backup, Some(plan)) => {
            let src = s.store.must_get(Kind::Source, &plan.source).await?;
            let copy_repository = match &plan.copy {
                Some(c) => {
                    let ep = s.store.must_get(Kind::Endpoint, &c.endpoint).await?;
                    let mut cap = grant(&c.endpoint, Access::Backup, &plan, source_kind.clone());
                    cap.copy_of = Some(endpoint.clone());
                    Some(Box::new(agent_repo(s, &ep, compression, Some(cap))?))
                }
                None => None,
            };
            Work::Backup {
                source: s.source_ticket(&src, None)?,
                copy_repository,
                plan,
            }
        }
        (JobKind::Restore, Some(plan)) => {
            let params: JobParams = serde_json::from_str(&j.params).map_err(|e| {
                ApiError::Internal(format!(
                    "the restore's stored parameters are unreadable: {e}"
                ))
            })?;
            let name = params
                .target_source
                .ok_or_else(|| ApiError::Internal("a restore job without a target".into()))?;
            let src = s.store.must_get(Kind::Source, &name).await?;
            let restore_point = params.restore_point.ok_or_else(|| {
                ApiError::Internal("a restore job without a restore point".into())
            })?;
            Work::Restore {
                target: s.source_ticket(&src, params.database)?,
                restore: RestoreTicket {
                    restore_point,
                    create: params.create,
                    force: params.force,
                },
                plan,
            }
        }
        (JobKind::Prune, _) => Work::Prune,
        (JobKind::Verify, Some(plan)) => {
            let params: JobParams = serde_json::from_str(&j.params).map_err(|e| {
                ApiError::Internal(format!("the drill's stored parameters are unreadable: {e}"))
            })?;
            if let Some(reason) = super::drills::into_problem(s, &plan).await? {
                return Err(ApiError::field("verify.into", reason));
            }
            let into = match plan.verify.as_ref().and_then(|v| v.into.as_deref()) {
                Some(name) => {
                    let src = s.store.must_get(Kind::Source, name).await?;
                    Some(s.source_ticket(&src, None)?)
                }
                None => None,
            };
            Work::Verify {
                drill: DrillTicket {
                    restore_point: params.restore_point,
                    part: params.part,
                },
                into,
                plan,
            }
        }
        (kind, None) => return Err(ApiError::Internal(format!("a {kind} job without a plan"))),
    };
    // Attempts that started their lifecycle and never released it: their agent died.
    let steps = s.store.steps(j.id).await?;
    let mut cleanup_first: Vec<u32> = vec![];
    for st in &steps {
        let a = u32::try_from(st.attempt).unwrap_or(0);
        if st.attempt < j.attempt
            && !cleanup_first.contains(&a)
            && !steps
                .iter()
                .any(|o| o.attempt == st.attempt && o.step == RELEASED)
        {
            cleanup_first.push(a);
        }
    }
    Ok(Ticket {
        job: j.id,
        attempt: u32::try_from(j.attempt).unwrap_or(1),
        max_attempts: u32::try_from(j.max_attempts).unwrap_or(1),
        lease_ms: s.config.lease.as_millis() as u64,
        repository,
        cleanup_first,
        work,
    })
}

/// How the endpoint's agents reach its storage.
pub(crate) fn access_of(ep: &holdfast_store::Resource) -> ApiResult<AgentAccess> {
    serde_json::from_str::<StoredEndpoint>(&ep.spec)
        .map(|e| e.agent_access)
        .map_err(|e| {
            ApiError::Internal(format!("stored endpoint `{}` is unreadable: {e}", ep.name))
        })
}

/// How an agent reaches endpoint `ep`: with its storage credentials (`agent_access: direct`,
/// or a prune on the server's own agent), or through the server's proxy with `cap` and no
/// storage credential at all.
fn agent_repo(
    s: &AppState,
    ep: &holdfast_store::Resource,
    compression: Option<holdfast_core::plan::Compression>,
    cap: Option<crate::proxy::Capability>,
) -> ApiResult<holdfast_core::agent::RepoTicket> {
    let mut t = s.repo_ticket(ep, compression)?;
    if let (AgentAccess::Server, Some(cap)) = (access_of(ep)?, cap) {
        t.access_key_id = None;
        t.secret_access_key = None;
        t.user = None;
        t.storage_password = None;
        t.ssh_key = None;
        t.proxy = Some(cap.ticket(s));
    }
    Ok(t)
}

/// Makes sure a backup's repository exists before its job is handed out, so that two agents
/// never create it at once. Bounded in time and outside the job's lease: storage that is slow
/// or down here (it may be reachable from the agents only) delays nothing; the agent then
/// opens or creates it itself.
pub(super) async fn prepare_repository(s: &AppState, j: &Job) {
    if j.kind != JobKind::Backup {
        return;
    }
    let (Some(name), Ok(plan)) = (&j.endpoint, job_plan(s, j).await) else {
        return;
    };
    let Ok(Some(ep)) = s.store.get(Kind::Endpoint, name).await else {
        return;
    };
    let prepare = s.ensure_repository(&ep, Some(plan.compression));
    if tokio::time::timeout(PREPARE_TIMEOUT, prepare)
        .await
        .is_err()
    {
        tracing::warn!(endpoint = %name, job = j.id,
            "the endpoint's repository did not answer the server within {} s; the agent opens it itself",
            PREPARE_TIMEOUT.as_secs());
    }
}

/// How long the server tries to open (or create) a repository before handing out its job.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(5);
