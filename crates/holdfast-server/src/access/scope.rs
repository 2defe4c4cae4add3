//! Scopes: the plan labels a user or token is limited to (`team=payments`). A scoped
//! credential sees and acts on the plans that carry all of its labels (and their jobs and
//! restore points) and on nothing server-wide: it reads endpoints and sources (no answer
//! holds a secret) but changes none, and never has `access`, `audit` or `commands` (hooks
//! and `cmd:` run on agents that serve everyone). Out of scope looks like absent (404).

use std::collections::BTreeMap;

use holdfast_core::plan::PlanSpec;
use holdfast_store::{Kind, Store};

use super::{Perm, Perms, Principal};
use crate::api::ApiError;

pub type Labels = BTreeMap<String, String>;

/// `None`: every plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<Labels>);

impl Scope {
    pub const ALL: Self = Self(None);

    pub fn of(labels: Labels) -> Self {
        if labels.is_empty() {
            Self::ALL
        } else {
            Self(Some(labels))
        }
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    pub fn labels(&self) -> Option<&Labels> {
        self.0.as_ref()
    }

    /// Whether a plan with `labels` is within this scope.
    pub fn sees(&self, labels: &Labels) -> bool {
        self.0
            .as_ref()
            .is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// This scope with `more` labels (a token of an owner with this scope): it can only
    /// narrow. A label that would change one of the owner's is refused.
    pub fn narrowed(&self, more: &Labels) -> Result<Self, String> {
        let mut all = self.0.clone().unwrap_or_default();
        for (k, v) in more {
            match all.get(k) {
                Some(have) if have != v => {
                    return Err(format!(
                        "{k}={v} would widen the owner's scope ({k}={have}); a token can only \
                         add labels to its owner's"
                    ));
                }
                _ => {
                    all.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(Self::of(all))
    }

    /// The stored form (a JSON object), `None` for every plan.
    pub fn to_json(&self) -> Option<String> {
        self.0
            .as_ref()
            .map(|l| serde_json::to_string(l).expect("labels serialize"))
    }

    pub fn from_json(stored: Option<&str>) -> Result<Self, String> {
        match stored {
            None => Ok(Self::ALL),
            Some(s) => serde_json::from_str(s)
                .map(Self::of)
                .map_err(|e| format!("stored scope does not read: {e}")),
        }
    }

    /// `team=payments, env=prod`.
    pub fn text(&self) -> String {
        match &self.0 {
            None => "every plan".into(),
            Some(l) => l
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// What a scoped credential may hold at most.
    pub fn cap(&self, perms: Perms) -> Perms {
        if self.is_all() {
            perms
        } else {
            perms.and(Perms::of(&[
                Perm::Read,
                Perm::Run,
                Perm::Configure,
                Perm::Overwrite,
            ]))
        }
    }
}

impl Principal {
    pub fn scope(&self) -> &Scope {
        match self {
            Self::User { scope, .. } => scope,
            _ => &Scope::ALL,
        }
    }

    /// Whether the caller may see a plan with these labels.
    pub fn sees(&self, labels: &Labels) -> bool {
        self.scope().sees(labels)
    }

    /// `Ok` when the caller is not limited to some plans; else the 403 for `what`.
    pub fn require_unscoped(&self, what: &str) -> Result<(), ApiError> {
        let scope = self.scope();
        if scope.is_all() {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "{what} is not for a credential scoped to plans labelled {}; ask an admin",
            scope.text()
        )))
    }
}

/// The path segment after `kind` (`plans`, `jobs`), percent-decoded as the `Path` extractor
/// will decode it (so `p%61y` is checked as `pay`); `None` when there is none or it is not
/// UTF-8.
pub fn segment_after(path: &str, kind: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let raw = parts
        .iter()
        .position(|p| *p == kind)
        .and_then(|i| parts.get(i + 1))?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The scope check of a route that names a plan or a job by its path: `plans_pattern` and
/// `jobs_pattern` are the matched route's prefixes (`/api/v1/plans/{name}`). A job id that
/// does not read is "not found" (fail closed).
pub async fn check_path(
    store: &Store,
    who: &Principal,
    pattern: &str,
    path: &str,
    prefix: &str,
) -> Result<(), ApiError> {
    if who.scope().is_all() {
        return Ok(());
    }
    if pattern.starts_with(&format!("{prefix}/plans/{{name}}")) {
        let name = segment_after(path, "plans")
            .ok_or_else(|| ApiError::NotFound("no such plan".into()))?;
        return check_plan(store, who, &name).await;
    }
    if pattern.starts_with(&format!("{prefix}/jobs/{{id}}")) {
        let id = segment_after(path, "jobs")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| ApiError::NotFound("no such job".into()))?;
        return check_job(store, who, id).await;
    }
    Ok(())
}

/// The plan's labels, if the plan exists.
async fn plan_labels(store: &Store, name: &str) -> Result<Option<Labels>, ApiError> {
    let Some(r) = store.get(Kind::Plan, name).await? else {
        return Ok(None);
    };
    let spec: PlanSpec = serde_json::from_str(&r.spec)
        .map_err(|e| ApiError::Internal(format!("stored plan `{name}` is unreadable: {e}")))?;
    Ok(Some(spec.labels))
}

/// `Ok` when the plan is absent (the handler says so) or within the caller's scope; a plan
/// out of scope is "not found".
pub async fn check_plan(store: &Store, who: &Principal, name: &str) -> Result<(), ApiError> {
    if who.scope().is_all() {
        return Ok(());
    }
    match plan_labels(store, name).await? {
        Some(l) if !who.sees(&l) => Err(ApiError::NotFound(format!("no plan named `{name}`"))),
        _ => Ok(()),
    }
}

/// `Ok` when the job is absent or belongs to a plan within the caller's scope (a job of no
/// plan, such as a prune, or of a deleted plan, is out of every scope).
pub async fn check_job(store: &Store, who: &Principal, id: i64) -> Result<(), ApiError> {
    if who.scope().is_all() {
        return Ok(());
    }
    let Some(job) = store.job(id).await? else {
        return Ok(());
    };
    let visible = match job.plan.as_deref() {
        Some(p) => plan_labels(store, p).await?.is_some_and(|l| who.sees(&l)),
        None => false,
    };
    if visible {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("job `{id}` not found")))
    }
}

/// Whether one of the plans the caller sees (other than `except`) backs up `source`: one read
/// of the plans.
pub async fn backs_up(
    store: &Store,
    who: &Principal,
    source: &str,
    except: Option<&str>,
) -> Result<bool, ApiError> {
    for r in store.list(Kind::Plan).await? {
        if Some(r.name.as_str()) == except || r.plan.as_ref().is_none_or(|c| c.source != source) {
            continue;
        }
        let spec: PlanSpec = serde_json::from_str(&r.spec).map_err(|e| {
            ApiError::Internal(format!("stored plan `{}` is unreadable: {e}", r.name))
        })?;
        if who.sees(&spec.labels) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The names of the plans the caller sees; `None`: every plan.
pub async fn visible_plans(
    store: &Store,
    who: &Principal,
) -> Result<Option<Vec<String>>, ApiError> {
    if who.scope().is_all() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for r in store.list(Kind::Plan).await? {
        let spec: PlanSpec = serde_json::from_str(&r.spec).map_err(|e| {
            ApiError::Internal(format!("stored plan `{}` is unreadable: {e}", r.name))
        })?;
        if who.sees(&spec.labels) {
            out.push(r.name);
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_scope_sees_plans_with_all_its_labels_and_a_token_only_narrows_it() {
        let team = Scope::of(l(&[("team", "payments")]));
        assert!(team.sees(&l(&[("team", "payments"), ("env", "prod")])));
        assert!(!team.sees(&l(&[("team", "ops")])));
        assert!(!team.sees(&l(&[])));
        assert!(Scope::ALL.sees(&l(&[])));
        let narrow = team.narrowed(&l(&[("env", "prod")])).unwrap();
        assert!(!narrow.sees(&l(&[("team", "payments")])));
        assert!(team.narrowed(&l(&[("team", "ops")])).is_err());
        assert!(
            !team
                .cap(crate::access::Role::Admin.perms())
                .has(Perm::Access)
        );
        assert!(
            !team
                .cap(crate::access::Role::Admin.perms())
                .has(Perm::Commands)
        );
        assert_eq!(Scope::from_json(team.to_json().as_deref()), Ok(team));
    }
}
