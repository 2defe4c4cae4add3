//! The alert evaluator: turns what happened in the store into events and their deliveries.
//! It runs on the server, so a plan whose agent never connects still alerts, and on one replica
//! at a time (under the `alerts` lease); each event's dedup key makes it happen once even so.
//!
//! - Each finished job once (marked `evaluated`), in the order they finished: a backup's
//!   outcome goes through the plan's policy (`after_failures`, `repeat`, one recovery), and its
//!   size and time are compared with the plan's last successful backups. A started backup is
//!   news for heartbeats.
//! - Each pass: scheduled backups still waiting after `missed_after`, plans whose last success
//!   is older than their `max_age`, agents not heard from for two minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use holdfast_core::Schedule;
use holdfast_core::alert::EventKind;
use holdfast_core::job::{JobKind, JobState};
use holdfast_core::plan::PlanSpec;
use holdfast_store::{Job, Kind, NewEvent, PlanAlert, Store, StoreError};

use super::message::Notification;
use super::model::{NotifierKind, StoredNotifier};
use crate::model::rfc3339;
use crate::state::AppState;
use crate::worker::Worker;

/// An agent not heard from for this long is offline.
pub const AGENT_OFFLINE_MS: i64 = 120_000;
/// How many earlier successful backups a backup's size and time are compared with.
const HISTORY: i64 = 10;
/// At least this many earlier successes before a size or time is called unusual.
const MIN_HISTORY: usize = 3;

pub(crate) struct Evaluator {
    pub(crate) state: Arc<AppState>,
    started: i64,
}

impl Evaluator {
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        let started = state.now();
        Self { state, started }
    }
}

impl Worker for Evaluator {
    fn name(&self) -> &'static str {
        "alerts"
    }

    async fn step(&self) -> Result<Duration, String> {
        let s = &self.state;
        let now = s.now();
        // Short, so that a replica killed with the lease hands it over soon.
        let lease = now + (3 * s.config.tick.as_millis() as i64).max(10_000);
        let mine = s
            .store
            .take_lease("alerts", &s.instance, now, lease)
            .await
            .map_err(|e| e.to_string())?;
        if mine {
            let ctx = Context::load(&s.store).await.map_err(|e| e.to_string())?;
            ctx.jobs(s, now).await.map_err(|e| e.to_string())?;
            ctx.missed(s, now).await.map_err(|e| e.to_string())?;
            ctx.stale(s, now).await.map_err(|e| e.to_string())?;
            if now - self.started > AGENT_OFFLINE_MS {
                ctx.agents(s, now).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(s.config.tick.min(Duration::from_secs(5)))
    }
}

/// What routing needs: the notifiers and the plans, read once per pass.
struct Context {
    notifiers: BTreeMap<String, StoredNotifier>,
    plans: HashMap<String, (PlanSpec, bool, i64)>,
}

impl Context {
    async fn load(store: &Store) -> Result<Self, StoreError> {
        let notifiers = store
            .list(Kind::Notifier)
            .await?
            .into_iter()
            .filter_map(|r| Some((r.name, serde_json::from_str(&r.spec).ok()?)))
            .collect();
        let plans = store
            .list(Kind::Plan)
            .await?
            .into_iter()
            .filter_map(|r| {
                let spec: PlanSpec = serde_json::from_str(&r.spec).ok()?;
                let paused = r.plan.as_ref().is_some_and(|p| p.paused);
                Some((r.name, (spec, paused, r.created_at)))
            })
            .collect();
        Ok(Self { notifiers, plans })
    }

    /// Who gets `event` about `plan` (none: the default notifiers), and when to send it.
    fn recipients(
        &self,
        plan: Option<&str>,
        event: EventKind,
        alert: bool,
        now: i64,
    ) -> Vec<(String, i64)> {
        let routes: Vec<(String, Vec<EventKind>)> = match plan.and_then(|p| self.plans.get(p)) {
            Some((spec, _, _)) if !spec.alerts.notify.is_empty() => spec
                .alerts
                .notify
                .iter()
                .map(|r| (r.notifier.clone(), r.events.clone()))
                .collect(),
            _ => self
                .notifiers
                .iter()
                .filter(|(_, n)| n.default)
                .map(|(name, _)| (name.clone(), Vec::new()))
                .collect(),
        };
        let mut out = Vec::new();
        for (name, events) in routes {
            let Some(n) = self.notifiers.get(&name) else {
                continue;
            };
            let heartbeat = n.kind == NotifierKind::Heartbeat;
            if heartbeat && plan.is_none() {
                continue;
            }
            let wanted = if !events.is_empty() {
                events.contains(&event)
            } else if heartbeat {
                EventKind::HEARTBEAT.contains(&event)
            } else {
                EventKind::DEFAULT.contains(&event)
            };
            // A failure the plan's policy holds back still reaches heartbeats: they want
            // every outcome.
            if !wanted || (event == EventKind::BackupFailed && !alert && !heartbeat) {
                continue;
            }
            let at = if n.kind.groups() {
                now + i64::from(n.group_secs) * 1000
            } else {
                now
            };
            out.push((name, at));
        }
        out
    }

    fn event(
        &self,
        n: Notification,
        subject: &str,
        dedup: String,
        job: Option<i64>,
        alert: bool,
        now: i64,
    ) -> NewEvent {
        NewEvent {
            kind: n.event.as_str().into(),
            plan: n.plan.clone(),
            subject: subject.into(),
            dedup,
            job_id: job,
            at: now,
            alert,
            to: self.recipients(n.plan.as_deref(), n.event, alert, now),
            payload: serde_json::to_string(&n).expect("notification serializes"),
        }
    }

    fn source_of(&self, plan: &str) -> Option<String> {
        self.plans.get(plan).map(|(s, _, _)| s.source.clone())
    }

    /// Each job the evaluator has not seen: its start (backups) or its outcome.
    async fn jobs(&self, s: &AppState, now: i64) -> Result<(), StoreError> {
        for (j, seen) in s.store.jobs_to_evaluate(200).await? {
            if j.state == JobState::Running {
                let events = match (j.kind, &j.plan) {
                    (JobKind::Backup, Some(plan)) => {
                        let mut n = notification(EventKind::BackupStarted, &j, now);
                        n.title = format!("Backup started: plan `{plan}`");
                        n.text = n.title.clone();
                        n.source = self.source_of(plan);
                        vec![self.event(
                            n,
                            plan,
                            format!("started:{}:{}", j.id, j.attempt),
                            Some(j.id),
                            false,
                            now,
                        )]
                    }
                    _ => vec![],
                };
                s.store
                    .record_evaluation(Some((j.id, seen, 1)), None, &events)
                    .await?;
                continue;
            }
            let (plan_state, events) = self.outcome(s, &j, now).await?;
            s.store
                .record_evaluation(Some((j.id, seen, 2)), plan_state.as_ref(), &events)
                .await?;
        }
        Ok(())
    }

    async fn outcome(
        &self,
        s: &AppState,
        j: &Job,
        now: i64,
    ) -> Result<(Option<PlanAlert>, Vec<NewEvent>), StoreError> {
        let mut events = Vec::new();
        match (j.kind, j.state, j.plan.as_deref()) {
            (JobKind::Backup, JobState::Succeeded, Some(plan)) => {
                let mut pa = plan_alert(s, plan).await?;
                let base = |kind| {
                    let mut n = notification(kind, j, now);
                    n.source = self.source_of(plan);
                    n
                };
                let mut ok = base(EventKind::BackupSucceeded);
                ok.title = format!("Backup succeeded: plan `{plan}`");
                ok.text = format!("The backup of `{plan}` succeeded.");
                events.push(self.event(
                    ok,
                    plan,
                    format!("succeeded:{}", j.id),
                    Some(j.id),
                    false,
                    now,
                ));
                if pa.failing_since.is_some() || pa.alerted_at.is_some() {
                    let mut n = base(EventKind::BackupRecovered);
                    n.title = format!("Backup recovered: plan `{plan}`");
                    n.text = match pa.consecutive_failures {
                        0 => format!("`{plan}` has a new backup."),
                        f => format!("`{plan}` has a new backup, after {f} failed."),
                    };
                    n.consecutive_failures = Some(pa.consecutive_failures);
                    events.push(self.event(
                        n,
                        plan,
                        format!("recovered:{}", j.id),
                        Some(j.id),
                        true,
                        now,
                    ));
                }
                let earlier: Vec<Job> = s
                    .store
                    .recent_successes(plan, HISTORY + 1)
                    .await?
                    .into_iter()
                    .filter(|e| e.id != j.id)
                    .take(HISTORY as usize)
                    .collect();
                if earlier.len() >= MIN_HISTORY {
                    let median_bytes = median(earlier.iter().map(|e| e.bytes_read));
                    if median_bytes > 0
                        && (j.bytes_read * 2 < median_bytes || j.bytes_read > 2 * median_bytes)
                    {
                        let mut n = base(EventKind::BackupSizeAnomaly);
                        n.title = format!("Backup size anomaly: plan `{plan}`");
                        n.text = format!(
                            "The backup of `{plan}` read {} bytes; its last {} successful backups read {median_bytes} (median). An empty or truncated dump looks like this.",
                            j.bytes_read,
                            earlier.len()
                        );
                        n.median_bytes_read = Some(median_bytes);
                        events.push(self.event(
                            n,
                            plan,
                            format!("size:{}", j.id),
                            Some(j.id),
                            true,
                            now,
                        ));
                    }
                    let durations: Vec<i64> = earlier.iter().filter_map(duration_ms).collect();
                    if let Some(d) = duration_ms(j)
                        && durations.len() >= MIN_HISTORY
                    {
                        let median_ms = median(durations.into_iter());
                        if d > 2 * median_ms && d > 60_000 {
                            let mut n = base(EventKind::BackupSlow);
                            n.title = format!("Backup slow: plan `{plan}`");
                            n.text = format!(
                                "The backup of `{plan}` took {:.0} s; it usually takes {:.0} s.",
                                d as f64 / 1000.0,
                                median_ms as f64 / 1000.0
                            );
                            events.push(self.event(
                                n,
                                plan,
                                format!("slow:{}", j.id),
                                Some(j.id),
                                true,
                                now,
                            ));
                        }
                    }
                }
                let steps = s.store.steps(j.id).await?;
                if let Some(copy) = crate::model::CopyView::from_steps(&steps)
                    && copy.state == holdfast_core::agent::StepState::Failed
                {
                    let mut n = base(EventKind::CopyFailed);
                    n.title = format!("Copy failed: plan `{plan}`");
                    n.text = format!(
                        "The backup of `{plan}` is in place, but its copy to the copy endpoint failed; the next backup copies what is missing."
                    );
                    n.error = copy.detail;
                    events.push(self.event(
                        n,
                        plan,
                        format!("copy:{}", j.id),
                        Some(j.id),
                        true,
                        now,
                    ));
                }
                pa.consecutive_failures = 0;
                pa.failing_since = None;
                pa.alerted_at = None;
                pa.last_success_at = j.finished_at.or(Some(now));
                Ok((Some(pa), events))
            }
            (JobKind::Backup, JobState::Failed, Some(plan)) => {
                let mut pa = plan_alert(s, plan).await?;
                let (after, repeat) = match self.plans.get(plan) {
                    Some((spec, _, _)) => (
                        i64::from(spec.alerts.after_failures),
                        spec.alerts.repeat_secs() * 1000,
                    ),
                    None => (1, 24 * 3600 * 1000),
                };
                pa.consecutive_failures += 1;
                let alert = pa.consecutive_failures >= after
                    && match (pa.failing_since, pa.alerted_at) {
                        (None, _) => true,
                        (Some(_), Some(at)) => now - at >= repeat,
                        (Some(_), None) => true,
                    };
                if pa.consecutive_failures >= after && pa.failing_since.is_none() {
                    pa.failing_since = Some(now);
                }
                if alert {
                    pa.alerted_at = Some(now);
                }
                let mut n = notification(EventKind::BackupFailed, j, now);
                n.source = self.source_of(plan);
                n.title = format!("Backup failed: plan `{plan}`");
                n.text = match pa.consecutive_failures {
                    1 => format!(
                        "The backup of `{plan}` failed after {} attempt(s).",
                        j.attempt
                    ),
                    f => {
                        format!("The backup of `{plan}` failed; {f} backups in a row have failed.")
                    }
                };
                n.consecutive_failures = Some(pa.consecutive_failures);
                n.last_success = pa.last_success_at.map(rfc3339);
                events.push(self.event(
                    n,
                    plan,
                    format!("failed:{}", j.id),
                    Some(j.id),
                    alert,
                    now,
                ));
                Ok((Some(pa), events))
            }
            (JobKind::Restore, JobState::Succeeded | JobState::Failed, plan) => {
                let kind = if j.state == JobState::Succeeded {
                    EventKind::RestoreSucceeded
                } else {
                    EventKind::RestoreFailed
                };
                let mut n = notification(kind, j, now);
                let p = plan.unwrap_or("?");
                n.title = format!("{}: plan `{p}`", kind.title());
                n.text = match j.state {
                    JobState::Succeeded => {
                        format!("Job {} restored a restore point of `{p}`.", j.id)
                    }
                    _ => format!("Job {} could not restore a restore point of `{p}`.", j.id),
                };
                events.push(self.event(n, p, format!("restore:{}", j.id), Some(j.id), true, now));
                Ok((None, events))
            }
            // One event per failed drill: a slow restore alone is an RTO breach; anything
            // else (a check that does not hold, a copy that cannot be made) is a failure.
            (JobKind::Verify, JobState::Failed, Some(plan)) => {
                let report = s.store.drill_of_job(j.id).await?.and_then(|d| {
                    serde_json::from_str::<holdfast_core::drill::DrillReport>(&d.report).ok()
                });
                let only_rto = report.as_ref().is_some_and(|r| {
                    let mut failed = r.failures().peekable();
                    failed.peek().is_some()
                        && failed.all(|c| c.kind == holdfast_core::drill::CheckKind::Rto)
                });
                let kind = if only_rto {
                    EventKind::VerifyRtoBreach
                } else {
                    EventKind::VerifyFailed
                };
                let mut n = notification(kind, j, now);
                n.source = self.source_of(plan);
                n.title = format!("{}: plan `{plan}`", kind.title());
                if let Some(r) = &report {
                    n.snapshot_id = Some(r.snapshot.clone());
                    n.duration_secs = r.rto_secs;
                }
                n.text = match (&report, only_rto) {
                    (Some(r), true) => format!(
                        "A restore drill of `{plan}` restored restore point {} in {:.0} s, over the plan's target of {} s.",
                        &r.snapshot[..8.min(r.snapshot.len())],
                        r.rto_secs.unwrap_or(0.0),
                        r.rto_target_secs.unwrap_or(0)
                    ),
                    (Some(r), false) => format!("{}.", r.summary()),
                    (None, _) => format!(
                        "A restore drill of `{plan}` could not run: {}",
                        j.error.as_deref().unwrap_or("no reason given")
                    ),
                };
                events.push(self.event(n, plan, format!("verify:{}", j.id), Some(j.id), true, now));
                Ok((None, events))
            }
            (JobKind::Prune, JobState::Failed, _) => {
                let ep = j.endpoint.clone().unwrap_or_default();
                let mut n = notification(EventKind::PruneFailed, j, now);
                n.title = format!("Prune failed: endpoint `{ep}`");
                n.text = format!(
                    "Freeing the space of forgotten restore points in `{ep}` failed; it is tried again at its next prune time."
                );
                events.push(self.event(n, &ep, format!("prune:{}", j.id), Some(j.id), true, now));
                Ok((None, events))
            }
            _ => Ok((None, events)),
        }
    }

    /// Scheduled backups that have not started within their plan's `missed_after`.
    async fn missed(&self, s: &AppState, now: i64) -> Result<(), StoreError> {
        for j in s.store.waiting_scheduled(now).await? {
            let (Some(plan), Some(fire)) = (j.plan.as_deref(), j.fire_at) else {
                continue;
            };
            let Some((spec, _, _)) = self.plans.get(plan) else {
                continue;
            };
            if now - fire < spec.alerts.missed_after_secs() * 1000 {
                continue;
            }
            let mut pa = plan_alert(s, plan).await?;
            if pa.alerted_at.is_none() {
                pa.alerted_at = Some(now);
            }
            let mut n = notification(EventKind::BackupMissed, &j, now);
            n.source = Some(spec.source.clone());
            n.title = format!("Backup missed: plan `{plan}`");
            n.text = format!(
                "The backup of `{plan}` due at {} has not started: no agent that may run it has taken it (are its agents online?).",
                rfc3339(fire)
            );
            let e = self.event(n, plan, format!("missed:{}", j.id), Some(j.id), true, now);
            s.store.record_evaluation(None, Some(&pa), &[e]).await?;
        }
        Ok(())
    }

    /// Plans without a success within their `max_age`: one alert per `repeat` while it lasts.
    async fn stale(&self, s: &AppState, now: i64) -> Result<(), StoreError> {
        let results = s.store.plan_results().await?;
        let alerts: HashMap<String, PlanAlert> = s
            .store
            .plan_alerts()
            .await?
            .into_iter()
            .map(|p| (p.plan.clone(), p))
            .collect();
        let ts = jiff::Timestamp::from_millisecond(now).unwrap_or_default();
        for (name, (spec, paused, created)) in &self.plans {
            if *paused {
                continue;
            }
            let schedule = Schedule::parse(&spec.schedule, &spec.timezone).ok();
            let max_age = spec.alerts.max_age_secs(schedule.as_ref(), ts) * 1000;
            let last = alerts
                .get(name)
                .and_then(|p| p.last_success_at)
                .into_iter()
                .chain(results.get(name).and_then(|(_, ok)| *ok))
                .max();
            let basis = last.unwrap_or(*created);
            let late = now - basis - max_age;
            if late < 0 {
                continue;
            }
            let repeat = spec.alerts.repeat_secs() * 1000;
            let round = late / repeat.max(1);
            let mut pa = alerts.get(name).cloned().unwrap_or_else(|| PlanAlert {
                plan: name.clone(),
                ..Default::default()
            });
            pa.alerted_at = Some(now);
            let n = Notification {
                event: EventKind::BackupStale,
                title: format!("Backups are stale: plan `{name}`"),
                text: match last {
                    Some(t) => format!(
                        "The last successful backup of `{name}` is from {}, older than its maximum age of {}.",
                        rfc3339(t),
                        human(max_age)
                    ),
                    None => format!(
                        "`{name}` has had no successful backup since it was created ({}); its maximum age is {}.",
                        rfc3339(*created),
                        human(max_age)
                    ),
                },
                plan: Some(name.clone()),
                endpoint: Some(spec.endpoint.clone()),
                source: Some(spec.source.clone()),
                last_success: last.map(rfc3339),
                ..blank(EventKind::BackupStale, now)
            };
            let e = self.event(
                n,
                name,
                format!("stale:{name}:{basis}:{round}"),
                None,
                true,
                now,
            );
            s.store.record_evaluation(None, Some(&pa), &[e]).await?;
        }
        Ok(())
    }

    /// Agents not heard from for two minutes (and seen within the last week).
    async fn agents(&self, s: &AppState, now: i64) -> Result<(), StoreError> {
        for a in s.store.agents().await? {
            let silent = now - a.last_seen;
            if !(AGENT_OFFLINE_MS..=7 * 24 * 3600 * 1000).contains(&silent) {
                continue;
            }
            let n = Notification {
                title: format!("Agent offline: `{}`", a.name),
                text: format!(
                    "Agent `{}` on {} has not been heard from since {}; jobs only it may run wait.",
                    a.name,
                    a.hostname,
                    rfc3339(a.last_seen)
                ),
                agent: Some(a.name.clone()),
                ..blank(EventKind::AgentOffline, now)
            };
            let e = self.event(
                n,
                &a.name,
                format!("offline:{}:{}", a.name, a.last_seen),
                None,
                true,
                now,
            );
            s.store.record_evaluation(None, None, &[e]).await?;
        }
        Ok(())
    }
}

/// A refusal of the repository proxy, as a `security.violation` event for the notifiers that
/// take it: `dedup` makes one event of many refusals of the same kind (one per job attempt and
/// reason).
pub(crate) async fn security_violation(
    s: &AppState,
    n: Notification,
    subject: &str,
    dedup: String,
) -> Result<(), StoreError> {
    let ctx = Context::load(&s.store).await?;
    let job = n.job;
    let e = ctx.event(n, subject, dedup, job, true, s.now());
    s.store.record_evaluation(None, None, &[e]).await?;
    Ok(())
}

/// A notification of `event` with nothing but its headline.
pub(crate) fn blank(event: EventKind, now: i64) -> Notification {
    Notification::new(event, event.title(), rfc3339(now))
}

/// An event about job `j`, with what the job says.
fn notification(event: EventKind, j: &Job, now: i64) -> Notification {
    Notification {
        plan: j.plan.clone(),
        endpoint: j.endpoint.clone(),
        agent: j.lease_owner.clone(),
        job: Some(j.id),
        error: j.error.clone(),
        bytes_read: (j.state == JobState::Succeeded).then_some(j.bytes_read),
        duration_secs: duration_ms(j).map(|d| d as f64 / 1000.0),
        snapshot_id: j.snapshot_id.clone(),
        ..blank(event, now)
    }
}

/// The plan's alert state, or a fresh one.
async fn plan_alert(s: &AppState, plan: &str) -> Result<PlanAlert, StoreError> {
    Ok(s.store
        .plan_alert(plan)
        .await?
        .unwrap_or_else(|| PlanAlert {
            plan: plan.into(),
            ..Default::default()
        }))
}

fn duration_ms(j: &Job) -> Option<i64> {
    Some(j.finished_at? - j.started_at?).filter(|d| *d >= 0)
}

fn median(values: impl Iterator<Item = i64>) -> i64 {
    let mut v: Vec<i64> = values.collect();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn human(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
