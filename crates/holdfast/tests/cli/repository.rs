use crate::helpers::*;

fn s3_env() -> Env {
    let endpoint = std::env::var("HOLDFAST_TEST_S3_ENDPOINT").expect(
        "HOLDFAST_TEST_S3_ENDPOINT: run the tests with scripts/test, which starts the S3 server",
    );
    let bucket = unique("hf-bucket").replace('_', "-");
    sh(&format!("curl -sf -X PUT {endpoint}/{bucket}"));
    let mut env = Env::with_repo(format!(
        "s3://{bucket}/backups/main?endpoint={endpoint}&region=us-east-1"
    ));
    env.extra_env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "holdfast-test".into()),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            "holdfast-test-secret".into(),
        ),
    ];
    env
}

#[test]
fn s3_repository_round_trip_readable_by_restic() {
    let env = s3_env();
    env.init();
    let db = PgDb::new();
    db.pgbench(1);
    let want = db.checksums();
    let id = env.backup(&db.url(), &[]);
    let listed = String::from_utf8(env.restic(&["snapshots", "--json"]).stdout).unwrap();
    assert!(listed.contains(&id), "{listed}");
    let pre = env
        .restic(&["dump", &id, &format!("/{}/0-pre-data.sql", db.name)])
        .stdout;
    assert!(String::from_utf8_lossy(&pre).contains("CREATE TABLE public.pgbench_accounts"));
    let target = PgDb::not_created();
    env.ok(&["restore", "latest", &target.url(), "--create"]);
    assert_eq!(target.checksums(), want);
    env.ok(&["check", "--read-data"]);
    env.restic_check();
}

#[test]
fn forget_keeps_the_newest_per_source_and_prune_leaves_a_clean_repository() {
    let env = Env::new();
    env.init();
    for i in 0..3 {
        env.backup(
            "cmd:a",
            &[
                "--command",
                &format!("head -c 2000000 /dev/urandom; echo {i}"),
            ],
        );
    }
    env.backup("cmd:b", &["--command", "echo only b"]);
    let before = env.snapshots();
    assert_eq!(before.len(), 4);
    let e = env.fails(&["forget"], 2);
    assert!(e.contains("--keep-last"), "{e}");

    let dry = env.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(dry.contains("would remove 2 snapshots"), "{dry}");
    assert_eq!(env.snapshots().len(), 4);

    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    env.ok(&["prune", "--instant"]);
    let after = env.snapshots();
    let ids: Vec<&str> = after.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            before[2]["id"].as_str().unwrap(),
            before[3]["id"].as_str().unwrap()
        ]
    );
    let last_a = env.cmd(&["dump", &ids[0][..8]]).output().unwrap().stdout;
    assert!(last_a.ends_with(b"2\n"));
    env.ok(&["check", "--read-data"]);
    env.restic_check();
}

#[test]
fn password_file_works_and_restic_snapshots_from_elsewhere_are_listed() {
    let env = Env::new();
    let pw = env.path("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let out = env
        .cmd(&["init", "--password-file", pw.to_str().unwrap()])
        .env_remove("HOLDFAST_REPO_PASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = env.path("note.txt");
    std::fs::write(&file, "written by restic").unwrap();
    env.restic(&["backup", file.to_str().unwrap()]);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0]["meta"].is_null());
    // A snapshot Holdfast did not write can still be written out as files.
    let dir = env.path("out");
    env.ok(&["restore", "latest", &format!("file://{}", dir.display())]);
    let found = sh(&format!(
        "find {} -name note.txt -exec cat {{}} \\;",
        dir.display()
    ));
    assert_eq!(found, "written by restic");
}

/// A new repository's key file is derived within restic's own bounds (32 MiB of scrypt, not
/// rustic_core's 128 MiB, which every open of the repository would pay), and it is a key like
/// any other: restic unlocks the repository with it, and a wrong password is refused by name.
#[test]
fn a_new_repositorys_key_is_restic_sized_and_both_tools_unlock_it() {
    let env = Env::new();
    env.init();
    let keys: Vec<_> = std::fs::read_dir(std::path::Path::new(&env.repo).join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key: serde_json::Value = serde_json::from_slice(&std::fs::read(&keys[0]).unwrap()).unwrap();
    assert_eq!(key["kdf"], "scrypt", "{key}");
    assert_eq!(
        (key["N"].as_u64(), key["r"].as_u64()),
        (Some(32768), Some(8)),
        "{key}"
    );
    assert!(key["created"].is_string(), "{key}");
    // The file's name is the SHA-256 of its bytes, as restic names keys.
    let name = keys[0].file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        sh(&format!("sha256sum {} | cut -d' ' -f1", keys[0].display())).trim(),
        name
    );

    let listed = env.restic(&["key", "list", "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let file = env.path("note.txt");
    std::fs::write(&file, "written by restic").unwrap();
    let out = env.restic(&["backup", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.snapshots().len(), 1);
    let wrong = env
        .cmd(&["snapshots"])
        .env("HOLDFAST_REPO_PASSWORD", "not the password")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("password"), "{err}");
}
