//! Restore drills: what a drill checks, what it found, and its report.
//!
//! A drill restores a restore point into a throwaway server and checks the copy against what the
//! backup counted in its streams (the snapshot's manifest), runs the user's SQL checks, and
//! measures the recovery time. A check drill reads the repository's data instead. Every check
//! is recorded with what was expected and what was found, so that a report says exactly what
//! was proven.

use serde::{Deserialize, Serialize};

use crate::InputError;

/// What a drill does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DrillMode {
    /// Restore into a throwaway server and check the copy.
    #[default]
    Restore,
    /// Read the restore point's data from the repository and check it, without restoring.
    Check,
}

/// The kinds of check a drill makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The repository's structure for this restore point (trees, index, packs present).
    Structure,
    /// Every byte of the restore point read, decrypted and authenticated; sizes as recorded.
    Read,
    /// The throwaway server started (and the disk had room for it).
    Scratch,
    /// The restore tool ran to its end without an error.
    Restore,
    /// Rows per table equal the backup's count.
    Rows,
    /// Schema objects per kind equal the backup's count.
    Objects,
    /// Keys per database (Redis) within what the backup holds.
    Keys,
    /// Files, directories, links and bytes (folders) equal the backup's.
    Files,
    /// The database engine's own integrity check (SQLite `PRAGMA integrity_check`).
    Integrity,
    /// A user's SQL check.
    Sql,
    /// The restore's wall time within the plan's `rto_target_secs`.
    Rto,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Structure => "structure",
            Self::Read => "read",
            Self::Scratch => "scratch",
            Self::Restore => "restore",
            Self::Rows => "rows",
            Self::Objects => "objects",
            Self::Keys => "keys",
            Self::Files => "files",
            Self::Integrity => "integrity",
            Self::Sql => "sql",
            Self::Rto => "rto",
        }
    }
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckResult {
    pub kind: CheckKind,
    /// What was checked, e.g. `public.orders` or the user's check's name.
    pub name: String,
    pub passed: bool,
    /// What the check expected, e.g. `1000 rows`.
    pub expected: String,
    /// What it found.
    pub actual: String,
    /// Why it failed, or a note on how it passed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl CheckResult {
    /// "expected 1000 rows, found 999 rows (why)".
    pub fn outcome(&self) -> String {
        let mut s = format!("expected {}, found {}", self.expected, self.actual);
        if !self.detail.is_empty() {
            s.push_str(&format!(" ({})", self.detail));
        }
        s
    }
}

/// A user's SQL check: a query whose first column of its first row must meet `expect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// A name for reports; the query itself when empty.
    #[serde(default)]
    pub name: String,
    pub sql: String,
    /// `> 0`, `>= 10`, `< 5`, `<= 5`, `= ok`, `!= 0`, or a plain value meaning `=`.
    pub expect: String,
}

impl SqlCheck {
    /// The check's name in reports.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.sql
        } else {
            &self.name
        }
    }

    /// Refuses an expectation that cannot be read, naming the check.
    pub fn validate(&self) -> Result<(), InputError> {
        if self.sql.trim().is_empty() {
            return Err(InputError::new(
                format!("SQL check `{}`", self.label()),
                "its `sql` is empty; write the query whose first value is checked",
            ));
        }
        Expect::parse(&self.expect).map(|_| ()).map_err(|reason| {
            InputError::new(format!("SQL check `{}`: expect", self.label()), reason)
        })
    }
}

/// A plan's restore drills (`verify`): when they run, what they restore and what they check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// 5-field cron expression or `@daily`-style preset; without one, drills run only when
    /// asked (API, UI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub mode: DrillMode,
    /// Drill one of the newest this many restore points, drawn at random; 1: the newest.
    #[serde(default = "one")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub random_of_last: u32,
    /// `check` mode: each run reads the data of one part of this many of the packs (restic's
    /// `--read-data-subset=n/t`, the part going round), so the whole repository is read every
    /// `parts` runs; 1: all of it every run.
    #[serde(default = "one")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub parts: u32,
    /// SQL run against the restored copy, each with its expectation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<SqlCheck>,
    /// A restore slower than this fails the drill (`rto` check, `verify.rto_breach` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub rto_target_secs: Option<u64>,
    /// Restore into this source (a PostgreSQL or MariaDB server kept for drills) instead of a
    /// throwaway server next to the agent: each drill makes a database of its own there and
    /// drops it afterwards. Never the plan's own server and database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

fn one() -> u32 {
    1
}

impl Default for VerifySpec {
    fn default() -> Self {
        Self {
            schedule: None,
            timezone: utc(),
            mode: DrillMode::Restore,
            random_of_last: 1,
            parts: 1,
            checks: Vec::new(),
            rto_target_secs: None,
            into: None,
        }
    }
}

impl VerifySpec {
    /// What is wrong, as (field below `verify.`, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(s) = &self.schedule
            && let Err(e) = crate::Schedule::parse(s, &self.timezone)
        {
            let field = if e.what.starts_with("timezone") {
                "timezone"
            } else {
                "schedule"
            };
            out.push((field.to_string(), e.to_string()));
        }
        if !(1..=1000).contains(&self.random_of_last) {
            out.push((
                "random_of_last".into(),
                format!(
                    "{} is out of range; draw among 1 to 1000 of the newest restore points",
                    self.random_of_last
                ),
            ));
        }
        if !(1..=1000).contains(&self.parts) {
            out.push((
                "parts".into(),
                format!(
                    "{} is out of range; read the repository in 1 to 1000 parts",
                    self.parts
                ),
            ));
        }
        if self.rto_target_secs == Some(0) {
            out.push((
                "rto_target_secs".into(),
                "0 seconds can never be met; give the longest restore you accept".into(),
            ));
        }
        if self.mode == DrillMode::Check && !self.checks.is_empty() {
            out.push((
                "checks".into(),
                "a `check` drill restores nothing to run SQL against; use mode `restore`".into(),
            ));
        }
        if let Some(into) = &self.into {
            if !crate::plan::valid_name(into) {
                out.push((
                    "into".into(),
                    format!("`{into}` is not a source name; name the scratch server's source"),
                ));
            } else if self.mode == DrillMode::Check {
                out.push((
                    "into".into(),
                    "a `check` drill restores nothing; use mode `restore`, or leave `into` out"
                        .into(),
                ));
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            if let Err(e) = c.validate() {
                out.push((format!("checks[{i}]"), e.to_string()));
            }
        }
        out
    }
}

/// An expectation on one value.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    op: Op,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Expect {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (op, rest) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("!=", Op::Ne),
            ("<>", Op::Ne),
            ("==", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
            ("=", Op::Eq),
        ]
        .iter()
        .find_map(|(p, op)| s.strip_prefix(p).map(|r| (*op, r.trim())))
        .unwrap_or((Op::Eq, s));
        if rest.is_empty() {
            return Err(format!(
                "`{s}` has no value to compare with; write for example `> 0`, `= 42` or `= ok`"
            ));
        }
        if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le) && rest.parse::<f64>().is_err() {
            return Err(format!(
                "`{s}` compares with `{rest}`, which is not a number; `>`, `>=`, `<` and `<=` \
                 need a number"
            ));
        }
        Ok(Self {
            op,
            value: rest.to_string(),
        })
    }

    /// Whether `actual` meets the expectation: numbers compare as numbers, anything else as
    /// text.
    pub fn holds(&self, actual: &str) -> bool {
        let actual = actual.trim();
        match (actual.parse::<f64>(), self.value.parse::<f64>()) {
            (Ok(a), Ok(e)) => match self.op {
                Op::Eq => a == e,
                Op::Ne => a != e,
                Op::Gt => a > e,
                Op::Ge => a >= e,
                Op::Lt => a < e,
                Op::Le => a <= e,
            },
            _ => match self.op {
                Op::Eq => actual == self.value,
                Op::Ne => actual != self.value,
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        };
        write!(f, "{op} {}", self.value)
    }
}

/// Where a drill's time went, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillTimings {
    /// Starting the throwaway server (`initdb` and start-up, ...).
    pub scratch_start_secs: f64,
    /// The restore's wall time: the recovery time measured (RTO).
    pub restore_secs: f64,
    /// The restore's phases where the engine has them, in order: (phase, seconds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<(String, f64)>,
    /// The checks after the restore.
    pub checks_secs: f64,
    /// The whole drill.
    pub total_secs: f64,
}

/// What one drill found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillReport {
    /// The restore point's snapshot id.
    pub snapshot: String,
    pub mode: DrillMode,
    /// `postgres`, `mysql`, ... as the snapshot records it.
    pub source: String,
    /// The database, file or folder the backup was made of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub passed: bool,
    /// Where the copy was restored, e.g. "a throwaway PostgreSQL 15 in /tmp/... (socket only)".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scratch: String,
    /// When the drill started and ended (RFC 3339, UTC).
    pub started_at: String,
    pub finished_at: String,
    /// The recovery time measured, when a restore ran to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_target_secs: Option<u64>,
    pub timings: DrillTimings,
    pub checks: Vec<CheckResult>,
    /// Things the drill could not check, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl DrillReport {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// One line naming the first failed check, or saying the drill passed.
    pub fn summary(&self) -> String {
        let short = &self.snapshot[..self.snapshot.len().min(8)];
        match self.failures().next() {
            None => {
                let rto = self
                    .rto_secs
                    .map(|s| format!(", restored in {s:.1} s"))
                    .unwrap_or_default();
                format!(
                    "drill of restore point {short} passed: {} checks{rto}",
                    self.checks.len()
                )
            }
            Some(c) => {
                let more = self.failures().count() - 1;
                let more = if more > 0 {
                    format!(" (and {more} more failed check(s))")
                } else {
                    String::new()
                };
                format!(
                    "drill of restore point {short} failed: {} check `{}`: {}{more}",
                    c.kind.as_str(),
                    c.name,
                    c.outcome()
                )
            }
        }
    }

    /// The report as text for people and audits.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(
            &mut out,
            format!("Restore drill of restore point {}", self.snapshot),
        );
        line(
            &mut out,
            format!(
                "Result:    {}",
                if self.passed { "PASSED" } else { "FAILED" }
            ),
        );
        line(
            &mut out,
            format!(
                "Mode:      {}",
                match self.mode {
                    DrillMode::Restore => "restore into a throwaway copy",
                    DrillMode::Check => "read and check the repository's data",
                }
            ),
        );
        line(
            &mut out,
            format!(
                "Source:    {}{}",
                self.source,
                self.database
                    .as_deref()
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default()
            ),
        );
        if !self.scratch.is_empty() {
            line(&mut out, format!("Copy:      {}", self.scratch));
        }
        line(&mut out, format!("Started:   {}", self.started_at));
        line(&mut out, format!("Finished:  {}", self.finished_at));
        if let Some(rto) = self.rto_secs {
            let target = self
                .rto_target_secs
                .map(|t| format!(" (target {t} s)"))
                .unwrap_or_default();
            line(&mut out, format!("Restored in {rto:.1} s{target}"));
            for (p, s) in &self.timings.phases {
                line(&mut out, format!("  {p}: {s:.1} s"));
            }
        }
        line(
            &mut out,
            format!(
                "Time:      {:.1} s in all (copy started in {:.1} s, checks {:.1} s)",
                self.timings.total_secs, self.timings.scratch_start_secs, self.timings.checks_secs
            ),
        );
        line(&mut out, String::new());
        line(&mut out, format!("Checks ({}):", self.checks.len()));
        for c in &self.checks {
            line(
                &mut out,
                format!(
                    "  [{}] {:<9} {}: {}",
                    if c.passed { "ok" } else { "FAILED" },
                    c.kind.as_str(),
                    c.name,
                    c.outcome()
                ),
            );
        }
        if !self.notes.is_empty() {
            line(&mut out, String::new());
            line(&mut out, "Notes:".into());
            for n in &self.notes {
                line(&mut out, format!("  - {n}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_compare_numbers_as_numbers_and_text_as_text() {
        let e = |s: &str| Expect::parse(s).unwrap();
        assert!(e("> 0").holds("3"));
        assert!(!e("> 0").holds("0"));
        assert!(e(">=2").holds("2.0"));
        assert!(e("< 10").holds(" 9 "));
        assert!(e("42").holds("42"));
        assert!(e("= ok").holds("ok"));
        assert!(!e("= ok").holds("not ok"));
        assert!(e("!= 0").holds("1"));
        assert!(!e("> 0").holds("many"));
        assert_eq!(e(">= 10").to_string(), ">= 10");
    }

    #[test]
    fn unreadable_expectations_are_refused_with_the_reason() {
        assert!(Expect::parse(">").unwrap_err().contains("no value"));
        assert!(
            Expect::parse("> lots")
                .unwrap_err()
                .contains("not a number")
        );
        let c = SqlCheck {
            name: "recent orders".into(),
            sql: "select 1".into(),
            expect: "> x".into(),
        };
        let err = c.validate().unwrap_err();
        assert_eq!(err.what, "SQL check `recent orders`: expect");
    }

    #[test]
    fn the_summary_names_the_first_failed_check() {
        let mut r = DrillReport {
            snapshot: "0123456789abcdef".into(),
            mode: DrillMode::Restore,
            source: "postgres".into(),
            database: Some("shop".into()),
            passed: false,
            scratch: String::new(),
            started_at: "2026-12-04T10:00:00Z".into(),
            finished_at: "2026-12-04T10:01:00Z".into(),
            rto_secs: Some(12.5),
            rto_target_secs: None,
            timings: DrillTimings::default(),
            checks: vec![
                CheckResult {
                    kind: CheckKind::Restore,
                    name: "psql".into(),
                    passed: true,
                    expected: "exit 0".into(),
                    actual: "exit 0".into(),
                    detail: String::new(),
                },
                CheckResult {
                    kind: CheckKind::Rows,
                    name: "public.orders".into(),
                    passed: false,
                    expected: "1000 rows".into(),
                    actual: "999 rows".into(),
                    detail: String::new(),
                },
            ],
            notes: vec![],
        };
        assert_eq!(
            r.summary(),
            "drill of restore point 01234567 failed: rows check `public.orders`: expected 1000 rows, found 999 rows"
        );
        assert!(r.text().contains("[FAILED] rows      public.orders"));
        r.checks.pop();
        r.passed = true;
        assert_eq!(
            r.summary(),
            "drill of restore point 01234567 passed: 1 checks, restored in 12.5 s"
        );
    }
}
