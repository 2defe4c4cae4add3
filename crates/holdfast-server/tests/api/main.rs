//! The API in-process, zero2prod style: a server built on a fresh data directory, bound to a
//! port the OS picks, run until the test drops it, and called over HTTP with reqwest.

mod access;
mod scope;

use std::time::Duration;

use holdfast_server::{Server, ServerConfig};
use serde_json::{Value, json};

const TOKEN: &str = "hf_test_admin_token_of_the_api_tests";

struct App {
    url: String,
    data: tempfile::TempDir,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    /// A server with no embedded agent (the tests play the agents), on SQLite.
    async fn spawn() -> Self {
        let data = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.path().to_path_buf(),
            database_url: None,
            server_key_file: None,
            admin_token: Some(TOKEN.into()),
            admin_password: None,
            workers: 0,
            agent_labels: Default::default(),
            agent_policy: Default::default(),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            tick: Duration::from_millis(100),
            replica: Some("test".into()),
            shutdown_grace: Duration::from_secs(1),
            metrics_listen: None,
            audit_retention: Duration::from_secs(86_400),
            oidc: None,
        };
        let server = Server::build(config).await.unwrap();
        let url = format!("http://{}", server.addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap()
        });
        Self {
            url,
            data,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(TOKEN, method, path, body).await
    }

    /// A call with `token` (an agent's credential, another role's token, or none when empty).
    async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (code, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&code), "{method} {path}: {code} {v}");
        v
    }

    /// Runs SQL on the metadata database behind the server's back.
    fn sql(&self, sql: &str) {
        let out = std::process::Command::new("sqlite3")
            .arg(self.data.path().join("holdfast.db"))
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the server stops when asked")
            .unwrap();
    }
}

async fn plan_with_source(app: &App, source_labels: Value) -> i64 {
    app.ok(
        "POST",
        "/api/v1/sources",
        Some(
            json!({"name": "shop", "kind": "postgres", "url": "postgres://app@db1:5432/shop",
                    "password": "db-password-of-the-test", "labels": source_labels}),
        ),
    )
    .await;
    app.ok(
        "POST",
        "/api/v1/plans",
        Some(
            json!({"name": "nightly", "source": "shop", "endpoint": "local", "schedule": "@daily"}),
        ),
    )
    .await;
    app.ok("POST", "/api/v1/plans/nightly/run", None).await["id"]
        .as_i64()
        .unwrap()
}

/// An enrolment token (admin), as `POST /api/v1/enrolments` gives it.
async fn enrolment(app: &App, body: Value) -> String {
    let e = app.ok("POST", "/api/v1/enrolments", Some(body)).await;
    let t = e["token"].as_str().unwrap().to_string();
    assert!(t.starts_with("hf_enrol_"), "{e}");
    t
}

fn hello(name: &str, labels: Value) -> Value {
    json!({"name": name, "labels": labels, "version": "test", "hostname": "h", "slots": 1})
}

/// Enrols agent `name` with `labels`; its credential.
async fn register(app: &App, name: &str, labels: Value) -> String {
    let t = enrolment(app, json!({ "labels": labels })).await;
    let (code, e) = app
        .call_as(
            &t,
            "POST",
            "/api/v1/agents/enrol",
            Some(hello(name, labels)),
        )
        .await;
    assert_eq!(code, 201, "{e}");
    e["credential"].as_str().unwrap().to_string()
}

/// Every operation the OpenAPI document lists is served by the router (not its "no such API
/// path" fallback, not a 405), and a path it does not list is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
    let app = App::spawn().await;
    let doc = app.ok("GET", "/api/v1/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            if !["get", "post", "put", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            // Ids no resource has: the handler answers (404 naming the thing, 422, ...).
            let concrete = path
                .replace("{name}", "no-such-thing")
                .replace("{id}", "999999");
            let (code, body) = app
                .call(&method.to_uppercase(), &concrete, Some(json!({})))
                .await;
            let fallback = body["error"]
                .as_str()
                .is_some_and(|e| e.contains("no such API path"));
            assert!(
                code != 405 && !fallback,
                "{method} {path} is documented but not routed: {code} {body}"
            );
        }
    }
    assert!(operations >= 30, "{operations}");
    let (code, body) = app.call("GET", "/api/v1/no-such-route", None).await;
    assert_eq!(code, 404);
    assert!(body["error"].as_str().unwrap().contains("no such API path"));
    app.stop().await;
}

/// A 500 tells the client nothing of its cause (a database's error text, a stored spec's
/// contents); it carries the id under which the server logged it.
#[tokio::test(flavor = "multi_thread")]
async fn a_500_answers_a_generic_body_with_a_request_id() {
    let app = App::spawn().await;
    plan_with_source(&app, json!({})).await;
    app.sql("UPDATE sources SET spec = '{\"kind\": \"postgres\", \"url\": 42, \"secret-ish\": \"inner detail\"}' WHERE name = 'shop'");
    let (code, body) = app.call("GET", "/api/v1/sources/shop", None).await;
    assert_eq!(code, 500, "{body}");
    let id = body["request_id"].as_str().expect("a request id");
    assert_eq!(id.len(), 16);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(id), "{error}");
    assert!(
        !error.contains("inner detail")
            && !error.contains("invalid type")
            && !error.contains("spec"),
        "the cause stays in the log: {error}"
    );
    app.stop().await;
}

/// The claim path failed open: a job whose labels could not be read went to any agent, with
/// its unsealed secrets. Now such a job goes to no agent and stays queued.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_source_spec_is_unreadable_is_not_handed_to_an_agent() {
    let app = App::spawn().await;
    let id = plan_with_source(&app, json!({"site": "eu"})).await;
    let anywhere = register(&app, "anywhere", json!({})).await;
    let eu = register(&app, "eu-agent", json!({"site": "eu"})).await;
    // The labelled job is not for an unlabelled agent.
    let (code, body) = app
        .call_as(
            &anywhere,
            "POST",
            "/api/v1/agents/anywhere/claim?wait=0",
            None,
        )
        .await;
    assert_eq!(code, 204, "{body}");
    app.sql("UPDATE sources SET spec = 'not json' WHERE name = 'shop'");
    for (agent, cred) in [("anywhere", &anywhere), ("eu-agent", &eu)] {
        let (code, body) = app
            .call_as(
                cred,
                "POST",
                &format!("/api/v1/agents/{agent}/claim?wait=0"),
                None,
            )
            .await;
        assert_eq!(code, 204, "{agent} got {body}");
        assert!(!body.to_string().contains("db-password-of-the-test"));
    }
    let job = app.ok("GET", &format!("/api/v1/jobs/{id}"), None).await;
    assert_eq!(job["state"], "queued", "{job}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_shows_the_store_and_each_worker() {
    let app = App::spawn().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let h = loop {
        let h = app.ok("GET", "/api/v1/health", None).await;
        let ran = |name: &str| {
            h["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["name"] == name && w["runs"].as_u64() > Some(0))
        };
        let all_ran = h["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["runs"].as_u64() > Some(0));
        if ran("scheduler") && ran("reaper") && all_ran || tokio::time::Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(h["store"], "ok", "{h}");
    for w in h["workers"].as_array().unwrap() {
        assert!(w["runs"].as_u64() > Some(0), "{h}");
        assert_eq!(w["restarts"], 0, "{h}");
        assert!(w["last_run"].is_string(), "{h}");
    }
    // Without a token, only /healthz answers, and with no detail.
    let r = reqwest::get(format!("{}/api/v1/health", app.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::get(format!("{}/healthz", app.url)).await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
    app.stop().await;
}

/// An agent's labels have the limits a source's have, named in the 422.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_too_many_or_too_long_labels_is_refused() {
    let app = App::spawn().await;
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long = json!({"site": "x".repeat(300)});
    let t = enrolment(&app, json!({"uses": 2, "any_labels": true})).await;
    for labels in [Value::Object(many), long] {
        let (code, body) = app
            .call_as(&t, "POST", "/api/v1/agents/enrol", Some(hello("a", labels)))
            .await;
        assert_eq!(code, 422, "{body}");
        assert_eq!(body["fields"][0]["field"], "labels", "{body}");
    }
    app.stop().await;
}

/// What a client generated from the document needs: no `allOf` left (a flattened type whose
/// part refuses unknown fields validated nothing: `PlanView`, GFS retention), the errors of
/// every route documented, names with their rule, and query parameters refused outside the
/// range they document, as JSON errors.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_what_the_api_answers() {
    let app = App::spawn().await;
    let doc = app.ok("GET", "/api/v1/openapi.json", None).await;
    let text = doc.to_string();
    assert!(!text.contains("allOf"), "an allOf is left in the document");
    let schemas = &doc["components"]["schemas"];
    let plan_view = &schemas["PlanView"];
    for field in ["name", "retention", "next_runs", "version"] {
        assert!(
            plan_view["properties"].get(field).is_some(),
            "PlanView lacks {field}: {plan_view}"
        );
    }
    let gfs = &schemas["Retention"]["oneOf"][1];
    assert_eq!(gfs["additionalProperties"], json!(false), "{gfs}");
    for field in ["style", "daily", "weekly"] {
        assert!(gfs["properties"].get(field).is_some(), "{gfs}");
    }
    for schema in ["PlanSpec", "EndpointInput", "SourceInput"] {
        let name = &schemas[schema]["properties"]["name"];
        assert_eq!(
            name["pattern"], "^[a-z][a-z0-9-]*$",
            "{schema}.name: {name}"
        );
        assert_eq!(name["maxLength"], 63, "{schema}.name: {name}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path} does not document 401"
            );
            let has_query = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if has_query {
                assert!(op["responses"].get("400").is_some(), "{method} {path}: 400");
            }
        }
    }
    let limit = doc["paths"]["/api/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000))
    );

    let nobody = register(&app, "nobody", json!({})).await;
    for (path, param) in [
        ("/api/v1/jobs?limit=0", "limit"),
        ("/api/v1/jobs?limit=1001", "limit"),
        ("/api/v1/jobs/1/log?limit=100000", "limit"),
        ("/api/v1/agents/nobody/claim?wait=61", "wait"),
    ] {
        let method = if path.contains("claim") {
            "POST"
        } else {
            "GET"
        };
        let token = if path.contains("claim") {
            &nobody
        } else {
            TOKEN
        };
        let (code, body) = app.call_as(token, method, path, None).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("`{param}`")),
            "{path}: {body}"
        );
    }
    // axum's own rejections (a query of the wrong type) are JSON errors too.
    let (code, body) = app
        .call("PUT", "/api/v1/plans/x?dry_run=maybe", Some(json!({})))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("dry_run"),
        "{body}"
    );
    app.stop().await;
}
