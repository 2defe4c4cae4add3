//! `holdfast verify`: a restore drill on this machine.

use std::path::PathBuf;

use clap::Args;
use holdfast_core::drill::{DrillMode, SqlCheck};
use holdfast_engine::drill::{DrillOptions, default_root};
use holdfast_engine::{Error, Repo};

use crate::RepoArgs;

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Snapshot id, unique id prefix, or "latest" (among those the filters pass).
    snapshot: String,
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    filter: crate::filter::FilterArgs,
    /// With "latest": drill one of the N newest restore points, drawn at random (all of
    /// them proven over time, not only the newest).
    #[arg(long, value_name = "N")]
    random_of_last: Option<usize>,
    /// Read and check every byte of the restore point, without restoring it.
    #[arg(long)]
    check_only: bool,
    /// A query run against the restored copy (repeatable, each with an --expect).
    #[arg(long = "sql")]
    sql: Vec<String>,
    /// What the first value of the matching --sql must be: "> 0", ">= 10", "= ok", "42", ...
    #[arg(long = "expect")]
    expect: Vec<String>,
    /// Fail the drill when the restore takes longer than this many seconds.
    #[arg(long, value_name = "SECS")]
    rto_target: Option<u64>,
    /// Tables loaded at once (PostgreSQL per-table restore points).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Restore into this scratch server instead of a throwaway one (postgres://, mysql://;
    /// password from HOLDFAST_SOURCE_PASSWORD): the drill makes a database of its own there
    /// and drops it afterwards. The backup's own server and database are refused.
    #[arg(long, value_name = "URL")]
    into: Option<String>,
    /// Where the throwaway copies live (a private directory each, removed afterwards).
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Write the report to FILE: JSON when it ends in .json, else text.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the drill; a failed check is an error naming it (exit code 18).
pub(crate) fn verify(args: VerifyArgs, quiet: bool) -> Result<(), Error> {
    if args.sql.len() != args.expect.len() {
        return Err(Error::Input(holdfast_core::InputError::new(
            "--sql/--expect",
            format!(
                "{} --sql and {} --expect given; give each --sql its own --expect",
                args.sql.len(),
                args.expect.len()
            ),
        )));
    }
    let sql_checks: Vec<SqlCheck> = args
        .sql
        .into_iter()
        .zip(args.expect)
        .map(|(sql, expect)| SqlCheck {
            name: String::new(),
            sql,
            expect,
        })
        .collect();
    for c in &sql_checks {
        c.validate().map_err(Error::Input)?;
    }
    if let Some(0) = args.rto_target {
        return Err(Error::Input(holdfast_core::InputError::new(
            "--rto-target",
            "0 seconds can never be met; give the longest restore you accept, in seconds",
        )));
    }
    let into = args
        .into
        .as_deref()
        .map(|u| holdfast_core::SourceSpec::parse(u, None).map_err(Error::Input))
        .transpose()?
        .map(crate::with_source_password)
        .transpose()?;
    if let Some(t) = &into
        && !matches!(
            t,
            holdfast_core::SourceSpec::Postgres(_) | holdfast_core::SourceSpec::Mysql(_)
        )
    {
        return Err(Error::Input(holdfast_core::InputError::new(
            format!("--into {t}"),
            "a scratch server is a PostgreSQL or MariaDB/MySQL URL; other kinds are drilled \
             in a throwaway copy",
        )));
    }
    let repo = Repo::open(&crate::repo_config(&args.repo)?)?;
    let snap = match args.random_of_last {
        Some(n) if args.snapshot == "latest" => repo.pick_recent(&args.filter.filter(), n)?,
        Some(_) => {
            return Err(Error::Input(holdfast_core::InputError::new(
                "--random-of-last",
                format!(
                    "draws among the newest restore points; give `latest` instead of `{}`",
                    args.snapshot
                ),
            )));
        }
        None => repo.select(&args.snapshot, &args.filter.filter(), None)?,
    };
    let opts = DrillOptions {
        mode: if args.check_only {
            DrillMode::Check
        } else {
            DrillMode::Restore
        },
        sql_checks,
        rto_target_secs: args.rto_target,
        jobs: args.jobs.max(1),
        root: args.scratch_dir.unwrap_or_else(default_root),
        into,
        part: None,
    };
    let report = holdfast_engine::drill::run(&repo, &snap, &opts);
    let json = || serde_json::to_string_pretty(&report).unwrap_or_default();
    if let Some(path) = &args.report {
        let body = if path.extension().is_some_and(|e| e == "json") {
            json()
        } else {
            report.text()
        };
        std::fs::write(path, body)
            .map_err(|e| Error::Other(format!("writing the report to {}: {e}", path.display())))?;
    }
    if args.json {
        println!("{}", json());
    } else if !quiet || !report.passed {
        print!("{}", report.text());
    }
    if report.passed {
        Ok(())
    } else {
        Err(Error::DrillFailed {
            summary: report.summary(),
        })
    }
}
