//! The endpoint `test` action, run by the server itself: is the storage reachable, does it
//! take the login, can it be written, how much space is free; can the repository be opened
//! (or created), and read? (Jobs run on agents: see `holdfast-agent`.)

use holdfast_engine::{Error as EngineError, Repo, RepoConfig};

use crate::model::{CheckStep, EndpointTestReport};

/// The endpoint `test` action: can the repository be reached, opened (or created), and read?
pub fn test_repository(cfg: &RepoConfig) -> EndpointTestReport {
    let mut steps = vec![CheckStep {
        check: "location".into(),
        ok: true,
        detail: format!("{}", cfg.location),
    }];
    for c in holdfast_engine::probe::storage_checks(cfg) {
        steps.push(CheckStep {
            check: c.check,
            ok: c.ok,
            detail: c.detail,
        });
    }
    if steps.iter().any(|s| !s.ok) {
        return EndpointTestReport { ok: false, steps };
    }
    let opened = match Repo::open(cfg) {
        Ok(r) => {
            steps.push(CheckStep {
                check: "repository".into(),
                ok: true,
                detail: "reachable; the repository exists and the password opens it".into(),
            });
            Ok(r)
        }
        Err(EngineError::RepoNotFound { .. }) => match Repo::init(cfg)
            .and_then(|()| Repo::open(cfg))
        {
            Ok(r) => {
                steps.push(CheckStep {
                    check: "repository".into(),
                    ok: true,
                    detail: "reachable and writable; no repository was there, so one was created"
                        .into(),
                });
                Ok(r)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match opened {
        Ok(repo) => match repo.snapshots() {
            Ok(s) => steps.push(CheckStep {
                check: "snapshots".into(),
                ok: true,
                detail: format!("{} snapshot(s) listed", s.len()),
            }),
            Err(e) => steps.push(CheckStep {
                check: "snapshots".into(),
                ok: false,
                detail: e.to_string(),
            }),
        },
        Err(e) => steps.push(CheckStep {
            check: match e {
                EngineError::WrongPassword { .. } => "password",
                _ => "repository",
            }
            .into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    EndpointTestReport {
        ok: steps.iter().all(|s| s.ok),
        steps,
    }
}
