//! What this agent will run and touch, decided on its own host (its flags), whatever a job
//! asks: so that neither a stolen API credential nor a compromised server can turn the agent
//! into a remote shell or a file reader. A job that asks for more is refused before any of
//! its steps runs, with the reason and the flag that would allow it.

use std::path::{Path, PathBuf};

use holdfast_core::agent::{SourceTicket, Ticket, Work};
use holdfast_core::lifecycle::{Hook, Step};
use holdfast_core::location::{SourceSpec, confine};

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Inline hook scripts (any shell command the plan holds) are run (`--allow-hook-scripts`).
    pub hook_scripts: bool,
    /// Named hooks: a hook whose `run` is a bare name (`lock-db`) runs the executable of that
    /// name in this directory, and nothing else (`--hooks-dir`).
    pub hooks_dir: Option<PathBuf>,
    /// `cmd:` sources and restore targets are run (`--allow-commands`).
    pub commands: bool,
    /// `file://` and `sqlite://` sources and restore targets must lie in one of these
    /// (`--allow-path`); none: no local paths at all.
    pub paths: Vec<PathBuf>,
    /// Never read or written, whatever `paths` says (the embedded agent: the server's data
    /// directory).
    pub never: Vec<PathBuf>,
    /// Where restore drills' throwaway copies live (`--drill-dir`); `None`: the temporary
    /// directory's `holdfast-drills`.
    pub drill_dir: Option<PathBuf>,
}

impl Policy {
    /// Where this agent's restore drills make their throwaway copies.
    pub fn drills_root(&self) -> PathBuf {
        self.drill_dir
            .clone()
            .unwrap_or_else(holdfast_engine::drill::default_root)
    }
}

/// Whether `run` names a hook (a file in the hooks directory) rather than holding a script.
pub fn is_named(run: &str) -> bool {
    !run.is_empty()
        && !run.starts_with('.')
        && run
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Policy {
    /// Everything allowed but the `never` paths: what `holdfast serve --agent-trust-jobs`
    /// gives its embedded agent on a single-user machine.
    pub fn trusting(never: Vec<PathBuf>) -> Self {
        Self {
            hook_scripts: true,
            hooks_dir: None,
            commands: true,
            paths: vec![PathBuf::from("/")],
            never,
            drill_dir: None,
        }
    }

    /// Why this agent refuses ticket `t`, if it does.
    pub fn refuses(&self, t: &Ticket) -> Option<String> {
        let (plan, source, what) = match &t.work {
            Work::Backup { plan, source, .. } => (plan, source, "source"),
            Work::Restore { plan, target, .. } => (plan, target, "restore target"),
            // A drill runs no hook and reads no source: it restores into its own throwaway
            // copy, or into the scratch server its plan names, judged as a restore target.
            Work::Verify {
                into: Some(into), ..
            } => {
                return self
                    .refuses_source(into, &into.url)
                    .map(|why| format!("drill target `{}`: {why}", into.name));
            }
            Work::Prune | Work::Verify { .. } => return None,
        };
        for step in Step::ALL {
            let Some(hook) = plan.hooks.get(step) else {
                continue;
            };
            if let Some(why) = self.refuses_hook(hook) {
                return Some(format!("the plan's {step} hook: {why}"));
            }
        }
        self.refuses_source(source, &source.url)
            .map(|why| format!("{what} `{}`: {why}", source.name))
    }

    fn refuses_hook(&self, hook: &Hook) -> Option<String> {
        if let Some(dir) = &self.hooks_dir
            && is_named(&hook.run)
        {
            let path = dir.join(&hook.run);
            return (!path.is_file()).then(|| {
                format!(
                    "no hook `{}` in this agent's hooks directory {}",
                    hook.run,
                    dir.display()
                )
            });
        }
        (!self.hook_scripts).then(|| {
            "this agent runs no inline hook scripts; start it with --allow-hook-scripts, or \
             put the script in its --hooks-dir and name it in the hook"
                .to_string()
        })
    }

    /// Why this agent refuses the source or target `s` at `url`, if it does.
    pub fn refuses_source(&self, s: &SourceTicket, url: &str) -> Option<String> {
        let spec = match SourceSpec::parse(url, s.command.as_deref()) {
            Ok(spec) => spec,
            // The job itself reports a URL that does not read.
            Err(_) => return None,
        };
        match spec {
            SourceSpec::Command { .. } if !self.commands => Some(
                "this agent runs no `cmd:` sources or targets; start it with --allow-commands"
                    .into(),
            ),
            SourceSpec::Folder { path } | SourceSpec::Sqlite { path } => self.refuses_path(&path),
            _ => None,
        }
    }

    fn refuses_path(&self, path: &Path) -> Option<String> {
        if let Some(n) = self.never.iter().find(|n| confine::overlaps(path, n)) {
            return Some(format!(
                "{} is (or holds) {}, which this agent never reads or writes",
                path.display(),
                n.display()
            ));
        }
        if self.paths.iter().any(|p| confine::within(path, p)) {
            return None;
        }
        Some(if self.paths.is_empty() {
            format!(
                "this agent touches no local paths; start it with --allow-path DIR for the \
                 folder that holds {}",
                path.display()
            )
        } else {
            format!(
                "{} is outside the paths this agent may touch ({}); add --allow-path for it",
                path.display(),
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(url: &str, command: Option<&str>) -> SourceTicket {
        SourceTicket {
            name: "s".into(),
            kind: "folder".into(),
            url: url.into(),
            command: command.map(str::to_string),
            password: None,
            single_stream: false,
            all_databases: false,
            database: None,
        }
    }

    #[test]
    fn paths_commands_and_hooks_need_the_agents_consent() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok");
        let data = d.path().join("ok/server-data");
        std::fs::create_dir_all(&data).unwrap();
        let p = Policy {
            paths: vec![ok.clone()],
            never: vec![data.clone()],
            ..Policy::default()
        };
        let url = |p: &Path| format!("file://{}", p.display());
        assert_eq!(
            p.refuses_source(&ticket(&url(&ok.join("x")), None), &url(&ok.join("x"))),
            None
        );
        for bad in [
            d.path().join("elsewhere"),
            ok.join("../x"),
            data.join("k"),
            ok.clone(),
        ] {
            assert!(
                p.refuses_source(&ticket(&url(&bad), None), &url(&bad))
                    .is_some(),
                "{} must be refused",
                bad.display()
            );
        }
        let cmd = ticket("cmd:", Some("cat /etc/shadow"));
        assert!(
            p.refuses_source(&cmd, "cmd:")
                .unwrap()
                .contains("--allow-commands")
        );
        let hook = Hook {
            run: "cat ~/.ssh/id_ed25519".into(),
            timeout_secs: 5,
        };
        assert!(
            p.refuses_hook(&hook)
                .unwrap()
                .contains("--allow-hook-scripts")
        );
        let named = Policy {
            hooks_dir: Some(d.path().to_path_buf()),
            ..Policy::default()
        };
        std::fs::write(d.path().join("lock-db"), "#!/bin/sh\n").unwrap();
        let lock = Hook {
            run: "lock-db".into(),
            timeout_secs: 5,
        };
        assert_eq!(named.refuses_hook(&lock), None);
        assert!(
            named.refuses_hook(&hook).is_some(),
            "a script is still refused"
        );
        assert!(
            named
                .refuses_hook(&Hook {
                    run: "unlock".into(),
                    timeout_secs: 5
                })
                .is_some()
        );
    }
}
