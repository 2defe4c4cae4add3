//! Local paths as an agent sees them, for deciding what a job may read or write: resolved
//! (symbolic links followed as far as the path exists, `.` and `..` gone) before any prefix
//! is compared, so that `/srv/ok/../../etc` or a link out of an allowed folder is seen for
//! what it is.

use std::path::{Component, Path, PathBuf};

/// `path` resolved: the longest part that exists canonicalized (links followed), the rest
/// appended with `.` dropped and `..` applied. `None` for a relative path.
pub fn resolve(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut existing = path.to_path_buf();
    // What does not exist (yet), last part first: `None` for `..`.
    let mut rest: Vec<Option<std::ffi::OsString>> = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                match part {
                    None => {
                        out.pop();
                    }
                    Some(n) => out.push(n),
                }
            }
            return Some(out);
        }
        // A link whose target is missing would be written through: refuse it.
        if std::fs::symlink_metadata(&existing).is_ok() {
            return None;
        }
        match existing.components().next_back()? {
            Component::Normal(n) => rest.push(Some(n.to_os_string())),
            Component::ParentDir => rest.push(None),
            _ => {}
        }
        if !existing.pop() {
            return None;
        }
    }
}

/// Whether `path` lies in `dir` (or is it), both resolved.
pub fn within(path: &Path, dir: &Path) -> bool {
    match (resolve(path), resolve(dir)) {
        (Some(p), Some(d)) => p.starts_with(d),
        _ => false,
    }
}

/// Whether `path` and `dir` share anything: one lies in the other. A backup of `/var/lib`
/// reads `/var/lib/holdfast` too.
pub fn overlaps(path: &Path, dir: &Path) -> bool {
    match (resolve(path), resolve(dir)) {
        (Some(p), Some(d)) => p.starts_with(&d) || d.starts_with(&p),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_and_links_are_resolved_before_comparing() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok");
        std::fs::create_dir(&ok).unwrap();
        let secret = d.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::os::unix::fs::symlink(&secret, ok.join("link")).unwrap();
        assert!(within(&ok.join("db.sqlite"), &ok));
        assert!(
            within(&ok.join("new/deeper/file"), &ok),
            "paths that do not exist yet"
        );
        assert!(!within(&ok.join("../secret"), &ok));
        assert!(
            !within(&ok.join("link/file"), &ok),
            "a link out of the folder"
        );
        assert!(!within(&ok.join("missing/../../secret"), &ok));
        assert!(overlaps(d.path(), &secret), "a parent holds it");
        assert!(overlaps(&secret.join("x"), &secret));
        assert!(!overlaps(&ok, &secret));
        assert!(!within(Path::new("relative"), &ok));
        std::os::unix::fs::symlink(d.path().join("nowhere"), ok.join("dangling")).unwrap();
        assert!(
            !within(&ok.join("dangling"), &ok),
            "a dangling link is refused"
        );
        assert!(!within(&ok.join("dangling/x"), &ok));
    }
}
