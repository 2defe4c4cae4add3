//! Capabilities: what the server hands an agent instead of storage credentials. A capability
//! is sealed with the server key (every replica can check it) and names one job's attempt,
//! the agent holding it, one endpoint and what it may do there; it works only while that
//! attempt runs under its lease.

use axum::http::HeaderMap;
use base64::Engine;
use holdfast_core::agent::{ProxyTicket, Secret};
use holdfast_core::job::JobState;
use holdfast_store::Job;
use serde::{Deserialize, Serialize};

use super::rules::{Access, Refusal};
use crate::AppState;

/// Where the proxy is on the server.
pub const PATH: &str = "/proxy/";

/// What a capability grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub job: i64,
    pub attempt: i64,
    pub agent: String,
    pub endpoint: String,
    pub access: Access,
    pub plan: String,
    /// The kind a backup's snapshots must say their source is (`None` for a plan whose
    /// backup hook makes the data).
    #[serde(default)]
    pub source_kind: Option<String>,
    /// For a backup's copy: the plan's own endpoint, whose restore points are the only
    /// snapshots this capability may add.
    #[serde(default)]
    pub copy_of: Option<String>,
}

const CONTEXT: &str = "proxy-capability";

impl Capability {
    /// The ticket part an agent reaches the proxy with.
    pub fn ticket(&self, s: &AppState) -> ProxyTicket {
        let plain = serde_json::to_vec(self).expect("a capability serializes");
        ProxyTicket {
            path: PATH.into(),
            user: format!("job-{}", self.job),
            capability: Secret(s.seal_for(CONTEXT, &plain)),
            access: self.access.as_str().into(),
        }
    }

    /// Who uses it, for the audit log: `agent db1 (job 12)`.
    pub fn actor(&self) -> String {
        format!("agent {} (job {})", self.agent, self.job)
    }
}

/// The capability a request carries (HTTP basic, the capability as the password), checked
/// against the job it names: that attempt must still run, held by the capability's agent,
/// under a lease that has not expired. A refusal of a capability the server issued names it
/// (for the audit log).
pub async fn verify(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<(Capability, Job), (Option<Capability>, Refusal)> {
    let sealed = basic_password(headers).ok_or_else(|| {
        (
            None,
            Refusal::new(
                "no-capability",
                "the repository proxy takes a job's capability (HTTP basic credentials from its \
                 ticket)",
            ),
        )
    })?;
    let cap: Capability = s
        .open_sealed(CONTEXT, &sealed)
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| {
            (
                None,
                Refusal::new(
                    "bad-capability",
                    "this capability was not issued by this server (or its server key changed)",
                ),
            )
        })?;
    let ended = |why: &str| {
        Refusal::new(
            "expired",
            format!(
                "the capability of job {} attempt {} no longer works: {why}",
                cap.job, cap.attempt
            ),
        )
    };
    let refused = match s.store.job(cap.job).await {
        Ok(None) => ended("the job is gone"),
        // Fail closed: a capability that cannot be checked does nothing.
        Err(e) => Refusal::new(
            "unchecked",
            format!("the capability cannot be checked now ({e}); try again"),
        ),
        Ok(Some(job)) if job.state != JobState::Running => {
            ended(&format!("the job is {}", job.state))
        }
        Ok(Some(job))
            if job.attempt != cap.attempt
                || job.lease_owner.as_deref() != Some(cap.agent.as_str())
                || job.lease_expires.is_none_or(|l| l < s.now()) =>
        {
            ended("its attempt lost the lease")
        }
        Ok(Some(job)) => return Ok((cap, job)),
    };
    Err((Some(cap), refused))
}

/// The password of an `Authorization: Basic` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_string())
}
