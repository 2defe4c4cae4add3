//! The delivery worker: sends what the outbox holds, on any replica. Each delivery is claimed
//! under a lease (a sender that dies mid-send leaves it to be claimed again, so at most that one
//! attempt repeats, with the same idempotency key), every attempt is recorded, failures are
//! retried with an exponential backoff, and a notifier's rate limit postpones messages (it never
//! drops them). Messages for people group the deliveries that are due together.

use std::sync::Arc;
use std::time::Duration;

use holdfast_store::{Attempt, DeliveryRow, EventRow, Kind};

use super::message::Notification;
use super::model::{NotifierSecrets, StoredNotifier};
use super::send::SendError;
use crate::state::AppState;
use crate::worker::Worker;

/// Attempts before a delivery is given up (with the backoff: about a day).
pub const MAX_ATTEMPTS: i64 = 25;
/// How long a sender holds a delivery.
const LEASE_MS: i64 = 60_000;
/// Deliveries grouped into one message at most.
const GROUP: usize = 20;

/// The wait after the n-th failed attempt: 5 s, doubling, at most an hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = attempts.clamp(0, 20) as u32;
    (5_000i64.saturating_mul(1 << exp)).min(3_600_000)
}

pub(crate) struct Deliverer(pub(crate) Arc<AppState>);

impl Worker for Deliverer {
    fn name(&self) -> &'static str {
        "notifications"
    }

    async fn step(&self) -> Result<Duration, String> {
        let mut sent = 0;
        while sent < 50 {
            if !self.one().await.map_err(|e| e.to_string())? {
                break;
            }
            sent += 1;
        }
        Ok(if sent > 0 {
            Duration::ZERO
        } else {
            self.0.config.tick.min(Duration::from_secs(1))
        })
    }
}

impl Deliverer {
    /// Claims and sends one message (one delivery, or a group). False when nothing was due.
    async fn one(&self) -> Result<bool, holdfast_store::StoreError> {
        let s = &self.0;
        let owner = &s.instance;
        let now = s.now();
        let Some((first, event)) = s
            .store
            .claim_delivery(owner, now, now + LEASE_MS, None)
            .await?
        else {
            return Ok(false);
        };
        let notifier = match s.store.get(Kind::Notifier, &first.notifier).await? {
            Some(r) => r,
            None => {
                let gone = given_up(now, format!("notifier `{}` was deleted", first.notifier));
                s.store.finish_delivery(first.id, owner, &gone).await?;
                return Ok(true);
            }
        };
        let opened = serde_json::from_str::<StoredNotifier>(&notifier.spec)
            .map_err(|e| format!("the stored notifier is unreadable: {e}"))
            .and_then(|n| {
                let secrets: NotifierSecrets = match &notifier.secrets {
                    Some(sealed) => s
                        .open_secrets(Kind::Notifier, &notifier.name, sealed)
                        .map_err(|e| e.to_string())?,
                    None => NotifierSecrets::default(),
                };
                Ok((n, secrets))
            });
        let (n, secrets) = match opened {
            Ok(x) => x,
            Err(e) => {
                s.store
                    .finish_delivery(first.id, owner, &given_up(now, e))
                    .await?;
                return Ok(true);
            }
        };
        if s.store.sent_since(&first.notifier, now - 3_600_000).await? >= i64::from(n.max_per_hour)
        {
            tracing::warn!(notifier = %first.notifier, "rate limit reached; messages wait");
            s.store
                .postpone_delivery(first.id, owner, now + 60_000)
                .await?;
            return Ok(true);
        }
        let mut batch = vec![(first, event)];
        if n.kind.groups() {
            while batch.len() < GROUP {
                match s
                    .store
                    .claim_delivery(
                        owner,
                        now,
                        now + LEASE_MS,
                        Some((
                            batch[0].0.notifier.as_str(),
                            now + i64::from(n.group_secs) * 1000,
                        )),
                    )
                    .await?
                {
                    Some(more) => batch.push(more),
                    None => break,
                }
            }
        }
        let notes: Vec<Notification> = batch.iter().filter_map(|(_, e)| notification(e)).collect();
        let key = format!("holdfast-{}-{}", batch[0].1.id, batch[0].0.notifier);
        let result = if notes.is_empty() {
            Err(SendError {
                status: None,
                error: "the stored event is unreadable".into(),
                permanent: true,
            })
        } else {
            s.sender.send(&n, &secrets, &notes, &key).await
        };
        let done = s.now();
        for (d, _) in &batch {
            let a = outcome(done, d, &result);
            if !s.store.finish_delivery(d.id, owner, &a).await? {
                tracing::warn!(
                    delivery = d.id,
                    "lost the delivery's lease while sending; it may be sent again"
                );
            }
        }
        if let Err(e) = &result {
            tracing::warn!(notifier = %batch[0].0.notifier, "notification not delivered: {e}");
        }
        Ok(true)
    }
}

fn notification(e: &EventRow) -> Option<Notification> {
    let mut n: Notification = serde_json::from_str(&e.payload).ok()?;
    n.id = e.id;
    Some(n)
}

/// An attempt that cannot succeed by trying again: the delivery is given up.
fn given_up(at: i64, error: String) -> Attempt {
    Attempt {
        at,
        ok: false,
        status: None,
        error: Some(error),
        retry_at: None,
    }
}

fn outcome(at: i64, d: &DeliveryRow, r: &Result<String, SendError>) -> Attempt {
    match r {
        Ok(status) => Attempt {
            at,
            ok: true,
            status: Some(status.clone()),
            error: None,
            retry_at: None,
        },
        Err(e) => {
            let last = e.permanent || d.attempts + 1 >= MAX_ATTEMPTS;
            Attempt {
                at,
                ok: false,
                status: e.status.clone(),
                error: Some(e.error.clone()),
                retry_at: (!last).then(|| at + backoff_ms(d.attempts)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_to_an_hour() {
        assert_eq!(backoff_ms(0), 5_000);
        assert_eq!(backoff_ms(1), 10_000);
        assert_eq!(backoff_ms(5), 160_000);
        assert_eq!(backoff_ms(10), 3_600_000);
        assert_eq!(backoff_ms(1000), 3_600_000);
        let total: i64 = (0..MAX_ATTEMPTS).map(backoff_ms).sum();
        assert!((12 * 3_600_000..48 * 3_600_000).contains(&total), "{total}");
    }
}
