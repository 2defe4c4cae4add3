//! Signing in to the UI through a real OpenID provider: npm's `oidc-provider` (OpenID
//! certified), started on loopback by `tests/oidc/provider.cjs`, and a real Chromium.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::server::{Meta, Server};
use crate::ui::node;

/// The provider, running until dropped (it exits when its stdin closes).
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(client_id: &str, secret: &str, redirect: &str) -> Self {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.cjs");
        let node_path = std::env::var("HOLDFAST_TEST_NODE_PATH").expect(
            "HOLDFAST_TEST_NODE_PATH: run the tests with scripts/test (it installs oidc-provider)",
        );
        let mut child = Command::new("node")
            .arg(&script)
            .args(["0", client_id, secret, redirect])
            .env("NODE_PATH", node_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is on the machine");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the provider did not start: {line:?}"));
        Self {
            child,
            issuer: ready["issuer"].as_str().unwrap().to_string(),
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Groups map to roles; a user of no mapped group is refused with a page that says why; a
/// provider's user never takes over a local account of the same name; forged and cancelled
/// callbacks are refused; the audit log has each sign-in with its actor.
#[test]
fn users_sign_in_through_the_openid_provider_with_roles_from_their_groups() {
    let dir = tempfile::tempdir().unwrap();
    // The server's port is known before the provider starts (its redirect URI names it) and
    // stays taken until the server starts, so the provider cannot be given the same one.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let redirect = format!("http://127.0.0.1:{port}/ui/oidc/callback");
    let secret = "client secret of the oidc test, never logged";
    let idp = Provider::start("holdfast", secret, &redirect);
    drop(held);
    let secret_file = dir.path().join("oidc.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let s = Server::start(
        &dir.path().join("server"),
        &Meta::Sqlite,
        &[
            "--listen",
            &listen,
            "--oidc-issuer",
            &idp.issuer,
            "--oidc-client-id",
            "holdfast",
            "--oidc-client-secret-file",
            secret_file.to_str().unwrap(),
            "--oidc-scope",
            "profile",
            "--oidc-scope",
            "groups",
            "--oidc-role",
            "holdfast-operators=operator",
            "--oidc-role",
            "holdfast-admins=admin",
            "--oidc-role",
            "holdfast-viewers=viewer",
            "--oidc-label",
            "the test provider",
        ],
    );
    // A local account that happens to have the name of the provider's dave.
    s.ok(
        "POST",
        "/api/v1/users",
        Some(&json!({"name": "dave", "role": "viewer", "password": "dave's local passphrase"})),
    );

    let seen = node("oidc.cjs", &[&s.url]);
    assert_eq!(seen["alice"], "alice · operator", "{seen}");
    assert_eq!(seen["aliceUrl"], "/", "{seen}");
    assert!(
        seen["aliceEndpointForms"].as_u64().unwrap() > 0,
        "an operator edits endpoints: {seen}"
    );
    assert!(
        !seen["aliceAccess"]
            .as_str()
            .unwrap()
            .contains("New account"),
        "an operator manages no accounts: {seen}"
    );
    assert_eq!(seen["sessionSameSite"], "Strict", "{seen}");
    assert_eq!(
        seen["pendingLeft"], false,
        "the sign-in's cookie is gone: {seen}"
    );
    assert_eq!(seen["bob"], "bob · admin", "{seen}");
    let carol = seen["carol"].as_str().unwrap();
    assert!(
        carol.contains("none of your groups (staff)") && carol.contains("--oidc-role"),
        "{seen}"
    );
    assert_eq!(seen["carolAfter"], "/ui/login", "{seen}");
    assert!(
        seen["dave"]
            .as_str()
            .unwrap()
            .contains("an account named dave already exists"),
        "{seen}"
    );
    assert!(
        seen["forged"]
            .as_str()
            .unwrap()
            .contains("expired or was started in another browser"),
        "{seen}"
    );
    assert!(
        seen["wrongState"]
            .as_str()
            .unwrap()
            .contains("state mismatch"),
        "{seen}"
    );
    assert!(
        seen["cancelled"]
            .as_str()
            .unwrap()
            .contains("access_denied"),
        "{seen}"
    );

    let users = s.ok("GET", "/api/v1/users", None);
    let by_name = |n: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == n)
            .cloned()
    };
    let alice = by_name("alice").expect("alice's account was made");
    assert_eq!(
        (&alice["role"], &alice["oidc"]),
        (&json!("operator"), &json!(true))
    );
    assert_eq!(alice["password_set"], false, "{alice}");
    assert_eq!(by_name("bob").unwrap()["role"], "admin");
    assert!(by_name("carol").is_none(), "no account for carol: {users}");
    let dave = by_name("dave").unwrap();
    assert_eq!(
        (&dave["oidc"], &dave["password_set"]),
        (&json!(false), &json!(true)),
        "the local dave is untouched: {dave}"
    );

    let audit = s.ok("GET", "/api/v1/audit?limit=100", None);
    let sign_ins: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "session.sign-in" && e["detail"]["with"] == "oidc")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("alice", "ok"),
        ("bob", "ok"),
        ("carol", "denied: no mapped group"),
    ] {
        assert!(
            sign_ins.iter().any(|(a, o)| a == want.0 && o == want.1),
            "{want:?} in {sign_ins:?}"
        );
    }
    assert!(
        sign_ins
            .iter()
            .any(|(_, o)| o.starts_with("denied: an account named dave")),
        "{sign_ins:?}"
    );
    assert!(
        !s.log().contains(secret),
        "the client secret is never logged"
    );
}

/// A configuration that could let nobody in, or anyone over plain http, is refused at start.
#[test]
fn an_oidc_configuration_without_roles_or_over_plain_http_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&[
        "--oidc-issuer",
        "http://id.example.com",
        "--oidc-client-id",
        "holdfast",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("must be https"), "{err}");
    assert!(err.contains("no --oidc-role"), "{err}");
    let (code, err) = run(&[
        "--oidc-issuer",
        "https://id.example.com",
        "--oidc-client-id",
        "holdfast",
        "--oidc-role",
        "ops=superuser",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown role `superuser`"), "{err}");
}
