//! Endpoints as `holdfast serve` uses them: a storage server that goes away in the middle of a
//! backup, a second copy of every backup on another endpoint, and the endpoint `test` action.
//! The WebDAV servers here are real (`rclone serve webdav`), started by each test on a port of
//! its own so that stopping one disturbs no other test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::server::{Meta, Server};

const DAV_PASSWORD: &str = "dav-secret-of-this-test";

/// A WebDAV server of the test's own, serving `dir`.
struct Dav {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Dav {
    fn start(dir: &Path, port: u16) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("rclone")
            .args(["serve", "webdav", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--user", "holdfast", "--pass", DAV_PASSWORD])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone is installed by scripts/storage-servers");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rclone did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("webdav://holdfast@127.0.0.1:{}/repo", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The pack files of the repository it holds.
    fn packs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let data = self.dir.join("repo/data");
        for sub in std::fs::read_dir(&data).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.insert(f.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }

    /// The content of its only snapshot (asserting there is exactly one).
    fn only_snapshot(&self) -> Vec<u8> {
        let snaps = self.cli().snapshots();
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        let id = snaps[0]["id"].as_str().unwrap();
        self.cli().cmd(&["dump", &id[..8]]).output().unwrap().stdout
    }

    /// The holdfast CLI on its repository.
    fn cli(&self) -> Env {
        let mut env = Env::with_repo(self.url());
        env.extra_env = vec![("HOLDFAST_STORAGE_PASSWORD".into(), DAV_PASSWORD.into())];
        env
    }
}

impl Drop for Dav {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a new dump (2 MB of random bytes and `n`) to `payload` and returns it.
fn new_payload(payload: &Path, n: usize) -> Vec<u8> {
    sh(&format!(
        "head -c 2000000 /dev/urandom > {p}; echo {n} >> {p}",
        p = payload.display()
    ));
    std::fs::read(payload).unwrap()
}

fn dav_endpoint(s: &Server, name: &str, dav: &Dav) {
    s.ok(
        "POST",
        "/api/v1/endpoints",
        Some(&json!({"name": name, "kind": "webdav", "url": dav.url(),
                     "password": PASSWORD, "storage_password": DAV_PASSWORD,
                     "prune_schedule": "off"})),
    );
}

fn run(s: &Server, plan: &str) -> Value {
    let id = s.ok("POST", &format!("/api/v1/plans/{plan}/run"), None)["id"]
        .as_i64()
        .unwrap();
    s.wait_job(id, |st| !matches!(st, "queued" | "running"))
}

/// The storage server is stopped while a backup is uploading: the job fails, naming the
/// endpoint, after retrying; the earlier restore point is intact and the repository checks
/// clean once the server is back; the next backup succeeds; and the orphaned packs of the
/// failed one are removed by prune.
#[test]
fn a_storage_outage_mid_backup_fails_the_job_and_harms_no_earlier_backup() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut dav = Dav::start(&dir.path().join("dav"), port);
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    dav_endpoint(&s, "dav", &dav);

    // The dump: a payload, then (once `go` exists) a tail. Packs of the payload are uploaded
    // while the dump waits for `go`.
    let payload = dir.path().join("payload");
    let go = dir.path().join("go");
    let command = held_dump(&payload, &go);
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "gen", "kind": "command", "url": "cmd:dump.bin",
                     "command": command}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "p", "source": "gen", "endpoint": "dav", "schedule": "@daily",
                     "retry": {"attempts": 1},
                     "step_retry": {"attempts": 2, "base_ms": 100, "cap_ms": 200}}),
        ),
    );

    sh(&format!(
        "head -c 3000000 /dev/urandom > {}",
        payload.display()
    ));
    std::fs::write(&go, "").unwrap();
    let first = run(&s, "p");
    assert_eq!(first["state"], "succeeded", "{first}");
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();
    let mut first_bytes = std::fs::read(&payload).unwrap();
    first_bytes.extend_from_slice(b"tail\n");
    let packs_before = dav.packs();

    // 100 MB of new data: several packs are uploaded before the dump ends.
    std::fs::remove_file(&go).unwrap();
    sh(&format!(
        "head -c 100000000 /dev/urandom > {}",
        payload.display()
    ));
    let id = s.ok("POST", "/api/v1/plans/p/run", None)["id"]
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while dav.packs().difference(&packs_before).count() < 2 {
        assert!(Instant::now() < deadline, "no packs were uploaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    dav.stop();
    std::fs::write(&go, "").unwrap();
    let failed = s.wait_job(id, |st| !matches!(st, "queued" | "running"));
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("endpoint `dav`") && error.contains(&format!("127.0.0.1:{port}")),
        "the error does not name the endpoint: {error}"
    );
    assert!(failed["snapshot_id"].is_null());
    let tries = failed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["step"] == "backup")
        .count();
    assert_eq!(tries, 2, "the backup step was not retried: {failed}");
    assert!(!error.contains(DAV_PASSWORD));

    // The server is back: nothing was lost, nothing half-written is offered.
    let mut dav = Dav::start(&dav.dir.clone(), port);
    let orphans: BTreeSet<String> = dav.packs().difference(&packs_before).cloned().collect();
    assert!(!orphans.is_empty());
    let cli = dav.cli();
    let snaps = cli.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], first_id.as_str());
    let points = s.ok("GET", "/api/v1/restore-points?plan=p", None);
    assert_eq!(points.as_array().unwrap().len(), 1, "{points}");
    assert!(cli.cmd(&["dump", &first_id[..8]]).output().unwrap().stdout == first_bytes);
    cli.ok(&["check", "--read-data"]);

    let next = run(&s, "p");
    assert_eq!(next["state"], "succeeded", "{next}");

    // The server's prune (two-phase: safe beside running backups) marks the orphans; an
    // instant prune removes them.
    let prune = s.ok("POST", "/api/v1/endpoints/dav/prune", None)["id"]
        .as_i64()
        .unwrap();
    let prune = s.wait_job(prune, |st| !matches!(st, "queued" | "running"));
    assert_eq!(prune["state"], "succeeded", "{prune}");
    cli.ok(&["prune", "--instant"]);
    let left = dav.packs();
    assert!(
        orphans.iter().all(|o| !left.contains(o)),
        "orphaned packs of the failed backup are still there"
    );
    cli.ok(&["check", "--read-data"]);
    assert_eq!(cli.snapshots().len(), 2);
    dav.stop();
}

/// A plan with a copy endpoint: every backup is copied there, with its own retention; a copy
/// that fails (its server is down) leaves the backup successful and says so on the job, and the
/// next backup copies what was missed. The endpoint `test` action reports each check.
#[test]
fn backups_are_copied_to_a_second_endpoint_with_their_own_retention() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut dav = Dav::start(&dir.path().join("dav"), port);
    let s = Server::start(&dir.path().join("server"), &Meta::Sqlite, &[]);
    dav_endpoint(&s, "offsite", &dav);

    let report = s.ok("POST", "/api/v1/endpoints/offsite/test", None);
    assert_eq!(report["ok"], true, "{report}");
    let checks: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for c in ["reachable", "authenticated", "writable", "repository"] {
        assert!(checks.contains(&c), "no `{c}` check: {report}");
    }
    let check = |report: &Value, name: &str| -> Value {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no `{name}` check: {report}"))
    };
    // A local endpoint tells its free space.
    let local = s.ok("POST", "/api/v1/endpoints/local/test", None);
    let free = check(&local, "free-space");
    assert!(free["detail"].as_str().unwrap().contains("GiB"), "{local}");
    // A wrong password: reachable, not authenticated, and nothing tried after.
    s.ok(
        "POST",
        "/api/v1/endpoints",
        Some(&json!({"name": "wrong", "kind": "webdav", "url": dav.url(),
                     "password": PASSWORD, "storage_password": "not-it"})),
    );
    let bad = s.ok("POST", "/api/v1/endpoints/wrong/test", None);
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(check(&bad, "reachable")["ok"], true, "{bad}");
    let auth = check(&bad, "authenticated");
    assert_eq!(auth["ok"], false, "{bad}");
    assert!(
        auth["detail"]
            .as_str()
            .unwrap()
            .contains("storage_password"),
        "{bad}"
    );
    assert!(!bad.to_string().contains("not-it"), "{bad}");

    let payload = dir.path().join("payload");
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "gen", "kind": "command", "url": "cmd:dump.bin",
                     "command": format!("cat {}", payload.display())}),
        ),
    );
    let (code, e) = s.call(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "p", "source": "gen", "endpoint": "local", "schedule": "@daily",
                     "copy": {"endpoint": "nowhere"}}),
        ),
    );
    assert_eq!(code, 422, "{e}");
    assert!(e.to_string().contains("copy.endpoint"), "{e}");
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "p", "source": "gen", "endpoint": "local", "schedule": "@daily",
                     "retention": {"style": "gfs", "last": 3},
                     "step_retry": {"attempts": 1, "base_ms": 100, "cap_ms": 100},
                     "copy": {"endpoint": "offsite",
                              "retention": {"style": "gfs", "last": 1}}}),
        ),
    );
    let (code, e) = s.call("DELETE", "/api/v1/endpoints/offsite", None);
    assert_eq!(code, 409, "{e}");

    let mut versions = vec![];
    for i in 0..2 {
        versions.push(new_payload(&payload, i));
        let j = run(&s, "p");
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["copy"]["state"], "succeeded", "{j}");
        let short = &j["snapshot_id"].as_str().unwrap()[..8];
        let detail = j["copy"]["detail"].as_str().unwrap();
        assert!(detail.contains(short), "{detail}");
    }
    // The copy keeps only the newest (its own retention), the plan's endpoint both.
    assert!(dav.only_snapshot() == versions[1]);
    let points = s.ok("GET", "/api/v1/restore-points?plan=p", None);
    assert_eq!(points.as_array().unwrap().len(), 2, "{points}");

    // The copy endpoint is down: the backup succeeds, the copy says it failed.
    dav.stop();
    versions.push(new_payload(&payload, 2));
    let j = run(&s, "p");
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["copy"]["state"], "failed", "{j}");
    assert!(
        j["copy"]["detail"].as_str().unwrap().contains("offsite"),
        "{j}"
    );
    let missed = j["snapshot_id"].as_str().unwrap().to_string();

    // Back again: the next backup copies the missed one too (then retention keeps one).
    let dav = Dav::start(&dav.dir.clone(), port);
    versions.push(new_payload(&payload, 3));
    let j = run(&s, "p");
    assert_eq!(j["copy"]["state"], "succeeded", "{j}");
    let detail = j["copy"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&missed[..8]),
        "the missed copy was not made: {detail}"
    );
    assert!(dav.only_snapshot() == versions[3]);
    dav.cli().ok(&["check", "--read-data"]);
}

/// A plain web server is not S3: the endpoint `test` action against one must not say the
/// storage accepted the login (it only answered 404 to everything), but what went wrong. A real
/// S3 server with no such bucket says that instead.
#[test]
fn the_endpoint_test_tells_a_plain_web_server_from_s3() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let port = free_port();
    /// Stops the web server however the test ends.
    struct Web(Child);
    impl Drop for Web {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _web = Web(Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "python3 -m http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = Server::start(
        &dir.path().join("server"),
        &Meta::Sqlite,
        &["--workers", "0"],
    );
    let s3 = |name: &str, bucket: &str, endpoint: &str| {
        s.ok(
            "POST",
            "/api/v1/endpoints",
            Some(&json!({"name": name, "kind": "s3",
                         "url": format!("s3://{bucket}/backups?endpoint={endpoint}&region=us-east-1&path-style=true"),
                         "access_key_id": "holdfast-test", "secret_access_key": "holdfast-test",
                         "password": PASSWORD})),
        );
        let report = s.ok("POST", &format!("/api/v1/endpoints/{name}/test"), None);
        let steps: Vec<(String, bool, String)> = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let text = |k: &str| c[k].as_str().unwrap().to_string();
                (text("check"), c["ok"].as_bool().unwrap(), text("detail"))
            })
            .collect();
        (report["ok"].as_bool().unwrap(), steps)
    };

    let (ok, steps) = s3("web", "bucket", &format!("http://127.0.0.1:{port}"));
    assert!(!ok, "{steps:?}");
    let auth = steps.iter().find(|(c, ..)| c == "authenticated").unwrap();
    assert!(
        !auth.1,
        "a plain web server `accepted the login`: {steps:?}"
    );
    assert!(
        auth.2.contains("is not an S3 server") && auth.2.contains("HTTP 404"),
        "{steps:?}"
    );
    // Nothing is tried after it, and nothing was written there.
    assert_eq!(steps.last().unwrap().0, "authenticated", "{steps:?}");
    assert_eq!(std::fs::read_dir(&www).unwrap().count(), 0);

    // A real S3 server with no such bucket: reachable, and the bucket is what is missing.
    let endpoint = std::env::var("HOLDFAST_TEST_S3_ENDPOINT")
        .expect("HOLDFAST_TEST_S3_ENDPOINT: run the tests with scripts/test");
    let (ok, steps) = s3("nobucket", &unique("hf-none").replace('_', "-"), &endpoint);
    assert!(!ok, "{steps:?}");
    let last = steps.last().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("bucket", false), "{steps:?}");
    assert!(last.2.contains("create it first"), "{steps:?}");
    // And with the bucket, every check passes.
    let bucket = unique("hf-probe").replace('_', "-");
    sh(&format!("curl -sf -X PUT {endpoint}/{bucket}"));
    let (ok, steps) = s3("real", &bucket, &endpoint);
    assert!(ok, "{steps:?}");
}
