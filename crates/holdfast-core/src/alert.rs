//! Alerts: the events the server computes about plans, agents and repositories, and a plan's
//! policy for them (who is told, after how many failures, how often again, when it is late).

use serde::{Deserialize, Serialize};

use crate::plan::FieldError;
use crate::schedule::Schedule;

/// Something the server noticed. The words are the `event` field of every notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    /// A backup started (heartbeat notifiers ping `/start`).
    #[serde(rename = "backup.started")]
    BackupStarted,
    /// A backup succeeded (every success; heartbeat notifiers ping it).
    #[serde(rename = "backup.succeeded")]
    BackupSucceeded,
    /// A backup failed after its retries. Alerts follow the plan's `after_failures` and
    /// `repeat`; heartbeat notifiers get every one.
    #[serde(rename = "backup.failed")]
    BackupFailed,
    /// The first success after failures that were alerted.
    #[serde(rename = "backup.recovered")]
    BackupRecovered,
    /// A scheduled backup did not start within the plan's `missed_after` of its fire time.
    #[serde(rename = "backup.missed")]
    BackupMissed,
    /// No success within the plan's `max_age`.
    #[serde(rename = "backup.stale")]
    BackupStale,
    /// A backup read less than half or more than twice the median of the plan's last
    /// successful backups: an empty or truncated dump is the classic silent failure.
    #[serde(rename = "backup.size_anomaly")]
    BackupSizeAnomaly,
    /// A backup took more than twice the median time of the plan's last successful backups.
    #[serde(rename = "backup.slow")]
    BackupSlow,
    #[serde(rename = "restore.succeeded")]
    RestoreSucceeded,
    #[serde(rename = "restore.failed")]
    RestoreFailed,
    #[serde(rename = "prune.failed")]
    PruneFailed,
    /// A restore drill found that a restore point does not restore as its backup recorded
    /// (or could not make its copy): the check that failed is named.
    #[serde(rename = "verify.failed")]
    VerifyFailed,
    /// A restore drill's restore took longer than the plan's `verify.rto_target_secs`.
    #[serde(rename = "verify.rto_breach")]
    VerifyRtoBreach,
    /// The copy of a backup to the plan's copy endpoint failed (the backup itself is kept).
    #[serde(rename = "copy.failed")]
    CopyFailed,
    /// An agent has not been heard from for two minutes.
    #[serde(rename = "agent.offline")]
    AgentOffline,
    /// The server's repository proxy refused what an agent's capability asked (a delete, an
    /// overwrite, a file whose content does not match its name, a snapshot of another plan):
    /// the agent's host may be compromised.
    #[serde(rename = "security.violation")]
    SecurityViolation,
    /// A test message sent from the API or the UI.
    #[serde(rename = "test")]
    Test,
}

impl EventKind {
    pub const ALL: &'static [Self] = &[
        Self::BackupStarted,
        Self::BackupSucceeded,
        Self::BackupFailed,
        Self::BackupRecovered,
        Self::BackupMissed,
        Self::BackupStale,
        Self::BackupSizeAnomaly,
        Self::BackupSlow,
        Self::RestoreSucceeded,
        Self::RestoreFailed,
        Self::PruneFailed,
        Self::VerifyFailed,
        Self::VerifyRtoBreach,
        Self::CopyFailed,
        Self::AgentOffline,
        Self::SecurityViolation,
        Self::Test,
    ];

    /// What a route that names no events gets: every problem and the recovery.
    pub const DEFAULT: &'static [Self] = &[
        Self::BackupFailed,
        Self::BackupRecovered,
        Self::BackupMissed,
        Self::BackupStale,
        Self::BackupSizeAnomaly,
        Self::RestoreFailed,
        Self::PruneFailed,
        Self::VerifyFailed,
        Self::VerifyRtoBreach,
        Self::CopyFailed,
        Self::AgentOffline,
        Self::SecurityViolation,
    ];

    /// What a heartbeat notifier gets: each backup's start and outcome.
    pub const HEARTBEAT: &'static [Self] = &[
        Self::BackupStarted,
        Self::BackupSucceeded,
        Self::BackupFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackupStarted => "backup.started",
            Self::BackupSucceeded => "backup.succeeded",
            Self::BackupFailed => "backup.failed",
            Self::BackupRecovered => "backup.recovered",
            Self::BackupMissed => "backup.missed",
            Self::BackupStale => "backup.stale",
            Self::BackupSizeAnomaly => "backup.size_anomaly",
            Self::BackupSlow => "backup.slow",
            Self::RestoreSucceeded => "restore.succeeded",
            Self::RestoreFailed => "restore.failed",
            Self::PruneFailed => "prune.failed",
            Self::VerifyFailed => "verify.failed",
            Self::VerifyRtoBreach => "verify.rto_breach",
            Self::CopyFailed => "copy.failed",
            Self::AgentOffline => "agent.offline",
            Self::SecurityViolation => "security.violation",
            Self::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// Good news (green in chat messages, "resolve" for PagerDuty).
    pub fn is_good(self) -> bool {
        matches!(
            self,
            Self::BackupSucceeded | Self::BackupRecovered | Self::RestoreSucceeded | Self::Test
        )
    }

    /// A headline for people: "Backup failed".
    pub fn title(self) -> &'static str {
        match self {
            Self::BackupStarted => "Backup started",
            Self::BackupSucceeded => "Backup succeeded",
            Self::BackupFailed => "Backup failed",
            Self::BackupRecovered => "Backup recovered",
            Self::BackupMissed => "Backup missed",
            Self::BackupStale => "Backups are stale",
            Self::BackupSizeAnomaly => "Backup size anomaly",
            Self::BackupSlow => "Backup slow",
            Self::RestoreSucceeded => "Restore succeeded",
            Self::RestoreFailed => "Restore failed",
            Self::PruneFailed => "Prune failed",
            Self::VerifyFailed => "Restore drill failed",
            Self::VerifyRtoBreach => "Recovery time over target",
            Self::CopyFailed => "Copy failed",
            Self::AgentOffline => "Agent offline",
            Self::SecurityViolation => "Security violation",
            Self::Test => "Test notification",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notifier a plan's events go to, and which events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotifyRoute {
    /// The notifier's name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")
    )]
    pub notifier: String,
    /// The events it gets; empty: every problem and the recovery (heartbeat notifiers: each
    /// backup's start and outcome).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventKind>,
}

/// A plan's alerting: who is told, and when the plan counts as failing, missed or stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Where the plan's events go. A plan that names none uses the notifiers marked `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyRoute>,
    /// Alert only once this many backups in a row have failed.
    #[serde(default = "one")]
    pub after_failures: u32,
    /// While the plan stays failing or stale, the alert is sent again this often (`24h`, `30m`).
    #[serde(default = "day")]
    pub repeat: String,
    /// The plan is stale when its last success is older than this (`36h`); default: twice the
    /// schedule's interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// A scheduled backup that has not started this long after its fire time is missed
    /// (its agents are offline, or busy).
    #[serde(default = "quarter")]
    pub missed_after: String,
}

fn one() -> u32 {
    1
}
fn day() -> String {
    "24h".into()
}
fn quarter() -> String {
    "15m".into()
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            notify: Vec::new(),
            after_failures: one(),
            repeat: day(),
            max_age: None,
            missed_after: quarter(),
        }
    }
}

/// The longest duration an alert setting takes: a year.
const MAX_SECS: i64 = 366 * 24 * 3600;

/// `30s`, `15m`, `36h`, `7d`, `1h30m` (also ISO 8601 `PT15M`) as whole seconds, 1 s to a year.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let d: jiff::SignedDuration = s.trim().parse().map_err(|_| {
        format!("`{s}` is not a duration; write it like `30m`, `36h`, `7d` or `1h30m`")
    })?;
    let secs = d.as_secs();
    if secs < 1 {
        return Err(format!("`{s}` is too short; at least `1s`"));
    }
    if secs > MAX_SECS {
        return Err(format!("`{s}` is too long; at most a year (`8784h`)"));
    }
    Ok(secs)
}

impl Alerts {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn repeat_secs(&self) -> i64 {
        parse_duration(&self.repeat).unwrap_or(24 * 3600)
    }

    pub fn missed_after_secs(&self) -> i64 {
        parse_duration(&self.missed_after).unwrap_or(15 * 60)
    }

    /// How old the last success may be before the plan is stale: `max_age`, or twice the
    /// schedule's interval (the gap between its next two fire times), at least an hour.
    pub fn max_age_secs(&self, schedule: Option<&Schedule>, now: jiff::Timestamp) -> i64 {
        if let Some(s) = self.max_age.as_deref().and_then(|m| parse_duration(m).ok()) {
            return s;
        }
        let interval = schedule
            .map(|s| s.upcoming(now, 2))
            .filter(|u| u.len() == 2)
            .map(|u| (u[1].timestamp() - u[0].timestamp()).get_seconds())
            .unwrap_or(24 * 3600);
        (2 * interval).max(3600)
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, reason: String| {
            errs.push(FieldError {
                field: format!("alerts.{field}"),
                reason,
            })
        };
        if !(1..=1000).contains(&self.after_failures) {
            bad(
                "after_failures",
                format!("{} is out of range; use 1 to 1000", self.after_failures),
            );
        }
        for (field, v) in [
            ("repeat", Some(&self.repeat)),
            ("missed_after", Some(&self.missed_after)),
            ("max_age", self.max_age.as_ref()),
        ] {
            if let Some(Err(e)) = v.map(|v| parse_duration(v)) {
                bad(field, e);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.notify.iter().enumerate() {
            if !crate::plan::valid_name(&r.notifier) {
                bad(
                    &format!("notify[{i}].notifier"),
                    "name a notifier (lowercase letters, digits and `-`)".into(),
                );
            } else if !seen.insert(&r.notifier) {
                bad(
                    &format!("notify[{i}].notifier"),
                    format!(
                        "`{}` is named twice; list its events in one entry",
                        r.notifier
                    ),
                );
            }
            if r.events.contains(&EventKind::Test) {
                bad(
                    &format!("notify[{i}].events"),
                    "`test` is only sent by \"send a test\"".into(),
                );
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_people_write_them_and_bounded() {
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("PT2H"), Ok(7200));
        assert_eq!(parse_duration("36h"), Ok(36 * 3600));
        assert!(parse_duration("0s").unwrap_err().contains("at least"));
        assert!(parse_duration("9000h").unwrap_err().contains("at most"));
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
    }

    #[test]
    fn max_age_defaults_to_twice_the_schedule_interval() {
        let now: jiff::Timestamp = "2026-01-01T00:30:00Z".parse().unwrap();
        let hourly = Schedule::parse("@hourly", "UTC").unwrap();
        let daily = Schedule::parse("0 3 * * *", "UTC").unwrap();
        let a = Alerts::default();
        assert_eq!(a.max_age_secs(Some(&hourly), now), 7200);
        assert_eq!(a.max_age_secs(Some(&daily), now), 2 * 86400);
        let every_minute = Schedule::parse("* * * * *", "UTC").unwrap();
        assert_eq!(a.max_age_secs(Some(&every_minute), now), 3600);
        let set = Alerts {
            max_age: Some("3h".into()),
            ..Alerts::default()
        };
        assert_eq!(set.max_age_secs(Some(&hourly), now), 3 * 3600);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let a = Alerts {
            after_failures: 0,
            repeat: "often".into(),
            notify: vec![
                NotifyRoute {
                    notifier: "ops".into(),
                    events: vec![],
                },
                NotifyRoute {
                    notifier: "ops".into(),
                    events: vec![EventKind::Test],
                },
            ],
            ..Alerts::default()
        };
        let fields: Vec<String> = a.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "alerts.after_failures",
                "alerts.repeat",
                "alerts.notify[1].notifier",
                "alerts.notify[1].events"
            ]
        );
    }
}
