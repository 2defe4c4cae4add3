//! What Holdfast does with an open repository: backup, list and find snapshots, forget,
//! copy to another repository, prune and check.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use holdfast_core::KeepPolicy;
use rustic_core::jiff::{Span, Zoned};
use rustic_core::repofile::{SnapshotFile, StringList};
use rustic_core::{
    CheckOptions, ForgetGroups, Grouped, KeepOptions, PruneOptions, ReadSubsetOption,
    SnapshotGroupCriterion, SnapshotOptions,
};
use serde::Serialize;

use super::{Gate, Repo, SnapshotFilter, SnapshotInfo, SnapshotReader};
use crate::error::{Error, Result};
use crate::source::BackupSet;

/// The result of a backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOutcome {
    pub snapshot: SnapshotInfo,
}

/// What a copy to another repository did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// (the snapshot here, its copy there) for each snapshot copied now.
    pub copied: Vec<(String, String)>,
    /// Copies of this plan's snapshots the other repository held before.
    pub present: usize,
}

/// Which packs a check reads the data of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadData {
    /// None: the structure only.
    None,
    All,
    /// Part `n` of `of` (1-based), as restic's `--read-data-subset=n/t`: a pack is in part
    /// `n` when its id's first four bytes, as a number, leave `n` modulo `of`. The parts
    /// 1..=of together read every pack exactly once, so a check per night with `n` going
    /// round reads the whole repository every `of` nights.
    Subset {
        n: u32,
        of: u32,
    },
}

impl ReadData {
    /// Parses `n/t` (1 <= n <= t), naming what is wrong.
    pub fn parse_subset(s: &str) -> std::result::Result<Self, String> {
        let (n, t) = s
            .split_once('/')
            .and_then(|(n, t)| Some((n.trim().parse::<u32>().ok()?, t.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| {
                format!("`{s}` is not n/t; write for example 1/7 to read the first of seven parts")
            })?;
        if t == 0 || n == 0 || n > t {
            return Err(format!(
                "`{s}`: the part must be between 1 and the number of parts ({t})"
            ));
        }
        Ok(Self::Subset { n, of: t })
    }
}

/// What `forget` decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

impl Repo {
    /// Streams every stream of `set` into one new snapshot. `gate` lets the caller watch the
    /// bytes read; a fresh one is fine. No snapshot is written unless every stream succeeded.
    pub fn backup(&self, set: BackupSet, gate: Arc<Gate>) -> Result<BackupOutcome> {
        gate.expected.store(set.streams.len(), Ordering::SeqCst);
        *self.gate.lock().unwrap() = gate.clone();

        let mut snap_opts = SnapshotOptions::default()
            .label(set.label.clone())
            .description(serde_json::to_string_pretty(&set.meta).unwrap_or_default());
        if let Some(host) = &set.hostname {
            snap_opts = snap_opts.host(host.clone());
        }
        let mut snap = SnapshotFile::from_options(&snap_opts).map_err(|e| self.err(&e))?;
        let tags: StringList = set
            .meta
            .tags()
            .join(",")
            .parse()
            .map_err(|e| Error::Other(format!("snapshot tags: {e}")))?;
        snap.add_tags(vec![tags]);

        // Each stream passes a tap that counts what it holds; the manifest is the last input.
        let kind = holdfast_core::SourceKind::parse(&set.meta.source);
        let collect = Arc::new(crate::manifest::Collect::new(
            &set.meta.source,
            set.streams.len(),
        ));
        let mut inputs: Vec<crate::writer::Input> = set
            .streams
            .iter()
            .map(|s| {
                let (cmd, source_name, gate) =
                    (s.cmd.clone(), set.source_name.clone(), gate.clone());
                let (collect, path) = (collect.clone(), format!("{}/{}", set.dir, s.name));
                crate::writer::Input {
                    name: s.name.clone(),
                    open: Box::new(move || match cmd.spawn_reader(&source_name, gate) {
                        Ok(r) => {
                            let tally = kind.map_or_else(
                                || crate::manifest::tally_for(holdfast_core::SourceKind::Command),
                                crate::manifest::tally_for,
                            );
                            let tap = crate::manifest::Tap::new(r, path, tally, collect);
                            Ok(Box::new(tap) as Box<dyn std::io::Read + Send>)
                        }
                        Err(e) => {
                            collect.never_opened();
                            Err(e)
                        }
                    }),
                }
            })
            .collect();
        inputs.push(crate::writer::Input {
            name: format!("/{}", crate::manifest::FILE),
            open: Box::new(move || collect.reader()),
        });
        let settings = crate::writer::Settings::for_config(self.repo.config());
        let result = crate::writer::write_snapshot(
            self.rustic(),
            &self.write_backend(),
            inputs,
            &set.dir,
            snap,
            &gate,
            settings,
        );
        drop(set.keepalive);
        // Reset the shared gate so that later writes through this handle are not refused.
        *self.gate.lock().unwrap() = Arc::new(Gate::default());
        match result {
            Ok(snap) if gate.may_write_snapshot() => Ok(BackupOutcome {
                snapshot: SnapshotInfo::from_file(&snap),
            }),
            Ok(snap) => {
                // Cannot happen while the gate guards snapshot writes; if it does, remove it.
                let _ = self.repo.delete_snapshots(&[snap.id]);
                Err(gate
                    .take_failure()
                    .unwrap_or_else(|| Error::Other("a stream ended early".into())))
            }
            // A stream that only "stopped early" was stopped because of `e`: report `e`.
            Err(e) => Err(match gate.take_failure() {
                Some(f) if !crate::process::is_early_stop(&f) => f,
                _ => e,
            }),
        }
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let mut snaps = self.repo.get_all_snapshots().map_err(|e| self.err(&e))?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(snaps.iter().map(SnapshotInfo::from_file).collect())
    }

    /// Finds a snapshot by full id, unique id prefix, or `latest`.
    pub fn find(&self, query: &str) -> Result<SnapshotInfo> {
        self.select(query, &SnapshotFilter::default(), None)
    }

    /// Finds the snapshot `query` means among those passing `filter`; `latest` with a restore
    /// `target` is the newest of the target's kind and database, and is refused when it could
    /// mean more than one source's (see [`super::select::pick`]).
    pub fn select(
        &self,
        query: &str,
        filter: &SnapshotFilter,
        target: Option<&holdfast_core::SourceSpec>,
    ) -> Result<SnapshotInfo> {
        super::select::pick(self.snapshots()?, query, filter, target, &self.name)
    }

    /// One of the `last` newest snapshots passing `filter`, drawn at random (a drill of a
    /// random recent restore point); they must all be one source's, as for `latest`.
    pub fn pick_recent(&self, filter: &SnapshotFilter, last: usize) -> Result<SnapshotInfo> {
        let newest = self.select("latest", filter, None)?;
        let mut same: Vec<SnapshotInfo> = self
            .snapshots()?
            .into_iter()
            .filter(|s| filter.matches(s) && s.label == newest.label)
            .collect();
        let keep = last.max(1).min(same.len());
        same.drain(..same.len() - keep);
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(|e| Error::Other(format!("drawing at random: {e}")))?;
        let i = (u64::from_le_bytes(r) % same.len() as u64) as usize;
        Ok(same.swap_remove(i))
    }

    /// Opens a snapshot's files for reading.
    pub fn reader(&self, snap: &SnapshotInfo) -> Result<SnapshotReader> {
        let repo = self.clone_open()?.to_indexed().map_err(|e| self.err(&e))?;
        let mut files = Vec::new();
        let mut stack = vec![(String::new(), snap.tree)];
        while let Some((prefix, tree)) = stack.pop() {
            let tree = repo.get_tree(&tree).map_err(|e| self.err(&e))?;
            for node in tree.nodes {
                let path = format!("{prefix}{}", node.name().to_string_lossy());
                if let Some(sub) = node.subtree {
                    stack.push((format!("{path}/"), sub));
                } else if node.is_file() {
                    files.push((path, node));
                }
            }
        }
        files.sort_by(|a, b| std::path::Path::new(&a.0).cmp(std::path::Path::new(&b.0)));
        // Holdfast's manifest is about the files, not one of them.
        let manifest = match files.iter().position(|(p, _)| p == crate::manifest::FILE) {
            Some(i) if snap.meta.is_some() => Some(files.remove(i).1),
            _ => None,
        };
        Ok(SnapshotReader {
            repo,
            files,
            manifest,
            repo_name: self.name.clone(),
        })
    }

    /// Applies a keep policy to each group of snapshots (one group per label, i.e. per source)
    /// and removes the rest. With `only_tag`, only snapshots carrying that tag (e.g.
    /// `plan=shop-nightly`) are considered: other plans' backups are never touched. An empty
    /// policy is refused: it would mean "keep nothing".
    pub fn forget(
        &self,
        policy: &KeepPolicy,
        dry_run: bool,
        only_tag: Option<&str>,
    ) -> Result<ForgetReport> {
        self.forget_by(policy, dry_run, only_tag, None)
    }

    /// [`Self::forget`], judging each snapshot listed in `received` (snapshot id to Unix ms)
    /// by when the server received it rather than by the time it claims: a client that
    /// writes snapshots with false times cannot make retention keep or drop the wrong ones.
    pub fn forget_by(
        &self,
        policy: &KeepPolicy,
        dry_run: bool,
        only_tag: Option<&str>,
        received: Option<&std::collections::HashMap<String, i64>>,
    ) -> Result<ForgetReport> {
        policy.validate()?;
        if policy.is_empty() {
            return Err(Error::Input(holdfast_core::InputError::new(
                "forget",
                "no keep rule given; pass at least one of --keep-last, --keep-hourly, \
                 --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within",
            )));
        }
        let keep = keep_options(policy)?;
        let mut snaps = self.repo.get_all_snapshots().map_err(|e| self.err(&e))?;
        if let Some(tag) = only_tag {
            snaps.retain(|s| s.tags.iter().any(|t| t == tag));
        }
        if let Some(received) = received {
            for s in &mut snaps {
                if let Some(at) = received
                    .get(s.id.to_hex().as_str())
                    .and_then(|ms| rustic_core::jiff::Timestamp::from_millisecond(*ms).ok())
                {
                    s.time = at.to_zoned(s.time.time_zone().clone());
                }
            }
        }
        let grouped = Grouped::from_items(
            snaps,
            SnapshotGroupCriterion::new()
                .label(true)
                .hostname(false)
                .paths(false)
                .tags(false),
        );
        let groups =
            ForgetGroups::from_grouped_snapshots_with_retention(grouped, &keep, &Zoned::now())
                .map_err(|e| self.err(&e))?;
        let mut report = ForgetReport::default();
        for g in &groups.0 {
            for s in &g.items {
                let id = s.snapshot.id.to_hex().to_string();
                if s.keep {
                    report.kept.push(id);
                } else {
                    report.removed.push(id);
                }
            }
        }
        let ids = groups.into_forget_ids();
        if !dry_run && !ids.is_empty() {
            self.repo.delete_snapshots(&ids).map_err(|e| self.err(&e))?;
        }
        Ok(report)
    }

    /// Copies each snapshot tagged `tag` that is newer than the newest copy in `dest` (older
    /// ones are there already, or were removed by `dest`'s own retention); only blobs `dest`
    /// lacks are sent. Copies keep their time, tags and metadata, under new ids.
    pub fn copy_to(&self, dest: &Repo, tag: &str) -> Result<CopyReport> {
        let tagged = |s: &SnapshotFile| s.tags.iter().any(|t| t == tag);
        let there = |r: &Repo| -> Result<Vec<SnapshotFile>> {
            let mut v = r.repo.get_all_snapshots().map_err(|e| r.err(&e))?;
            v.retain(tagged);
            Ok(v)
        };
        let before = there(dest)?;
        let newest = before.iter().map(|s| s.time.clone()).max();
        let mut todo = there(self)?;
        todo.retain(|s| newest.as_ref().is_none_or(|n| s.time > *n));
        if todo.is_empty() {
            return Ok(CopyReport {
                copied: vec![],
                present: before.len(),
            });
        }
        let src = self.clone_open()?.to_indexed().map_err(|e| self.err(&e))?;
        let dst = dest
            .clone_open()?
            .to_indexed_ids()
            .map_err(|e| dest.err(&e))?;
        src.copy(&dst, todo.iter()).map_err(|e| dest.err(&e))?;
        let after = there(dest)?;
        let copied = todo
            .iter()
            .map(|s| {
                let copy = after
                    .iter()
                    .find(|d| d.time == s.time && d.tree == s.tree)
                    .map(|d| d.id.to_hex().to_string())
                    .unwrap_or_default();
                (s.id.to_hex().to_string(), copy)
            })
            .collect();
        Ok(CopyReport {
            copied,
            present: before.len(),
        })
    }

    /// Removes data no snapshot uses. With `instant`, unused packs go at once; otherwise they
    /// are marked and removed by a later prune (safe while other backups run).
    pub fn prune(&self, instant: bool) -> Result<()> {
        let opts = PruneOptions::default().instant_delete(instant);
        let plan = self.repo.prune_plan(&opts).map_err(|e| self.err(&e))?;
        self.repo.prune(&opts, plan).map_err(|e| self.err(&e))
    }

    /// Checks the repository's structure, and with `read_data` every pack's content.
    pub fn check(&self, read_data: bool) -> Result<()> {
        self.check_reading(if read_data {
            ReadData::All
        } else {
            ReadData::None
        })
    }

    /// Checks the repository, reading the data of the packs `read` names.
    pub fn check_reading(&self, read: ReadData) -> Result<()> {
        let opts = match read {
            ReadData::None => CheckOptions::default(),
            ReadData::All => CheckOptions::default().read_data(true),
            ReadData::Subset { n, of } => CheckOptions::default()
                .read_data(true)
                .read_data_subset(ReadSubsetOption::IdSubSet((n, of))),
        };
        let results = self.repo.check(opts).map_err(|e| self.err(&e))?;
        self.check_results(&results)
    }

    /// Checks the repository's structure as far as one snapshot needs it: its trees, the index
    /// and the packs the index names (their data is read by the caller, through the snapshot).
    pub fn check_snapshot(&self, snap: &SnapshotInfo) -> Result<()> {
        let results = self
            .repo
            .check_with_trees(CheckOptions::default(), vec![snap.tree])
            .map_err(|e| self.err(&e))?;
        self.check_results(&results)
    }

    fn check_results(&self, results: &rustic_core::CheckResults) -> Result<()> {
        if results.is_ok().is_ok() {
            Ok(())
        } else {
            let errors: Vec<String> = results
                .0
                .iter()
                .filter(|(level, _)| format!("{level:?}") == "Error")
                .map(|(_, e)| e.to_string())
                .collect();
            Err(Error::CheckFailed {
                repo: self.name.clone(),
                detail: errors.join("; "),
            })
        }
    }
}

fn keep_options(p: &KeepPolicy) -> Result<KeepOptions> {
    let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let mut k = KeepOptions::default()
        .keep_last(n(p.last))
        .keep_hourly(n(p.hourly))
        .keep_daily(n(p.daily))
        .keep_weekly(n(p.weekly))
        .keep_monthly(n(p.monthly))
        .keep_yearly(n(p.yearly));
    if let Some(w) = &p.within {
        let (y, mo, d, h) = holdfast_core::retention::parse_within(w)?;
        let span = Span::new()
            .years(i64::from(y))
            .months(i64::from(mo))
            .days(i64::from(d))
            .hours(i64::from(h));
        k = k.keep_within(Some(span));
    }
    Ok(k)
}
