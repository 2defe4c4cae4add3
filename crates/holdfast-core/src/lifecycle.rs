//! A job's lifecycle on an agent: the steps a backup or restore goes through, the operator's
//! hooks that may run at each, and how a failed step is retried.
//!
//! A backup runs `pre-backup-lock`, `pre-backup-check`, `backup`, then, whatever happened,
//! `backup-cleanup` and `post-backup-unlock`. A restore runs `pre-restore-lock`, `restore`, then
//! `restore-cleanup` and `post-restore-unlock`. The "always" steps run once any step of the
//! attempt started: after success, failure, timeout or cancellation, and, when the agent died
//! mid-job, on the agent that takes the job over, before it tries again.

use serde::{Deserialize, Serialize};

/// A hook exiting with this code fails its job at once, without retries.
pub const NO_RETRY_EXIT: i32 = 99;

/// One step of a job's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    PreBackupLock,
    PreBackupCheck,
    Backup,
    BackupCleanup,
    PostBackupUnlock,
    PreRestoreLock,
    Restore,
    RestoreCleanup,
    PostRestoreUnlock,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::PreBackupLock,
        Step::PreBackupCheck,
        Step::Backup,
        Step::BackupCleanup,
        Step::PostBackupUnlock,
        Step::PreRestoreLock,
        Step::Restore,
        Step::RestoreCleanup,
        Step::PostRestoreUnlock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreBackupLock => "pre-backup-lock",
            Self::PreBackupCheck => "pre-backup-check",
            Self::Backup => "backup",
            Self::BackupCleanup => "backup-cleanup",
            Self::PostBackupUnlock => "post-backup-unlock",
            Self::PreRestoreLock => "pre-restore-lock",
            Self::Restore => "restore",
            Self::RestoreCleanup => "restore-cleanup",
            Self::PostRestoreUnlock => "post-restore-unlock",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The steps a job of `kind` runs in order, then the ones that always run after them.
    pub fn plan_for(kind: crate::job::JobKind) -> (&'static [Step], &'static [Step]) {
        match kind {
            crate::job::JobKind::Restore => (
                &[Step::PreRestoreLock, Step::Restore],
                &[Step::RestoreCleanup, Step::PostRestoreUnlock],
            ),
            crate::job::JobKind::Backup => (
                &[Step::PreBackupLock, Step::PreBackupCheck, Step::Backup],
                &[Step::BackupCleanup, Step::PostBackupUnlock],
            ),
            // A prune runs no hooks; nor does a drill, which never touches the source.
            crate::job::JobKind::Prune | crate::job::JobKind::Verify => (&[], &[]),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step that copies a plan's new backups to its copy endpoint, after the backup's own
/// lifecycle (the database is unlocked by then).
pub const COPY: &str = "copy";

/// The step a job records when its always-run steps are done: the attempt holds no lock any
/// more, so no later attempt needs to clean up after it.
pub const RELEASED: &str = "released";

/// A command run at one step: an inline script (run with `sh -c`) or the path of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub run: String,
    /// Killed (with everything it started) after this long; the step then counts as failed
    /// and is retried.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    600
}

/// The longest inline script a hook (or a command source) may be, in bytes: 64 KiB. `sh -c`
/// takes its script as one argument, and Linux refuses arguments over 128 KiB.
pub const MAX_SCRIPT_LEN: usize = 64 * 1024;

/// Why a script of `len` bytes is refused.
pub fn script_too_long(len: usize) -> String {
    format!(
        "is {len} bytes; a script may be at most {MAX_SCRIPT_LEN} bytes (64 KiB): put a longer \
         one in a file on the agent and give its path"
    )
}

/// A plan's hooks. `backup` and `restore` replace the built-in driver: a backup hook's stdout
/// is stored as the backup, a restore hook reads the restore point on its stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_backup_lock: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_backup_check: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_cleanup: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_backup_unlock: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_restore_lock: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_cleanup: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_restore_unlock: Option<Hook>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn get(&self, step: Step) -> Option<&Hook> {
        match step {
            Step::PreBackupLock => self.pre_backup_lock.as_ref(),
            Step::PreBackupCheck => self.pre_backup_check.as_ref(),
            Step::Backup => self.backup.as_ref(),
            Step::BackupCleanup => self.backup_cleanup.as_ref(),
            Step::PostBackupUnlock => self.post_backup_unlock.as_ref(),
            Step::PreRestoreLock => self.pre_restore_lock.as_ref(),
            Step::Restore => self.restore.as_ref(),
            Step::RestoreCleanup => self.restore_cleanup.as_ref(),
            Step::PostRestoreUnlock => self.post_restore_unlock.as_ref(),
        }
    }

    /// Problems, as (field, reason).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for step in Step::ALL {
            if let Some(h) = self.get(step) {
                let field = format!("hooks.{}", step.as_str().replace('-', "_"));
                if h.run.trim().is_empty() {
                    out.push((
                        format!("{field}.run"),
                        "empty; give a shell script or the path of one".into(),
                    ));
                } else if h.run.len() > MAX_SCRIPT_LEN {
                    out.push((format!("{field}.run"), script_too_long(h.run.len())));
                }
                if h.timeout_secs == 0 || h.timeout_secs > 7 * 24 * 3600 {
                    out.push((format!("{field}.timeout_secs"), "1 second to 7 days".into()));
                }
            }
        }
        out
    }
}

/// How one step is retried inside an attempt: `attempts` tries in all, waiting about
/// `base_ms * 2^(n-1)` (at most `cap_ms`, with jitter) before the n-th retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct StepRetry {
    pub attempts: u32,
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Default for StepRetry {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_ms: 2_000,
            cap_ms: 60_000,
        }
    }
}

/// The longest wait between two tries of a step: an hour.
pub const MAX_STEP_WAIT_MS: u64 = 3_600_000;

impl StepRetry {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Milliseconds to wait before try `next_try` (2 for the first retry); `jitter` in [0, 1)
    /// picks a point in the upper half of the window.
    pub fn delay_ms(&self, next_try: u32, jitter: f64) -> u64 {
        let exp = next_try.saturating_sub(2).min(32);
        let full = self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms);
        full / 2 + ((full - full / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64
    }

    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        if self.attempts == 0 || self.attempts > 100 {
            out.push(("step_retry.attempts".into(), "1 to 100".into()));
        }
        if self.base_ms > self.cap_ms {
            out.push((
                "step_retry.base_ms".into(),
                "must not be larger than cap_ms".into(),
            ));
        } else if self.cap_ms > MAX_STEP_WAIT_MS {
            out.push((
                "step_retry.cap_ms".into(),
                format!(
                    "{} is out of range: a step waits at most {MAX_STEP_WAIT_MS} ms (an hour) \
                     between tries; the plan's `retry` is for longer waits",
                    self.cap_ms
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_and_run_in_the_osb_order() {
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
        let (main, always) = Step::plan_for(crate::job::JobKind::Backup);
        assert_eq!(
            main.iter()
                .chain(always)
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            [
                "pre-backup-lock",
                "pre-backup-check",
                "backup",
                "backup-cleanup",
                "post-backup-unlock"
            ]
        );
        let (main, always) = Step::plan_for(crate::job::JobKind::Restore);
        assert_eq!(main.len() + always.len(), 4);
    }

    #[test]
    fn step_retry_doubles_to_the_cap() {
        let r = StepRetry {
            attempts: 5,
            base_ms: 100,
            cap_ms: 300,
        };
        assert_eq!(r.delay_ms(2, 0.0), 50);
        assert_eq!(r.delay_ms(3, 0.0), 100);
        assert_eq!(r.delay_ms(4, 0.0), 150);
        assert_eq!(r.delay_ms(4, 0.999), 299);
    }

    #[test]
    fn hooks_are_validated_by_field() {
        let h: Hooks = serde_json::from_str(
            r#"{"pre_backup_lock": {"run": " ", "timeout_secs": 0}, "backup_cleanup": {"run": "echo"}}"#,
        )
        .unwrap();
        let e = h.validate();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, "hooks.pre_backup_lock.run");
        assert_eq!(e[1].0, "hooks.pre_backup_lock.timeout_secs");
        assert_eq!(h.backup_cleanup.unwrap().timeout_secs, 600);
        assert!(serde_json::from_str::<Hooks>(r#"{"pre_backup_lok": {"run": "x"}}"#).is_err());
    }

    #[test]
    fn hook_scripts_have_a_size_limit() {
        let hooks = |len: usize| Hooks {
            backup: Some(Hook {
                run: "#".repeat(len),
                timeout_secs: 60,
            }),
            ..Hooks::default()
        };
        assert!(hooks(MAX_SCRIPT_LEN).validate().is_empty());
        let e = hooks(1 << 20).validate();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "hooks.backup.run");
        assert!(
            e[0].1.contains("1048576 bytes") && e[0].1.contains("65536"),
            "{e:?}"
        );
    }
}
