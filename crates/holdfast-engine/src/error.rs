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

    /// A restore drill ran and a check failed: the summary names the first failed check.
    #[error("{summary}")]
    DrillFailed { summary: String },

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

/// `text` without the backtrace some errors print with themselves (rustic's and OpenDAL's
/// when RUST_BACKTRACE is set): messages say what went wrong and what to do, backtraces are
/// for panics.
pub fn without_backtrace(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_backtrace = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "Backtrace:" {
            in_backtrace = true;
        } else if !(in_backtrace && is_backtrace_line(t.as_bytes())) {
            in_backtrace = false;
            out.push(line);
        }
    }
    let mut s = out.join("\n").trim_end().to_string();
    if text.ends_with('\n') && !s.is_empty() {
        s.push('\n');
    }
    s
}

/// Whether a (trimmed) line belongs to a printed backtrace: a frame (`12: name`), its place
/// (`at src/x.rs:1:2`), std's note about omitted frames, or the blank line that ends it.
pub fn is_backtrace_line(t: &[u8]) -> bool {
    let t = String::from_utf8_lossy(t);
    let t = t.trim();
    t.is_empty()
        || t.starts_with("at ")
        || t.starts_with("note: Some details are omitted")
        || t.split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
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
            Self::DrillFailed { .. } => 18,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_are_left_out_of_messages() {
        // OpenDAL's error as its retry warning prints it with RUST_BACKTRACE=1.
        let text = "Unexpected (temporary) at stat => send http request\n\nContext:\n   url: \
                    http://127.0.0.1:1/b/config\n\nSource:\n   connection refused\n\nBacktrace:\n   \
                    0: call_once<fn() -> std::backtrace::Backtrace, ()>\n             at \
                    /rustc/x/library/core/src/ops/function.rs:250:5\n  17: poll<T>\n             \
                    at src/x.rs:1:2\n 100: clone3\nnote: Some details are omitted\n";
        let clean = without_backtrace(text);
        assert!(
            !clean.contains("Backtrace") && !clean.contains("call_once"),
            "{clean}"
        );
        assert!(
            !clean.contains("clone3") && !clean.contains("omitted"),
            "{clean}"
        );
        assert!(
            clean.contains("url: http://127.0.0.1:1/b/config"),
            "{clean}"
        );
        assert!(clean.contains("connection refused"), "{clean}");
        // Text after a backtrace is kept; text without one is unchanged.
        assert_eq!(without_backtrace("a\nBacktrace:\n 0: f\nb"), "a\nb");
        assert_eq!(without_backtrace("a: b\n 1: c"), "a: b\n 1: c");
    }
}
