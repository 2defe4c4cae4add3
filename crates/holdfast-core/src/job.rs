//! The life of a job: states, what may happen in each, and the retry schedule.
//!
//! A job is queued, claimed by a worker under a lease, and ends succeeded, failed or cancelled.
//! A transient failure, or a lease that expires because its worker died, sends it back to the
//! queue with `attempt + 1` after an exponential backoff with jitter, until the attempts run out.
//! The store applies these rules; this module decides them.

use serde::{Deserialize, Serialize};

/// Defines a fieldless enum stored and sent as a lowercase word: `as_str`, `parse`, `ALL`,
/// `Display`, `FromStr` (its error names the accepted words) and serde in that form.
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::job::UnknownWord;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s).ok_or_else(|| $crate::job::UnknownWord {
                    what: stringify!($name),
                    got: s.chars().take(40).collect(),
                    expected: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

pub(crate) use word_enum;

/// A word that names no value of a [`JobKind`], [`JobState`] or [`Trigger`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{got}`; one of: {expected}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub got: String,
    pub expected: String,
}

word_enum! {
    /// What a job does.
    JobKind {
        /// Dumps a plan's source into its endpoint (then applies its retention and copy).
        Backup = "backup",
        /// Restores a restore point into a source.
        Restore = "restore",
        /// Frees the space of forgotten restore points in an endpoint's repository.
        Prune = "prune",
        /// A restore drill of one of a plan's restore points: restored into a throwaway copy
        /// and checked, or read back and checked.
        Verify = "verify",
    }
}

word_enum! {
    /// Where a job is in its life.
    JobState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        /// A schedule fire that found the plan's previous backup still queued or running.
        Skipped = "skipped",
    }
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Skipped
        )
    }
}

word_enum! {
    /// Why a job exists.
    Trigger {
        Schedule = "schedule",
        Manual = "manual",
        Retry = "retry",
    }
}

/// Something that happens to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker took it (under a lease).
    Claimed,
    Succeeded,
    /// The attempt failed; `transient` failures may be retried.
    Failed {
        transient: bool,
        reason: String,
    },
    /// The worker stopped renewing its lease (crashed, lost its network).
    LeaseExpired,
    Cancelled,
}

/// Retry policy: `attempts` tries in all, the n-th retry waiting about `base * 2^(n-1)`,
/// at most `cap`, with jitter so that many failed jobs do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub attempts: u32,
    pub base_secs: u64,
    pub cap_secs: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_secs: 30,
            cap_secs: 30 * 60,
        }
    }
}

impl Backoff {
    /// Seconds to wait before attempt `next_attempt` (2 for the first retry). `jitter` in
    /// [0, 1) picks a point in the upper half of the window ("equal jitter").
    pub fn delay_secs(&self, next_attempt: u32, jitter: f64) -> u64 {
        let exp = next_attempt.saturating_sub(2).min(32);
        let full = self
            .base_secs
            .saturating_mul(1u64 << exp)
            .min(self.cap_secs);
        let jitter = jitter.clamp(0.0, 1.0);
        // Integer math keeps this exact for the small numbers involved.
        full / 2 + ((full - full / 2) as f64 * jitter) as u64
    }
}

/// What a transition decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    pub state: JobState,
    pub attempt: u32,
    /// For a job back in the queue: seconds to wait before it may be claimed again.
    pub retry_in_secs: Option<u64>,
    /// For a failed job: why, including "gave up after N attempts".
    pub error: Option<String>,
}

/// A transition that is not allowed (e.g. a finished job claimed again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} job cannot be {event}", state = .state.as_str())]
pub struct InvalidTransition {
    pub state: JobState,
    pub event: &'static str,
}

/// Applies `event` to a job in `state` at `attempt` (1 for the first try).
pub fn transition(
    state: JobState,
    attempt: u32,
    event: &Event,
    backoff: &Backoff,
    jitter: f64,
) -> Result<Next, InvalidTransition> {
    let name = match event {
        Event::Claimed => "claimed",
        Event::Succeeded => "marked succeeded",
        Event::Failed { .. } => "marked failed",
        Event::LeaseExpired => "expired",
        Event::Cancelled => "cancelled",
    };
    let invalid = || InvalidTransition { state, event: name };
    let done = |state, error| Next {
        state,
        attempt,
        retry_in_secs: None,
        error,
    };
    let retry_or_fail = |reason: String| {
        if attempt < backoff.attempts {
            Next {
                state: JobState::Queued,
                attempt: attempt + 1,
                retry_in_secs: Some(backoff.delay_secs(attempt + 1, jitter)),
                error: Some(reason),
            }
        } else {
            done(
                JobState::Failed,
                Some(format!("{reason} (gave up after {attempt} attempts)")),
            )
        }
    };
    match (state, event) {
        (JobState::Queued, Event::Claimed) => Ok(done(JobState::Running, None)),
        (JobState::Queued | JobState::Running, Event::Cancelled) => {
            Ok(done(JobState::Cancelled, None))
        }
        (JobState::Running, Event::Succeeded) => Ok(done(JobState::Succeeded, None)),
        (
            JobState::Running,
            Event::Failed {
                transient: false,
                reason,
            },
        ) => Ok(done(JobState::Failed, Some(reason.clone()))),
        (
            JobState::Running,
            Event::Failed {
                transient: true,
                reason,
            },
        ) => Ok(retry_or_fail(reason.clone())),
        (JobState::Running, Event::LeaseExpired) => Ok(retry_or_fail(
            "the worker stopped reporting (its lease expired)".into(),
        )),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        attempts: 3,
        base_secs: 10,
        cap_secs: 25,
    };

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        assert_eq!(B.delay_secs(2, 0.0), 5);
        assert_eq!(B.delay_secs(2, 0.999), 9);
        assert_eq!(B.delay_secs(3, 0.0), 10);
        assert_eq!(B.delay_secs(4, 0.0), 12); // 40 capped at 25
        assert_eq!(B.delay_secs(60, 0.5), 18);
    }

    #[test]
    fn transient_failures_retry_then_give_up_with_the_reason() {
        let fail = Event::Failed {
            transient: true,
            reason: "storage timed out".into(),
        };
        let n = transition(JobState::Running, 1, &fail, &B, 0.0).unwrap();
        assert_eq!(
            (n.state, n.attempt, n.retry_in_secs),
            (JobState::Queued, 2, Some(5))
        );
        let n = transition(JobState::Running, 3, &fail, &B, 0.0).unwrap();
        assert_eq!(n.state, JobState::Failed);
        assert_eq!(
            n.error.unwrap(),
            "storage timed out (gave up after 3 attempts)"
        );
    }

    #[test]
    fn permanent_failures_fail_at_once() {
        let fail = Event::Failed {
            transient: false,
            reason: "wrong password".into(),
        };
        let n = transition(JobState::Running, 1, &fail, &B, 0.0).unwrap();
        assert_eq!((n.state, n.retry_in_secs), (JobState::Failed, None));
    }

    #[test]
    fn an_expired_lease_requeues_the_job() {
        let n = transition(JobState::Running, 1, &Event::LeaseExpired, &B, 0.0).unwrap();
        assert_eq!((n.state, n.attempt), (JobState::Queued, 2));
        assert!(n.error.unwrap().contains("lease expired"));
    }

    #[test]
    fn finished_jobs_stay_finished() {
        for s in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            for e in [
                Event::Claimed,
                Event::Succeeded,
                Event::LeaseExpired,
                Event::Cancelled,
            ] {
                let err = transition(s, 1, &e, &B, 0.0).unwrap_err();
                assert_eq!(err.state, s);
            }
        }
        let e = transition(JobState::Queued, 1, &Event::Succeeded, &B, 0.0).unwrap_err();
        assert_eq!(e.to_string(), "a queued job cannot be marked succeeded");
    }
}
