//! The writer against rustic_core, on a real local repository: same chunk boundaries and blob
//! ids as rustic_core's archiver for the same bytes, byte-identical reads through rustic_core,
//! `check --read-data` clean, and a failed stream leaves no snapshot and nothing prune keeps.
//! (The CLI tests add the stock `restic` binary's view: `restic check --read-data`, `restic
//! dump`, and restic and Holdfast deduplicating each other's data.)

use std::io::{self, Cursor, Read};

use rustic_core::repofile::SnapshotFile;
use rustic_core::{BackupOptions, PathList};
use secrecy::SecretString;

use super::{Input, Settings, random, write_snapshot};
use crate::repo::{Gate, Repo, RepoConfig, SnapshotInfo};

fn repo(dir: &std::path::Path) -> Repo {
    let cfg = RepoConfig::new(
        holdfast_core::RepoLocation::Local(dir.to_path_buf()),
        SecretString::from("pw"),
    );
    Repo::init(&cfg).unwrap();
    Repo::open(&cfg).unwrap()
}

fn input(name: &str, data: Vec<u8>) -> Input {
    Input {
        name: name.into(),
        open: Box::new(move || Ok(Box::new(Cursor::new(data)) as Box<dyn Read + Send>)),
    }
}

fn settings() -> Settings {
    Settings {
        streams: 2,
        workers: 2,
        uploaders: 2,
        pack_size: 4 << 20,
    }
}

/// Backs up `inputs` with the writer; the snapshot as Holdfast lists it.
fn write(r: &Repo, inputs: Vec<Input>, dir: &str) -> Result<SnapshotInfo, String> {
    let gate = Gate::default();
    let snap = SnapshotFile::default();
    match write_snapshot(
        r.rustic(),
        &r.write_backend(),
        inputs,
        dir,
        snap,
        &gate,
        settings(),
    ) {
        Ok(s) => Ok(r.find(&s.id.to_hex()[..12]).unwrap()),
        Err(e) => Err(gate.take_failure().unwrap_or(e).to_string()),
    }
}

fn read_back(r: &Repo, snap: &SnapshotInfo, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    r.reader(snap).unwrap().dump(path, &mut out).unwrap();
    out
}

/// For random data of many sizes, including each side of every chunk bound, the writer's
/// blob ids (and so its chunk boundaries) equal those rustic_core's archiver stores for the
/// same bytes, and the bytes read back are the input.
#[test]
fn same_chunks_as_rustic_core_for_random_data() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo(&tmp.path().join("repo"));
    let cfg = r.rustic().config().clone();
    let (min, max) = (cfg.chunk_min_size(), cfg.chunk_max_size());
    let mut sizes = vec![0, 1, 63, 64, 65, min - 1, min, min + 1];
    sizes.extend([min + 63, min + 64, min + 65, 2 * min, max - 1, max, max + 1]);
    // Random sizes too, from a seed that changes each run and is printed on failure.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    sizes.extend((0..4).map(|i| (random(8, seed + i)[0] as usize + 1) * 97_003));
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        let mut data = random(size, seed ^ i as u64);
        // Some streams with long runs of one byte, where only `max` cuts.
        if i % 5 == 4 {
            for b in data.iter_mut().skip(size / 3).take(max + max / 2) {
                *b = 0xAB;
            }
        }
        let file = src.join(format!("f{i}"));
        std::fs::write(&file, &data).unwrap();

        let archived = r
            .clone_open()
            .unwrap()
            .to_indexed_ids()
            .unwrap()
            .backup(
                &BackupOptions::default(),
                &PathList::from_string(file.to_str().unwrap()).unwrap(),
                SnapshotFile::default(),
            )
            .unwrap();
        let archived = r.find(&archived.id.to_hex()[..12]).unwrap();
        let theirs = r.reader(&archived).unwrap();
        let (their_path, _) = theirs.files().next().unwrap();
        let their_ids = theirs.node(their_path).unwrap().content.clone();

        let ours = write(&r, vec![input("f.bin", data.clone())], "w").unwrap();
        let reader = r.reader(&ours).unwrap();
        let our_ids = reader.node("w/f.bin").unwrap().content.clone();
        assert_eq!(
            our_ids.unwrap_or_default(),
            their_ids.unwrap_or_default(),
            "blob ids differ for {size} bytes (seed {seed}, case {i})"
        );
        assert!(
            read_back(&r, &ours, "w/f.bin") == data,
            "{size} bytes read back differ"
        );
    }
    r.check(true).unwrap();
}

/// Several streams, with `/` in names, land as the files of one snapshot; blobs the
/// repository holds are not stored again; everything reads back.
#[test]
fn streams_trees_and_dedup() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo(tmp.path());
    let a = random(3 << 20, 1);
    let b = random(5 << 20, 2);
    let first = write(
        &r,
        vec![
            input("0-pre.sql", b"CREATE TABLE t ();\n".to_vec()),
            input("1-data/public.a.sql", a.clone()),
            input("1-data/public.b.sql", b.clone()),
            input("2-post.sql", vec![]),
        ],
        "shop",
    )
    .unwrap();
    assert_eq!(first.bytes, (3 << 20) + (5 << 20) + 19);
    assert!(first.added_bytes > 8 << 20, "{}", first.added_bytes);
    let reader = r.reader(&first).unwrap();
    let files: Vec<_> = reader.files().map(|(p, s)| (p.to_string(), s)).collect();
    assert_eq!(
        files,
        vec![
            ("shop/0-pre.sql".to_string(), 19),
            ("shop/1-data/public.a.sql".to_string(), 3 << 20),
            ("shop/1-data/public.b.sql".to_string(), 5 << 20),
            ("shop/2-post.sql".to_string(), 0),
        ]
    );
    assert!(read_back(&r, &first, "shop/1-data/public.b.sql") == b);
    assert!(read_back(&r, &first, "shop/2-post.sql").is_empty());

    // The same data again, plus a changed copy: only the change is new. The data is large
    // enough that the changed chunk is never the whole copy whatever the repository's
    // chunker polynomial (a chunk is at most 8 MiB; a 3 MiB file can be a single chunk).
    let c = random(16 << 20, 4);
    write(&r, vec![input("c", c.clone())], "shop").unwrap();
    let mut c2 = c.clone();
    c2[(9 << 20) + 5] ^= 1;
    let second = write(
        &r,
        vec![input("c", c.clone()), input("c2", c2.clone())],
        "shop",
    )
    .unwrap();
    assert!(
        second.added_bytes <= (8 << 20) + (64 << 10),
        "only the changed chunk is new: {} bytes added",
        second.added_bytes
    );
    assert!(read_back(&r, &second, "shop/c2") == c2);
    r.check(true).unwrap();
}

/// A stream that fails half-way: no snapshot, the earlier one intact, and the packs it stored
/// are gone after a prune.
#[test]
fn failed_stream_writes_no_snapshot_and_prune_removes_its_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo(tmp.path());
    let kept = random(2 << 20, 3);
    let good = write(&r, vec![input("kept", kept.clone())], "d").unwrap();
    let packs = |_: &Repo| {
        walk(&tmp.path().join("data"))
            .into_iter()
            .filter(|p| p.is_file())
            .count()
    };
    let before = packs(&r);

    struct Broken(Cursor<Vec<u8>>);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(io::Error::other("the dump tool crashed")),
                n => Ok(n),
            }
        }
    }
    let big = random(40 << 20, 4);
    let err = write(
        &r,
        vec![
            input("ok", random(6 << 20, 5)),
            Input {
                name: "broken".into(),
                open: Box::new(move || Ok(Box::new(Broken(Cursor::new(big))) as Box<_>)),
            },
        ],
        "d",
    )
    .unwrap_err();
    assert!(err.contains("the dump tool crashed"), "{err}");
    let snaps = r.snapshots().unwrap();
    assert_eq!(snaps.len(), 1, "no snapshot of the failed backup");
    assert!(packs(&r) > before, "the failed backup had stored packs");

    r.prune(true).unwrap();
    assert_eq!(packs(&r), before, "prune removed the failed backup's packs");
    assert!(read_back(&r, &good, "d/kept") == kept);
    r.check(true).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
