//! Schedules: a 5-field cron expression (or a preset such as `@daily`) in an IANA time zone.
//!
//! Fire times are computed on the zone's wall clock by `croner`, which follows the usual cron
//! rules across daylight-saving changes: a fixed-time job whose time falls in the skipped hour
//! runs at the first real instant after the gap; in a repeated hour it runs once; jobs that run
//! every hour or minute run in both halves of a repeated hour.
//!
//! Pure functions of their inputs: the caller passes "now".

use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::InputError;

/// A parsed, validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    tz_name: String,
    tz: TimeZone,
    cron: Cron,
}

const PRESETS: [(&str, &str); 7] = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

impl Schedule {
    /// Parses `expr` (5 fields: minute hour day-of-month month day-of-week, or a preset)
    /// in `timezone` (an IANA name such as `Europe/Berlin`, or `UTC`).
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, InputError> {
        let expr = expr.trim();
        let tz = TimeZone::get(timezone).map_err(|_| {
            InputError::new(
                format!("timezone `{timezone}`"),
                "unknown; use an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`",
            )
        })?;
        let pattern = if expr.starts_with('@') {
            PRESETS
                .iter()
                .find(|(p, _)| *p == expr)
                .map(|(_, c)| *c)
                .ok_or_else(|| {
                    InputError::new(
                        format!("schedule `{expr}`"),
                        "unknown preset; use @hourly, @daily, @weekly, @monthly or @yearly",
                    )
                })?
        } else {
            let fields = expr.split_whitespace().count();
            if fields != 5 {
                return Err(InputError::new(
                    format!("schedule `{expr}`"),
                    format!(
                        "expected 5 fields (minute hour day-of-month month day-of-week), found \
                         {fields}; e.g. `30 2 * * *` for 02:30 every day"
                    ),
                ));
            }
            expr
        };
        let cron = pattern.parse::<Cron>().map_err(|e| {
            InputError::new(
                format!("schedule `{expr}`"),
                format!("{e}; e.g. `30 2 * * *`"),
            )
        })?;
        // Cron has no year field, so a schedule repeats every 400 years (the Gregorian cycle):
        // one that does not fire between 2000 and croner's horizon (the year 5000) never fires.
        // A fixed start keeps this a pure function of the input.
        let start = jiff::civil::date(2000, 1, 1)
            .to_zoned(tz.clone())
            .map_err(|e| InputError::new(format!("timezone `{timezone}`"), e.to_string()))?;
        if cron.find_next_occurrence(&start, true).is_err() {
            return Err(InputError::new(
                format!("schedule `{expr}`"),
                "never fires: no date matches it (such as the 30th of February); check the \
                 day-of-month, month and day-of-week fields, e.g. `0 0 28 2 *`",
            ));
        }
        Ok(Self {
            expr: expr.to_string(),
            tz_name: timezone.to_string(),
            tz,
            cron,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> &str {
        &self.tz_name
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Zoned> {
        self.cron
            .find_next_occurrence(&after.to_zoned(self.tz.clone()), false)
            .ok()
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: Timestamp, n: usize) -> Vec<Zoned> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            let Some(z) = self.next_after(t) else { break };
            t = z.timestamp();
            out.push(z);
        }
        out
    }

    /// The fire that should run now, if one came due in (`since`, `now`]. After downtime
    /// several missed fires yield one run, at the latest of them.
    pub fn due(&self, since: Timestamp, now: Timestamp) -> Option<Zoned> {
        let latest = self
            .cron
            .find_previous_occurrence(&now.to_zoned(self.tz.clone()), true)
            .ok()?;
        (latest.timestamp() > since).then_some(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn times(s: &Schedule, after: &str, n: usize) -> Vec<String> {
        s.upcoming(ts(after), n)
            .iter()
            .map(|z| z.timestamp().to_string())
            .collect()
    }

    #[test]
    fn daily_in_a_zone_across_spring_forward() {
        // Europe/Berlin skips 02:00-03:00 on 2026-03-29: 02:30 does not exist that day, and the
        // job runs at the first real instant after the gap (03:00 CEST = 01:00 UTC).
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            times(&s, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
    }

    #[test]
    fn daily_in_a_zone_across_fall_back_runs_once() {
        // On 2026-10-25 Berlin repeats 02:00-03:00; a 02:30 job runs once, in the first pass.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            times(&s, "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
                "2026-10-27T01:30:00Z"
            ]
        );
    }

    #[test]
    fn hourly_runs_in_both_halves_of_a_repeated_hour() {
        let s = Schedule::parse("@hourly", "Europe/Berlin").unwrap();
        // Local 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET: four distinct instants an hour apart.
        assert_eq!(
            times(&s, "2026-10-24T22:30:00Z", 4),
            [
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    #[test]
    fn missed_fires_after_downtime_run_once() {
        let s = Schedule::parse("0 * * * *", "UTC").unwrap();
        // Down from 10:30 to 15:10: five fires missed, one run, for the 15:00 slot.
        let due = s
            .due(ts("2026-05-01T10:30:00Z"), ts("2026-05-01T15:10:00Z"))
            .unwrap();
        assert_eq!(due.timestamp(), ts("2026-05-01T15:00:00Z"));
        // Having run it, nothing is due until 16:00.
        assert!(
            s.due(ts("2026-05-01T15:10:00Z"), ts("2026-05-01T15:59:59Z"))
                .is_none()
        );
        assert!(
            s.due(ts("2026-05-01T15:10:00Z"), ts("2026-05-01T16:00:00Z"))
                .is_some()
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.what.contains("61 * * * *"), "{e}");
        let e = Schedule::parse("* * * * * *", "UTC").unwrap_err();
        assert!(e.reason.contains("5 fields"), "{e}");
        let e = Schedule::parse("@sometimes", "UTC").unwrap_err();
        assert!(e.reason.contains("@daily"), "{e}");
        let e = Schedule::parse("0 3 * * *", "Mars/Olympus").unwrap_err();
        assert!(
            e.what.contains("Mars/Olympus") && e.reason.contains("IANA"),
            "{e}"
        );
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        for never in ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"] {
            let t = std::time::Instant::now();
            let e = Schedule::parse(never, "Europe/Berlin").unwrap_err();
            assert!(e.what.contains(never), "{e}");
            assert!(e.reason.contains("never fires"), "{e}");
            assert!(
                t.elapsed() < std::time::Duration::from_secs(1),
                "{:?}",
                t.elapsed()
            );
        }
        // Rare is not never: the 29th of February, and the 31st of the months that have one.
        let leap = Schedule::parse("0 0 29 2 *", "UTC").unwrap();
        assert_eq!(
            times(&leap, "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
        );
        assert!(Schedule::parse("0 0 31 2,3 *", "UTC").is_ok());
        // Day-of-month and day-of-week are either-or, as in cron: a Monday in February fires.
        assert!(Schedule::parse("0 0 30 2 1", "UTC").is_ok());
    }

    #[test]
    fn presets_and_next_five() {
        let s = Schedule::parse("@daily", "America/New_York").unwrap();
        let next = s.upcoming(ts("2026-01-01T00:00:00Z"), 5);
        assert_eq!(next.len(), 5);
        assert!(next.iter().all(|z| z.hour() == 0 && z.minute() == 0));
    }
}
