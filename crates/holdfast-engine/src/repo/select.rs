//! Which snapshot a command means: restic's snapshot filters (`--source`, `--tag`, `--host`),
//! and for `latest` the restore target's kind and database. `latest` that could mean the
//! newest snapshot of more than one source is refused, naming them.

use std::collections::BTreeMap;

use holdfast_core::{InputError, SourceKind, SourceSpec};

use super::SnapshotInfo;
use crate::error::{Error, Result};

/// Filters a snapshot must pass, as restic's `--host` and `--tag`, plus Holdfast's `--source`.
/// Every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// The source: its label as `holdfast snapshots` shows it (`postgres:db1:5432/shop`), its
    /// database, file, folder or command name (`shop`), or its kind (`postgres`).
    pub source: Option<String>,
    /// `KEY=VALUE` tags the snapshot carries, all of them (`plan=shop-nightly`, `env=prod`).
    pub tags: Vec<(String, String)>,
    /// The host the backup ran on (restic's host), or the database server's host.
    pub host: Option<String>,
}

impl SnapshotFilter {
    pub fn is_empty(&self) -> bool {
        self.source.is_none() && self.tags.is_empty() && self.host.is_none()
    }

    pub fn matches(&self, s: &SnapshotInfo) -> bool {
        let meta = s.meta.as_ref();
        let source_ok = self.source.as_deref().is_none_or(|want| {
            s.label == want
                || meta.is_some_and(|m| m.source == want || m.database.as_deref() == Some(want))
        });
        let tags_ok = self.tags.iter().all(|(k, v)| {
            let tag = format!("{k}={}", v.replace(',', ";"));
            s.tags.contains(&tag)
        });
        let host_ok = self.host.as_deref().is_none_or(|want| {
            s.hostname == want
                || meta.and_then(|m| m.db_host.as_deref()).is_some_and(|h| {
                    h == want || h.rsplit_once(':').is_some_and(|(host, _)| host == want)
                })
        });
        source_ok && tags_ok && host_ok
    }

    /// The filters as they are written on the command line, e.g. `--source shop --tag env=prod`.
    fn flags(&self) -> String {
        let mut f = Vec::new();
        if let Some(s) = &self.source {
            f.push(format!("--source {s}"));
        }
        for (k, v) in &self.tags {
            f.push(format!("--tag {k}={v}"));
        }
        if let Some(h) = &self.host {
            f.push(format!("--host {h}"));
        }
        f.join(" ")
    }
}

/// What a restore target says about the snapshot `latest` should be: its kind, and the
/// database (file, folder) it is written to. `None` for a `cmd:` target, which takes any.
fn wanted(target: &SourceSpec) -> Option<(SourceKind, Option<String>)> {
    let database = match target {
        SourceSpec::Postgres(a) | SourceSpec::Mysql(a) => a.database.clone(),
        SourceSpec::Sqlite { path } | SourceSpec::Folder { path } => {
            Some(path.display().to_string())
        }
        SourceSpec::Redis { .. } => None,
        SourceSpec::Command { .. } => return None,
    };
    Some((target.kind(), database))
}

/// Picks the snapshot `query` (a full id, a unique id prefix, or `latest`) means among
/// `snaps` (oldest first), in the repository named `repo`.
///
/// `latest` is the newest snapshot passing `filter`; with a `target`, the newest of the
/// target's kind (a folder target takes any kind when no folder snapshot matches: any snapshot
/// can be written out as files), of the target's database when one has it (otherwise a
/// restore into a new database takes the newest of the one source of that kind). When what is
/// left comes from more than one source, `latest` is ambiguous: the error lists the newest
/// snapshot of each and says which filter to add.
pub(crate) fn pick(
    snaps: Vec<SnapshotInfo>,
    query: &str,
    filter: &SnapshotFilter,
    target: Option<&SourceSpec>,
    repo: &str,
) -> Result<SnapshotInfo> {
    let with_filters = |q: &str| {
        if filter.is_empty() {
            q.to_string()
        } else {
            format!("{q} (with {})", filter.flags())
        }
    };
    let not_found = |q: &str| Error::SnapshotNotFound {
        query: with_filters(q),
        repo: repo.to_string(),
    };
    let mut cands: Vec<SnapshotInfo> = snaps.into_iter().filter(|s| filter.matches(s)).collect();
    if query != "latest" {
        let mut matches = cands.into_iter().filter(|s| s.id.starts_with(query));
        let first = matches.next().ok_or_else(|| not_found(query))?;
        if matches.next().is_some() {
            return Err(Error::Input(InputError::new(
                format!("snapshot `{query}`"),
                "matches more than one snapshot; give more characters of the id",
            )));
        }
        return Ok(first);
    }

    let mut narrowed_by = String::new();
    if let Some((kind, database)) = target.and_then(wanted) {
        let of_kind = |s: &SnapshotInfo| s.meta.as_ref().is_some_and(|m| m.source == kind.as_str());
        if cands.iter().any(of_kind) {
            cands.retain(of_kind);
            narrowed_by = format!(" ({kind}, the target's kind)");
            if let Some(db) = &database {
                let same_db = |s: &SnapshotInfo| {
                    s.meta.as_ref().and_then(|m| m.database.as_ref()) == Some(db)
                };
                if cands.iter().any(same_db) {
                    cands.retain(same_db);
                    narrowed_by = format!(" ({kind} `{db}`, the target's kind and database)");
                }
            }
        } else if kind != SourceKind::Folder && !cands.is_empty() {
            return Err(Error::Input(InputError::new(
                format!("snapshot `{}`", with_filters("latest")),
                format!(
                    "no {kind} snapshot matches, so none can be restored into the {kind} \
                     target; a snapshot of another kind can be written out as files into \
                     file:///directory, or piped into cmd: with --command"
                ),
            )));
        }
    }
    let Some(newest) = cands.last() else {
        return Err(not_found("latest"));
    };

    // The newest snapshot of each source among the candidates, newest first.
    let mut by_source: BTreeMap<&str, &SnapshotInfo> = BTreeMap::new();
    for s in &cands {
        by_source.insert(s.label.as_str(), s);
    }
    if by_source.len() == 1 {
        return Ok(newest.clone());
    }
    let mut newest_each: Vec<&SnapshotInfo> = by_source.into_values().collect();
    newest_each.sort_by(|a, b| b.time.cmp(&a.time));
    let list: String = newest_each
        .iter()
        .map(|s| {
            format!(
                "\n  {}  {}  {}",
                s.short_id,
                time_utc(&s.time),
                if s.label.is_empty() { "-" } else { &s.label }
            )
        })
        .collect();
    let example = newest_each
        .iter()
        .find_map(|s| s.meta.as_ref().and_then(|m| m.database.clone()))
        .unwrap_or_else(|| newest_each[0].label.clone());
    Err(Error::Input(InputError::new(
        format!("snapshot `{}`", with_filters("latest")),
        format!(
            "is ambiguous: snapshots of {} sources match{narrowed_by}; the newest of \
             each:{list}\nadd --source with the source's label or database (e.g. --source \
             {example}), or --tag KEY=VALUE or --host HOST, or give a snapshot id",
            newest_each.len()
        ),
    )))
}

/// `2025-01-02T03:04:05.678Z` as `2025-01-02 03:04:05 UTC`.
fn time_utc(t: &str) -> String {
    format!("{} UTC", t.get(..19).unwrap_or(t).replace('T', " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::SnapshotMeta;

    fn snap(id: &str, time: &str, kind: &str, db: &str, label: &str) -> SnapshotInfo {
        let meta = SnapshotMeta {
            source: kind.into(),
            layout: "single".into(),
            database: Some(db.into()),
            db_host: Some("db1:5432".into()),
            holdfast_version: "0".into(),
            user_tags: vec![("env".into(), "prod".into())],
            ..Default::default()
        };
        SnapshotInfo {
            id: format!("{id}{}", "0".repeat(56)),
            short_id: id.into(),
            time: time.into(),
            hostname: "runner".into(),
            label: label.into(),
            paths: vec![],
            tags: meta.tags(),
            meta: Some(meta),
            bytes: 0,
            added_bytes: 0,
            duration_secs: 0.0,
            tree: Default::default(),
        }
    }

    fn repo() -> Vec<SnapshotInfo> {
        vec![
            snap(
                "aaaaaaaa",
                "2025-01-01T01:00:00Z",
                "postgres",
                "shop",
                "postgres:db1:5432/shop",
            ),
            snap(
                "bbbbbbbb",
                "2025-01-01T02:00:00Z",
                "postgres",
                "crm",
                "postgres:db1:5432/crm",
            ),
            snap(
                "cccccccc",
                "2025-01-01T03:00:00Z",
                "command",
                "etcd.snap",
                "command:etcd.snap",
            ),
        ]
    }

    fn latest(filter: SnapshotFilter, target: Option<&str>) -> Result<String> {
        let target = target.map(|t| SourceSpec::parse(t, Some("cat")).unwrap());
        pick(repo(), "latest", &filter, target.as_ref(), "r").map(|s| s.short_id)
    }

    fn source(s: &str) -> SnapshotFilter {
        SnapshotFilter {
            source: Some(s.into()),
            ..Default::default()
        }
    }

    #[test]
    fn latest_of_several_sources_is_ambiguous_and_says_which() {
        let err = latest(SnapshotFilter::default(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ambiguous"), "{err}");
        for line in [
            "cccccccc  2025-01-01 03:00:00 UTC  command:etcd.snap",
            "bbbbbbbb  2025-01-01 02:00:00 UTC  postgres:db1:5432/crm",
            "aaaaaaaa  2025-01-01 01:00:00 UTC  postgres:db1:5432/shop",
        ] {
            assert!(err.contains(line), "{err}");
        }
        assert!(err.contains("--source"), "{err}");
    }

    #[test]
    fn filters_pick_one_source() {
        assert_eq!(latest(source("shop"), None).unwrap(), "aaaaaaaa");
        assert_eq!(
            latest(source("postgres:db1:5432/crm"), None).unwrap(),
            "bbbbbbbb"
        );
        assert_eq!(latest(source("command"), None).unwrap(), "cccccccc");
        let tag = |k: &str, v: &str| SnapshotFilter {
            tags: vec![(k.into(), v.into())],
            source: Some("crm".into()),
            ..Default::default()
        };
        assert_eq!(latest(tag("env", "prod"), None).unwrap(), "bbbbbbbb");
        assert!(matches!(
            latest(tag("env", "test"), None),
            Err(Error::SnapshotNotFound { .. })
        ));
        let host = |h: &str| SnapshotFilter {
            host: Some(h.into()),
            source: Some("shop".into()),
            ..Default::default()
        };
        assert_eq!(latest(host("db1"), None).unwrap(), "aaaaaaaa");
        assert_eq!(latest(host("runner"), None).unwrap(), "aaaaaaaa");
        assert!(latest(host("elsewhere"), None).is_err());
    }

    #[test]
    fn a_target_picks_its_kind_and_database() {
        assert_eq!(
            latest(SnapshotFilter::default(), Some("postgres://u@h/shop")).unwrap(),
            "aaaaaaaa"
        );
        // A new database: ambiguous between the two PostgreSQL sources, not the command.
        let err = latest(SnapshotFilter::default(), Some("postgres://u@h/copy"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("of 2 sources match (postgres, the target's kind)")
                && !err.contains("etcd"),
            "{err}"
        );
        assert_eq!(
            latest(source("crm"), Some("postgres://u@h/copy")).unwrap(),
            "bbbbbbbb"
        );
        // No snapshot of the target's kind: said so.
        let err = latest(SnapshotFilter::default(), Some("mysql://u@h/shop"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no mysql snapshot"), "{err}");
        // A folder takes any snapshot when none is a folder's; a cmd: target takes any.
        assert_eq!(
            latest(source("shop"), Some("file:///tmp/out")).unwrap(),
            "aaaaaaaa"
        );
        assert_eq!(
            latest(source("etcd.snap"), Some("cmd:x")).unwrap(),
            "cccccccc"
        );
    }

    #[test]
    fn ids_obey_the_filters() {
        let f = source("shop");
        assert_eq!(
            pick(repo(), "aaaa", &f, None, "r").unwrap().short_id,
            "aaaaaaaa"
        );
        let err = pick(repo(), "bbbb", &f, None, "r").unwrap_err().to_string();
        assert!(err.contains("bbbb (with --source shop)"), "{err}");
    }
}
