//! A restore drill job: one of the plan's restore points restored into a throwaway copy next
//! to this agent and checked (or read back and checked), its report sent to the server, and
//! the job failed, naming the check, when the restore point does not hold up.

use holdfast_core::agent::{DrillResult, Work};
use holdfast_engine::Repo;
use holdfast_engine::drill::DrillOptions;
use holdfast_engine::repo::SnapshotFilter;

use super::*;

impl Ctx {
    pub(super) async fn verify(&self) -> Result<Done, Failure> {
        let Work::Verify { plan, drill, .. } = self.t.work.clone() else {
            return Err(Failure::permanent("not a restore drill"));
        };
        let spec = plan.verify.clone().unwrap_or_default();
        let into = self.t.source().map(|s| s.name.clone());
        self.log.line(format!(
            "restore drill ({}) of {} of plan `{}` from endpoint `{}`{}",
            match (spec.mode, &into) {
                (holdfast_core::drill::DrillMode::Check, _) => "read and check".to_string(),
                (_, Some(name)) => format!("restore into scratch source `{name}`"),
                (_, None) => "restore into a throwaway copy".to_string(),
            },
            match (&drill.restore_point, spec.random_of_last) {
                (Some(rp), _) => format!("restore point {rp}"),
                (None, 1) => "the newest restore point".to_string(),
                (None, n) => format!("one of the {n} newest restore points"),
            },
            plan.name,
            self.t.repository.endpoint,
            if self.t.repository.through_server() {
                " through the server"
            } else {
                ""
            }
        ));
        let cfg = self.repo.clone();
        let log = self.log.clone();
        let opts = DrillOptions {
            mode: spec.mode,
            sql_checks: spec.checks.clone(),
            rto_target_secs: spec.rto_target_secs,
            jobs: 2,
            root: self.policy.drills_root(),
            // The plan's scratch server, read with the job's other connection details.
            into: self.source.lock().unwrap().clone(),
            part: drill.part,
        };
        let plan_name = plan.name.clone();
        let report = blocking(move || {
            let repo = Repo::open(&cfg)?;
            let snap = match &drill.restore_point {
                Some(rp) => repo.find(rp)?,
                None => {
                    let filter = SnapshotFilter {
                        tags: vec![("plan".into(), plan_name)],
                        ..SnapshotFilter::default()
                    };
                    repo.pick_recent(&filter, spec.random_of_last as usize)?
                }
            };
            log.line(format!("drilling restore point {}", snap.short_id));
            let report = holdfast_engine::drill::run(&repo, &snap, &opts);
            Ok((report, snap.bytes))
        })
        .await?;
        let (report, bytes) = report;
        for line in report.text().lines().filter(|l| !l.trim().is_empty()) {
            self.log.line(line.to_string());
        }
        let sent = self
            .link
            .drill(
                self.t.job,
                &DrillResult {
                    attempt: self.t.attempt,
                    report: report.clone(),
                },
            )
            .await;
        if let Err(e) = sent {
            return Err(Failure::transient(format!(
                "the drill ran, but its report could not be sent: {e}"
            )));
        }
        if !report.passed {
            // The restore point was found wanting: that is the drill's result, not a reason
            // to try again.
            return Err(Failure::permanent(report.summary()));
        }
        self.log.line(report.summary());
        Ok(Done {
            snapshot_id: Some(report.snapshot.clone()),
            bytes_read: bytes,
            bytes_written: 0,
            restore_points: None,
        })
    }
}
