//! Alerts: the events the server computed, the outbox of their deliveries to notifiers (claimed
//! under a lease, like jobs, so that several replicas deliver each once), every delivery attempt,
//! each plan's alert state, and the leases of work one replica at a time does.
//!
//! An event's `dedup` key is unique: the evaluator may look at the same job or the same stale
//! plan twice (a crash before it marked the job, two replicas), and the event still happens once.

use serde::Serialize;
use sqlx::AssertSqlSafe;
use sqlx::Connection;
use sqlx::any::AnyRow;

use crate::jobs::{JOB_COLUMNS, job};
use crate::row::{all, col, flag_col};
use crate::{Job, Result, Store, flag};

/// An event to record, and the notifiers it goes to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub plan: Option<String>,
    /// The plan, agent or endpoint the event is about.
    pub subject: String,
    pub dedup: String,
    pub job_id: Option<i64>,
    pub at: i64,
    /// Whether it is an alert (passed the plan's failure policy) or only news for heartbeats.
    pub alert: bool,
    /// JSON: the event as notifiers receive it.
    pub payload: String,
    /// (notifier, when to send it first).
    pub to: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub kind: String,
    pub plan: Option<String>,
    pub subject: String,
    pub dedup: String,
    pub job_id: Option<i64>,
    pub at: i64,
    pub alert: bool,
    pub payload: String,
}

fn event(r: &AnyRow) -> Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        id: col(r, "id")?,
        kind: col(r, "kind")?,
        plan: col(r, "plan")?,
        subject: col(r, "subject")?,
        dedup: col(r, "dedup")?,
        job_id: col(r, "job_id")?,
        at: col(r, "at")?,
        alert: flag_col(r, "alert")?,
        payload: col(r, "payload")?,
    })
}

const EVENT_COLUMNS: &str =
    "e.id, e.kind, e.plan, e.subject, e.dedup, e.job_id, e.at, e.alert, e.payload";
const DELIVERY_COLUMNS: &str = "d.id AS d_id, d.event_id, d.notifier, d.state, d.attempts, d.next_at, \
     d.lease_owner, d.lease_expires, d.last_status, d.last_error, d.created_at, d.sent_at";

/// Where a delivery is: `queued` (waiting for `next_at`), `sending` (under a lease), `sent`, or
/// `failed` (out of attempts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: i64,
    pub notifier: String,
    pub state: String,
    pub attempts: i64,
    pub next_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires: Option<i64>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

fn delivery(r: &AnyRow) -> Result<DeliveryRow, sqlx::Error> {
    Ok(DeliveryRow {
        id: col(r, "d_id")?,
        event_id: col(r, "event_id")?,
        notifier: col(r, "notifier")?,
        state: col(r, "state")?,
        attempts: col(r, "attempts")?,
        next_at: col(r, "next_at")?,
        lease_owner: col(r, "lease_owner")?,
        lease_expires: col(r, "lease_expires")?,
        last_status: col(r, "last_status")?,
        last_error: col(r, "last_error")?,
        created_at: col(r, "created_at")?,
        sent_at: col(r, "sent_at")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    pub at: i64,
    pub ok: bool,
    /// The receiver's answer: an HTTP status, an SMTP reply.
    pub status: Option<String>,
    pub error: Option<String>,
}

/// How a delivery attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: i64,
    pub ok: bool,
    pub status: Option<String>,
    pub error: Option<String>,
    /// After a failure: when to try again; `None`: give up (`failed`).
    pub retry_at: Option<i64>,
}

/// A plan's alert state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanAlert {
    pub plan: String,
    /// Failed backups since the last success.
    pub consecutive_failures: i64,
    /// Since when the plan is failing in the alert sense (its failures were alerted).
    pub failing_since: Option<i64>,
    /// When an alert about it was last sent (failures, staleness).
    pub alerted_at: Option<i64>,
    pub last_success_at: Option<i64>,
}

fn plan_alert(r: &AnyRow) -> Result<PlanAlert, sqlx::Error> {
    Ok(PlanAlert {
        plan: col(r, "plan")?,
        consecutive_failures: col(r, "consecutive_failures")?,
        failing_since: col(r, "failing_since")?,
        alerted_at: col(r, "alerted_at")?,
        last_success_at: col(r, "last_success_at")?,
    })
}

/// Job states the evaluator reads: terminal ones for outcomes, `running` for starts.
const TERMINAL: &str = "('succeeded', 'failed', 'cancelled')";

impl Store {
    /// Takes or renews lease `name` for `owner` until `expires`, unless another owner holds
    /// it unexpired at `now`. True when `owner` holds it now.
    pub async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO leases (name, owner, expires) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = $2, expires = $3
             WHERE leases.owner = $2 OR leases.expires < $4",
        )
        .bind(name)
        .bind(owner)
        .bind(expires)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Jobs the alert evaluator has not looked at yet: finished ones, and running ones whose
    /// start it has not seen; in the order they finished (or started). With each, how far
    /// it was evaluated (0 or 1).
    pub async fn jobs_to_evaluate(&self, limit: i64) -> Result<Vec<(Job, i64)>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS}, evaluated FROM jobs
             WHERE (evaluated < 2 AND state IN {TERMINAL}) OR (evaluated = 0 AND state = 'running')
             ORDER BY COALESCE(finished_at, started_at, 0), id LIMIT $1"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, |r| Ok((job(r)?, col(r, "evaluated")?)))?)
    }

    /// Records what the evaluator made of something, in one transaction: the job marked as seen
    /// up to `to` (only if it still was at `from`: otherwise nothing is written and the answer
    /// is false), the plan's new alert state, and the events with their deliveries. An event
    /// whose `dedup` key exists already is left out, with its deliveries.
    pub async fn record_evaluation(
        &self,
        job: Option<(i64, i64, i64)>,
        plan: Option<&PlanAlert>,
        events: &[NewEvent],
    ) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        if let Some((id, from, to)) = job {
            let r = sqlx::query("UPDATE jobs SET evaluated = $3 WHERE id = $1 AND evaluated = $2")
                .bind(id)
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() != 1 {
                return Ok(false);
            }
        }
        if let Some(p) = plan {
            sqlx::query(
                "INSERT INTO plan_alerts (plan, consecutive_failures, failing_since, alerted_at, last_success_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (plan) DO UPDATE SET consecutive_failures = $2, failing_since = $3,
                     alerted_at = $4, last_success_at = $5",
            )
            .bind(&p.plan)
            .bind(p.consecutive_failures)
            .bind(p.failing_since)
            .bind(p.alerted_at)
            .bind(p.last_success_at)
            .execute(&mut *tx)
            .await?;
        }
        for e in events {
            let row = sqlx::query(
                "INSERT INTO events (kind, plan, subject, dedup, job_id, at, alert, payload)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (dedup) DO NOTHING RETURNING id",
            )
            .bind(&e.kind)
            .bind(&e.plan)
            .bind(&e.subject)
            .bind(&e.dedup)
            .bind(e.job_id)
            .bind(e.at)
            .bind(flag(e.alert))
            .bind(&e.payload)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let id: i64 = col(&row, "id")?;
            for (notifier, at) in &e.to {
                sqlx::query(
                    "INSERT INTO deliveries (event_id, notifier, state, next_at, created_at)
                     VALUES ($1, $2, 'queued', $3, $4)",
                )
                .bind(id)
                .bind(notifier)
                .bind(at)
                .bind(e.at)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn plan_alert(&self, plan: &str) -> Result<Option<PlanAlert>> {
        let row = sqlx::query("SELECT * FROM plan_alerts WHERE plan = $1")
            .bind(plan)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(plan_alert).transpose()?)
    }

    pub async fn plan_alerts(&self) -> Result<Vec<PlanAlert>> {
        let rows = sqlx::query("SELECT * FROM plan_alerts ORDER BY plan")
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, plan_alert)?)
    }

    /// The plan's newest successful backups, newest first.
    pub async fn recent_successes(&self, plan: &str, limit: i64) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE plan = $1 AND kind = 'backup' AND state = 'succeeded'
             ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(plan)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, job)?)
    }

    /// Scheduled backups still waiting for their first attempt whose fire time is before
    /// `fired_before`.
    pub async fn waiting_scheduled(&self, fired_before: i64) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND kind = 'backup'
                 AND trigger = 'schedule' AND attempt = 1 AND fire_at < $1
             ORDER BY fire_at, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(fired_before)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, job)?)
    }

    /// Claims the next due delivery for `owner` until `lease_expires`: a queued one whose time
    /// has come, or one whose sender's lease ran out (it died mid-send). With `notifier`, only
    /// its deliveries, queued ones due by the given time too (a message that groups what its
    /// notifier has pending takes those due soon as well).
    pub async fn claim_delivery(
        &self,
        owner: &str,
        now: i64,
        lease_expires: i64,
        notifier: Option<(&str, i64)>,
    ) -> Result<Option<(DeliveryRow, EventRow)>> {
        let (only, due_by) = notifier.unwrap_or(("", now));
        let candidates = sqlx::query(
            "SELECT id FROM deliveries
             WHERE ((state = 'queued' AND next_at <= $3) OR (state = 'sending' AND lease_expires < $1))
                 AND ($2 = '' OR notifier = $2)
             ORDER BY next_at, id LIMIT 8",
        )
        .bind(now)
        .bind(only)
        .bind(due_by)
        .fetch_all(&self.pool)
        .await?;
        let candidates: Vec<i64> = all(&candidates, |r| col(r, "id"))?;
        for id in candidates {
            let r = sqlx::query(
                "UPDATE deliveries SET state = 'sending', lease_owner = $2, lease_expires = $3
                 WHERE id = $4
                     AND ((state = 'queued' AND next_at <= $5) OR (state = 'sending' AND lease_expires < $1))",
            )
            .bind(now)
            .bind(owner)
            .bind(lease_expires)
            .bind(id)
            .bind(due_by)
            .execute(&self.pool)
            .await?;
            if r.rows_affected() == 1 {
                return self.delivery(id).await;
            }
        }
        Ok(None)
    }

    pub async fn delivery(&self, id: i64) -> Result<Option<(DeliveryRow, EventRow)>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.id = $1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| Ok::<_, sqlx::Error>((delivery(&r)?, event(&r)?)))
            .transpose()?)
    }

    /// Records `owner`'s attempt at a delivery it holds: sent, back in the queue for
    /// `retry_at`, or failed. False (and nothing written) when the lease was lost.
    pub async fn finish_delivery(&self, id: i64, owner: &str, a: &Attempt) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let state = match (a.ok, a.retry_at) {
            (true, _) => "sent",
            (false, Some(_)) => "queued",
            (false, None) => "failed",
        };
        let r = sqlx::query(
            "UPDATE deliveries SET state = $3, attempts = attempts + 1, last_status = $4, last_error = $5,
                 next_at = COALESCE($6, next_at), sent_at = $7, lease_owner = NULL, lease_expires = NULL
             WHERE id = $1 AND lease_owner = $2 AND state = 'sending'",
        )
        .bind(id)
        .bind(owner)
        .bind(state)
        .bind(&a.status)
        .bind(&a.error)
        .bind(a.retry_at)
        .bind(a.ok.then_some(a.at))
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_id, at, ok, status, error) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(a.at)
        .bind(flag(a.ok))
        .bind(&a.status)
        .bind(&a.error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Puts a delivery `owner` holds back in the queue until `next_at` without counting an
    /// attempt (the notifier's rate limit).
    pub async fn postpone_delivery(&self, id: i64, owner: &str, next_at: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE deliveries SET state = 'queued', next_at = $3, lease_owner = NULL, lease_expires = NULL
             WHERE id = $1 AND lease_owner = $2 AND state = 'sending'",
        )
        .bind(id)
        .bind(owner)
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// How many messages went to `notifier` since `since` (its rate limit counts them).
    pub async fn sent_since(&self, notifier: &str, since: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM deliveries WHERE notifier = $1 AND state = 'sent' AND sent_at >= $2",
        )
        .bind(notifier)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(col(&row, "n")?)
    }

    /// The newest deliveries, of one notifier or all, with their events, newest first.
    pub async fn deliveries(
        &self,
        notifier: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(DeliveryRow, EventRow)>> {
        let only = if notifier.is_some() {
            "WHERE d.notifier = $2"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
             {only} ORDER BY d.id DESC LIMIT $1"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(limit);
        if let Some(n) = notifier {
            q = q.bind(n);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(all(&rows, |r| Ok((delivery(r)?, event(r)?)))?)
    }

    pub async fn delivery_attempts(&self, delivery_id: i64) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT at, ok, status, error FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok(AttemptRow {
                at: col(r, "at")?,
                ok: flag_col(r, "ok")?,
                status: col(r, "status")?,
                error: col(r, "error")?,
            })
        })?)
    }

    /// Deliveries by notifier and state: (notifier, state, count).
    pub async fn delivery_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT notifier, state, COUNT(*) AS n FROM deliveries GROUP BY notifier, state ORDER BY notifier, state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(all(&rows, |r| {
            Ok((col(r, "notifier")?, col(r, "state")?, col(r, "n")?))
        })?)
    }

    /// The newest events, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events e ORDER BY e.id DESC LIMIT $1");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(all(&rows, event)?)
    }
}
