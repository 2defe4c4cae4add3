//! What a backup holds, counted from its dump streams as they pass into the repository (no
//! extra query against the source): rows per table, schema objects, keys, files. A restore
//! drill compares a restored copy against it.
//!
//! The manifest is one small JSON file at the top of the snapshot, [`FILE`], beside the
//! source's directory, so restic users see it too; Holdfast's own restores leave it out.
//! Each dump stream goes through a [`Tap`], which hands its bytes to the kind's [`Tally`]:
//!
//! - PostgreSQL ([`postgres`]): the lines between each `COPY ... FROM stdin;` and its `\.`;
//!   the object kinds and owners of pg_dump's `-- Name: ...; Type: ...; Owner: ...` entries;
//!   the roles `GRANT`/`REVOKE` name.
//! - MariaDB/MySQL ([`mysql`]): the tuples of each `INSERT INTO`; tables, views, triggers,
//!   routines and events of the schema.
//! - SQLite ([`sqlite`]): the `INSERT INTO` statements of `.dump`, per table.
//! - Redis ([`redis`]): the key count of each database, from the RDB's size hints.
//! - Folders ([`tar`]): the files, directories, links and bytes of the tar stream.

mod mysql;
mod postgres;
mod redis;
mod sqlite;
mod tap;
mod tar;

use std::collections::{BTreeMap, BTreeSet};

use holdfast_core::SourceKind;
use serde::{Deserialize, Serialize};

pub(crate) use tap::{Collect, Tap};

/// The manifest's path inside a snapshot.
pub const FILE: &str = "holdfast-manifest.json";

/// The manifest of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format (1).
    pub version: u32,
    /// The source kind, as in the snapshot's metadata.
    pub source: String,
    /// What each file of the snapshot holds, by its path inside the snapshot.
    pub files: BTreeMap<String, FileTally>,
}

/// What one file of a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileTally {
    pub bytes: u64,
    /// Rows per table, the table named as the dump names it (`public.orders`, `orders`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rows: BTreeMap<String, u64>,
    /// Schema objects per kind: `table`, `index`, `constraint`, `function`, `trigger`, `view`,
    /// `sequence`, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, u64>,
    /// PostgreSQL: the roles the dump names (owners, grantees); a restore needs them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub roles: BTreeSet<String>,
    /// Redis: keys per database number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<u32, u64>,
    /// Redis: of those, the keys with an expiry (which may be gone when the file is loaded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expiring: BTreeMap<u32, u64>,
    /// Folders: what the tar stream holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Entries>,
    /// Counts that could not be made, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The entries of a folder's tar stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// The regular files' sizes added up (a sparse file counts its full size).
    pub bytes: u64,
}

impl Manifest {
    /// Rows per table over every file whose path starts with `prefix` ("" for all).
    pub fn rows(&self, prefix: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in self.under(prefix) {
            for (k, v) in &t.rows {
                *out.entry(k.clone()).or_insert(0) += v;
            }
        }
        out
    }

    /// Schema objects per kind over every file under `prefix`.
    pub fn objects(&self, prefix: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in self.under(prefix) {
            for (k, v) in &t.objects {
                *out.entry(k.clone()).or_insert(0) += v;
            }
        }
        out
    }

    /// The roles named by the files under `prefix`.
    pub fn roles(&self, prefix: &str) -> BTreeSet<String> {
        self.under(prefix)
            .flat_map(|t| t.roles.iter().cloned())
            .collect()
    }

    /// Redis keys per database.
    pub fn keys(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for t in self.files.values() {
            for (k, v) in &t.keys {
                *out.entry(*k).or_insert(0) += v;
            }
        }
        out
    }

    /// Redis keys with an expiry, per database.
    pub fn expiring(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for t in self.files.values() {
            for (k, v) in &t.expiring {
                *out.entry(*k).or_insert(0) += v;
            }
        }
        out
    }

    /// A folder's entries, added up over its tar files.
    pub fn entries(&self) -> Option<Entries> {
        self.files
            .values()
            .filter_map(|t| t.entries)
            .reduce(|a, b| Entries {
                files: a.files + b.files,
                dirs: a.dirs + b.dirs,
                links: a.links + b.links,
                bytes: a.bytes + b.bytes,
            })
    }

    /// Every note, with the file it is about.
    pub fn notes(&self) -> Vec<String> {
        self.files
            .iter()
            .flat_map(|(p, t)| t.notes.iter().map(move |n| format!("{p}: {n}")))
            .collect()
    }

    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a FileTally> + 'a {
        self.files
            .iter()
            .filter(move |(p, _)| p.starts_with(prefix))
            .map(|(_, t)| t)
    }
}

/// Counts what one stream holds, from its bytes as they pass.
pub trait Tally: Send {
    /// The next bytes of the stream.
    fn feed(&mut self, buf: &[u8]);
    /// The stream ended: what it held (its `bytes` are filled in by the caller).
    fn finish(self: Box<Self>) -> FileTally;
}

/// The tally for a stream of `kind`; `None` where there is nothing to count but bytes.
pub fn tally_for(kind: SourceKind) -> Box<dyn Tally> {
    match kind {
        SourceKind::Postgres => Box::new(postgres::PgTally::default()),
        SourceKind::Mysql => Box::new(mysql::MysqlTally::default()),
        SourceKind::Sqlite => Box::new(sqlite::SqliteTally::default()),
        SourceKind::Redis => Box::new(redis::RdbTally::default()),
        SourceKind::Folder => Box::new(tar::TarTally::default()),
        SourceKind::Command => Box::new(Bytes),
    }
}

/// Counts nothing but bytes (`cmd:` sources).
struct Bytes;

impl Tally for Bytes {
    fn feed(&mut self, _: &[u8]) {}
    fn finish(self: Box<Self>) -> FileTally {
        FileTally::default()
    }
}

/// Splits a stream into lines for a line-based tally, keeping at most [`LINE_CAP`] bytes of a
/// line that spans buffers (longer lines are seen cut short, which no tally needs more of).
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

const LINE_CAP: usize = 16 * 1024;

impl Lines {
    /// Calls `each` with every line ended in `buf` (without its `\n`).
    fn feed(&mut self, buf: &[u8], mut each: impl FnMut(&[u8])) {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', buf) {
            let seg = &buf[start..nl];
            if self.partial.is_empty() {
                each(seg);
            } else {
                self.push(seg);
                let line = std::mem::take(&mut self.partial);
                each(&line);
            }
            start = nl + 1;
        }
        self.push(&buf[start..]);
    }

    /// The last line, if the stream did not end with `\n`.
    fn rest(&mut self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }

    fn push(&mut self, seg: &[u8]) {
        let room = LINE_CAP.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&seg[..seg.len().min(room)]);
    }
}

/// Reads an identifier at the start of `s` quoted with `q` (`"` or `` ` ``, doubled inside),
/// or bare up to a space, `(`, `,` or `;`: (as written, unquoted, the rest of `s`).
fn leading_ident(s: &str, q: char) -> (&str, String, &str) {
    let mut in_quote = false;
    let mut plain = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == q {
            if in_quote && chars.peek().map(|(_, n)| *n) == Some(q) {
                plain.push(q);
                chars.next();
            } else {
                in_quote = !in_quote;
            }
            continue;
        }
        if !in_quote && (c == ' ' || c == '(' || c == ';' || c == ',') {
            return (&s[..i], plain, &s[i..]);
        }
        plain.push(c);
    }
    (s, plain, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_across_buffers_and_long_ones_are_cut() {
        let mut l = Lines::default();
        let mut seen = Vec::new();
        for part in [&b"ab"[..], b"c\nd", b"\n\nlast"] {
            l.feed(part, |line| {
                seen.push(String::from_utf8_lossy(line).into_owned())
            });
        }
        assert_eq!(seen, ["abc", "d", ""]);
        assert_eq!(l.rest().as_deref(), Some(&b"last"[..]));
        let long = vec![b'x'; LINE_CAP * 3];
        let mut n = 0;
        l.feed(&long, |_| {});
        l.feed(b"\n", |line| n = line.len());
        assert_eq!(n, LINE_CAP);
    }

    #[test]
    fn identifiers_keep_their_quotes_and_doubled_quotes() {
        assert_eq!(
            leading_ident("public.orders (id) FROM", '"'),
            ("public.orders", "public.orders".into(), " (id) FROM")
        );
        let (raw, plain, rest) = leading_ident("\"we ird\".\"a\"\"b\" FROM stdin;", '"');
        assert_eq!(
            (raw, plain.as_str(), rest),
            ("\"we ird\".\"a\"\"b\"", "we ird.a\"b", " FROM stdin;")
        );
        let (raw, plain, _) = leading_ident("`a``b` VALUES", '`');
        assert_eq!((raw, plain.as_str()), ("`a``b`", "a`b"));
    }
}
