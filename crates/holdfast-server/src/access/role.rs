//! Roles and the permissions each one grants: the one table of who may do what, for the API
//! and the UI alike.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a caller may do. A route needs one of the first six (its OpenAPI entry names it as
/// the scope of its `token` security requirement); `Overwrite` and `Commands` are asked for
/// by what a request body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Read resources, jobs and restore points (never a secret: no answer holds one).
    Read,
    /// Read the audit log.
    Audit,
    /// Run a backup, restore into a new database, cancel a job.
    Run,
    /// Create, change and delete endpoints, sources, plans and notifiers; pause and resume
    /// plans; prune.
    Configure,
    /// Accounts, every token, agent enrolments and revocations.
    Access,
    /// A restore that replaces an existing database or folder (`overwrite`).
    Overwrite,
    /// Hooks and `cmd:` sources and targets: shell commands run on an agent.
    Commands,
}

impl Perm {
    const fn bit(self) -> u8 {
        1 << self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Audit => "audit",
            Self::Run => "run",
            Self::Configure => "configure",
            Self::Access => "access",
            Self::Overwrite => "overwrite",
            Self::Commands => "commands",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Read,
            Self::Audit,
            Self::Run,
            Self::Configure,
            Self::Access,
            Self::Overwrite,
            Self::Commands,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms(u8);

impl Perms {
    pub fn has(self, p: Perm) -> bool {
        self.0 & p.bit() != 0
    }

    /// What both sets allow: a token is never worth more than its owner.
    pub fn and(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn covers(self, other: Self) -> bool {
        other.0 & !self.0 == 0
    }

    pub(crate) const fn of(ps: &[Perm]) -> Self {
        let mut b = 0;
        let mut i = 0;
        while i < ps.len() {
            b |= ps[i].bit();
            i += 1;
        }
        Self(b)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including accounts, hooks and `cmd:` sources.
    Admin,
    /// Plans, sources, endpoints and notifiers without hooks or commands; run, pause,
    /// restore (also over an existing database), prune.
    Operator,
    /// Run backups and restore into new databases.
    Restorer,
    /// Read everything but the audit log; never a secret.
    Viewer,
    /// A viewer who also reads the audit log.
    Auditor,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::Operator,
        Self::Restorer,
        Self::Viewer,
        Self::Auditor,
    ];

    pub fn perms(self) -> Perms {
        use Perm::*;
        match self {
            Self::Admin => Perms::of(&[Read, Audit, Run, Configure, Access, Overwrite, Commands]),
            Self::Operator => Perms::of(&[Read, Run, Configure, Overwrite]),
            Self::Restorer => Perms::of(&[Read, Run]),
            Self::Viewer => Perms::of(&[Read]),
            Self::Auditor => Perms::of(&[Read, Audit]),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Restorer => "restorer",
            Self::Viewer => "viewer",
            Self::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// A role that grants nothing `self` does not (what a token of an owner with role
    /// `self` may carry).
    pub fn covers(self, other: Self) -> bool {
        self.perms().covers(other.perms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_never_worth_more_than_its_owner() {
        assert!(Role::Admin.covers(Role::Operator));
        assert!(Role::Operator.covers(Role::Restorer));
        assert!(
            !Role::Operator.covers(Role::Auditor),
            "an operator reads no audit log"
        );
        assert!(!Role::Viewer.covers(Role::Restorer));
        let token = Role::Operator.perms().and(Role::Viewer.perms());
        assert!(token.has(Perm::Read) && !token.has(Perm::Run));
        assert!(!Role::Operator.perms().has(Perm::Commands));
        assert!(!Role::Restorer.perms().has(Perm::Overwrite));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
