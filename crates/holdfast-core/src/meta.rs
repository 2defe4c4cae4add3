//! What every snapshot records about itself, so that `restic snapshots` shows it too.

use serde::{Deserialize, Serialize};

/// Tag marking snapshots written by Holdfast.
pub const HOLDFAST_TAG: &str = "holdfast";

/// Metadata of one backup, stored as restic tags (`key=value`) and as JSON in the description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// `postgres`, `mysql`, `sqlite`, `redis`, `folder` or `command`.
    pub source: String,
    /// How the snapshot's files are laid out: `single` (one stream) or `per-table`.
    pub layout: String,
    /// Database name, file path or folder being backed up.
    pub database: Option<String>,
    /// Host of the database server (or of the folder), never with credentials.
    pub db_host: Option<String>,
    pub server_version: Option<String>,
    /// The dump tool and its version, e.g. `pg_dump 15.19`.
    pub tool: Option<String>,
    pub holdfast_version: String,
    /// The plan that made this backup, if any.
    pub plan: Option<String>,
    /// Extra `key=value` tags given by the user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_tags: Vec<(String, String)>,
}

impl SnapshotMeta {
    /// The restic tags for this snapshot: `holdfast`, then `key=value` pairs.
    /// Commas are not allowed inside restic tags, so they are replaced.
    pub fn tags(&self) -> Vec<String> {
        let mut t = vec![HOLDFAST_TAG.to_string()];
        let mut kv = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                t.push(format!("{k}={}", v.replace(',', ";")));
            }
        };
        kv("source", &Some(self.source.clone()));
        kv("layout", &Some(self.layout.clone()));
        kv("db", &self.database);
        kv("db-host", &self.db_host);
        kv("server", &self.server_version);
        kv("tool", &self.tool);
        kv("holdfast", &Some(self.holdfast_version.clone()));
        kv("plan", &self.plan);
        for (k, v) in &self.user_tags {
            kv(k, &Some(v.clone()));
        }
        t
    }

    /// Reads the metadata back from a snapshot's tags (the description may be missing when the
    /// snapshot was rewritten by another tool).
    pub fn from_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut m = SnapshotMeta::default();
        let mut holdfast = false;
        for tag in tags {
            if tag == HOLDFAST_TAG {
                holdfast = true;
                continue;
            }
            let Some((k, v)) = tag.split_once('=') else {
                continue;
            };
            let v = v.to_string();
            match k {
                "source" => m.source = v,
                "layout" => m.layout = v,
                "db" => m.database = Some(v),
                "db-host" => m.db_host = Some(v),
                "server" => m.server_version = Some(v),
                "tool" => m.tool = Some(v),
                "holdfast" => m.holdfast_version = v,
                "plan" => m.plan = Some(v),
                _ => m.user_tags.push((k.to_string(), v)),
            }
        }
        holdfast.then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let m = SnapshotMeta {
            source: "postgres".into(),
            layout: "per-table".into(),
            database: Some("shop".into()),
            db_host: Some("127.0.0.1:5432".into()),
            server_version: Some("15.19".into()),
            tool: Some("pg_dump 15.19".into()),
            holdfast_version: "0.1.0".into(),
            plan: None,
            user_tags: vec![("env".into(), "prod".into())],
        };
        let tags = m.tags();
        assert_eq!(tags[0], "holdfast");
        let back = SnapshotMeta::from_tags(tags.iter().map(String::as_str)).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn foreign_snapshots_are_not_ours() {
        assert!(SnapshotMeta::from_tags(["source=postgres"]).is_none());
    }
}
