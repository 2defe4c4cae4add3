//! Holdfast's own repository writer, seen by the stock `restic` binary: streams of every size
//! around the chunk bounds dump back byte-identical and `restic check --read-data` is clean;
//! restic and Holdfast deduplicate each other's data in one repository.

use std::process::{Command, Stdio};

use crate::helpers::*;

/// restic's (and Holdfast's) chunk size bounds.
const MIN: usize = 512 * 1024;
const MAX: usize = 8 * 1024 * 1024;

/// Backs up `file` as `name` through a command source; returns the snapshot id.
fn backup_file(env: &Env, name: &str, file: &std::path::Path) -> (String, u64) {
    let out = env.ok(&[
        "backup",
        &format!("cmd:{name}"),
        "--command",
        &format!("cat {}", file.display()),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["snapshot"]["id"].as_str().unwrap().to_string(),
        v["snapshot"]["added_bytes"].as_u64().unwrap(),
    )
}

#[test]
fn restic_dumps_streams_of_every_size_around_the_chunk_bounds() {
    let env = Env::new();
    env.init();
    let sizes = [
        0,
        1,
        MIN - 1,
        MIN,
        MIN + 1,
        MIN + 64,
        MAX - 1,
        MAX,
        MAX + 1,
        3 * MAX + 12_345,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let mut data = random(size, i as u64 + 1);
        // One stream with a long run of a single byte: cut at the maximum size.
        if size > 2 * MAX {
            data[MAX / 2..MAX / 2 + MAX + 10].fill(0x5A);
        }
        let file = env.path(&format!("s{i}"));
        std::fs::write(&file, &data).unwrap();
        let (id, _) = backup_file(&env, &format!("s{i}.bin"), &file);
        let dumped = env
            .restic(&["dump", &id, &format!("/command/s{i}.bin")])
            .stdout;
        assert!(
            dumped == data,
            "restic dump of a {size}-byte stream gave {} bytes, not the input",
            dumped.len()
        );
    }
    env.restic_check();
    env.ok(&["check", "--read-data"]);
}

#[test]
fn restic_and_holdfast_store_the_same_bytes_once() {
    let env = Env::new();
    env.init();

    // restic first, then Holdfast: Holdfast adds only its tree (no data blob).
    let a = env.path("a.bin");
    std::fs::write(&a, random(30 << 20, 7)).unwrap();
    restic_stdin(&env, &a);
    let (_, added) = backup_file(&env, "a.bin", &a);
    assert!(
        added < 10_000,
        "Holdfast stored {added} bytes of data restic had stored already"
    );

    // Holdfast first, then restic: restic adds no data either.
    let b = env.path("b.bin");
    std::fs::write(&b, random(30 << 20, 8)).unwrap();
    let (_, added) = backup_file(&env, "b.bin", &b);
    assert!(added > 30 << 20, "random data does not compress: {added}");
    let summary = restic_stdin(&env, &b);
    let restic_added = summary["data_added"].as_u64().unwrap();
    assert!(
        restic_added < 10_000,
        "restic stored {restic_added} bytes of data Holdfast had stored already"
    );
    env.restic_check();
}

/// `restic backup --stdin` of `file`; restic's JSON summary.
fn restic_stdin(env: &Env, file: &std::path::Path) -> serde_json::Value {
    let out = Command::new("restic")
        .args(["--no-cache", "-r", &env.repo, "backup", "--json", "--stdin"])
        .args(["--stdin-filename", "data.bin"])
        .env("RESTIC_PASSWORD", PASSWORD)
        .stdin(Stdio::from(std::fs::File::open(file).unwrap()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().rev().find(|l| l.contains("summary")).unwrap();
    serde_json::from_str(last).unwrap()
}

/// The SHA-256 (hex) of what `cmd` writes to stdout.
fn sha256_of(mut cmd: Command) -> String {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let out = Command::new("sha256sum")
        .stdin(Stdio::from(child.stdout.take().unwrap()))
        .output()
        .unwrap();
    assert!(child.wait().unwrap().success(), "{cmd:?} failed");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// A stream of several GB (3 GB of text: neither deduplicated nor compressed to nothing)
/// reads back identical through Holdfast and through restic.
#[test]
fn a_stream_of_several_gigabytes_reads_back_identical() {
    let env = Env::new();
    env.init();
    let generator = "head -c 2300000000 /dev/zero \
        | openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 0 2>/dev/null \
        | base64 -w 120";
    let mut gen_cmd = Command::new("sh");
    gen_cmd.args(["-c", generator]);
    let want = sha256_of(gen_cmd);
    let out = env.ok(&["backup", "cmd:big.txt", "--command", generator, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["snapshot"]["bytes"].as_u64(),
        Some(3_066_666_668 + 25_555_556)
    );
    let id = v["snapshot"]["id"].as_str().unwrap().to_string();

    assert_eq!(sha256_of(env.cmd(&["dump", &id])), want, "holdfast dump");
    let mut restic = Command::new("restic");
    restic
        .args([
            "--no-cache",
            "-r",
            &env.repo,
            "dump",
            &id,
            "/command/big.txt",
        ])
        .env("RESTIC_PASSWORD", PASSWORD);
    assert_eq!(sha256_of(restic), want, "restic dump");
}
