//! Every kind of storage endpoint, against a real server of that kind on loopback (started by
//! `scripts/storage-servers`): the same repository contract for each, wrong logins, and the
//! SSH host key check.

use crate::helpers::*;

pub(crate) fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name}: run the tests with scripts/test, which starts the storage servers")
    })
}

/// A repository on the SFTP server, with the test client key; restic reaches it over the same
/// ssh.
pub(crate) fn sftp_env() -> Env {
    let dir = unique("sftp");
    let mut env = Env::with_repo(format!(
        "{}{}/{dir}",
        var("HOLDFAST_TEST_SFTP"),
        var("HOLDFAST_TEST_SFTP_DATA")
    ));
    let key = var("HOLDFAST_TEST_SFTP_KEY");
    env.extra_env = vec![("HOLDFAST_SSH_KEY_FILE".into(), key.clone())];
    let port = var("HOLDFAST_TEST_SFTP")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    env.restic_repo = Some(format!(
        "sftp:root@127.0.0.1:{}/{dir}",
        var("HOLDFAST_TEST_SFTP_DATA")
    ));
    env.restic_args = vec![
        "-o".into(),
        format!("sftp.command=ssh -i {key} -p {port} -o BatchMode=yes root@127.0.0.1 -s sftp"),
    ];
    env
}

pub(crate) fn ftp_env() -> Env {
    let mut env = Env::with_repo(format!("{}/{}", var("HOLDFAST_TEST_FTP"), unique("ftp")));
    env.extra_env = vec![(
        "HOLDFAST_STORAGE_PASSWORD".into(),
        var("HOLDFAST_TEST_FTP_PASSWORD"),
    )];
    env
}

pub(crate) fn webdav_env() -> Env {
    let mut env = Env::with_repo(format!("{}/{}", var("HOLDFAST_TEST_WEBDAV"), unique("dav")));
    env.extra_env = vec![(
        "HOLDFAST_STORAGE_PASSWORD".into(),
        var("HOLDFAST_TEST_WEBDAV_PASSWORD"),
    )];
    env
}

pub(crate) fn swift_env() -> Env {
    let auth = var("HOLDFAST_TEST_SWIFT_AUTH");
    let container = unique("hf").replace('_', "-");
    let mut env = Env::with_repo(format!("swift://{container}/backups/db?auth={auth}"));
    env.extra_env = vec![
        ("ST_AUTH".into(), auth),
        ("ST_USER".into(), "test:tester".into()),
        ("ST_KEY".into(), "testing".into()),
    ];
    env.restic_repo = Some(format!("swift:{container}:/backups/db"));
    env
}

pub(crate) fn s3_env() -> Env {
    let endpoint = var("HOLDFAST_TEST_S3_ENDPOINT");
    let bucket = unique("hf-contract").replace('_', "-");
    sh(&format!("curl -sf -X PUT {endpoint}/{bucket}"));
    let mut env = Env::with_repo(format!(
        "s3://{bucket}/backups?endpoint={endpoint}&region=us-east-1&path-style=true"
    ));
    env.extra_env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "holdfast-test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "holdfast-test".into()),
    ];
    env
}

/// The repository contract every endpoint kind must keep: init, backup, list, restore
/// byte-identical, forget + prune, check, and (where restic supports the kind) the stock
/// restic reading the same repository.
fn contract(env: Env, restic_reads: bool) {
    env.init();
    let e = env.fails(&["init"], 11);
    assert!(e.contains("already exists"), "{e}");

    let data = env.path("data.bin");
    // 6 MB of random data (several pack files); the same again (stored once); then other
    // bytes.
    sh(&format!(
        "head -c 6000000 /dev/urandom > {}",
        data.display()
    ));
    let first = std::fs::read(&data).unwrap();
    let cat = format!("cat {}", data.display());
    let id1 = env.backup("cmd:db.bin", &["--command", &cat]);
    let again = env.backup("cmd:db.bin", &["--command", &cat]);
    sh(&format!("echo tail >> {}", data.display()));
    let second = std::fs::read(&data).unwrap();
    let id2 = env.backup("cmd:db.bin", &["--command", &cat]);
    let empty = env.backup("cmd:empty", &["--command", "true"]);

    let snaps = env.snapshots();
    let ids: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [id1.as_str(), again.as_str(), id2.as_str(), empty.as_str()]
    );
    assert!(
        snaps[1]["added_bytes"].as_u64().unwrap() < 100_000,
        "the same bytes were stored again: {}",
        snaps[1]
    );

    let dump = |id: &str| env.cmd(&["dump", &id[..8]]).output().unwrap();
    let out = dump(&id1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == first,
        "restored bytes differ from the backup's"
    );
    assert!(dump(&id2).stdout == second);
    assert!(dump(&empty).stdout.is_empty());

    if restic_reads {
        let listed = String::from_utf8(env.restic(&["snapshots", "--json"]).stdout).unwrap();
        assert!(listed.contains(&id2), "{listed}");
        let by_restic = env.restic(&["dump", &id2, "/command/db.bin"]).stdout;
        assert!(by_restic == second, "restic reads other bytes");
    }

    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    env.ok(&["prune", "--instant"]);
    let left: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [id2.clone(), empty.clone()]);
    assert!(
        dump(&id2).stdout == second,
        "prune harmed the kept snapshot"
    );
    env.ok(&["check", "--read-data"]);
    if restic_reads {
        env.restic_check();
    }
}

#[test]
fn sftp_endpoint_keeps_the_repository_contract() {
    contract(sftp_env(), true);
}

#[test]
fn ftp_endpoint_keeps_the_repository_contract() {
    contract(ftp_env(), false);
}

/// FTPS is refused with what to use instead, not accepted and found wanting later.
#[test]
fn ftps_is_refused_with_what_to_use_instead() {
    let env = Env::with_repo("ftps://backup@files.example:21/repo".into());
    let e = env.fails(&["init"], 2);
    assert!(
        e.contains("FTPS is not available") && e.contains("sftp://"),
        "{e}"
    );
}

#[test]
fn webdav_endpoint_keeps_the_repository_contract() {
    contract(webdav_env(), false);
}

#[test]
fn swift_endpoint_keeps_the_repository_contract() {
    contract(swift_env(), true);
}

#[test]
fn s3_endpoint_keeps_the_repository_contract() {
    contract(s3_env(), true);
}

#[test]
fn local_endpoint_keeps_the_repository_contract() {
    contract(Env::new(), true);
}

/// A wrong login fails at once, with exit code 16 and a message naming the credential to check;
/// the FTP server sees a single attempt (no retry storm).
#[test]
fn wrong_storage_credentials_fail_fast_and_say_which() {
    let refused = |env: &Env, credential: &str| {
        let e = env.fails(&["init"], 16);
        assert!(e.contains("refused the login"), "{e}");
        assert!(e.contains(credential), "{e}");
    };

    let mut dav = webdav_env();
    dav.extra_env = vec![("HOLDFAST_STORAGE_PASSWORD".into(), "wrong".into())];
    refused(&dav, "user and storage_password");
    assert!(!dav.fails(&["init"], 16).contains("wrong"));

    let mut swift = swift_env();
    swift.extra_env[2].1 = "wrong".into();
    refused(&swift, "user and storage_password");

    // FTP: count the server's failed logins for a user name only this test uses.
    let mut ftp = ftp_env();
    let user = unique("nobody");
    ftp.repo = ftp.repo.replace("holdfast@", &format!("{user}@"));
    refused(&ftp, "user and storage_password");
    // pyftpdlib logs a failed login after answering it (and a loaded machine may show the line
    // late): wait for the first line, then count.
    let failed_logins = || {
        std::fs::read_to_string("/var/lib/holdfast-test/ftp/ftp.log")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("USER '{user}' failed login")))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while failed_logins() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let attempts = failed_logins();
    assert_eq!(attempts, 1, "the FTP server saw {attempts} login attempts");

    // SFTP: a key the server does not know.
    let mut sftp = sftp_env();
    let stranger = sftp.path("stranger");
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {}",
        stranger.display()
    ));
    sftp.extra_env = vec![(
        "HOLDFAST_SSH_KEY_FILE".into(),
        stranger.display().to_string(),
    )];
    refused(&sftp, "user and ssh_key");
}

/// 127.0.0.2 is the test SFTP server under a known_hosts entry with another key: Holdfast
/// refuses to talk to it and says how to check and accept the key.
#[test]
fn sftp_server_with_a_changed_host_key_is_refused() {
    let mut env = sftp_env();
    let dir = std::path::Path::new(&var("HOLDFAST_TEST_SFTP_DATA")).join(unique("decoy"));
    env.repo = format!("{}{}", var("HOLDFAST_TEST_SFTP_DECOY"), dir.display());
    let e = env.fails(&["init"], 17);
    assert!(e.contains("ssh-keyscan"), "{e}");
    assert!(e.contains("127.0.0.2"), "{e}");
    assert!(
        !dir.exists(),
        "something was written to the untrusted server"
    );
}
