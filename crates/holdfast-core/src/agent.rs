//! What agents and the server say to each other, over HTTP under `/api/v1/agents`. Agents only
//! connect out: they register, long-poll for a job, and report on it; the server answers a
//! claim with a [`Ticket`] that holds everything the job needs, secrets included (they travel
//! only over this authenticated connection and are never written to the agent's disk).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::JobKind;
use crate::plan::PlanSpec;
use crate::{InputError, SourceSpec};

/// A secret value: serialized as itself, but never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// An agent introducing itself (`POST /api/v1/agents`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Unique per agent; its jobs' leases are held in this name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._:-]+$")
    )]
    pub name: String,
    /// Sources whose labels are all among these run here.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub hostname: String,
    /// Jobs the agent runs at once.
    pub slots: u32,
}

/// The answer to an enrolment (`POST /api/v1/agents/enrol`): the agent's own credential,
/// shown only this once. The agent keeps it in its credential file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enrolled {
    pub name: String,
    /// The labels this credential may serve.
    pub labels: BTreeMap<String, String>,
    pub credential: String,
}

/// Whether an agent with `agent_labels` may run a job of a source labelled `selector`: every
/// label of the source must be among the agent's. A source without labels runs anywhere.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    agent_labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| agent_labels.get(k).is_some_and(|a| a == v))
}

/// How to reach a repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoTicket {
    pub endpoint: String,
    pub url: String,
    pub password: Secret,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// The storage login (Swift, SFTP, WebDAV) when the URL names none.
    #[serde(default)]
    pub user: Option<String>,
    /// Swift's key or password; the WebDAV password.
    #[serde(default)]
    pub storage_password: Option<Secret>,
    /// An SFTP private key (OpenSSH format).
    #[serde(default)]
    pub ssh_key: Option<Secret>,
    /// zstd level for a repository Holdfast creates (0: none); `None`: the default.
    pub compression: Option<i32>,
    /// Set when the endpoint's agents reach storage through the server (`agent_access:
    /// server`): the ticket then carries no storage credential, only this capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyTicket>,
}

impl RepoTicket {
    /// Whether this repository is reached through the server's append-only proxy: the agent
    /// then adds files only, and the server applies retention.
    pub fn through_server(&self) -> bool {
        self.proxy.is_some()
    }
}

/// How an agent reaches a repository through the server's repository proxy (restic's REST
/// protocol): at `path` on the server it talks to, with `user` and `capability` as HTTP basic
/// credentials. The capability is good for this job's attempt only, while it holds its lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProxyTicket {
    /// The proxy's path on the server (`/proxy/`).
    pub path: String,
    pub user: String,
    pub capability: Secret,
    /// `backup` (read, list and add) or `restore` (read and list only).
    pub access: String,
}

/// How to reach a database (or folder, or command).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceTicket {
    pub name: String,
    pub kind: String,
    /// The source's URL without its password.
    pub url: String,
    pub command: Option<String>,
    pub password: Option<Secret>,
    pub single_stream: bool,
    pub all_databases: bool,
    /// Restores: the database to restore into instead of the source's own.
    pub database: Option<String>,
}

impl SourceTicket {
    /// The connection to use: `url` (the source's own, or one a hook handed over) with the
    /// source's password when the URL carries none, and the restore's database name.
    pub fn spec(&self, url: &str) -> Result<SourceSpec, InputError> {
        let mut spec = SourceSpec::parse(url, self.command.as_deref())?;
        if let Some(p) = &self.password {
            spec = spec.with_default_password(secrecy::SecretString::from(p.0.clone()));
        }
        if let Some(db) = &self.database {
            match &mut spec {
                SourceSpec::Postgres(a) | SourceSpec::Mysql(a) => a.database = Some(db.clone()),
                _ => {
                    return Err(InputError::new(
                        format!("source `{}`", self.name),
                        format!("{} targets have no database name to replace", self.kind),
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// What a restore job restores.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreTicket {
    pub restore_point: String,
    pub create: bool,
    pub force: bool,
}

/// A claimed job with everything needed to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    pub job: i64,
    pub attempt: u32,
    pub max_attempts: u32,
    /// Renew the lease (heartbeat) well within this many milliseconds.
    pub lease_ms: u64,
    /// The repository the job writes to (backups) or reads from (restores, prunes).
    pub repository: RepoTicket,
    /// Earlier attempts of this job that started their lifecycle but never ran their cleanup
    /// and unlock steps (their agent died): run those first.
    pub cleanup_first: Vec<u32>,
    /// What to do: one variant per job kind, each with exactly what that kind needs.
    pub work: Work,
}

/// The kind-specific part of a [`Ticket`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Work {
    Backup {
        /// The plan, with its hooks, retention and retry settings.
        plan: PlanSpec,
        source: SourceTicket,
        /// A plan with a copy endpoint: that endpoint's repository (opened, or created, by
        /// the agent in its copy step).
        #[serde(default)]
        copy_repository: Option<Box<RepoTicket>>,
    },
    Restore {
        /// The plan whose restore point this is (its restore hooks and step retries).
        plan: PlanSpec,
        /// The target to restore into.
        target: SourceTicket,
        restore: RestoreTicket,
    },
    Prune,
    /// A restore drill: the plan's `verify` section says how.
    Verify {
        plan: PlanSpec,
        drill: DrillTicket,
        /// The scratch server the plan names (`verify.into`) with its credentials; `None`: a
        /// throwaway copy next to the agent.
        #[serde(default)]
        into: Option<SourceTicket>,
    },
}

/// Which restore point a drill takes, and which part of the packs a check drill reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillTicket {
    /// A restore point asked for; `None`: the plan's newest (or one of its newest).
    #[serde(default)]
    pub restore_point: Option<String>,
    /// Check drills: read part `.0` of `.1` of the packs.
    #[serde(default)]
    pub part: Option<(u32, u32)>,
}

/// A drill's report, sent before the job's finish (`POST .../drill`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DrillResult {
    pub attempt: u32,
    pub report: crate::drill::DrillReport,
}

impl Ticket {
    pub fn kind(&self) -> JobKind {
        match self.work {
            Work::Backup { .. } => JobKind::Backup,
            Work::Restore { .. } => JobKind::Restore,
            Work::Prune => JobKind::Prune,
            Work::Verify { .. } => JobKind::Verify,
        }
    }

    /// The plan of a backup or restore.
    pub fn plan(&self) -> Option<&PlanSpec> {
        match &self.work {
            Work::Backup { plan, .. } | Work::Restore { plan, .. } | Work::Verify { plan, .. } => {
                Some(plan)
            }
            Work::Prune => None,
        }
    }

    /// A backup's source, or a restore's target.
    pub fn source(&self) -> Option<&SourceTicket> {
        match &self.work {
            Work::Backup { source, .. } => Some(source),
            Work::Restore { target, .. } => Some(target),
            Work::Verify { into, .. } => into.as_ref(),
            Work::Prune => None,
        }
    }
}

/// Progress, renewing the lease (`POST .../heartbeat`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatReply {
    /// Someone asked to cancel the job: stop, clean up, and finish it as cancelled.
    pub cancel: bool,
}

/// Log lines for a job (`POST .../log`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogLines {
    pub lines: Vec<String>,
}

crate::job::word_enum! {
    /// Where a lifecycle step is.
    StepState {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

/// A lifecycle step starting or ending (`POST .../steps`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    /// The attempt the step belongs to (an earlier one, for a cleanup run on its behalf).
    pub attempt: u32,
    /// A [`crate::lifecycle::Step`] name, or `released`.
    pub step: String,
    /// 1 for the first try of the step in this attempt.
    pub try_no: u32,
    pub state: StepState,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// The end of an attempt (`POST .../finish`). The server decides what follows (retry, fail).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Finish {
    pub outcome: Outcome,
    /// For failures: whether trying again later may help.
    #[serde(default)]
    pub transient: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Backups: how many restore points of the plan the repository keeps after its retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_points: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_runs_on_agents_that_carry_all_its_labels() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(labels_match(&m(&[]), &m(&[])));
        assert!(labels_match(&m(&[]), &m(&[("site", "eu")])));
        assert!(labels_match(
            &m(&[("site", "eu")]),
            &m(&[("site", "eu"), ("disk", "ssd")])
        ));
        assert!(!labels_match(&m(&[("site", "eu")]), &m(&[("site", "us")])));
        assert!(!labels_match(&m(&[("site", "eu")]), &m(&[])));
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let t = RepoTicket {
            endpoint: "e".into(),
            url: "/r".into(),
            password: Secret("hunter2".into()),
            access_key_id: None,
            secret_access_key: Some(Secret("s3cr3t".into())),
            user: None,
            storage_password: None,
            ssh_key: None,
            compression: None,
            proxy: None,
        };
        let d = format!("{t:?}");
        assert!(!d.contains("hunter2") && !d.contains("s3cr3t"), "{d}");
        assert!(serde_json::to_string(&t).unwrap().contains("hunter2"));
    }
}
