//! The API's resources as JSON: what clients send (`*Input`, secrets included, unknown fields
//! refused), what the store keeps (`Stored*`: the spec without secrets, plus the sealed secrets)
//! and what clients get back (`*View`: never a secret, only whether one is set).

use std::collections::BTreeMap;

use holdfast_core::agent::StepState;
use holdfast_core::job::{JobKind, JobState, Trigger};
use holdfast_core::lifecycle::{MAX_SCRIPT_LEN, script_too_long};
use holdfast_core::plan::{FieldError, PlanSpec, label_problems, url_too_long, valid_name};
use holdfast_core::{RepoLocation, SourceKind, SourceSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Unix milliseconds to RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn field(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

const NAME_RULE: &str =
    "1 to 63 characters: lowercase letters, digits and `-`, starting with a letter";

// ----- endpoints -----

pub use holdfast_core::StorageKind as EndpointKind;

/// A storage endpoint (a restic-format repository) as clients write it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")]
    pub name: String,
    pub kind: EndpointKind,
    /// Where the repository is: an absolute directory for `local`;
    /// `s3://bucket/prefix?endpoint=URL&region=R&path-style=true`;
    /// `swift://container/prefix?auth=URL[&project=P&domain=D&region=R]` (TempAuth, or Keystone
    /// when the auth URL ends in `/v3`); `sftp://user@host:port/path[?known-hosts=strict|accept-new|off]`;
    /// `ftp://user@host:port/path`; `webdav://` or `webdavs://user@host:port/path`.
    pub url: String,
    /// S3 access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// S3 secret access key. Write-only.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// The storage login for Swift (TempAuth `account:user`, or the Keystone user), and for
    /// SFTP and WebDAV when the URL names no user.
    #[serde(default)]
    pub user: Option<String>,
    /// Swift's key (TempAuth) or password (Keystone); the WebDAV password. Write-only.
    #[serde(default)]
    pub storage_password: Option<String>,
    /// SFTP: the private key (OpenSSH format, the whole text). Write-only. Without one, the
    /// agents' own SSH keys are used.
    #[serde(default)]
    pub ssh_key: Option<String>,
    /// The repository password. Write-only; required when creating.
    #[serde(default)]
    pub password: Option<String>,
    /// When data that no restore point uses any more is removed from the repository: a
    /// 5-field cron expression or a preset (`@weekly`), or `off`. Plans only forget restore
    /// points after each backup; this frees the space.
    #[serde(default = "weekly")]
    pub prune_schedule: String,
    /// IANA time zone of `prune_schedule`.
    #[serde(default = "utc")]
    pub prune_timezone: String,
    /// How agents reach this endpoint's storage. `server` (the default for a new endpoint):
    /// through the server's append-only proxy, with no storage credential of their own; they
    /// can add backups, never delete or overwrite them, and the server applies retention and
    /// prunes. `direct`: agents get the storage credentials and do it all themselves. Left
    /// out of an update, it stays as it was.
    #[serde(default)]
    pub agent_access: Option<AgentAccess>,
}

/// How agents reach an endpoint's storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentAccess {
    /// With the storage credentials, in every ticket (what endpoints made before this
    /// setting existed do).
    #[default]
    Direct,
    /// Through the server's repository proxy: add and read only.
    Server,
}

impl AgentAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Server => "server",
        }
    }
}

fn weekly() -> String {
    "0 4 * * 0".into()
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEndpoint {
    pub kind: EndpointKind,
    pub url: String,
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default = "weekly")]
    pub prune_schedule: String,
    #[serde(default = "utc")]
    pub prune_timezone: String,
    /// Stored endpoints from before the setting existed read as `direct`.
    #[serde(default)]
    pub agent_access: AgentAccess,
}

impl StoredEndpoint {
    /// The prune schedule; `None` when pruning is off.
    pub fn prune(&self) -> Option<holdfast_core::Schedule> {
        if self.prune_schedule == "off" {
            return None;
        }
        holdfast_core::Schedule::parse(&self.prune_schedule, &self.prune_timezone).ok()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointSecrets {
    pub password: Option<String>,
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub storage_password: Option<String>,
    #[serde(default)]
    pub ssh_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointView {
    pub name: String,
    pub kind: EndpointKind,
    pub url: String,
    pub access_key_id: Option<String>,
    pub user: Option<String>,
    pub prune_schedule: String,
    pub prune_timezone: String,
    pub agent_access: AgentAccess,
    /// When the repository is pruned next (RFC 3339), unless pruning is off.
    pub next_prune: Option<String>,
    pub password_set: bool,
    pub secret_access_key_set: bool,
    pub storage_password_set: bool,
    pub ssh_key_set: bool,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl EndpointInput {
    pub fn validate(&self, creating: bool) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if !valid_name(&self.name) {
            errs.push(field("name", NAME_RULE));
        }
        let parsed = match url_too_long(&self.url) {
            Some(reason) => Err(reason),
            None => RepoLocation::parse(&self.url).map_err(|e| e.to_string()),
        };
        match parsed {
            Err(e) => errs.push(field("url", e)),
            Ok(loc) => {
                let kind = loc.kind();
                if kind != self.kind {
                    errs.push(field(
                        "url",
                        format!(
                            "is a {} location but kind is {}",
                            serde_json::to_string(&kind).unwrap_or_default(),
                            serde_json::to_string(&self.kind).unwrap_or_default()
                        ),
                    ));
                }
                if let RepoLocation::Local(p) = &loc
                    && !p.is_absolute()
                {
                    errs.push(field("url", "a local repository needs an absolute path"));
                }
            }
        }
        if creating && self.password.as_deref().is_none_or(str::is_empty) {
            errs.push(field(
                "password",
                "required: the repository password (write-only; keep a copy, restic needs it too)",
            ));
        }
        if self.prune_schedule != "off"
            && let Err(e) =
                holdfast_core::Schedule::parse(&self.prune_schedule, &self.prune_timezone)
        {
            if e.what.starts_with("timezone") {
                errs.push(field("prune_timezone", e.to_string()));
            } else {
                errs.push(field(
                    "prune_schedule",
                    format!("{e}; or `off` to never prune"),
                ));
            }
        }
        if self.kind == EndpointKind::S3
            && self.access_key_id.is_some() != self.secret_access_key.is_some()
            && creating
        {
            errs.push(field(
                "secret_access_key",
                "give access_key_id and secret_access_key together",
            ));
        }
        let only = |name: &str, set: bool, kinds: &[EndpointKind]| {
            (set && !kinds.contains(&self.kind)).then(|| {
                field(
                    name,
                    format!(
                        "does not apply to a {} endpoint (only to {})",
                        self.kind,
                        kinds
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
        };
        use EndpointKind as K;
        errs.extend(
            [
                only("access_key_id", self.access_key_id.is_some(), &[K::S3]),
                only(
                    "secret_access_key",
                    self.secret_access_key.is_some(),
                    &[K::S3],
                ),
                only("user", self.user.is_some(), &[K::Swift, K::Sftp, K::Webdav]),
                only(
                    "storage_password",
                    self.storage_password.is_some(),
                    &[K::Swift, K::Ftp, K::Webdav],
                ),
                only("ssh_key", self.ssh_key.is_some(), &[K::Sftp]),
            ]
            .into_iter()
            .flatten(),
        );
        if let Some(k) = &self.ssh_key
            && !k.contains("PRIVATE KEY-----")
        {
            errs.push(field(
                "ssh_key",
                "is not a private key: give the whole text of the key file, from \
                 `-----BEGIN OPENSSH PRIVATE KEY-----` to its END line",
            ));
        }
        if creating && self.kind == K::Swift && self.user.is_none() {
            errs.push(field(
                "user",
                "required for Swift: the TempAuth `account:user` or the Keystone user",
            ));
        }
        errs
    }

    /// The stored spec and secrets; `was` is the stored endpoint's access, which an input
    /// that leaves `agent_access` out keeps (a new endpoint gets `server`).
    pub fn split(self, was: Option<AgentAccess>) -> (String, StoredEndpoint, EndpointSecrets) {
        (
            self.name,
            StoredEndpoint {
                kind: self.kind,
                url: self.url,
                access_key_id: self.access_key_id,
                user: self.user,
                prune_schedule: self.prune_schedule,
                prune_timezone: self.prune_timezone,
                agent_access: self.agent_access.or(was).unwrap_or(AgentAccess::Server),
            },
            EndpointSecrets {
                password: self.password,
                secret_access_key: self.secret_access_key,
                storage_password: self.storage_password,
                ssh_key: self.ssh_key,
            },
        )
    }
}

// ----- sources -----

/// A database or other source as clients write it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceInput {
    #[schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")]
    pub name: String,
    #[schema(value_type = String, example = "postgres")]
    pub kind: SourceKind,
    /// `postgres://user@host:port/db`, `mysql://user@host:port/db`, `sqlite:///path`,
    /// `redis://host:port`, `file:///dir`, or `cmd:NAME` for `command`.
    #[serde(default)]
    pub url: Option<String>,
    /// The shell command whose stdout is backed up (`command` sources).
    #[serde(default)]
    pub command: Option<String>,
    /// The database password. Write-only.
    #[serde(default)]
    pub password: Option<String>,
    /// Agent labels that select where the source's jobs run.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// PostgreSQL: one pg_dump stream instead of one file per table.
    #[serde(default)]
    pub single_stream: bool,
    /// PostgreSQL: every database plus roles and tablespaces.
    #[serde(default)]
    pub all_databases: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSource {
    pub kind: SourceKind,
    /// Without the password.
    pub url: String,
    pub command: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub single_stream: bool,
    pub all_databases: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceSecrets {
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    #[schema(value_type = String)]
    pub kind: SourceKind,
    pub url: String,
    pub command: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub single_stream: bool,
    pub all_databases: bool,
    pub password_set: bool,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl SourceInput {
    fn url(&self) -> String {
        match (&self.url, self.kind) {
            (Some(u), _) => u.clone(),
            (None, SourceKind::Command) => "cmd:stdout".into(),
            (None, _) => String::new(),
        }
    }

    /// Checks the input and returns what to store: the URL without its password, and the
    /// password (from the URL or the `password` field).
    pub fn validate(self) -> Result<(String, StoredSource, SourceSecrets), Vec<FieldError>> {
        let mut errs = Vec::new();
        if !valid_name(&self.name) {
            errs.push(field("name", NAME_RULE));
        }
        for reason in label_problems(self.labels.iter()) {
            errs.push(field("labels", reason));
        }
        if let Some(c) = &self.command
            && c.len() > MAX_SCRIPT_LEN
        {
            errs.push(field("command", script_too_long(c.len())));
        }
        let url = self.url();
        if url.is_empty() {
            errs.push(field("url", format!("required for {} sources", self.kind)));
            return Err(errs);
        }
        if let Some(reason) = url_too_long(&url) {
            errs.push(field("url", reason));
            return Err(errs);
        }
        let parsed = match SourceSpec::parse(&url, self.command.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                let f = if e.reason.contains("--command") {
                    "command"
                } else {
                    "url"
                };
                errs.push(field(
                    f,
                    e.to_string().replace("in --command", "in `command`"),
                ));
                return Err(errs);
            }
        };
        if parsed.kind() != self.kind {
            errs.push(field(
                "url",
                format!(
                    "is a {} URL but kind is {}",
                    parsed.kind(),
                    self.kind.as_str()
                ),
            ));
        }
        if (self.single_stream || self.all_databases) && self.kind != SourceKind::Postgres {
            errs.push(field(
                if self.single_stream {
                    "single_stream"
                } else {
                    "all_databases"
                },
                "only applies to postgres sources",
            ));
        }
        let url_password = match &parsed {
            SourceSpec::Postgres(a) | SourceSpec::Mysql(a) => a.password.clone(),
            SourceSpec::Redis { password, .. } => password.clone(),
            _ => None,
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        let password = self
            .password
            .or_else(|| url_password.map(|p| secrecy::ExposeSecret::expose_secret(&p).to_string()));
        Ok((
            self.name,
            StoredSource {
                kind: self.kind,
                url: without_password(&url),
                command: self.command,
                labels: self.labels,
                single_stream: self.single_stream,
                all_databases: self.all_databases,
            },
            SourceSecrets { password },
        ))
    }
}

/// The URL as written (query parameters such as `sslmode` included), without its password.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

// ----- plans -----

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanView {
    #[serde(flatten)]
    pub spec: PlanSpec,
    /// The next five fire times, in the plan's time zone (RFC 3339 with offset).
    pub next_runs: Vec<String>,
    pub last_job: Option<JobSummary>,
    pub last_success: Option<String>,
    /// When the next scheduled restore drill is due (RFC 3339, UTC), if one is scheduled.
    pub next_drill: Option<String>,
    /// The plan's newest restore drill (in the plan's own answer, not in lists).
    pub last_drill: Option<crate::api::drills::DrillSummary>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobSummary {
    pub id: i64,
    pub state: JobState,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

// ----- jobs -----

/// What a job is for, beyond its plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobParams {
    pub backoff: holdfast_core::job::Backoff,
    /// Restore jobs: the restore point (snapshot id).
    pub restore_point: Option<String>,
    /// Restore jobs: the source to restore into (default: the plan's).
    pub target_source: Option<String>,
    /// Restore jobs: the database to restore into, instead of the source's.
    pub database: Option<String>,
    pub create: bool,
    pub force: bool,
    /// Check drills: the part of the packs to read, (n, of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub kind: JobKind,
    pub plan: Option<String>,
    pub endpoint: Option<String>,
    pub trigger: Trigger,
    pub state: JobState,
    pub attempt: i64,
    pub max_attempts: i64,
    /// The schedule slot this job is for.
    pub scheduled_for: Option<String>,
    pub created_at: String,
    /// A queued job waits until then (retry backoff).
    pub run_after: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_secs: Option<f64>,
    pub bytes_read: i64,
    pub bytes_written: i64,
    pub snapshot_id: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// The worker holding the job's lease.
    pub worker: Option<String>,
    pub restore_point: Option<String>,
    pub target_source: Option<String>,
    pub database: Option<String>,
    /// For a running job: bytes read per second since it started.
    pub rate_bytes_per_sec: Option<f64>,
    /// Each lifecycle step of each attempt, with its tries (in `GET /api/v1/jobs/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    /// Backups of a plan with a copy endpoint: how the copy went (in `GET /api/v1/jobs/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyView>,
    /// The newest log lines (all of them: `GET /api/v1/jobs/{id}/log`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<LogLineView>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogLineView {
    pub id: i64,
    pub at: String,
    pub line: String,
}

impl JobView {
    pub fn new(j: &holdfast_store::Job) -> Self {
        let p: JobParams = serde_json::from_str(&j.params).unwrap_or_default();
        Self {
            id: j.id,
            kind: j.kind,
            plan: j.plan.clone(),
            endpoint: j.endpoint.clone(),
            trigger: j.trigger,
            state: j.state,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            scheduled_for: j.fire_at.map(rfc3339),
            created_at: rfc3339(j.created_at),
            run_after: rfc3339(j.run_after),
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
            duration_secs: j
                .started_at
                .zip(j.finished_at)
                .map(|(s, f)| (f - s).max(0) as f64 / 1000.0),
            bytes_read: j.bytes_read,
            bytes_written: j.bytes_written,
            snapshot_id: j.snapshot_id.clone(),
            error: j.error.clone(),
            cancel_requested: j.cancel_requested,
            worker: j.lease_owner.clone(),
            restore_point: p.restore_point,
            target_source: p.target_source,
            database: p.database,
            rate_bytes_per_sec: None,
            steps: None,
            copy: None,
            log: None,
        }
    }

    /// The view with the running job's rate, as of `now`.
    pub fn at(j: &holdfast_store::Job, now: i64) -> Self {
        let mut v = Self::new(j);
        if j.state == JobState::Running
            && let Some(s) = j.started_at
            && now > s
        {
            v.rate_bytes_per_sec = Some(j.bytes_read as f64 * 1000.0 / (now - s) as f64);
        }
        v
    }
}

/// The copy of a backup to the plan's copy endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CopyView {
    /// A failed copy leaves the backup itself in place; the next backup copies what is
    /// missing.
    pub state: StepState,
    pub tries: i64,
    /// What was copied, or why the copy failed.
    pub detail: Option<String>,
    pub finished_at: Option<String>,
}

impl CopyView {
    /// From the job's steps: the last try of its `copy` step, if any.
    pub fn from_steps(steps: &[holdfast_store::StepRow]) -> Option<Self> {
        let last = steps
            .iter()
            .filter(|s| s.step == holdfast_core::lifecycle::COPY)
            .max_by_key(|s| (s.attempt, s.try_no))?;
        Some(Self {
            state: last.state,
            tries: last.try_no,
            detail: last.detail.clone(),
            finished_at: last.finished_at.map(rfc3339),
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub attempt: i64,
    /// pre-backup-lock, pre-backup-check, backup, backup-cleanup, post-backup-unlock,
    /// pre-restore-lock, restore, restore-cleanup, post-restore-unlock; `released` marks an
    /// attempt whose cleanup and unlock are done; `copy` the copy to the plan's copy endpoint.
    pub step: String,
    pub try_no: i64,
    pub state: StepState,
    pub agent: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub detail: Option<String>,
}

impl StepView {
    pub fn new(s: &holdfast_store::StepRow) -> Self {
        Self {
            attempt: s.attempt,
            step: s.step.clone(),
            try_no: s.try_no,
            state: s.state,
            agent: s.agent.clone(),
            started_at: rfc3339(s.started_at),
            finished_at: s.finished_at.map(rfc3339),
            detail: s.detail.clone(),
        }
    }
}

// ----- agents -----

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub hostname: String,
    pub slots: i64,
    pub registered_at: String,
    pub last_seen: String,
    /// Heard from within the last minute.
    pub online: bool,
    /// Not heard from for a day or more: probably gone; `DELETE /api/v1/agents/NAME` removes it.
    pub stale: bool,
    /// The jobs it runs now.
    pub running_jobs: Vec<i64>,
}

// ----- restores -----

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreInput {
    /// The plan whose repository holds the restore point.
    pub plan: String,
    /// The restore point's id (a snapshot id, or a unique prefix of one).
    pub restore_point: String,
    /// The source to restore into; default: the plan's own source.
    #[serde(default)]
    pub target_source: Option<String>,
    /// Restore into this database instead of the target source's.
    #[serde(default)]
    pub database: Option<String>,
    /// Create the target database when it does not exist.
    #[serde(default = "yes")]
    pub create: bool,
    /// Overwrite: replace the target's data. PostgreSQL and MariaDB restore into a temporary
    /// database and swap it in only when the restore succeeded (a failed restore leaves the
    /// target as it was); SQLite is loaded into a new file renamed into place; folders and
    /// Redis targets may then be non-empty. Required to restore into the plan's own source
    /// without naming another `database`.
    #[serde(default)]
    pub force: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestorePointView {
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub plan: Option<String>,
    /// Source kind (postgres, mysql, ...).
    pub source_kind: Option<String>,
    pub database: Option<String>,
    pub source_host: Option<String>,
    pub hostname: String,
    pub bytes: u64,
    pub added_bytes: u64,
    pub duration_secs: f64,
    pub tags: Vec<String>,
    /// The newest restore drill of this restore point, if it was drilled.
    pub verification: Option<crate::api::drills::DrillSummary>,
}

// ----- endpoint test -----

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckStep {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointTestReport {
    pub ok: bool,
    pub steps: Vec<CheckStep>,
}
