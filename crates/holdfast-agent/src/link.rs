//! The agent's connection to the server: plain HTTP calls under `/api/v1/agents/{name}`, with
//! the token as a bearer header. Calls that carry a result (log lines, steps, the finish)
//! are retried while the server is unreachable, so a server restart mid-job loses nothing.

use std::time::Duration;

use holdfast_core::agent::{
    Enrolled, Finish, Heartbeat, HeartbeatReply, Hello, LogLines, StepReport, Ticket,
};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// 401: the token is unknown or revoked.
    Refused,
    /// 409 on a job call: the lease is gone (expired and taken back, or the job ended).
    Lost(String),
    /// 404: the server does not know this agent (its metadata was reset): register again.
    Unknown(String),
    /// Connection failed, timed out, or the server answered 5xx: try again later.
    Unreachable(String),
    /// Any other answer: a bug or a version mismatch; retrying will not help.
    Rejected(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused => f.write_str(
                "the server refused the agent's credential (unknown, revoked or expired); \
                 enrol the agent again with an enrolment token from POST /api/v1/enrolments \
                 in HOLDFAST_TOKEN (delete its credential file first)",
            ),
            Self::Lost(m) | Self::Unknown(m) | Self::Unreachable(m) | Self::Rejected(m) => {
                f.write_str(m)
            }
        }
    }
}

pub struct Link {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    agent: String,
    /// How long a long-poll claim waits on the server for a job.
    claim_wait_secs: u64,
}

impl Link {
    pub fn new(
        server: &str,
        token: SecretString,
        agent: &str,
        claim_wait_secs: u64,
    ) -> Result<Self, String> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--server: `{base}` is not an http:// or https:// URL"
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(claim_wait_secs + 30))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: format!("{base}/api/v1"),
            token,
            agent: agent.to_string(),
            claim_wait_secs,
        })
    }

    /// The server's address, as given (`http://host:8420`): the repository proxy is there.
    pub fn server(&self) -> &str {
        self.base.trim_end_matches("/api/v1")
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<R>, LinkError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(self.token.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|e| {
                LinkError::Unreachable(format!("server {} unreachable: {e}", self.base))
            })?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return resp
                .json()
                .await
                .map(Some)
                .map_err(|e| LinkError::Unreachable(format!("reading the answer to {path}: {e}")));
        }
        let text = resp.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(text);
        Err(match status {
            StatusCode::UNAUTHORIZED => LinkError::Refused,
            StatusCode::FORBIDDEN => {
                LinkError::Rejected(format!("server refused {path}: {reason}"))
            }
            StatusCode::CONFLICT => LinkError::Lost(reason),
            StatusCode::NOT_FOUND => LinkError::Unknown(reason),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                LinkError::Unreachable(format!("server answered {s}: {reason}"))
            }
            s => LinkError::Rejected(format!("server answered {s} to {path}: {reason}")),
        })
    }

    /// Calls until the server answers (anything but "unreachable"), waiting longer each time,
    /// for at most `patience`.
    async fn post_patiently<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        patience: Duration,
    ) -> Result<Option<R>, LinkError> {
        let start = std::time::Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            match self.post(path, body).await {
                Err(LinkError::Unreachable(e)) if start.elapsed() < patience => {
                    tracing::warn!("{e}; trying again in {:.1} s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }

    /// Trades the enrolment token this link carries for the agent's own credential.
    pub async fn enrol(&self, hello: &Hello) -> Result<Enrolled, LinkError> {
        self.post("/agents/enrol", hello)
            .await?
            .ok_or_else(|| LinkError::Rejected("the enrolment answer was empty".into()))
    }

    pub async fn register(&self, hello: &Hello) -> Result<(), LinkError> {
        self.post::<_, serde_json::Value>("/agents", hello)
            .await
            .map(|_| ())
    }

    /// Waits on the server for a job this agent may run; `None` when none came in time.
    pub async fn claim(&self) -> Result<Option<Ticket>, LinkError> {
        self.post(
            &format!("/agents/{}/claim?wait={}", self.agent, self.claim_wait_secs),
            &serde_json::json!({}),
        )
        .await
    }

    fn job_path(&self, job: i64, what: &str) -> String {
        format!("/agents/{}/jobs/{job}/{what}", self.agent)
    }

    pub async fn heartbeat(&self, job: i64, hb: &Heartbeat) -> Result<HeartbeatReply, LinkError> {
        self.post(&self.job_path(job, "heartbeat"), hb)
            .await?
            .ok_or_else(|| LinkError::Rejected("empty heartbeat answer".into()))
    }

    pub async fn log(&self, job: i64, lines: Vec<String>) -> Result<(), LinkError> {
        self.post_patiently::<_, serde_json::Value>(
            &self.job_path(job, "log"),
            &LogLines { lines },
            Duration::from_secs(600),
        )
        .await
        .map(|_| ())
    }

    pub async fn step(&self, job: i64, report: &StepReport) -> Result<(), LinkError> {
        self.post_patiently::<_, serde_json::Value>(
            &self.job_path(job, "steps"),
            report,
            Duration::from_secs(600),
        )
        .await
        .map(|_| ())
    }

    /// Sends a restore drill's report, waiting up to ten minutes for the server.
    pub async fn drill(
        &self,
        job: i64,
        r: &holdfast_core::agent::DrillResult,
    ) -> Result<(), LinkError> {
        self.post_patiently::<_, serde_json::Value>(
            &self.job_path(job, "drill"),
            r,
            Duration::from_secs(600),
        )
        .await
        .map(|_| ())
    }

    /// Reports the end of the attempt, waiting up to an hour for the server to come back.
    pub async fn finish(&self, job: i64, f: &Finish) -> Result<(), LinkError> {
        self.post_patiently::<_, serde_json::Value>(
            &self.job_path(job, "finish"),
            f,
            Duration::from_secs(3600),
        )
        .await
        .map(|_| ())
    }
}
