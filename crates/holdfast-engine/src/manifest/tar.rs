//! Folders: the entries of GNU tar's stream, read from its 512-byte headers as they pass (the
//! files' contents are passed over, never held).
//!
//! A hard link counts as a file (it extracts as one) and adds no bytes; a sparse file (GNU's
//! old sparse format, which `--sparse` writes) counts its full size.

use super::{Entries, FileTally, Tally};

const BLOCK: usize = 512;

#[derive(Default)]
pub(super) struct TarTally {
    header: Vec<u8>,
    /// Content bytes (padded to blocks) to pass over before the next header.
    skip: u64,
    /// Sparse extension headers still to come.
    extensions: bool,
    ended: bool,
    entries: Entries,
    bad: Option<String>,
}

impl Tally for TarTally {
    fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && !self.ended && self.bad.is_none() {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() as u64) as usize;
                self.skip -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = (BLOCK - self.header.len()).min(buf.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.header.len() == BLOCK {
                let h = std::mem::take(&mut self.header);
                self.on_header(&h);
            }
        }
    }

    fn finish(self: Box<Self>) -> FileTally {
        let mut out = FileTally::default();
        match self.bad {
            Some(why) => out.notes.push(why),
            None => out.entries = Some(self.entries),
        }
        out
    }
}

impl TarTally {
    fn on_header(&mut self, h: &[u8]) {
        if self.extensions {
            self.extensions = h[504] != 0;
            return;
        }
        if h.iter().all(|&b| b == 0) {
            // The end: two zero blocks (one is enough to know).
            self.ended = true;
            return;
        }
        let Some(size) = number(&h[124..136]) else {
            self.bad = Some("a tar header with an unreadable size".into());
            return;
        };
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let e = &mut self.entries;
        match h[156] {
            b'0' | 0 | b'7' => {
                e.files += 1;
                e.bytes += size;
            }
            b'1' => e.files += 1,
            b'2' => e.links += 1,
            b'5' => e.dirs += 1,
            b'S' => {
                e.files += 1;
                e.bytes += number(&h[483..495]).unwrap_or(size);
                self.extensions = h[482] != 0;
            }
            // Long names, pax headers and the like: their data is metadata.
            _ => {}
        }
        self.skip = padded;
    }
}

/// A tar number: octal digits (spaces and NULs around them), or base-256 with the high bit set.
fn number(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return Some(
            field[1..]
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b)),
        );
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_a_real_tar_stream() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("a.txt"), vec![b'a'; 1000]).unwrap();
        std::fs::write(d.join("sub/b.bin"), vec![7u8; 70_000]).unwrap();
        std::fs::write(d.join("sub/deeper/empty"), b"").unwrap();
        std::fs::hard_link(d.join("a.txt"), d.join("sub/a-again")).unwrap();
        std::os::unix::fs::symlink("a.txt", d.join("link")).unwrap();
        let long = "n".repeat(150);
        std::fs::write(d.join(&long), b"x").unwrap();
        // Sparse: 1 MiB with one written byte at the end.
        let f = std::fs::File::create(d.join("sparse")).unwrap();
        f.set_len(1 << 20).unwrap();
        let out = std::process::Command::new("tar")
            .args([
                "--create",
                "--file=-",
                "--sort=name",
                "--sparse",
                "--directory",
            ])
            .arg(d)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        for split in [1, 100, 512, 4096, 1 << 20] {
            let mut t: Box<dyn Tally> = Box::new(TarTally::default());
            for part in out.stdout.chunks(split) {
                t.feed(part);
            }
            let got = t.finish();
            assert!(got.notes.is_empty(), "{:?}", got.notes);
            assert_eq!(
                got.entries,
                Some(Entries {
                    files: 6,
                    dirs: 3,
                    links: 1,
                    bytes: 1000 + 70_000 + 1 + (1 << 20),
                }),
                "split {split}"
            );
        }
    }
}
