//! What a hook sees: the job's context in its environment, and the connection a hook may
//! hand over through `$HOLDFAST_ENV_FILE`.

use holdfast_core::SourceSpec;
use holdfast_core::lifecycle::NO_RETRY_EXIT;
use secrecy::ExposeSecret;

use super::*;

/// Environment variables for a child process.
pub(super) type Vars = Vec<(String, String)>;

/// Quotes `s` for `sh`.
pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Ctx {
    /// The environment every hook gets: the job's context, never a secret but the source's
    /// password (in the environment only, where the dump tools expect it too).
    pub(super) fn env(&self, attempt: u32) -> (Vars, Vars) {
        let t = &self.t;
        let mut v: Vec<(String, String)> = vec![
            ("HOLDFAST_JOB_ID".into(), t.job.to_string()),
            ("HOLDFAST_JOB_KIND".into(), t.kind().to_string()),
            ("HOLDFAST_ATTEMPT".into(), attempt.to_string()),
            ("HOLDFAST_AGENT".into(), self.link.agent().to_string()),
            ("HOLDFAST_ENDPOINT".into(), t.repository.endpoint.clone()),
            (
                "HOLDFAST_WORK_DIR".into(),
                self.work.path().display().to_string(),
            ),
            (
                "HOLDFAST_ENV_FILE".into(),
                self.env_file.display().to_string(),
            ),
            ("HOLDFAST_NO_RETRY_EXIT".into(), NO_RETRY_EXIT.to_string()),
        ];
        if let Some(p) = t.plan() {
            v.push(("HOLDFAST_PLAN".into(), p.name.clone()));
        }
        if let Some(s) = self.snapshot.lock().unwrap().clone() {
            v.push(("HOLDFAST_SNAPSHOT_ID".into(), s));
        }
        let mut secret = vec![];
        if let Some(st) = t.source() {
            v.push(("HOLDFAST_SOURCE_NAME".into(), st.name.clone()));
            v.push(("HOLDFAST_SOURCE_KIND".into(), st.kind.clone()));
        }
        if let Some(spec) = self.source.lock().unwrap().as_ref() {
            v.push(("HOLDFAST_SOURCE_URL".into(), spec.to_string()));
            match spec {
                SourceSpec::Postgres(a) | SourceSpec::Mysql(a) => {
                    v.push(("HOLDFAST_SOURCE_HOST".into(), a.host.clone()));
                    if let Some(p) = a.port {
                        v.push(("HOLDFAST_SOURCE_PORT".into(), p.to_string()));
                    }
                    if let Some(u) = &a.user {
                        v.push(("HOLDFAST_SOURCE_USER".into(), u.clone()));
                    }
                    if let Some(d) = &a.database {
                        v.push(("HOLDFAST_SOURCE_DATABASE".into(), d.clone()));
                    }
                    if let Some(pw) = &a.password {
                        secret.push((
                            "HOLDFAST_SOURCE_PASSWORD".into(),
                            pw.expose_secret().to_string(),
                        ));
                    }
                }
                SourceSpec::Redis { host, port, .. } => {
                    v.push(("HOLDFAST_SOURCE_HOST".into(), host.clone()));
                    v.push(("HOLDFAST_SOURCE_PORT".into(), port.to_string()));
                }
                SourceSpec::Sqlite { path } | SourceSpec::Folder { path } => {
                    v.push(("HOLDFAST_SOURCE_PATH".into(), path.display().to_string()));
                }
                SourceSpec::Command { .. } => {}
            }
        }
        (v, secret)
    }

    /// A hook may hand the dump another connection (a temporary replica, say) by writing
    /// `HOLDFAST_SOURCE_URL=...` to `$HOLDFAST_ENV_FILE`.
    pub(super) fn read_env_file(&self) -> Result<(), Failure> {
        let Ok(text) = std::fs::read_to_string(&self.env_file) else {
            return Ok(());
        };
        let Some(st) = self.t.source() else {
            return Ok(());
        };
        for line in text.lines() {
            if let Some(url) = line.trim().strip_prefix("HOLDFAST_SOURCE_URL=") {
                if let Some(why) = self.policy.refuses_source(st, url.trim()) {
                    return Err(Failure::permanent(format!(
                        "the URL a hook handed over is refused by this agent: {why}"
                    )));
                }
                let spec = source_spec(st, url.trim())?;
                let mut cur = self.source.lock().unwrap();
                if cur.as_ref().map(|c| c.to_string()) != Some(spec.to_string()) {
                    self.log.line(format!(
                        "a hook handed over another connection: this job now uses {spec}"
                    ));
                }
                *cur = Some(spec);
            }
        }
        Ok(())
    }
}
