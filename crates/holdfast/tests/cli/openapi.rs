//! The OpenAPI document against the real `holdfast serve`, by schemathesis: generated
//! requests for every operation (valid ones and broken ones), and every answer held to the
//! document. `scripts/services` installs schemathesis; in CI (`CI=true`) its absence fails
//! the test, elsewhere the test says loudly that it did not run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::{Meta, Server, TOKEN};

/// Whether schemathesis can run here; outside CI, `false` after saying why.
fn schemathesis_installed() -> bool {
    let found = Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let msg = "schemathesis is not installed, so the API was not checked against its \
                   OpenAPI document: run scripts/services (it installs schemathesis>=4,<5 \
                   with pip)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
    }
    found
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    if !schemathesis_installed() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &Meta::Sqlite, &[]);
    // Something for the answers to show: a source and a plan with GFS retention, beside the
    // endpoint `local` of the first start.
    s.ok(
        "POST",
        "/api/v1/sources",
        Some(
            &json!({"name": "etcd", "kind": "command", "url": "cmd:etcd", "command": "echo state"}),
        ),
    );
    s.ok(
        "POST",
        "/api/v1/plans",
        Some(
            &json!({"name": "etcd-nightly", "source": "etcd", "endpoint": "local",
            "schedule": "0 3 * * *", "retention": {"style": "gfs", "daily": 7, "weekly": 4}}),
        ),
    );
    s.ok("POST", "/api/v1/plans/etcd-nightly/run", None);

    let work = tempfile::tempdir().unwrap();
    let out_path = work.path().join("schemathesis.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let seed = std::env::var("HOLDFAST_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let mut child = Command::new("schemathesis")
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", s.url))
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        // Its own token (ids are small numbers), the default endpoint; and the agents'
        // long poll, which waits up to a minute per call (the agent tests cover it).
        .args(["--exclude-operation-id", "revoke_token"])
        .args(["--exclude-operation-id", "delete_endpoint"])
        .args(["--exclude-operation-id", "claim"])
        // Accounts it could lock out (the last admin is kept, but not every other one).
        .args(["--exclude-operation-id", "update_user"])
        .args(["--exclude-operation-id", "delete_user"])
        .args(["--max-examples", "10", "--max-time", "100", "--request-timeout", "10"])
        .args(["--workers", "2", "--seed", &seed])
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("schemathesis starts");
    let deadline = Instant::now() + Duration::from_secs(170);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran past its time budget:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found answers that the OpenAPI document does not describe (seed {seed}; \
         HOLDFAST_SCHEMATHESIS_SEED repeats a run):\n{report}\nserver log:\n{}",
        s.log()
    );
    assert!(report.contains("passed"), "{report}");
    // Its token still works (nothing above revoked it), and the default endpoint is there.
    s.ok("GET", "/api/v1/endpoints/local", None);
}
