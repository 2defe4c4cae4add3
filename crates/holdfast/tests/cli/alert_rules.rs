//! The Prometheus alerting rules shipped in `deploy/prometheus/` are valid (`promtool check
//! rules`) and do what their unit tests say (`promtool test rules`): BackupStale fires for a
//! plan without a recent success (or that never succeeded) and not for a fresh or paused one,
//! BackupFailing fires after a failure and clears on recovery, and BackupMissed, AgentDown,
//! QueueStuck, NotificationsFailing and HoldfastMetricsAbsent fire when they should and only
//! then. `scripts/services` installs promtool (Debian's `prometheus` package); without it these
//! tests fail, they never skip.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The repository's root, where `deploy/` is.
fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs `promtool ARGS` in the repository's root and asserts it succeeds.
fn promtool(args: &[&str]) {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is not installed, so the alerting rules in deploy/prometheus/ were not \
             checked: run scripts/services (it installs Debian's prometheus package, which has \
             promtool)"
        ),
        Err(e) => panic!("promtool {args:?} could not be started: {e}"),
    };
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}); stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_are_valid() {
    promtool(&["check", "rules", "deploy/prometheus/holdfast-rules.yml"]);
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "deploy/prometheus/holdfast-rules.test.yml"]);
}
