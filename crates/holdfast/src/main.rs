//! `holdfast`: the one binary.
//!
//! Cron-friendly: with `--quiet` nothing is printed on success; errors always go to stderr and
//! the exit code says what kind of failure it was (see `holdfast_engine::Error::exit_code`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use holdfast_core::{InputError, KeepPolicy, RepoLocation, SourceSpec};
use holdfast_engine::repo::Gate;
use holdfast_engine::{Error, Repo, RepoConfig, StorageCreds};
use secrecy::SecretString;

mod agent;
mod client;
mod declare;
mod filter;
mod oidc;
mod ping;
mod serve;
mod verify;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Backups of databases into restic-format repositories"
)]
struct Cli {
    /// Print nothing on success (errors still go to stderr).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log output (repeat for more).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct RepoArgs {
    /// Repository: a directory, or s3://bucket/prefix?endpoint=URL&region=R
    /// (S3 keys from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "HOLDFAST_REPO")]
    repo: String,
    /// File holding the repository password. Otherwise HOLDFAST_REPO_PASSWORD, or a prompt.
    #[arg(long, env = "HOLDFAST_REPO_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: REST API, scheduler, job queue and an embedded agent. With no
    /// options: 127.0.0.1:8080, SQLite and a local repository in the data directory.
    Serve(Box<serve::ServeArgs>),
    /// Run an agent next to your databases: it connects out to a server, runs the jobs of
    /// sources whose labels it carries (with the plan's hooks), and reports back.
    Agent(agent::AgentArgs),
    /// Create or update a server's endpoints, sources and plans from a TOML file; prints
    /// what changed. Running it again changes nothing.
    Apply(declare::ApplyArgs),
    /// On the server's host: recover a lost admin token (works on the metadata store directly).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Write a server's endpoints, sources and plans as a TOML file for `apply` (secrets as
    /// references to environment variables, never their values).
    Export(declare::ExportArgs),
    /// Create a new, encrypted repository.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Back up a source into the repository.
    Backup {
        /// postgres://user@host:port/db, mysql://user@host:port/db, sqlite:///path,
        /// redis://host:port, file:///dir, or cmd:NAME (with --command).
        source: String,
        #[command(flatten)]
        repo: RepoArgs,
        /// Extra KEY=VALUE tags on the snapshot (repeatable).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Shell command whose stdout is backed up (for cmd: sources).
        #[arg(long)]
        command: Option<String>,
        /// PostgreSQL: one pg_dump stream instead of one file per table.
        #[arg(long)]
        single_stream: bool,
        /// PostgreSQL: every database, plus roles and tablespaces.
        #[arg(long)]
        all_databases: bool,
        /// Record this plan name in the snapshot.
        #[arg(long)]
        plan: Option<String>,
        /// Create the repository first if there is none.
        #[arg(long)]
        init: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pings: ping::PingArgs,
    },
    /// List snapshots, oldest first.
    Snapshots {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        filter: filter::FilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into a target (same URL forms as backup sources).
    Restore {
        /// Snapshot id, unique id prefix, or "latest" (the newest of the target's kind and
        /// database, among those the filters pass).
        snapshot: String,
        /// Where to restore: a database URL, sqlite:///path, file:///dir, or cmd: with --command.
        target: String,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        filter: filter::FilterArgs,
        /// Shell command that reads the snapshot on stdin (for cmd: targets).
        #[arg(long)]
        command: Option<String>,
        /// Create the target database if it does not exist.
        #[arg(long)]
        create: bool,
        /// Tables loaded at once (PostgreSQL per-table snapshots).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Write into a non-empty directory or over an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Write a snapshot's files, concatenated in order, to stdout (a plain SQL dump for
    /// PostgreSQL and MariaDB snapshots).
    Dump {
        /// Snapshot id, unique id prefix, or "latest" (refused when the filters leave the
        /// snapshots of more than one source).
        snapshot: String,
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        filter: filter::FilterArgs,
    },
    /// Remove snapshots by a keep policy, per source.
    Forget {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        keep: KeepArgs,
        /// Also remove the data no snapshot uses any more.
        #[arg(long)]
        prune: bool,
        /// Show what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove data no snapshot uses.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
        /// Delete unused packs now instead of after the 23-hour grace period that protects
        /// backups running at the same time.
        #[arg(long)]
        instant: bool,
    },
    /// Prove a restore point restorable: restore it into a throwaway server on this machine
    /// (removed afterwards), check the copy against what the backup counted, run your SQL
    /// checks and measure the recovery time; --check-only reads it back instead. Exits 18
    /// naming the failed check.
    Verify(verify::VerifyArgs),
    /// Verify the repository; with --read-data, every byte of it.
    Check {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long)]
        read_data: bool,
        /// Read part N of T of the packs (as restic's --read-data-subset=n/t): running
        /// 1/T, 2/T, ... T/T reads every pack once.
        #[arg(long, value_name = "N/T", conflicts_with = "read_data")]
        read_data_subset: Option<String>,
    },
}

#[derive(Args)]
struct KeepArgs {
    #[arg(long)]
    keep_last: Option<u32>,
    #[arg(long)]
    keep_hourly: Option<u32>,
    #[arg(long)]
    keep_daily: Option<u32>,
    #[arg(long)]
    keep_weekly: Option<u32>,
    #[arg(long)]
    keep_monthly: Option<u32>,
    #[arg(long)]
    keep_yearly: Option<u32>,
    /// Keep everything younger than this, e.g. 7d, 36h, 2w3d.
    #[arg(long)]
    keep_within: Option<String>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: tags are KEY=VALUE"))?;
    if k.is_empty() || k.contains(',') || v.contains(',') {
        return Err(format!("`{s}`: tags are KEY=VALUE, without commas"));
    }
    Ok((k.to_string(), v.to_string()))
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Revoke the admin tokens and print a new one (when the admin token is lost).
    ResetToken(AdminArgs),
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The server's data directory [default: $XDG_DATA_HOME/holdfast or ~/.local/share/holdfast].
    #[arg(long, env = "HOLDFAST_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// The server's PostgreSQL metadata store, when it keeps one.
    #[arg(long, env = "HOLDFAST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        // Storage errors come back as Holdfast's own messages; OpenDAL's log of them is noise.
        0 if matches!(cli.command, Command::Serve(_) | Command::Agent(_)) => {
            "info,rustic_core=warn,sqlx=warn,opendal::services=off"
        }
        0 => "warn,rustic_core::archiver=error,opendal::services=off",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(OneLine)
        // Colour only for a person at a terminal, never into a file or a journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    let cli = match cli {
        Cli {
            command: Command::Serve(args),
            ..
        } => return serve::serve(*args),
        cli => cli,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn repo_config(args: &RepoArgs) -> Result<RepoConfig, Error> {
    let location = RepoLocation::parse(&args.repo)?;
    let password = password(args)?;
    let mut cfg = RepoConfig::new(location, password);
    cfg.creds = storage_creds(cfg.location.kind())?;
    Ok(cfg)
}

/// The storage login from the environment, under the names restic and its users know:
/// AWS_* for S3, ST_USER/ST_KEY (TempAuth) or OS_USERNAME/OS_PASSWORD (Keystone) for Swift;
/// HOLDFAST_STORAGE_USER/_PASSWORD for the rest (or any), HOLDFAST_SSH_KEY_FILE for SFTP.
fn storage_creds(kind: holdfast_core::StorageKind) -> Result<StorageCreds, Error> {
    use holdfast_core::StorageKind as K;
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let (user, secret) = match kind {
        K::S3 => (var(&["AWS_ACCESS_KEY_ID"]), var(&["AWS_SECRET_ACCESS_KEY"])),
        K::Swift => (
            var(&["ST_USER", "OS_USERNAME", "HOLDFAST_STORAGE_USER"]),
            var(&["ST_KEY", "OS_PASSWORD", "HOLDFAST_STORAGE_PASSWORD"]),
        ),
        _ => (
            var(&["HOLDFAST_STORAGE_USER"]),
            var(&["HOLDFAST_STORAGE_PASSWORD"]),
        ),
    };
    let ssh_key = match var(&["HOLDFAST_SSH_KEY_FILE"]) {
        Some(f) if kind == K::Sftp => {
            Some(SecretString::from(std::fs::read_to_string(&f).map_err(
                |e| InputError::new(format!("HOLDFAST_SSH_KEY_FILE {f}"), e.to_string()),
            )?))
        }
        _ => None,
    };
    Ok(StorageCreds {
        user,
        secret: secret.map(SecretString::from),
        ssh_key,
    })
}

fn password(args: &RepoArgs) -> Result<SecretString, Error> {
    if let Some(f) = &args.password_file {
        let s = std::fs::read_to_string(f).map_err(|e| {
            InputError::new(format!("password file {}", f.display()), e.to_string())
        })?;
        let s = s.trim_end_matches(['\n', '\r']);
        if s.is_empty() {
            return Err(
                InputError::new(format!("password file {}", f.display()), "is empty").into(),
            );
        }
        return Ok(SecretString::from(s.to_string()));
    }
    if let Ok(p) = std::env::var("HOLDFAST_REPO_PASSWORD")
        && !p.is_empty()
    {
        return Ok(SecretString::from(p));
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("repository password: ")
            .map_err(|e| Error::Other(format!("reading the password: {e}")))?;
        if !p.is_empty() {
            return Ok(SecretString::from(p));
        }
    }
    Err(InputError::new(
        "repository password",
        "not given: set HOLDFAST_REPO_PASSWORD, pass --password-file, or run on a terminal",
    )
    .into())
}

/// A database password kept out of the URL (and so out of Holdfast's own command line):
/// `HOLDFAST_SOURCE_PASSWORD`, or a file named by `HOLDFAST_SOURCE_PASSWORD_FILE`.
fn with_source_password(spec: SourceSpec) -> Result<SourceSpec, Error> {
    let from_file = match std::env::var_os("HOLDFAST_SOURCE_PASSWORD_FILE") {
        Some(f) => Some(
            std::fs::read_to_string(&f)
                .map_err(|e| {
                    InputError::new(
                        format!(
                            "HOLDFAST_SOURCE_PASSWORD_FILE {}",
                            PathBuf::from(&f).display()
                        ),
                        e.to_string(),
                    )
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    let password = from_file.or_else(|| std::env::var("HOLDFAST_SOURCE_PASSWORD").ok());
    Ok(match password {
        Some(p) if !p.is_empty() => spec.with_default_password(SecretString::from(p)),
        _ => spec,
    })
}

fn run(cli: Cli) -> Result<(), Error> {
    let quiet = cli.quiet;
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    match cli.command {
        // `main` runs `serve` apart: it has exit codes of its own.
        Command::Serve(args) => {
            let code = serve::serve(*args);
            if code != ExitCode::SUCCESS {
                return Err(Error::Other("the server stopped with an error".into()));
            }
        }
        Command::Agent(args) => agent::agent(args)?,
        Command::Admin(AdminCommand::ResetToken(args)) => {
            let data_dir = args.data_dir.unwrap_or_else(serve::data_dir);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))?;
            let token = rt
                .block_on(holdfast_server::reset_admin_token(
                    &data_dir,
                    args.database_url.as_deref(),
                ))
                .map_err(|e| Error::Other(e.to_string()))?;
            println!("{token}");
            eprintln!(
                "holdfast: the new admin API token is above (shown only now); every earlier admin \
                 token is revoked. A running server accepts it at once."
            );
        }
        Command::Apply(args) => declare::apply(args, quiet)?,
        Command::Export(args) => declare::export(args)?,
        Command::Init { repo } => {
            let cfg = repo_config(&repo)?;
            Repo::init(&cfg)?;
            say(format!("created repository at {}", cfg.location));
        }
        Command::Backup {
            source,
            repo,
            tags,
            command,
            single_stream,
            all_databases,
            plan,
            init,
            json,
            pings,
        } => {
            let spec = with_source_password(SourceSpec::parse(&source, command.as_deref())?)?;
            let pings = ping::Pings::new(
                pings,
                plan.as_ref()
                    .map_or_else(|| format!("`{spec}`"), |p| format!("plan `{p}`")),
            );
            pings.started();
            let backup = || -> Result<holdfast_engine::BackupOutcome, Error> {
                let cfg = repo_config(&repo)?;
                let repo = match Repo::open(&cfg) {
                    Err(Error::RepoNotFound { .. }) if init => {
                        Repo::init(&cfg)?;
                        Repo::open(&cfg)?
                    }
                    other => other?,
                };
                let driver = holdfast_engine::driver_for(&spec);
                let opts = holdfast_engine::BackupOptions {
                    single_stream,
                    all_databases,
                    plan,
                    tags,
                    restrict_key: Some(repo.derive_secret(&format!("pg_dump restrict key {spec}"))),
                };
                let set = driver.backup_set(&opts)?;
                let gate = Arc::new(Gate::default());
                let progress = Progress::start(gate.clone(), quiet || json);
                let result = repo.backup(set, gate);
                progress.finish();
                result
            };
            let outcome = match backup() {
                Ok(o) => o,
                Err(e) => {
                    pings.failed(&e.to_string());
                    return Err(e);
                }
            };
            let s = &outcome.snapshot;
            pings.succeeded(s.duration_secs, s.bytes);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome).unwrap_or_default()
                );
            } else {
                say(format!(
                    "snapshot {} saved: {} read, {} added to the repository, {:.1}s",
                    s.short_id,
                    human(s.bytes),
                    human(s.added_bytes),
                    s.duration_secs
                ));
            }
        }
        Command::Snapshots { repo, filter, json } => {
            let repo = Repo::open(&repo_config(&repo)?)?;
            let filter = filter.filter();
            let mut snaps = repo.snapshots()?;
            snaps.retain(|s| filter.matches(s));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&snaps).unwrap_or_default()
                );
            } else if !quiet {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{:<8}  {:<19}  {:<9}  {:>10}  SOURCE",
                    "ID", "TIME (UTC)", "KIND", "SIZE"
                );
                for s in &snaps {
                    let kind = s.meta.as_ref().map_or("-", |m| m.source.as_str());
                    let _ = writeln!(
                        out,
                        "{:<8}  {:<19}  {:<9}  {:>10}  {}",
                        s.short_id,
                        s.time.get(..19).unwrap_or(&s.time).replace('T', " "),
                        kind,
                        human(s.bytes),
                        s.label
                    );
                }
                let _ = writeln!(out, "{} snapshots", snaps.len());
            }
        }
        Command::Restore {
            snapshot,
            target,
            repo,
            filter,
            command,
            create,
            jobs,
            force,
        } => {
            let spec = with_source_password(SourceSpec::parse(&target, command.as_deref())?)?;
            let repo = Repo::open(&repo_config(&repo)?)?;
            let snap = repo.select(&snapshot, &filter.filter(), Some(&spec))?;
            let reader = repo.reader(&snap)?;
            let opts = holdfast_engine::RestoreOptions {
                create,
                jobs: jobs.max(1),
                force,
                ..Default::default()
            };
            let stats = holdfast_engine::source::restore(&spec, &snap, &reader, &opts)?;
            say(format!(
                "restored snapshot {} into {spec}: {} in {} files, {:.1}s",
                snap.short_id,
                human(stats.bytes),
                stats.files,
                stats.duration_secs
            ));
        }
        Command::Dump {
            snapshot,
            repo,
            filter,
        } => {
            let repo = Repo::open(&repo_config(&repo)?)?;
            let snap = repo.select(&snapshot, &filter.filter(), None)?;
            let reader = repo.reader(&snap)?;
            let mut out = std::io::BufWriter::with_capacity(
                1 << 20,
                ReaderGone::new(std::io::stdout().lock()),
            );
            let paths: Vec<String> = reader.files().map(|(p, _)| p.to_string()).collect();
            let written = paths
                .iter()
                .try_for_each(|p| reader.dump(p, &mut out))
                .and_then(|()| {
                    out.flush()
                        .map_err(|e| Error::Other(format!("writing to stdout: {e}")))
                });
            // A reader that stops reading (`| head`) ends the dump, quietly, as it does `cat`;
            // any other failure to write is stdout's, not the repository's.
            match (written, &out.get_ref().failed) {
                (Err(_), Some(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                (Err(_), Some(e)) => {
                    return Err(Error::Other(format!("writing the dump to stdout: {e}")));
                }
                (other, _) => other?,
            }
        }
        Command::Forget {
            repo,
            keep,
            prune,
            dry_run,
        } => {
            let repo = Repo::open(&repo_config(&repo)?)?;
            let policy = KeepPolicy {
                last: keep.keep_last,
                hourly: keep.keep_hourly,
                daily: keep.keep_daily,
                weekly: keep.keep_weekly,
                monthly: keep.keep_monthly,
                yearly: keep.keep_yearly,
                within: keep.keep_within,
            };
            let report = repo.forget(&policy, dry_run, None)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            say(format!(
                "{verb} {} snapshots, kept {}",
                report.removed.len(),
                report.kept.len()
            ));
            for id in &report.removed {
                say(format!("  {verb} {}", &id[..8]));
            }
            if prune && !dry_run {
                repo.prune(false)?;
                say("pruned unused data".into());
            }
        }
        Command::Prune { repo, instant } => {
            let repo = Repo::open(&repo_config(&repo)?)?;
            repo.prune(instant)?;
            say("pruned unused data".into());
        }
        Command::Verify(args) => verify::verify(args, quiet)?,
        Command::Check {
            repo,
            read_data,
            read_data_subset,
        } => {
            use holdfast_engine::repo::ReadData;
            let read = match (&read_data_subset, read_data) {
                (Some(s), _) => ReadData::parse_subset(s).map_err(|reason| {
                    Error::Input(InputError::new("--read-data-subset", reason))
                })?,
                (None, true) => ReadData::All,
                (None, false) => ReadData::None,
            };
            let repo = Repo::open(&repo_config(&repo)?)?;
            repo.check_reading(read)?;
            let part = match read {
                ReadData::Subset { n, of } => format!(" (data of part {n}/{of} read)"),
                ReadData::All => " (all data read)".into(),
                ReadData::None => String::new(),
            };
            say(format!("repository {} is fine{part}", repo.location()));
        }
    }
    Ok(())
}

/// Log output, one line per event: a message that spans lines (an OpenDAL error's context and
/// source) is joined into one, so every line of a log file is one event. Backtraces are for
/// panics: with RUST_BACKTRACE set, OpenDAL and rustic capture one in each error they make and
/// print it with the error (OpenDAL's retry warning), a hundred frames per retried request;
/// they are left out here.
struct OneLine;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(std::io::stderr())
    }
}

struct OneLineWriter(std::io::Stderr);

impl Write for OneLineWriter {
    /// The formatter writes each event whole, in one call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut line = Vec::with_capacity(buf.len());
        let mut in_backtrace = false;
        for part in buf.split(|&b| b == b'\n') {
            let part = if line.is_empty() {
                part.trim_ascii_end()
            } else {
                part.trim_ascii()
            };
            if part == b"Backtrace:" {
                in_backtrace = true;
                continue;
            }
            if in_backtrace && holdfast_engine::error::is_backtrace_line(part) {
                continue;
            }
            in_backtrace = false;
            if part.is_empty() {
                continue;
            }
            if !line.is_empty() {
                line.push(b' ');
            }
            line.extend_from_slice(part);
        }
        line.push(b'\n');
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A writer that keeps its first write error: the storage layer wraps it in its own, so
/// whether the reader went away (a broken pipe) is told here, where it happens.
struct ReaderGone<W> {
    inner: W,
    failed: Option<std::io::Error>,
}

impl<W> ReaderGone<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            failed: None,
        }
    }

    fn note<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r
            && self.failed.is_none()
        {
            self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
        r
    }
}

impl<W: Write> Write for ReaderGone<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

fn human(b: u64) -> String {
    indicatif::HumanBytes(b).to_string()
}

/// A progress bar on a terminal (bytes, rate, elapsed); nothing otherwise.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(gate: Arc<Gate>, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self {
                stop: None,
                handle: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bytes} read  {binary_bytes_per_sec}  {elapsed_precise}",
                )
                .expect("valid template"),
            );
            loop {
                bar.set_position(gate.bytes.load(Ordering::Relaxed));
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            bar.finish_and_clear();
        });
        Self {
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    fn finish(mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
