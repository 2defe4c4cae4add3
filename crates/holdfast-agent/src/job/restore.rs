//! The restore step: a restore point into its target (or the plan's restore hook).

use std::sync::atomic::Ordering;

use holdfast_core::SourceSpec;
use holdfast_core::agent::Work;
use holdfast_core::lifecycle::Hook;
use holdfast_engine::Repo;

use super::env::sh_quote;
use super::*;

impl Ctx {
    pub(super) async fn restore(&self, hook: Option<Hook>) -> Result<Done, Failure> {
        let Work::Restore {
            restore: rt,
            target: target_ticket,
            ..
        } = self.t.work.clone()
        else {
            return Err(Failure::permanent("not a restore job"));
        };
        let target = match &hook {
            // The hook reads the restore point on its stdin; its context comes first in the
            // script (no secrets: those would show in the process list).
            Some(h) => {
                let (vars, _) = self.env(self.t.attempt);
                let exports: String = vars
                    .iter()
                    .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
                    .collect();
                SourceSpec::Command {
                    name: target_ticket.name.clone(),
                    command: format!("export HOLDFAST_STEP=restore\n{exports}{}", h.run),
                }
            }
            None => self
                .source
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| Failure::permanent("a restore job without a target"))?,
        };
        self.log.line(format!(
            "restoring restore point {} from endpoint `{}`{} into {}",
            rt.restore_point,
            self.t.repository.endpoint,
            if self.t.repository.through_server() {
                " through the server"
            } else {
                ""
            },
            if hook.is_some() {
                "the plan's restore hook".to_string()
            } else {
                target.to_string()
            }
        ));
        let cfg = self.repo.clone();
        let log = self.log.clone();
        let opts = holdfast_engine::RestoreOptions {
            create: rt.create,
            jobs: 2,
            force: rt.force,
            ..Default::default()
        };
        let d = blocking(move || {
            let repo = Repo::open(&cfg)?;
            let snap = repo.find(&rt.restore_point)?;
            let reader = repo.reader(&snap)?;
            let stats = holdfast_engine::source::restore(&target, &snap, &reader, &opts)?;
            // The dump's size as the snapshot recorded it (the files' nodes may not carry it).
            let bytes = stats.bytes.max(snap.bytes);
            log.line(format!(
                "restored {bytes} bytes in {} file(s) in {:.1} s",
                stats.files, stats.duration_secs
            ));
            Ok(Done {
                snapshot_id: Some(snap.id.clone()),
                bytes_read: bytes,
                bytes_written: bytes,
                restore_points: None,
            })
        })
        .await?;
        self.progress
            .written
            .store(d.bytes_written, Ordering::Relaxed);
        Ok(d)
    }
}
