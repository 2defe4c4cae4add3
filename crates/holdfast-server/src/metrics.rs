//! `/metrics`: Prometheus metrics built from the metadata store (never by reading a
//! repository), in the Prometheus text format, or OpenMetrics when the scraper asks for it.
//! Labels are kept to plan, endpoint, source, agent, kind, state and status; the version only in
//! `holdfast_build_info`. Every replica answers the same (they share the store): scrape one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_core::Schedule;
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Kind, StoreError};

use crate::notify::evaluate::AGENT_OFFLINE_MS;
use crate::state::AppState;

/// The buckets of `holdfast_backup_duration_seconds`.
const BUCKETS_SECS: &[i64] = &[1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600];

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let open = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    match render(&s, open).await {
        Ok(body) => (
            [(header::CONTENT_TYPE, if open { OPENMETRICS } else { TEXT })],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("metrics: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metadata store unavailable\n",
            )
                .into_response()
        }
    }
}

/// One metric family being written.
struct Out {
    text: String,
    open: bool,
}

impl Out {
    /// `# HELP` and `# TYPE`. OpenMetrics names a counter family without `_total`.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let family = if self.open && kind == "counter" {
            name.trim_end_matches("_total")
        } else {
            name
        };
        let _ = writeln!(self.text, "# HELP {family} {help}");
        let _ = writeln!(self.text, "# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

const STATUSES: &[&str] = &["succeeded", "failed", "cancelled"];

async fn render(s: &AppState, open: bool) -> Result<String, StoreError> {
    let now = s.now();
    let ts = jiff::Timestamp::from_millisecond(now).unwrap_or_default();
    let store = &s.store;
    let plans: Vec<(String, PlanSpec, holdfast_store::PlanCols, i64)> = store
        .list(Kind::Plan)
        .await?
        .into_iter()
        .filter_map(|r| {
            Some((
                r.name,
                serde_json::from_str(&r.spec).ok()?,
                r.plan?,
                r.created_at,
            ))
        })
        .collect();
    let alerts: BTreeMap<String, holdfast_store::PlanAlert> = store
        .plan_alerts()
        .await?
        .into_iter()
        .map(|a| (a.plan.clone(), a))
        .collect();
    let mut runs: BTreeMap<(String, String), (i64, Option<i64>)> = BTreeMap::new();
    for r in store.run_counts().await? {
        runs.insert((r.plan, r.state), (r.count, r.last_finished));
    }
    let last_ok = store.last_successes().await?;
    let bounds: Vec<i64> = BUCKETS_SECS.iter().map(|b| b * 1000).collect();
    let durations: BTreeMap<String, holdfast_store::Durations> = store
        .durations(&bounds)
        .await?
        .into_iter()
        .map(|d| (d.plan.clone(), d))
        .collect();
    let waiting = store.waiting_scheduled(now).await?;
    let mut o = Out {
        text: String::new(),
        open,
    };

    o.family("holdfast_build_info", "gauge", "The server's version.");
    o.sample(
        "holdfast_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    o.family(
        "holdfast_plan_info",
        "gauge",
        "Each plan, with its endpoint and source.",
    );
    for (name, spec, _, _) in &plans {
        o.sample(
            "holdfast_plan_info",
            &[
                ("plan", name),
                ("endpoint", &spec.endpoint),
                ("source", &spec.source),
            ],
            1.0,
        );
    }
    o.family(
        "holdfast_plan_created_timestamp_seconds",
        "gauge",
        "When the plan was created.",
    );
    for (name, _, _, created) in &plans {
        o.sample(
            "holdfast_plan_created_timestamp_seconds",
            &[("plan", name)],
            secs(*created),
        );
    }
    o.family(
        "holdfast_plan_last_success_timestamp_seconds",
        "gauge",
        "When the plan's last successful backup finished.",
    );
    for (name, ..) in &plans {
        if let Some(t) = runs
            .get(&(name.clone(), "succeeded".into()))
            .and_then(|r| r.1)
        {
            o.sample(
                "holdfast_plan_last_success_timestamp_seconds",
                &[("plan", name)],
                secs(t),
            );
        }
    }
    o.family(
        "holdfast_plan_last_run_timestamp_seconds",
        "gauge",
        "When the plan's last backup with each outcome finished.",
    );
    for (name, ..) in &plans {
        for st in STATUSES {
            if let Some(t) = runs.get(&(name.clone(), (*st).into())).and_then(|r| r.1) {
                o.sample(
                    "holdfast_plan_last_run_timestamp_seconds",
                    &[("plan", name), ("status", st)],
                    secs(t),
                );
            }
        }
    }
    o.family(
        "holdfast_plan_next_run_timestamp_seconds",
        "gauge",
        "When the plan fires next (absent when paused).",
    );
    for (name, _, cols, _) in &plans {
        if let Some(t) = cols.next_fire_at.filter(|_| !cols.paused) {
            o.sample(
                "holdfast_plan_next_run_timestamp_seconds",
                &[("plan", name)],
                secs(t),
            );
        }
    }
    o.family(
        "holdfast_plan_max_age_seconds",
        "gauge",
        "How old the last success may be before the plan is stale.",
    );
    for (name, spec, ..) in &plans {
        let sched = Schedule::parse(&spec.schedule, &spec.timezone).ok();
        o.sample(
            "holdfast_plan_max_age_seconds",
            &[("plan", name)],
            spec.alerts.max_age_secs(sched.as_ref(), ts) as f64,
        );
    }
    o.family(
        "holdfast_plan_consecutive_failures",
        "gauge",
        "Failed backups since the plan's last success.",
    );
    for (name, ..) in &plans {
        let n = alerts.get(name).map_or(0, |a| a.consecutive_failures);
        o.sample(
            "holdfast_plan_consecutive_failures",
            &[("plan", name)],
            n as f64,
        );
    }
    o.family("holdfast_plan_missed", "gauge", "1 while a scheduled backup of the plan waits longer than its missed_after without starting.");
    for (name, spec, ..) in &plans {
        let late = waiting.iter().any(|j| {
            j.plan.as_deref() == Some(name)
                && j.fire_at
                    .is_some_and(|f| now - f >= spec.alerts.missed_after_secs() * 1000)
        });
        o.sample(
            "holdfast_plan_missed",
            &[("plan", name)],
            f64::from(u8::from(late)),
        );
    }
    o.family(
        "holdfast_plan_paused",
        "gauge",
        "1 when the plan is paused.",
    );
    for (name, _, cols, _) in &plans {
        o.sample(
            "holdfast_plan_paused",
            &[("plan", name)],
            f64::from(u8::from(cols.paused)),
        );
    }
    o.family(
        "holdfast_backup_runs_total",
        "counter",
        "Finished backups by outcome.",
    );
    for (name, ..) in &plans {
        for st in STATUSES {
            let n = runs.get(&(name.clone(), (*st).into())).map_or(0, |r| r.0);
            o.sample(
                "holdfast_backup_runs_total",
                &[("plan", name), ("status", st)],
                n as f64,
            );
        }
    }
    o.family(
        "holdfast_backup_duration_seconds",
        "histogram",
        "How long successful backups took.",
    );
    for (name, ..) in &plans {
        let d = durations.get(name);
        for (i, b) in BUCKETS_SECS.iter().enumerate() {
            let n = d.map_or(0, |d| d.cumulative[i]);
            o.sample(
                "holdfast_backup_duration_seconds_bucket",
                &[("plan", name), ("le", &b.to_string())],
                n as f64,
            );
        }
        let count = d.map_or(0, |d| d.count);
        o.sample(
            "holdfast_backup_duration_seconds_bucket",
            &[("plan", name), ("le", "+Inf")],
            count as f64,
        );
        o.sample(
            "holdfast_backup_duration_seconds_sum",
            &[("plan", name)],
            secs(d.map_or(0, |d| d.sum_ms)),
        );
        o.sample(
            "holdfast_backup_duration_seconds_count",
            &[("plan", name)],
            count as f64,
        );
    }
    o.family(
        "holdfast_backup_last_bytes",
        "gauge",
        "What the plan's last successful backup read and added to the repository.",
    );
    for (name, ..) in &plans {
        if let Some(j) = last_ok.get(name) {
            o.sample(
                "holdfast_backup_last_bytes",
                &[("plan", name), ("kind", "read")],
                j.bytes_read as f64,
            );
            o.sample(
                "holdfast_backup_last_bytes",
                &[("plan", name), ("kind", "added")],
                j.bytes_written as f64,
            );
        }
    }

    o.family(
        "holdfast_plan_restore_points",
        "gauge",
        "Restore points of the plan its last backup's retention kept.",
    );
    let points = store.restore_points().await?;
    for (name, ..) in &plans {
        if let Some(n) = points.get(name) {
            o.sample("holdfast_plan_restore_points", &[("plan", name)], *n as f64);
        }
    }

    o.family("holdfast_jobs", "gauge", "Jobs by kind and state.");
    for (kind, state, n) in store.job_counts().await? {
        o.sample(
            "holdfast_jobs",
            &[("kind", &kind), ("state", &state)],
            n as f64,
        );
    }
    o.family(
        "holdfast_job_queue_oldest_age_seconds",
        "gauge",
        "How long the oldest job that may run now has waited (0: none waits).",
    );
    let oldest = store.oldest_runnable(now).await?.map_or(0, |t| now - t);
    o.sample(
        "holdfast_job_queue_oldest_age_seconds",
        &[],
        secs(oldest.max(0)),
    );

    let agents = store.agents().await?;
    o.family(
        "holdfast_agent_up",
        "gauge",
        "1 when the agent was heard from within two minutes.",
    );
    for a in &agents {
        o.sample(
            "holdfast_agent_up",
            &[("agent", &a.name)],
            f64::from(u8::from(now - a.last_seen < AGENT_OFFLINE_MS)),
        );
    }
    o.family(
        "holdfast_agent_last_seen_timestamp_seconds",
        "gauge",
        "When the agent was last heard from.",
    );
    for a in &agents {
        o.sample(
            "holdfast_agent_last_seen_timestamp_seconds",
            &[("agent", &a.name)],
            secs(a.last_seen),
        );
    }

    o.family(
        "holdfast_notification_deliveries_total",
        "counter",
        "Notification deliveries that were sent, or given up (failed).",
    );
    let mut deliveries: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in store.list(Kind::Notifier).await? {
        for st in ["sent", "failed"] {
            deliveries.insert((r.name.clone(), st.into()), 0);
        }
    }
    let counts = store.delivery_counts().await?;
    for (notifier, state, n) in &counts {
        if state == "sent" || state == "failed" {
            deliveries.insert((notifier.clone(), state.clone()), *n);
        }
    }
    for ((notifier, state), n) in &deliveries {
        o.sample(
            "holdfast_notification_deliveries_total",
            &[("notifier", notifier), ("status", state)],
            *n as f64,
        );
    }
    o.family(
        "holdfast_notification_pending",
        "gauge",
        "Deliveries waiting to be sent (or retried) by notifier.",
    );
    let mut pending: BTreeMap<String, i64> =
        deliveries.keys().map(|(n, _)| (n.clone(), 0)).collect();
    for (notifier, state, n) in counts {
        if state == "queued" || state == "sending" {
            *pending.entry(notifier).or_default() += n;
        }
    }
    for (notifier, n) in &pending {
        o.sample(
            "holdfast_notification_pending",
            &[("notifier", notifier)],
            *n as f64,
        );
    }
    o.family(
        "holdfast_verify_last_success_timestamp_seconds",
        "gauge",
        "When the plan's last passing restore drill finished.",
    );
    let passed = store.last_passed_drill_per_plan().await?;
    for (plan, at, _) in &passed {
        o.sample(
            "holdfast_verify_last_success_timestamp_seconds",
            &[("plan", plan)],
            secs(*at),
        );
    }
    o.family(
        "holdfast_verify_rto_seconds",
        "gauge",
        "The restore time the plan's last restore drill measured (its recovery time).",
    );
    for d in store.last_drill_per_plan().await? {
        if let Some(ms) = d.rto_ms {
            o.sample(
                "holdfast_verify_rto_seconds",
                &[("plan", &d.plan)],
                secs(ms),
            );
        }
    }
    o.family(
        "holdfast_verify_runs_total",
        "counter",
        "Restore drills that reported, by plan and status (passed, failed).",
    );
    for (plan, ok, n) in store.drill_counts().await? {
        o.sample(
            "holdfast_verify_runs_total",
            &[
                ("plan", &plan),
                ("status", if ok { "passed" } else { "failed" }),
            ],
            n as f64,
        );
    }

    o.family(
        "holdfast_proxy_denied_total",
        "counter",
        "Requests the repository proxy refused (this replica, since it started), by reason: \
         delete, exists, content-hash, read-only, snapshot-plan, snapshot-time, expired...",
    );
    let denied = s.proxy.denied.lock().unwrap().clone();
    for (reason, n) in &denied {
        o.sample(
            "holdfast_proxy_denied_total",
            &[("reason", reason)],
            *n as f64,
        );
    }

    o.family(
        "holdfast_worker_restarts_total",
        "counter",
        "Background worker steps that failed or panicked (each followed by a restart).",
    );
    for w in s.workers.status() {
        o.sample(
            "holdfast_worker_restarts_total",
            &[("worker", w.name)],
            w.restarts as f64,
        );
    }
    if open {
        o.text.push_str("# EOF\n");
    }
    Ok(o.text)
}
