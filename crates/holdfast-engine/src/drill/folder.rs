//! A folder drill: the restore point extracted into the drill's directory, then its files,
//! directories, links and bytes compared with what the tar stream held.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use holdfast_core::SourceSpec;
use holdfast_core::drill::CheckKind;

use super::Drill;
use crate::manifest::Entries;

pub(super) fn drill(d: &mut Drill) {
    let Some(scratch) = d.local_scratch(1) else {
        return;
    };
    let target = scratch.path("files");
    d.scratch = format!("a new folder {}, removed afterwards", target.display());
    let spec = SourceSpec::Folder {
        path: target.clone(),
    };
    let (snap, reader) = (d.snap, d.reader);
    let opts = crate::RestoreOptions::default();
    if d.timed_restore(|| crate::source::restore(&spec, snap, reader, &opts))
        .is_none()
    {
        return;
    }
    let Some(want) = d.manifest.and_then(|m| m.entries()) else {
        drop(scratch);
        return;
    };
    match walk(&target) {
        Ok(got) => {
            let as_map = |e: Entries| {
                BTreeMap::from([
                    ("files".to_string(), e.files),
                    ("directories".to_string(), e.dirs),
                    ("symbolic links".to_string(), e.links),
                    ("bytes".to_string(), e.bytes),
                ])
            };
            let got = as_map(got).into_iter().map(|(k, v)| (k, Ok(v))).collect();
            d.compare(CheckKind::Files, "", &as_map(want), &got);
        }
        Err(e) => d.failed(CheckKind::Files, "restored folder", "it can be walked", e),
    }
    drop(scratch);
}

/// Counts what a folder holds: each hard-linked file's bytes once.
fn walk(root: &Path) -> std::io::Result<Entries> {
    let mut e = Entries::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        e.dirs += 1;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let m = entry.path().symlink_metadata()?;
            if m.file_type().is_symlink() {
                e.links += 1;
            } else if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() {
                e.files += 1;
                if seen.insert((m.dev(), m.ino())) {
                    e.bytes += m.len();
                }
            }
        }
    }
    Ok(e)
}
