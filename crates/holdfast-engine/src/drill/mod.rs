//! Restore drills: a restore point restored into a throwaway copy and checked against what its
//! backup counted (the snapshot's [`crate::manifest`]), or read back and checked without a
//! restore.
//!
//! ```text
//!  sweep leftovers ─ free space? ─ throwaway server (scratch) ─ restore (timed: the RTO)
//!        ─ checks: rows, objects, keys, files, integrity, the user's SQL, RTO target ─ remove
//! ```
//!
//! A drill never touches the source: the copy is a server of its own in a private directory,
//! reachable only through a Unix socket there, removed afterwards (also after a crash, by
//! [`sweep`] at the next start). Every outcome, including a copy that could not be started,
//! is a check in the [`DrillReport`]; [`run`] itself does not fail.

mod folder;
mod mysql;
mod postgres;
mod redis;
pub(crate) mod scratch;
mod sqlite;
mod target;

use std::path::PathBuf;
use std::time::Instant;

use holdfast_core::SourceKind;
use holdfast_core::drill::{
    CheckKind, CheckResult, DrillMode, DrillReport, DrillTimings, Expect, SqlCheck,
};

use crate::manifest::Manifest;
use crate::repo::{Repo, SnapshotInfo, SnapshotReader};

pub use scratch::sweep;
use target::is_own_source;

/// What a drill does and where.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub mode: DrillMode,
    /// The user's SQL checks, run against the restored copy (SQL databases only).
    pub sql_checks: Vec<SqlCheck>,
    /// A restore slower than this fails the drill's `rto` check.
    pub rto_target_secs: Option<u64>,
    /// Tables loaded at once (PostgreSQL per-table restore points).
    pub jobs: usize,
    /// Where the throwaway copies live; each drill makes a private directory inside.
    pub root: PathBuf,
    /// A scratch server to restore into instead of a throwaway one (PostgreSQL, MariaDB):
    /// the drill makes a database of its own there and drops it afterwards. Refused when it
    /// is the source's own server and database.
    pub into: Option<holdfast_core::SourceSpec>,
    /// Check mode: read part `.0` of `.1` of the repository's packs (restic's n/t) instead of
    /// the restore point's data, so that drills in turn read the whole repository.
    pub part: Option<(u32, u32)>,
}

impl Default for DrillOptions {
    fn default() -> Self {
        Self {
            mode: DrillMode::Restore,
            sql_checks: Vec::new(),
            rto_target_secs: None,
            jobs: 2,
            root: default_root(),
            into: None,
            part: None,
        }
    }
}

/// The drills' root when none is configured: `holdfast-drills` in the temporary directory.
pub fn default_root() -> PathBuf {
    std::env::temp_dir().join("holdfast-drills")
}

/// A drill being run: what it found so far.
pub(crate) struct Drill<'a> {
    pub snap: &'a SnapshotInfo,
    pub reader: &'a SnapshotReader,
    pub manifest: Option<&'a Manifest>,
    pub opts: &'a DrillOptions,
    pub checks: Vec<CheckResult>,
    pub notes: Vec<String>,
    pub timings: DrillTimings,
    pub scratch: String,
    pub rto: Option<f64>,
}

impl Drill<'_> {
    pub fn check(
        &mut self,
        kind: CheckKind,
        name: impl Into<String>,
        passed: bool,
        expected: impl Into<String>,
        actual: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.checks.push(CheckResult {
            kind,
            name: name.into(),
            passed,
            expected: expected.into(),
            actual: actual.into(),
            detail: detail.into(),
        });
    }

    /// A check that could not be made because of `err`.
    pub fn failed(
        &mut self,
        kind: CheckKind,
        name: impl Into<String>,
        expected: &str,
        err: impl std::fmt::Display,
    ) {
        let detail = err.to_string();
        self.check(kind, name, false, expected, "an error", detail);
    }

    /// Times a restore; its seconds are the recovery time.
    pub fn timed_restore<T>(&mut self, f: impl FnOnce() -> crate::Result<T>) -> Option<T> {
        let started = Instant::now();
        let res = f();
        self.timings.restore_secs = started.elapsed().as_secs_f64();
        match res {
            Ok(v) => {
                self.rto = Some(self.timings.restore_secs);
                self.check(
                    CheckKind::Restore,
                    "restore",
                    true,
                    "the restore tool ends without an error",
                    format!("restored in {:.1} s", self.timings.restore_secs),
                    "",
                );
                Some(v)
            }
            Err(e) => {
                self.failed(
                    CheckKind::Restore,
                    "restore",
                    "the restore tool ends without an error",
                    e,
                );
                None
            }
        }
    }

    /// Compares counts per name (rows per table, objects per kind): one check per name.
    pub fn compare(
        &mut self,
        kind: CheckKind,
        unit: &str,
        expected: &std::collections::BTreeMap<String, u64>,
        actual: &std::collections::BTreeMap<String, Result<u64, String>>,
    ) {
        let names: std::collections::BTreeSet<&String> =
            expected.keys().chain(actual.keys()).collect();
        let n = |v: u64| {
            if unit.is_empty() {
                v.to_string()
            } else {
                format!("{v} {unit}")
            }
        };
        for name in names {
            let want = expected.get(name).copied().unwrap_or(0);
            match actual.get(name) {
                Some(Ok(got)) => {
                    let (passed, detail) = match (expected.contains_key(name), *got == want) {
                        (_, true) => (true, ""),
                        (false, false) => (false, "the copy has it, the backup did not count it"),
                        (true, false) => (false, ""),
                    };
                    self.check(kind, name.clone(), passed, n(want), n(*got), detail);
                }
                Some(Err(e)) => self.failed(kind, name.clone(), &n(want), e),
                None => self.check(
                    kind,
                    name.clone(),
                    want == 0,
                    n(want),
                    n(0),
                    if want == 0 {
                        ""
                    } else {
                        "the copy does not have it"
                    },
                ),
            }
        }
    }

    /// Runs the user's SQL checks with `query` (the first value of the first row).
    pub fn sql_checks(&mut self, mut query: impl FnMut(&str) -> Result<String, String>) {
        for c in self.opts.sql_checks.clone() {
            let expected = match Expect::parse(&c.expect) {
                Ok(e) => e,
                Err(why) => {
                    self.failed(CheckKind::Sql, c.label(), &c.expect, why);
                    continue;
                }
            };
            match query(&c.sql) {
                Ok(v) => {
                    let passed = expected.holds(&v);
                    self.check(
                        CheckKind::Sql,
                        c.label(),
                        passed,
                        expected.to_string(),
                        v,
                        "",
                    );
                }
                Err(e) => self.failed(CheckKind::Sql, c.label(), &expected.to_string(), e),
            }
        }
    }

    /// A private directory for a copy that needs no server (a file, a folder), after the
    /// free-space check for `factor` times the restore point.
    pub fn local_scratch(&mut self, factor: u64) -> Option<scratch::Scratch> {
        if !self.room_for(factor) {
            return None;
        }
        match scratch::Scratch::new(&self.opts.root, None) {
            Ok(s) => Some(s),
            Err(e) => {
                self.failed(CheckKind::Scratch, "drill directory", "it is made", e);
                None
            }
        }
    }

    /// Refuses to start when the drills' file system lacks `factor` times the restore point.
    pub fn room_for(&mut self, factor: u64) -> bool {
        let need = self.snap.bytes.saturating_mul(factor);
        let root = &self.opts.root;
        let _ = std::fs::create_dir_all(root);
        match scratch::free_bytes(root) {
            Some(free) if free < need => {
                self.check(
                    CheckKind::Scratch,
                    "free space",
                    false,
                    format!("{} free in {}", human(need), root.display()),
                    format!("{} free", human(free)),
                    format!(
                        "the copy needs about {factor}x the restore point's {}; free space there \
                         or point the drills elsewhere",
                        human(self.snap.bytes)
                    ),
                );
                false
            }
            _ => true,
        }
    }
}

/// `count(*)` of each table: one query for them all (`from` gives what follows `count(*)` for
/// a table, e.g. `FROM ONLY public.t`), or one per table when that fails, so that a missing
/// table is named. `query` answers one value or row per line, its columns split by `sep`.
pub(crate) fn count_rows(
    tables: &[String],
    from: impl Fn(&str) -> String,
    query: impl Fn(&str) -> crate::Result<String>,
    sep: char,
) -> std::collections::BTreeMap<String, Result<u64, String>> {
    let mut out = std::collections::BTreeMap::new();
    if tables.is_empty() {
        return out;
    }
    let all: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| format!("SELECT {i}, count(*) {}", from(t)))
        .collect();
    if let Ok(res) = query(&all.join(" UNION ALL ")) {
        for line in res.lines() {
            if let Some((i, n)) = line.split_once(sep)
                && let (Ok(i), Ok(n)) = (i.trim().parse::<usize>(), n.trim().parse::<u64>())
                && let Some(t) = tables.get(i)
            {
                out.insert(t.clone(), Ok(n));
            }
        }
        return out;
    }
    for t in tables {
        let n = query(&format!("SELECT count(*) {}", from(t)))
            .map_err(|e| e.to_string())
            .and_then(|s| s.trim().parse::<u64>().map_err(|e| e.to_string()));
        out.insert(t.clone(), n);
    }
    out
}

/// The first value of a SQL client's output (its first line's first column, split by `sep`).
pub(crate) fn first_value(out: &str, sep: char) -> String {
    out.lines()
        .next()
        .unwrap_or("")
        .split(sep)
        .next()
        .unwrap_or("")
        .to_string()
}

/// Runs one drill of `snap` from `repo`.
pub fn run(repo: &Repo, snap: &SnapshotInfo, opts: &DrillOptions) -> DrillReport {
    let started = Instant::now();
    let started_at = now();
    let mut notes: Vec<String> = sweep(&opts.root)
        .into_iter()
        .map(|s| format!("leftovers of an interrupted drill: {s}"))
        .collect();
    let source = snap
        .meta
        .as_ref()
        .map(|m| m.source.clone())
        .unwrap_or_default();
    let mut report = DrillReport {
        snapshot: snap.id.clone(),
        mode: opts.mode,
        source: source.clone(),
        database: snap.meta.as_ref().and_then(|m| m.database.clone()),
        passed: false,
        scratch: String::new(),
        started_at,
        finished_at: String::new(),
        rto_secs: None,
        rto_target_secs: opts.rto_target_secs,
        timings: DrillTimings::default(),
        checks: Vec::new(),
        notes: Vec::new(),
    };
    let mut early = Vec::new();
    if opts.mode == DrillMode::Check {
        match repo.check_snapshot(snap) {
            Ok(()) => early.push(ok(
                CheckKind::Structure,
                "repository",
                "the restore point's trees, the index and its packs are sound",
            )),
            Err(e) => early.push(bad(CheckKind::Structure, "repository", "sound", e)),
        }
    }
    let reader = match repo.reader(snap) {
        Ok(r) => r,
        Err(e) => {
            early.push(bad(CheckKind::Read, "snapshot", "its trees read", e));
            return finish(report, early, notes, started);
        }
    };
    let manifest = match reader.manifest() {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            notes.push(
                "the restore point has no manifest (made before Holdfast counted what backups \
                 hold, or by another tool): counts were not compared"
                    .into(),
            );
            None
        }
        Err(e) => {
            early.push(bad(CheckKind::Read, crate::manifest::FILE, "readable", e));
            None
        }
    };
    if let Some(m) = &manifest {
        notes.extend(m.notes());
    }
    let mut d = Drill {
        snap,
        reader: &reader,
        manifest: manifest.as_ref(),
        opts,
        checks: early,
        notes,
        timings: DrillTimings::default(),
        scratch: String::new(),
        rto: None,
    };
    let kind = SourceKind::parse(&source);
    match (opts.mode, kind) {
        (DrillMode::Check, _) if opts.part.is_some() => {
            let (n, of) = opts.part.unwrap_or((1, 1));
            let started = Instant::now();
            match repo.check_reading(crate::repo::ReadData::Subset { n, of }) {
                Ok(()) => d.check(
                    CheckKind::Read,
                    format!("packs, part {n} of {of}"),
                    true,
                    "every pack of the part reads back, authenticated",
                    format!("read in {:.1} s", started.elapsed().as_secs_f64()),
                    "",
                ),
                Err(e) => d.failed(
                    CheckKind::Read,
                    format!("packs, part {n} of {of}"),
                    "every pack of the part reads back, authenticated",
                    e,
                ),
            }
        }
        (DrillMode::Check, _) | (_, None | Some(SourceKind::Command)) => {
            if opts.mode == DrillMode::Restore {
                d.notes.push(
                    "this restore point holds a command's output, which only the command's \
                     own restore can load: its data was read and checked instead"
                        .into(),
                );
            }
            read_all(&mut d);
        }
        (DrillMode::Restore, Some(k)) => {
            if !opts.sql_checks.is_empty() && matches!(k, SourceKind::Redis | SourceKind::Folder) {
                d.notes.push(format!(
                    "{} SQL check(s) not run: a {k} restore point has no SQL to ask",
                    opts.sql_checks.len()
                ));
            }
            if let Some(into) = &opts.into
                && into.kind() != k
            {
                d.notes.push(format!(
                    "the scratch target {into} is not a {k} server: a throwaway copy was used"
                ));
            }
            let started_checks = Instant::now();
            match k {
                SourceKind::Postgres => postgres::drill(&mut d),
                SourceKind::Mysql => mysql::drill(&mut d),
                SourceKind::Sqlite => sqlite::drill(&mut d),
                SourceKind::Redis => redis::drill(&mut d),
                SourceKind::Folder => folder::drill(&mut d),
                SourceKind::Command => unreachable!("read above"),
            }
            d.timings.checks_secs = (started_checks.elapsed().as_secs_f64()
                - d.timings.restore_secs
                - d.timings.scratch_start_secs)
                .max(0.0);
        }
    }
    if let (Some(target), Some(rto)) = (opts.rto_target_secs, d.rto) {
        d.check(
            CheckKind::Rto,
            "recovery time",
            rto <= target as f64,
            format!("at most {target} s"),
            format!("{rto:.1} s"),
            if rto > target as f64 {
                "the restore took longer than the plan's rto_target_secs"
            } else {
                ""
            },
        );
    }
    report.scratch = std::mem::take(&mut d.scratch);
    report.rto_secs = d.rto;
    report.timings = std::mem::take(&mut d.timings);
    let (checks, notes) = (std::mem::take(&mut d.checks), std::mem::take(&mut d.notes));
    finish(report, checks, notes, started)
}

fn finish(
    mut report: DrillReport,
    checks: Vec<CheckResult>,
    notes: Vec<String>,
    started: Instant,
) -> DrillReport {
    report.passed = !checks.is_empty() && checks.iter().all(|c| c.passed);
    report.checks = checks;
    report.notes = notes;
    report.timings.total_secs = started.elapsed().as_secs_f64();
    report.finished_at = now();
    report
}

/// Reads every file of the restore point (each blob decrypted and authenticated) and compares
/// each file's size with the backup's count.
fn read_all(d: &mut Drill) {
    let started = Instant::now();
    let mut total = 0u64;
    let files: Vec<(String, u64)> = d.reader.files().map(|(p, s)| (p.to_string(), s)).collect();
    for (path, _) in &files {
        let mut sink = Counter(0);
        if let Err(e) = d.reader.dump(path, &mut sink) {
            d.failed(CheckKind::Read, path.clone(), "every byte reads back", e);
            return;
        }
        total += sink.0;
        if let Some(want) = d.manifest.and_then(|m| m.files.get(path)).map(|t| t.bytes)
            && want != sink.0
        {
            d.check(
                CheckKind::Read,
                path.clone(),
                false,
                format!("{want} bytes"),
                format!("{} bytes", sink.0),
                "the file differs in size from what the backup wrote",
            );
            return;
        }
    }
    d.timings.restore_secs = 0.0;
    d.check(
        CheckKind::Read,
        "every file",
        true,
        "every byte reads back, authenticated",
        format!(
            "{} file(s), {} read in {:.1} s",
            files.len(),
            human(total),
            started.elapsed().as_secs_f64()
        ),
        "",
    );
}

struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ok(kind: CheckKind, name: &str, actual: &str) -> CheckResult {
    CheckResult {
        kind,
        name: name.into(),
        passed: true,
        expected: "sound".into(),
        actual: actual.into(),
        detail: String::new(),
    }
}

fn bad(kind: CheckKind, name: &str, expected: &str, e: impl std::fmt::Display) -> CheckResult {
    CheckResult {
        kind,
        name: name.into(),
        passed: false,
        expected: expected.into(),
        actual: "an error".into(),
        detail: e.to_string(),
    }
}

fn now() -> String {
    rustic_core::jiff::Timestamp::now()
        .round(rustic_core::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub(crate) fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
