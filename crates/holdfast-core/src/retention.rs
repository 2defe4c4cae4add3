//! Retention policies: which snapshots to keep (restic's `forget` rules).

use serde::{Deserialize, Serialize};

/// A restic-style keep policy. A snapshot is kept when any rule keeps it.
///
/// An all-empty policy keeps everything (forgetting nothing), never the other way round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Keep every snapshot younger than this, as a duration such as `7d`, `36h` or `2w3d`.
    pub within: Option<String>,
}

impl KeepPolicy {
    /// True when no rule is set: such a policy would keep everything.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Checks the policy and returns the `within` duration parsed into (days, hours).
    pub fn validate(&self) -> Result<(), crate::InputError> {
        if let Some(w) = &self.within {
            parse_within(w)?;
        }
        Ok(())
    }
}

/// Parses a `keep-within` duration: a sequence of `<n>y`, `<n>m`, `<n>w`, `<n>d`, `<n>h`.
/// Returns the total as (years, months, days, hours).
pub fn parse_within(s: &str) -> Result<(u32, u32, u32, u32), crate::InputError> {
    let err = || {
        crate::InputError::new(
            format!("keep-within `{s}`"),
            "expected a duration like `7d`, `36h`, `2w3d` or `1y6m` (units y, m, w, d, h)",
        )
    };
    let (mut y, mut mo, mut d, mut h) = (0u32, 0u32, 0u32, 0u32);
    let mut num = String::new();
    let mut seen = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u32 = num.parse().map_err(|_| err())?;
        num.clear();
        match c {
            'y' => y += n,
            'm' => mo += n,
            'w' => d += 7 * n,
            'd' => d += n,
            'h' => h += n,
            _ => return Err(err()),
        }
        seen = true;
    }
    if !num.is_empty() || !seen {
        return Err(err());
    }
    Ok((y, mo, d, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_parses_compound_durations() {
        assert_eq!(parse_within("2w3d").unwrap(), (0, 0, 17, 0));
        assert_eq!(parse_within("1y6m").unwrap(), (1, 6, 0, 0));
        assert_eq!(parse_within("36h").unwrap(), (0, 0, 0, 36));
    }

    #[test]
    fn within_rejects_garbage_with_a_hint() {
        for bad in ["", "7", "d", "7x", "-1d"] {
            let e = parse_within(bad).unwrap_err();
            assert!(e.reason.contains("7d"), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_policy_is_detected() {
        assert!(KeepPolicy::default().is_empty());
        let p = KeepPolicy {
            daily: Some(7),
            ..Default::default()
        };
        assert!(!p.is_empty());
    }
}
