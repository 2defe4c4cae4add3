//! The backup step: the source's dump (or the plan's backup hook) into the repository, then
//! the plan's retention.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use holdfast_core::SourceSpec;
use holdfast_core::agent::Work;
use holdfast_core::lifecycle::Hook;
use holdfast_engine::Error as EngineError;
use holdfast_engine::repo::Gate;
use secrecy::SecretString;

use crate::hook::{self};

use super::*;

impl Ctx {
    pub(super) fn new_gate(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        *self.progress.gate.lock().unwrap() = Some(gate.clone());
        // A cancel (or a lost lease) stops the dump tools and keeps the snapshot unwritten.
        let stop = self.stop.clone();
        let g = gate.clone();
        tokio::spawn(async move {
            if hook::stopped(stop).await {
                g.fail(EngineError::Other(
                    "the job was cancelled or lost its lease".into(),
                ));
            }
        });
        gate
    }

    pub(super) async fn backup(&self, hook: Option<Hook>) -> Result<Done, Failure> {
        let Work::Backup {
            plan, source: st, ..
        } = self.t.work.clone()
        else {
            return Err(Failure::permanent("not a backup job"));
        };
        let source = self
            .source
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Failure::permanent("a backup job without a source"))?;
        let (vars, secret_vars) = self.env(self.t.attempt);
        let gate = self.new_gate();
        let timer = hook.as_ref().map(|h| {
            let g = gate.clone();
            let secs = h.timeout_secs;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                g.fail(EngineError::SourceUnreachable {
                    source_name: "backup hook".into(),
                    detail: format!("timed out after {secs} s and was stopped"),
                });
            })
        });
        let via = if self.t.repository.through_server() {
            " through the server"
        } else {
            ""
        };
        match &hook {
            Some(_) => self.log.line(format!(
                "backing up with the plan's backup hook (for {} source `{}`) into endpoint `{}`{via}",
                st.kind, st.name, self.t.repository.endpoint
            )),
            None => self.log.line(format!(
                "backing up {} source `{}` ({source}) into endpoint `{}`{via}",
                st.kind, st.name, self.t.repository.endpoint
            )),
        }
        let cfg = self.repo.clone();
        let policy = plan.retention.keep_policy();
        let log = self.log.clone();
        let r = blocking(move || {
            let repo = open_or_init(&cfg)?;
            let opts = holdfast_engine::BackupOptions {
                single_stream: st.single_stream,
                all_databases: st.all_databases,
                plan: Some(plan.name.clone()),
                tags: vec![],
                restrict_key: Some(repo.derive_secret(&format!("pg_dump restrict key {source}"))),
            };
            let set = match &hook {
                None => holdfast_engine::driver_for(&source).backup_set(&opts)?,
                Some(h) => {
                    let cmd = SourceSpec::Command {
                        name: st.name.clone(),
                        command: h.run.clone(),
                    };
                    let mut set = holdfast_engine::driver_for(&cmd).backup_set(&opts)?;
                    for s in &mut set.streams {
                        let mut c = s.cmd.clone().env("HOLDFAST_STEP", "backup");
                        for (k, v) in &vars {
                            c = c.env(k, v);
                        }
                        for (k, v) in &secret_vars {
                            c = c.secret_env(k, Some(&SecretString::from(v.clone())));
                        }
                        s.cmd = c;
                    }
                    set
                }
            };
            let outcome = repo.backup(set, gate)?;
            let s = &outcome.snapshot;
            log.line(format!(
                "restore point {} saved: {} bytes read, {} bytes added to the repository, {:.1} s",
                s.short_id, s.bytes, s.added_bytes, s.duration_secs
            ));
            // Through the server's proxy nothing can be deleted: the server applies the
            // retention when the job ends.
            if cfg.proxy.is_some() {
                return Ok(Done {
                    snapshot_id: Some(s.id.clone()),
                    bytes_read: s.bytes,
                    bytes_written: s.added_bytes,
                    restore_points: None,
                });
            }
            // Retention touches only this plan's snapshots; a failure here keeps the backup.
            let kept = match repo.forget(&policy, false, Some(&format!("plan={}", plan.name))) {
                Ok(r) => {
                    log.line(format!(
                        "retention: kept {} restore point(s), forgot {}",
                        r.kept.len(),
                        r.removed.len()
                    ));
                    Some(r.kept.len() as u64)
                }
                Err(e) => {
                    log.line(format!("retention failed (the backup is saved): {e}"));
                    None
                }
            };
            Ok(Done {
                snapshot_id: Some(s.id.clone()),
                bytes_read: s.bytes,
                bytes_written: s.added_bytes,
                restore_points: kept,
            })
        })
        .await;
        if let Some(t) = timer {
            t.abort();
        }
        if let Ok(d) = &r {
            *self.snapshot.lock().unwrap() = d.snapshot_id.clone();
            self.progress
                .written
                .store(d.bytes_written, Ordering::Relaxed);
        }
        r
    }
}
