//! The copy step: a plan's new restore points to its copy endpoint, with the copy's retention.

use std::time::Duration;

use holdfast_core::agent::{RepoTicket, StepState};
use holdfast_core::lifecycle::COPY;
use holdfast_core::plan::PlanSpec;
use holdfast_engine::{Repo, RepoConfig};

use super::*;

impl Ctx {
    /// Copies the plan's backups that the copy endpoint lacks (this one, and any an earlier
    /// failed copy left behind), then applies the copy's retention there. Retried like a step;
    /// a copy that fails in the end leaves the backup itself, and the job, successful.
    pub(super) async fn copy(&self, plan: &PlanSpec, ct: &RepoTicket) {
        let retry = self.retry();
        let attempt = self.t.attempt;
        let mut try_no = 1;
        loop {
            self.report(attempt, COPY, try_no, StepState::Running, None)
                .await;
            let (src, log) = (self.repo.clone(), self.log.clone());
            let (ct2, plan2) = (ct.clone(), plan.clone());
            let server = self.link.server().to_string();
            let r = blocking(move || copy_once(&src, &ct2, &server, &plan2, &log)).await;
            match r {
                Ok(detail) => {
                    self.log.line(&detail);
                    self.report(attempt, COPY, try_no, StepState::Succeeded, Some(detail))
                        .await;
                    return;
                }
                Err(f) => {
                    self.report(
                        attempt,
                        COPY,
                        try_no,
                        StepState::Failed,
                        Some(f.reason.clone()),
                    )
                    .await;
                    if !f.transient || try_no >= retry.attempts || self.stopped() {
                        self.log.line(format!(
                            "copy to endpoint `{}` failed: {}; the backup itself is saved, and \
                             the next backup copies what is missing",
                            ct.endpoint, f.reason
                        ));
                        return;
                    }
                    let wait = Duration::from_millis(retry.delay_ms(try_no + 1, jitter()));
                    self.log.line(format!(
                        "copy failed (try {try_no} of {}): {}; trying again in {:.1} s",
                        retry.attempts,
                        f.reason,
                        wait.as_secs_f64()
                    ));
                    tokio::time::sleep(wait).await;
                    try_no += 1;
                }
            }
        }
    }
}

/// One try of the copy: what was copied and what the copy's retention did, for the job.
/// `server` is the server's address, for a copy endpoint reached through its proxy (whose
/// retention the server applies itself when the job ends).
pub(super) fn copy_once(
    src: &RepoConfig,
    to: &RepoTicket,
    server: &str,
    plan: &PlanSpec,
    log: &JobLog,
) -> Result<String, Failure> {
    let Some(spec) = &plan.copy else {
        return Err(Failure::permanent("the plan has no copy endpoint"));
    };
    let src = Repo::open(src)?;
    let dest = open_or_init(&RepoConfig::from_ticket_via(to, server)?)?;
    let tag = format!("plan={}", plan.name);
    let r = src.copy_to(&dest, &tag)?;
    let short = |id: &str| id[..id.len().min(8)].to_string();
    let copied: Vec<String> = r
        .copied
        .iter()
        .map(|(a, b)| format!("{} as {}", short(a), short(b)))
        .collect();
    let mut detail = if copied.is_empty() {
        format!(
            "copy: endpoint `{}` is up to date ({} copies of the plan's restore points there)",
            to.endpoint, r.present
        )
    } else {
        format!(
            "copied {} restore point(s) to endpoint `{}`: {}",
            copied.len(),
            to.endpoint,
            copied.join(", ")
        )
    };
    if to.through_server() {
        detail.push_str("; the server applies the retention there");
        return Ok(detail);
    }
    let policy = spec
        .retention
        .as_ref()
        .unwrap_or(&plan.retention)
        .keep_policy();
    match dest.forget(&policy, false, Some(&tag)) {
        Ok(f) => detail.push_str(&format!(
            "; retention there: kept {}, forgot {}",
            f.kept.len(),
            f.removed.len()
        )),
        Err(e) => log.line(format!(
            "retention on copy endpoint `{}` failed (the copies are saved): {e}",
            to.endpoint
        )),
    }
    Ok(detail)
}
