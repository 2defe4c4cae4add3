//! `holdfast backup --heartbeat URL` and `--notify-webhook URL`: a cron job's backup tells a
//! dead man's switch (healthchecks.io, Uptime Kuma) that it started and how it ended, and posts a
//! failure to a webhook, in the same shapes the server's notifiers use. A ping that cannot be
//! delivered is a warning: it never changes the backup's outcome or exit code.

use std::time::Duration;

use holdfast_core::alert::EventKind;
use holdfast_server::notify::model::{
    HeartbeatStyle, NotifierKind, NotifierSecrets, StoredNotifier,
};
use holdfast_server::notify::{Notification, Sender};

#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// Ping this URL when the backup starts (`/start`), succeeds (the URL) and fails (`/fail`),
    /// healthchecks.io style. The URL is a credential: prefer the environment variable.
    #[arg(long, env = "HOLDFAST_HEARTBEAT_URL", hide_env_values = true)]
    pub heartbeat: Option<String>,
    /// How the heartbeat URL is pinged: `healthchecks`, or `uptime-kuma` (push monitors:
    /// `?status=up|down&msg=...`, no start ping).
    #[arg(long, default_value = "healthchecks", value_parser = ["healthchecks", "uptime-kuma"])]
    pub heartbeat_style: String,
    /// POST a `backup.failed` event (the server's webhook JSON) here when the backup fails,
    /// signed with HOLDFAST_NOTIFY_WEBHOOK_SECRET when that is set.
    #[arg(long, env = "HOLDFAST_NOTIFY_WEBHOOK", hide_env_values = true)]
    pub notify_webhook: Option<String>,
}

/// The pings of one CLI backup.
pub struct Pings {
    args: PingArgs,
    /// What the backup is of, for the messages.
    label: String,
    rt: Option<tokio::runtime::Runtime>,
    sender: Sender,
}

impl Pings {
    pub fn new(args: PingArgs, label: String) -> Self {
        let wanted = args.heartbeat.is_some() || args.notify_webhook.is_some();
        let rt = wanted
            .then(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()
            })
            .flatten();
        Self {
            args,
            label,
            rt,
            sender: Sender::new(),
        }
    }

    pub fn started(&self) {
        self.heartbeat(&note(
            EventKind::BackupStarted,
            format!("Backup started: {}", self.label),
        ));
    }

    pub fn succeeded(&self, duration_secs: f64, bytes: u64) {
        let mut n = note(
            EventKind::BackupSucceeded,
            format!("Backup succeeded: {}", self.label),
        );
        n.duration_secs = Some(duration_secs);
        n.bytes_read = i64::try_from(bytes).ok();
        self.heartbeat(&n);
    }

    pub fn failed(&self, error: &str) {
        let mut n = note(
            EventKind::BackupFailed,
            format!("Backup failed: {}", self.label),
        );
        n.text = format!("The backup of {} failed.", self.label);
        n.error = Some(error.to_string());
        self.heartbeat(&n);
        if let Some(url) = &self.args.notify_webhook {
            let stored = notifier(NotifierKind::Webhook, HeartbeatStyle::Healthchecks);
            let secrets = NotifierSecrets {
                url: Some(url.clone()),
                secret: std::env::var("HOLDFAST_NOTIFY_WEBHOOK_SECRET")
                    .ok()
                    .filter(|s| !s.is_empty()),
                ..NotifierSecrets::default()
            };
            self.send("the failure webhook", &stored, &secrets, &n);
        }
    }

    fn heartbeat(&self, n: &Notification) {
        let Some(url) = &self.args.heartbeat else {
            return;
        };
        let style = match self.args.heartbeat_style.as_str() {
            "uptime-kuma" => HeartbeatStyle::UptimeKuma,
            _ => HeartbeatStyle::Healthchecks,
        };
        let secrets = NotifierSecrets {
            url: Some(url.clone()),
            ..NotifierSecrets::default()
        };
        self.send(
            "the heartbeat URL",
            &notifier(NotifierKind::Heartbeat, style),
            &secrets,
            n,
        );
    }

    /// Sends with up to three tries; a failure is a warning.
    fn send(&self, what: &str, n: &StoredNotifier, secrets: &NotifierSecrets, note: &Notification) {
        let Some(rt) = &self.rt else { return };
        let key = format!("holdfast-cli-{}-{}", std::process::id(), note.event);
        let mut last = None;
        for wait in [0u64, 1, 3] {
            std::thread::sleep(Duration::from_secs(wait));
            match rt.block_on(
                self.sender
                    .send(n, secrets, std::slice::from_ref(note), &key),
            ) {
                Ok(_) => return,
                Err(e) if e.permanent => {
                    last = Some(e);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            eprintln!(
                "holdfast: warning: could not ping {what} ({}): {e}",
                note.event
            );
        }
    }
}

fn note(event: EventKind, title: String) -> Notification {
    Notification::new(event, title, jiff::Timestamp::now().to_string())
}

fn notifier(kind: NotifierKind, style: HeartbeatStyle) -> StoredNotifier {
    StoredNotifier {
        kind,
        url_hint: None,
        chat_id: None,
        header_names: Vec::new(),
        smtp_host: None,
        smtp_port: None,
        smtp_security: Default::default(),
        username: None,
        from: None,
        to: Vec::new(),
        style,
        default: false,
        group_secs: 0,
        max_per_hour: 60,
    }
}
