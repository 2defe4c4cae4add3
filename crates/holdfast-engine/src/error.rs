//! The engine's one error type. Every variant names the thing that failed and says what to do.

use holdfast_core::InputError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Input(#[from] InputError),

    #[error("no repository at {repo}: create one with `holdfast init --repo {repo}`")]
    RepoNotFound { repo: String },

    #[error("a repository already exists at {repo}; nothing was changed")]
    RepoExists { repo: String },

    #[error(
        "wrong password for repository {repo}: check HOLDFAST_REPO_PASSWORD or --password-file"
    )]
    WrongPassword { repo: String },

    #[error("storage error at {repo}: {detail}")]
    Storage { repo: String, detail: String },

    #[error("the storage at {repo} refused the login: check the {credential} ({detail})")]
    StorageAuth {
        repo: String,
        credential: String,
        detail: String,
    },

    #[error(
        "the SFTP server at {repo} is not the host its key was known for, or its key is \
         unknown: compare its fingerprint (`ssh-keyscan -p PORT HOST`), then add it to the \
         agent's ~/.ssh/known_hosts, or set ?known-hosts=accept-new on the URL ({detail})"
    )]
    HostKey { repo: String, detail: String },

    #[error("cannot reach {source_name}: {detail}")]
    SourceUnreachable { source_name: String, detail: String },

    #[error("{source_name} refused the login: {detail}; check the user and password")]
    SourceAuth { source_name: String, detail: String },

    #[error("{source_name}: {detail}")]
    SourceMissing { source_name: String, detail: String },

    #[error("{tool} not found: {hint}")]
    ToolMissing { tool: String, hint: String },

    #[error("{step} for {source_name} failed ({status}){}", stderr_suffix(.stderr))]
    DumpFailed {
        source_name: String,
        step: String,
        status: String,
        stderr: String,
    },

    #[error("{step} into {target} failed ({status}){}", stderr_suffix(.stderr))]
    RestoreFailed {
        target: String,
        step: String,
        status: String,
        stderr: String,
    },

    #[error("no snapshot `{query}` in {repo}; list them with `holdfast snapshots`")]
    SnapshotNotFound { query: String, repo: String },

    #[error("repository {repo} has errors: {detail}")]
    CheckFailed { repo: String, detail: String },

    /// The backup writer failed at its own work (encryption, compression, verification,
    /// serialisation): not the user's input, not the storage.
    #[error("backup writer: {what}: {source}")]
    Writer {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A writer failure: what it was doing, and why (its cause is kept as the source).
    pub(crate) fn writer(
        what: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Writer {
            what: what.into(),
            source: cause.into(),
        }
    }
}

fn stderr_suffix(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", s.trim_end())
    }
}

impl Error {
    /// A storage failure, told apart by what the storage said: a refused login or an SSH
    /// host key problem is not worth retrying and names what to fix; anything else may pass.
    pub fn storage(repo: String, kind: holdfast_core::StorageKind, detail: String) -> Self {
        let d = detail.to_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| d.contains(n));
        if has(&[
            "host key verification failed",
            "remote host identification has changed",
            "no matching host key",
        ]) {
            return Self::HostKey { repo, detail };
        }
        if has(&[
            "permissiondenied",
            "permission denied",
            "unauthorized",
            "401 ",
            "status: 401",
            "403 forbidden",
            "status: 403",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "login incorrect",
            "login authentication failed",
            "530 ",
            "authentication failed",
        ]) {
            return Self::StorageAuth {
                repo,
                credential: kind.credential().to_string(),
                detail,
            };
        }
        Self::Storage { repo, detail }
    }

    /// The process exit code the CLI uses for this error. Stable: scripts may rely on it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Other(_) | Self::Writer { .. } => 1,
            Self::Input(_) => 2,
            Self::RepoNotFound { .. } => 10,
            Self::RepoExists { .. } => 11,
            Self::WrongPassword { .. } => 12,
            Self::Storage { .. } => 13,
            Self::StorageAuth { .. } => 16,
            Self::HostKey { .. } => 17,
            Self::SnapshotNotFound { .. } => 14,
            Self::CheckFailed { .. } => 15,
            Self::SourceUnreachable { .. } => 20,
            Self::SourceAuth { .. } => 21,
            Self::SourceMissing { .. } => 22,
            Self::ToolMissing { .. } => 23,
            Self::DumpFailed { .. } => 24,
            Self::RestoreFailed { .. } => 25,
        }
    }

    /// Whether trying the same thing again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Storage { .. } | Self::SourceUnreachable { .. } | Self::DumpFailed { .. }
        )
    }
}
