//! What a capability may do to a repository, decided without I/O: the proxy asks here before
//! it touches the storage, and again about an uploaded snapshot once it has read it.

use holdfast_engine::repo::raw::{FileType, SnapshotFacts, Timestamp};
use serde::{Deserialize, Serialize};

/// What a capability is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read, list, and add files that are not there yet.
    Backup,
    /// Read and list only.
    Restore,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
        }
    }
}

/// A request of restic's REST protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `HEAD`/`GET` of a file, or the listing of a type.
    Read,
    /// `POST` of a file.
    Add,
    /// `DELETE` of a file.
    Delete,
    /// `POST /?create=true`: a new repository.
    Create,
}

/// A refusal: a short reason (the metric's label, the audit log's outcome) and what the
/// client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// How far an uploaded snapshot's time may lie outside its job's run (clocks differ a little).
pub const SKEW_MS: i64 = 5 * 60 * 1000;

/// Whether `access` allows `op` on a file of type `t` (`None`: a type restic has but Holdfast
/// keeps none of, `locks`).
pub fn decide(access: Access, op: Op, t: Option<FileType>) -> Result<(), Refusal> {
    let ro = |what: &str| {
        Refusal::new(
            "read-only",
            format!("{what} through the server's proxy: agents add backups, nothing else"),
        )
    };
    match (op, t) {
        (Op::Read, _) => Ok(()),
        (Op::Create, _) => Err(Refusal::new(
            "create",
            "the server creates this endpoint's repository itself, before it hands out a \
             backup; agents cannot create or replace it",
        )),
        (Op::Delete, _) => Err(Refusal::new(
            "delete",
            "nothing can be deleted through the server's proxy: retention and prune run on the \
             server",
        )),
        (Op::Add, _) if access == Access::Restore => Err(ro("a restore cannot write")),
        (Op::Add, None) => Err(Refusal::new(
            "locks",
            "Holdfast's repositories are used without lock files; none can be added",
        )),
        (Op::Add, Some(FileType::Config)) => Err(ro("the repository's config cannot be written")),
        (Op::Add, Some(FileType::Key)) => Err(ro("keys cannot be added or changed")),
        (Op::Add, Some(_)) => Ok(()),
    }
}

/// What an uploaded snapshot's time is checked against.
pub enum Origin<'a> {
    /// A backup: made during the job's run, from `started` (Unix ms) to `now`.
    Run { started: i64, now: i64 },
    /// A copy: the same time and tree as one of these snapshots (by id) of the plan's
    /// endpoint.
    CopyOf(&'a [(String, SnapshotFacts)]),
}

/// Whether an uploaded snapshot belongs to the capability's job: tagged with its plan (and,
/// for a plan without a backup hook, its source's kind), and made during the job's run, or,
/// for a copy, the copy of a restore point the plan's endpoint holds (then its id).
pub fn check_snapshot<'a>(
    facts: &SnapshotFacts,
    plan: &str,
    source_kind: Option<&str>,
    origin: Origin<'a>,
) -> Result<Option<&'a str>, Refusal> {
    let has = |tag: &str| facts.tags.iter().any(|t| t == tag);
    if !has(&format!("plan={plan}")) {
        return Err(Refusal::new(
            "snapshot-plan",
            format!(
                "the snapshot is not tagged `plan={plan}`: this job may add only its own plan's backups"
            ),
        ));
    }
    if let Some(kind) = source_kind
        && !has(&format!("source={kind}"))
    {
        return Err(Refusal::new(
            "snapshot-source",
            format!("the snapshot is not tagged `source={kind}`, the plan's source kind"),
        ));
    }
    match origin {
        Origin::Run { started, now } => {
            let t = facts.time.as_millisecond();
            if t < started - SKEW_MS || t > now + SKEW_MS {
                return Err(Refusal::new(
                    "snapshot-time",
                    format!(
                        "the snapshot's time {} is outside this job's run (from {} to now, give or take {} minutes)",
                        facts.time,
                        Timestamp::from_millisecond(started).unwrap_or_default(),
                        SKEW_MS / 60_000
                    ),
                ));
            }
        }
        Origin::CopyOf(originals) => {
            let original = |(_, o): &&(String, SnapshotFacts)| {
                o.time == facts.time
                    && o.tree == facts.tree
                    && o.tags.iter().any(|t| *t == format!("plan={plan}"))
            };
            return match originals.iter().find(original) {
                Some((id, _)) => Ok(Some(id)),
                None => Err(Refusal::new(
                    "snapshot-copy",
                    format!(
                        "the snapshot of {} is no copy of a restore point of plan `{plan}` on \
                         its endpoint",
                        facts.time
                    ),
                )),
            };
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_capability_reads_and_adds_but_never_deletes_or_touches_keys_and_config() {
        use FileType as T;
        for t in [T::Pack, T::Index, T::Snapshot, T::Key, T::Config] {
            assert!(decide(Access::Backup, Op::Read, Some(t)).is_ok());
            assert_eq!(
                decide(Access::Backup, Op::Delete, Some(t))
                    .unwrap_err()
                    .reason,
                "delete"
            );
            assert_eq!(
                decide(Access::Restore, Op::Add, Some(t))
                    .unwrap_err()
                    .reason,
                "read-only"
            );
        }
        for t in [T::Pack, T::Index, T::Snapshot] {
            assert!(decide(Access::Backup, Op::Add, Some(t)).is_ok());
        }
        for t in [T::Key, T::Config] {
            assert_eq!(
                decide(Access::Backup, Op::Add, Some(t)).unwrap_err().reason,
                "read-only"
            );
        }
        assert_eq!(
            decide(Access::Backup, Op::Add, None).unwrap_err().reason,
            "locks"
        );
        assert_eq!(
            decide(Access::Backup, Op::Create, None).unwrap_err().reason,
            "create"
        );
    }

    fn facts(tags: &[&str], at_ms: i64) -> SnapshotFacts {
        SnapshotFacts {
            time: Timestamp::from_millisecond(at_ms).unwrap(),
            tree: format!("tree-{at_ms}"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            hostname: "db1".into(),
        }
    }

    #[test]
    fn a_snapshot_must_carry_its_plan_and_source_and_a_time_within_the_job() {
        let started = 1_800_000_000_000;
        let now = started + 3_600_000;
        let good = facts(
            &["holdfast", "plan=orders", "source=postgres"],
            started + 10,
        );
        assert!(
            check_snapshot(
                &good,
                "orders",
                Some("postgres"),
                Origin::Run { started, now }
            )
            .is_ok()
        );
        // A backup hook's snapshot says `source=command`: then only the plan is checked.
        assert!(check_snapshot(&good, "orders", None, Origin::Run { started, now }).is_ok());
        let other = facts(&["plan=payroll", "source=postgres"], started);
        assert_eq!(
            check_snapshot(
                &other,
                "orders",
                Some("postgres"),
                Origin::Run { started, now }
            )
            .unwrap_err()
            .reason,
            "snapshot-plan"
        );
        let kind = facts(&["plan=orders", "source=redis"], started);
        assert_eq!(
            check_snapshot(
                &kind,
                "orders",
                Some("postgres"),
                Origin::Run { started, now }
            )
            .unwrap_err()
            .reason,
            "snapshot-source"
        );
        let year = 365 * 24 * 3_600_000;
        for at in [now + year, started - year, now + SKEW_MS + 1] {
            let f = facts(&["plan=orders", "source=postgres"], at);
            assert_eq!(
                check_snapshot(&f, "orders", Some("postgres"), Origin::Run { started, now })
                    .unwrap_err()
                    .reason,
                "snapshot-time"
            );
        }
    }

    #[test]
    fn a_copy_must_be_of_a_restore_point_of_the_plan_on_its_endpoint() {
        let at = 1_800_000_000_000;
        let original = facts(&["plan=orders", "source=postgres"], at);
        let other_plan = facts(&["plan=payroll", "source=postgres"], at + 1);
        let held = [
            ("a".to_string(), original.clone()),
            ("b".to_string(), other_plan.clone()),
        ];
        // An old restore point may be copied at any time: its time is not the job's.
        assert_eq!(
            check_snapshot(&original, "orders", None, Origin::CopyOf(&held)),
            Ok(Some("a"))
        );
        let mut forged = original.clone();
        forged.tree = "another-tree".into();
        let mut moved = original.clone();
        moved.time = Timestamp::from_millisecond(at + 60_000).unwrap();
        let mut relabelled = other_plan.clone();
        relabelled.tags = vec!["plan=orders".into()];
        for f in [forged, moved, relabelled] {
            assert_eq!(
                check_snapshot(&f, "orders", None, Origin::CopyOf(&held))
                    .unwrap_err()
                    .reason,
                "snapshot-copy"
            );
        }
    }
}
