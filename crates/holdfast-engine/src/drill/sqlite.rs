//! A SQLite drill: the restore point loaded into a new file in the drill's directory, then
//! `PRAGMA integrity_check`, rows per table, schema objects and the user's SQL on it.

use std::path::{Path, PathBuf};

use holdfast_core::SourceSpec;
use holdfast_core::drill::CheckKind;

use super::Drill;
use crate::error::{Error, Result};
use crate::process::{Cmd, which};

pub(super) fn drill(d: &mut Drill) {
    let Some(scratch) = d.local_scratch(2) else {
        return;
    };
    let Some(sqlite3) = which("sqlite3") else {
        d.failed(
            CheckKind::Scratch,
            "sqlite3",
            "installed",
            "install the SQLite shell (Debian: sqlite3)",
        );
        return;
    };
    let file = scratch.path("restored.db");
    d.scratch = format!("a new file {} , removed afterwards", file.display());
    let spec = SourceSpec::Sqlite { path: file.clone() };
    let (snap, reader) = (d.snap, d.reader);
    let opts = crate::RestoreOptions::default();
    if d.timed_restore(|| crate::source::restore(&spec, snap, reader, &opts))
        .is_none()
    {
        return;
    }
    let q = |sql: &str| query(&sqlite3, &file, sql);
    match q("PRAGMA integrity_check") {
        Ok(v) => d.check(
            CheckKind::Integrity,
            "PRAGMA integrity_check",
            v == "ok",
            "ok",
            v,
            "",
        ),
        Err(e) => d.failed(CheckKind::Integrity, "PRAGMA integrity_check", "ok", e),
    }
    if let Some(m) = d.manifest {
        let want = m.rows("");
        // The backup's tables and the copy's (a table the backup did not count expects none).
        let mut tables: std::collections::BTreeSet<String> = want.keys().cloned().collect();
        match q("SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
        {
            Ok(out) => tables.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_string)),
            Err(e) => d.failed(CheckKind::Rows, "tables", "the copy's tables list", e),
        }
        let tables: Vec<String> = tables.into_iter().collect();
        let from = |t: &str| format!("FROM \"{}\"", t.replace('"', "\"\""));
        let got = super::count_rows(&tables, from, q, '|');
        d.compare(CheckKind::Rows, "rows", &want, &got);
        let want = m.objects("");
        match q("SELECT type || ' ' || count(*) FROM sqlite_schema \
                 WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' GROUP BY type")
        {
            Ok(out) => {
                let got = out
                    .lines()
                    .filter_map(|l| l.split_once(' '))
                    .filter_map(|(k, n)| Some((k.to_string(), Ok(n.parse::<u64>().ok()?))))
                    .collect();
                d.compare(CheckKind::Objects, "objects", &want, &got);
            }
            Err(e) => d.failed(CheckKind::Objects, "schema", "the schema reads", e),
        }
    }
    d.sql_checks(|sql| {
        q(sql)
            .map(|out| super::first_value(&out, '|'))
            .map_err(|e| e.to_string())
    });
    drop(scratch);
}

fn query(sqlite3: &PathBuf, file: &Path, sql: &str) -> Result<String> {
    Cmd::new(sqlite3, "sqlite3 (drill)")
        .arg("-bail")
        .arg("-readonly")
        .arg(file)
        .arg(sql)
        .output()
        .map_err(|f| Error::Other(format!("{}: {}", f.status, f.stderr.trim())))
}
