//! Backup plans: what to back up, where, when, and how long to keep it. The same struct serves
//! the REST API, the declarative config file and the CLI.

use serde::{Deserialize, Serialize};

use crate::alert::Alerts;
use crate::job::Backoff;
use crate::lifecycle::{Hooks, StepRetry};
use crate::retention::{KeepPolicy, parse_within};
use crate::schedule::Schedule;

/// A plan as users write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")
    )]
    pub name: String,
    /// Name of the source to back up.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")
    )]
    pub source: String,
    /// Name of the storage endpoint (repository) to back up into.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")
    )]
    pub endpoint: String,
    /// 5-field cron expression, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub schedule: String,
    /// IANA time zone the schedule is read in.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub retention: Retention,
    /// How often and how patiently a failed backup is retried.
    #[serde(default)]
    pub retry: Backoff,
    /// Commands run at the steps of each backup and restore (on the agent).
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// How often a failed step (a hook, the dump, the upload) is tried again within one
    /// attempt, before the attempt fails.
    #[serde(default, skip_serializing_if = "StepRetry::is_default")]
    pub step_retry: StepRetry,
    /// A second endpoint that receives a copy of every backup of this plan (the 3-2-1 rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopySpec>,
    /// Who is told about failures, and when the plan counts as missed or stale.
    #[serde(default, skip_serializing_if = "Alerts::is_default")]
    pub alerts: Alerts,
    /// Restore drills that prove the plan's backups restore, and measure how long it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::drill::VerifySpec>,
    /// Labels that group plans (`team = "payments"`): a user or token scoped to labels sees
    /// and acts on the plans that carry all of them, and no others.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Where a plan's backups are copied after each backup, and how long the copies are kept.
/// A copy that fails leaves the backup itself in place; the next backup copies what is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    /// The endpoint that receives the copies (not the plan's own endpoint).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 63, pattern = "^[a-z][a-z0-9-]*$")
    )]
    pub endpoint: String,
    /// How long the copies are kept; the plan's own retention when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

fn utc() -> String {
    "UTC".into()
}

/// zstd level for new data, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// The repository's default (zstd level 3).
    #[default]
    Auto,
    Off,
    #[serde(untagged)]
    Level(i32),
}

/// How long to keep a plan's backups: either OSB style (one period) or GFS rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "style", rename_all = "lowercase", deny_unknown_fields)]
pub enum Retention {
    /// Keep backups younger than `period` days or hours, or the last `period` backups.
    Period {
        period: u32,
        #[serde(rename = "type")]
        unit: PeriodUnit,
    },
    /// Grandfather-father-son: keep last / hourly / daily / weekly / monthly / yearly.
    Gfs(KeepPolicy),
}

impl Default for Retention {
    /// Two weeks of dailies, two months of weeklies, a year of monthlies.
    fn default() -> Self {
        Self::Gfs(KeepPolicy {
            last: Some(3),
            daily: Some(14),
            weekly: Some(8),
            monthly: Some(12),
            ..KeepPolicy::default()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum PeriodUnit {
    Days,
    Hours,
    Files,
}

impl Retention {
    /// The restic keep policy this retention means.
    /// What is wrong with these rules, if anything: (the field under `retention`, the reason).
    fn problem(&self) -> Option<(&'static str, String)> {
        match self {
            Retention::Period { period: 0, .. } => Some((".period", "must be at least 1".into())),
            Retention::Gfs(k) if k.is_empty() => Some((
                "",
                "keeps nothing; set at least one of last, hourly, daily, weekly, monthly, yearly, within".into(),
            )),
            Retention::Gfs(KeepPolicy { within: Some(w), .. }) => {
                parse_within(w).err().map(|e| (".within", e.to_string()))
            }
            _ => None,
        }
    }

    pub fn keep_policy(&self) -> KeepPolicy {
        match self {
            Self::Period { period, unit } => match unit {
                PeriodUnit::Files => KeepPolicy {
                    last: Some(*period),
                    ..KeepPolicy::default()
                },
                PeriodUnit::Days => KeepPolicy {
                    within: Some(format!("{period}d")),
                    // Never forget the newest backup, however old it is.
                    last: Some(1),
                    ..KeepPolicy::default()
                },
                PeriodUnit::Hours => KeepPolicy {
                    within: Some(format!("{period}h")),
                    last: Some(1),
                    ..KeepPolicy::default()
                },
            },
            Self::Gfs(k) => k.clone(),
        }
    }
}

/// One problem with one field, for a 422 answer or a config-file error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field's path, e.g. `schedule` or `retention.period`.
    pub field: String,
    pub reason: String,
}

impl PlanSpec {
    /// Every problem with the plan, by field; empty when it is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, reason: String| {
            errs.push(FieldError {
                field: field.into(),
                reason,
            })
        };
        if !valid_name(&self.name) {
            bad("name", NAME_RULE.into());
        }
        for reason in label_problems(self.labels.iter()) {
            bad("labels", reason);
        }
        if self.source.trim().is_empty() {
            bad("source", "name the source to back up".into());
        }
        if self.endpoint.trim().is_empty() {
            bad(
                "endpoint",
                "name the storage endpoint to back up into".into(),
            );
        }
        if let Some(c) = &self.copy {
            if c.endpoint.trim().is_empty() {
                bad(
                    "copy.endpoint",
                    "name the endpoint that receives the copies".into(),
                );
            } else if c.endpoint == self.endpoint {
                bad(
                    "copy.endpoint",
                    "is the plan's own endpoint; a copy must go to another one".into(),
                );
            }
        }
        if let Some(v) = &self.verify {
            for (field, reason) in v.problems() {
                bad(&format!("verify.{field}"), reason);
            }
        }
        if let Err(e) = Schedule::parse(&self.schedule, &self.timezone) {
            let field = if e.what.starts_with("timezone") {
                "timezone"
            } else {
                "schedule"
            };
            bad(field, e.to_string());
        }
        if let Compression::Level(l) = self.compression
            && !(1..=22).contains(&l)
        {
            bad(
                "compression",
                format!("zstd level {l} is out of range; use 1 to 22, \"auto\" or \"off\""),
            );
        }
        for (field, reason) in retry_problems(&self.retry) {
            bad(field, reason);
        }
        let copy_retention = self.copy.as_ref().and_then(|c| c.retention.as_ref());
        for (prefix, r) in [
            ("retention", Some(&self.retention)),
            ("copy.retention", copy_retention),
        ] {
            if let Some((sub, reason)) = r.and_then(Retention::problem) {
                bad(&format!("{prefix}{sub}"), reason);
            }
        }
        for (field, reason) in self
            .hooks
            .validate()
            .into_iter()
            .chain(self.step_retry.validate())
        {
            bad(&field, reason);
        }
        for e in self.alerts.validate() {
            bad(&e.field, e.reason);
        }
        errs
    }
}

/// The most attempts a plan's `retry` may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// The longest first wait between attempts: a day.
pub const MAX_RETRY_BASE_SECS: u64 = 24 * 3600;
/// The longest wait between attempts: a week. A job waiting longer blocks its plan (every
/// later fire is skipped while it is queued).
pub const MAX_RETRY_CAP_SECS: u64 = 7 * 24 * 3600;

/// What is wrong with a plan's `retry`, as (field, reason).
fn retry_problems(r: &Backoff) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !(1..=MAX_ATTEMPTS).contains(&r.attempts) {
        out.push((
            "retry.attempts",
            format!(
                "{} is out of range: 1 to {MAX_ATTEMPTS} attempts in all (1 means no retries)",
                r.attempts
            ),
        ));
    }
    if !(1..=MAX_RETRY_BASE_SECS).contains(&r.base_secs) {
        out.push((
            "retry.base_secs",
            format!(
                "{} is out of range: the first wait is 1 to {MAX_RETRY_BASE_SECS} seconds (a day)",
                r.base_secs
            ),
        ));
    } else if !(r.base_secs..=MAX_RETRY_CAP_SECS).contains(&r.cap_secs) {
        out.push((
            "retry.cap_secs",
            format!(
                "{} is out of range: the longest wait is base_secs ({}) to {MAX_RETRY_CAP_SECS} \
                 seconds (7 days)",
                r.cap_secs, r.base_secs
            ),
        ));
    }
    out
}

/// The longest source or endpoint URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Labels on one source, and the longest key and value, in bytes.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY_LEN: usize = 63;
pub const MAX_LABEL_VALUE_LEN: usize = 255;

/// Why a URL is refused, if it is too long.
pub fn url_too_long(url: &str) -> Option<String> {
    (url.len() > MAX_URL_LEN).then(|| {
        format!(
            "is {} bytes; a URL may be at most {MAX_URL_LEN} bytes",
            url.len()
        )
    })
}

/// What is wrong with a set of labels (source or agent), if anything.
pub fn label_problems<'a>(
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Vec<String> {
    let mut out = Vec::new();
    if labels.len() > MAX_LABELS {
        out.push(format!(
            "{} labels; at most {MAX_LABELS} are allowed",
            labels.len()
        ));
        return out;
    }
    let shown = |s: &str| {
        let mut end = s.len().min(40);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        if end < s.len() {
            format!("`{}…`", &s[..end])
        } else {
            format!("`{s}`")
        }
    };
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY_LEN {
            out.push(format!(
                "label key {} is {} bytes; keys are 1 to {MAX_LABEL_KEY_LEN} bytes",
                shown(k),
                k.len()
            ));
        }
        if v.len() > MAX_LABEL_VALUE_LEN {
            out.push(format!(
                "the value of label {} is {} bytes; values are at most {MAX_LABEL_VALUE_LEN} bytes",
                shown(k),
                v.len()
            ));
        }
    }
    out
}

const NAME_RULE: &str =
    "1 to 63 characters: lowercase letters, digits and `-`, starting with a letter";

/// Names of plans, sources and endpoints: usable in URLs, file names and tags as they are.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Result<PlanSpec, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_plan_gets_sensible_defaults() {
        let p = plan(
            r#"{"name": "shop-nightly", "source": "shop", "endpoint": "s3", "schedule": "@daily"}"#,
        )
        .unwrap();
        assert_eq!(p.timezone, "UTC");
        assert_eq!(p.compression, Compression::Auto);
        assert!(p.validate().is_empty());
        assert_eq!(p.retention.keep_policy().daily, Some(14));
    }

    #[test]
    fn osb_and_gfs_retention() {
        let p = plan(
            r#"{"name": "a", "source": "s", "endpoint": "e", "schedule": "0 3 * * *",
                "retention": {"style": "period", "period": 7, "type": "DAYS"}, "compression": 9}"#,
        )
        .unwrap();
        let k = p.retention.keep_policy();
        assert_eq!((k.within.as_deref(), k.last), (Some("7d"), Some(1)));
        assert_eq!(p.compression, Compression::Level(9));
        let p = plan(
            r#"{"name": "a", "source": "s", "endpoint": "e", "schedule": "@hourly",
                "retention": {"style": "gfs", "hourly": 24, "daily": 7}, "compression": "off"}"#,
        )
        .unwrap();
        assert_eq!(p.retention.keep_policy().hourly, Some(24));
        assert_eq!(p.compression, Compression::Off);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = plan(
            r#"{"name": "a", "source": "s", "endpoint": "e", "schedule": "@daily", "cron": "x"}"#,
        )
        .unwrap_err();
        assert!(e.contains("unknown field `cron`"), "{e}");
    }

    fn fields(p: &PlanSpec) -> Vec<String> {
        p.validate().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn retries_are_bounded() {
        let with_retry = |r: &str| {
            plan(&format!(
                r#"{{"name": "a", "source": "s", "endpoint": "e", "schedule": "@daily", "retry": {r}}}"#
            ))
            .unwrap()
        };
        // The values that once left a job queued for 18 million years, or retrying for ever.
        let p = with_retry(
            r#"{"attempts": 5, "base_secs": 18446744073709551615, "cap_secs": 18446744073709551615}"#,
        );
        let errs = p.validate();
        assert_eq!(fields(&p), ["retry.base_secs"], "{errs:?}");
        assert!(errs[0].reason.contains("86400"), "{errs:?}");
        let p = with_retry(r#"{"attempts": 4294967295, "base_secs": 30, "cap_secs": 1800}"#);
        assert_eq!(fields(&p), ["retry.attempts"]);
        let p = with_retry(r#"{"attempts": 3, "base_secs": 30, "cap_secs": 18446744073709551615}"#);
        let errs = p.validate();
        assert_eq!(fields(&p), ["retry.cap_secs"], "{errs:?}");
        assert!(errs[0].reason.contains("604800"), "{errs:?}");
        for r in [
            r#"{"attempts": 0, "base_secs": 30, "cap_secs": 1800}"#,
            r#"{"attempts": 101, "base_secs": 30, "cap_secs": 1800}"#,
            r#"{"attempts": 3, "base_secs": 0, "cap_secs": 1800}"#,
            r#"{"attempts": 3, "base_secs": 60, "cap_secs": 30}"#,
        ] {
            assert_eq!(with_retry(r).validate().len(), 1, "{r} was accepted");
        }
        // The bounds themselves are fine, and so is the default.
        let p = with_retry(r#"{"attempts": 100, "base_secs": 86400, "cap_secs": 604800}"#);
        assert!(p.validate().is_empty(), "{:?}", p.validate());
        let p = with_retry(r#"{"attempts": 1, "base_secs": 1, "cap_secs": 1}"#);
        assert!(p.validate().is_empty(), "{:?}", p.validate());
        assert!(retry_problems(&Backoff::default()).is_empty());
        // A step's retries are bounded the same way.
        let p = plan(
            r#"{"name": "a", "source": "s", "endpoint": "e", "schedule": "@daily",
                "step_retry": {"attempts": 3, "base_ms": 1000, "cap_ms": 18446744073709551615}}"#,
        )
        .unwrap();
        assert_eq!(fields(&p), ["step_retry.cap_ms"]);
    }

    #[test]
    fn urls_and_labels_have_size_limits() {
        assert_eq!(url_too_long(&"x".repeat(MAX_URL_LEN)), None);
        let e = url_too_long(&"x".repeat(1 << 20)).unwrap();
        assert!(e.contains("1048576 bytes") && e.contains("2048"), "{e}");

        let labels = |pairs: Vec<(String, String)>| -> Vec<String> {
            let m: std::collections::BTreeMap<String, String> = pairs.into_iter().collect();
            label_problems(m.iter())
        };
        let ok = (0..MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".repeat(MAX_LABEL_VALUE_LEN)))
            .collect::<Vec<_>>();
        assert!(labels(ok).is_empty());
        let many = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(labels(many)[0].contains("33 labels"));
        let e = labels(vec![("k".repeat(64), "v".into())]);
        assert!(
            e.len() == 1 && e[0].contains("64 bytes") && e[0].contains('…'),
            "{e:?}"
        );
        let e = labels(vec![(String::new(), "v".into())]);
        assert!(e.len() == 1 && e[0].contains("1 to 63"), "{e:?}");
        let e = labels(vec![("site".into(), "é".repeat(200))]);
        assert!(
            e.len() == 1 && e[0].contains("`site`") && e[0].contains("400 bytes"),
            "{e:?}"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = plan(
            r#"{"name": "Bad Name", "source": "", "endpoint": "e", "schedule": "61 * * * *",
                "timezone": "Nowhere/City", "compression": 40,
                "retention": {"style": "period", "period": 0, "type": "FILES"}}"#,
        )
        .unwrap();
        let fields: Vec<String> = p.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "source",
                "timezone",
                "compression",
                "retention.period"
            ]
        );
        let p = plan(r#"{"name": "a", "source": "s", "endpoint": "e", "schedule": "61 * * * *"}"#)
            .unwrap();
        let errs = p.validate();
        assert_eq!(errs[0].field, "schedule");
        assert!(errs[0].reason.contains("61 * * * *"), "{errs:?}");
    }
}
