//! `holdfast apply` and `holdfast export`: endpoints, sources, notifiers and plans as a TOML file.
//!
//! The file has one table per resource, keyed by name; each holds the same fields as the
//! REST API's input (without `name`):
//!
//! ```toml
//! [endpoints.offsite]
//! kind = "s3"
//! url = "s3://backups/prod?endpoint=https://s3.example.com&region=eu-1"
//! access_key_id = "AKIA..."
//! secret_access_key = { env = "S3_SECRET" }
//! password = { file = "/etc/holdfast/offsite.pass" }
//!
//! [sources.shop]
//! kind = "postgres"
//! url = "postgres://backup@db1:5432/shop"
//! password = { env = "SHOP_DB_PASSWORD" }
//!
//! [plans.shop-nightly]
//! source = "shop"
//! endpoint = "offsite"
//! schedule = "0 3 * * *"
//! timezone = "Europe/Berlin"
//! alerts = { notify = [{ notifier = "ops" }] }
//!
//! [notifiers.ops]
//! kind = "slack"
//! url = { env = "SLACK_WEBHOOK_URL" }
//! ```
//!
//! Secrets are references (`{ env = "VAR" }` or `{ file = "PATH" }`), so the file can live in
//! version control. Apply is idempotent: the server writes nothing (and keeps the version)
//! when a resource is unchanged, and apply reports what it created, changed or left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use holdfast_core::InputError;
use holdfast_engine::Error;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::client::{Answer, Client, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The file to apply (`-` for stdin).
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// Show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the endpoints, sources and plans the file does not name. Backups in the
    /// repositories stay.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One kind of resource as the file and the API know it.
struct Kind {
    /// The file's table and the API's path segment.
    table: &'static str,
    noun: &'static str,
    /// Write-only fields: references in the file, `<field>_set` in the API's answers.
    secrets: &'static [&'static str],
}

const ENDPOINTS: Kind = Kind {
    table: "endpoints",
    noun: "endpoint",
    secrets: &[
        "password",
        "secret_access_key",
        "storage_password",
        "ssh_key",
    ],
};
const SOURCES: Kind = Kind {
    table: "sources",
    noun: "source",
    secrets: &["password"],
};
const NOTIFIERS: Kind = Kind {
    table: "notifiers",
    noun: "notifier",
    secrets: &["url", "secret", "token", "password"],
};
const PLANS: Kind = Kind {
    table: "plans",
    noun: "plan",
    secrets: &[],
};
/// In the order they are created (plans name a source, an endpoint and notifiers).
const KINDS: [&Kind; 4] = [&ENDPOINTS, &SOURCES, &NOTIFIERS, &PLANS];

/// Fields of the API's answers that are not configuration.
const NOT_CONFIG: &[&str] = &[
    "name",
    "version",
    "created_at",
    "updated_at",
    "next_runs",
    "next_prune",
    "last_job",
    "last_success",
    "url_hint",
    "last_delivery",
    "last_error",
];

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))
}

fn input_err(what: impl Into<String>, reason: impl Into<String>) -> Error {
    InputError::new(what, reason).into()
}

/// The file, parsed: kind → name → fields.
type Desired = BTreeMap<&'static str, BTreeMap<String, Map<String, Value>>>;

fn read_file(path: &PathBuf) -> Result<Desired, Error> {
    let shown = path.display().to_string();
    let text = if shown == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| input_err("stdin", e.to_string()))?
    } else {
        std::fs::read_to_string(path).map_err(|e| input_err(&shown, e.to_string()))?
    };
    parse(&text).map_err(|reason| input_err(shown, reason))
}

/// Parses a configuration file; the error names the table or field at fault.
pub fn parse(text: &str) -> Result<Desired, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
    let mut out = Desired::new();
    for (key, value) in doc {
        let Some(kind) = KINDS.iter().find(|k| k.table == key) else {
            return Err(format!(
                "unknown table `{key}`: the file holds [endpoints.NAME], [sources.NAME], [notifiers.NAME] and [plans.NAME]"
            ));
        };
        let toml::Value::Table(items) = value else {
            return Err(format!("`{key}` must be a table of {}s", kind.noun));
        };
        let mut named = BTreeMap::new();
        for (name, fields) in items {
            let toml::Value::Table(fields) = fields else {
                return Err(format!(
                    "`{key}.{name}` must be a table: write [{key}.{name}] and its fields below it"
                ));
            };
            let Value::Object(mut fields) =
                serde_json::to_value(&fields).map_err(|e| format!("`{key}.{name}`: {e}"))?
            else {
                unreachable!("a TOML table is an object");
            };
            if let Some(n) = fields.remove("name")
                && n.as_str() != Some(name.as_str())
            {
                return Err(format!(
                    "`{key}.{name}.name` is {n} but the table is named `{name}`; leave `name` out"
                ));
            }
            named.insert(name, fields);
        }
        out.insert(kind.table, named);
    }
    Ok(out)
}

/// What a secret reference resolves to.
enum Secret {
    Value(String),
    /// An `env` reference whose variable is not set.
    Unset(String),
}

fn resolve(field: &str, v: &Value) -> Result<Secret, String> {
    match v {
        Value::String(s) => Ok(Secret::Value(s.clone())),
        Value::Object(m) if m.len() == 1 && m.contains_key("env") => {
            let var = m["env"].as_str().unwrap_or_default();
            match std::env::var(var) {
                Ok(s) if !s.is_empty() => Ok(Secret::Value(s)),
                _ => Ok(Secret::Unset(var.to_string())),
            }
        }
        Value::Object(m) if m.len() == 1 && m.contains_key("file") => {
            let path = m["file"].as_str().unwrap_or_default();
            let s = std::fs::read_to_string(path).map_err(|e| format!("{field}: {path}: {e}"))?;
            let s = s.trim_end_matches(['\n', '\r']);
            if s.is_empty() {
                return Err(format!("{field}: {path} is empty"));
            }
            Ok(Secret::Value(s.to_string()))
        }
        _ => Err(format!(
            "{field}: write a reference, {{ env = \"VAR\" }} or {{ file = \"PATH\" }}"
        )),
    }
}

/// How one resource fared.
#[derive(Default)]
struct Tally {
    created: usize,
    changed: usize,
    unchanged: usize,
    deleted: usize,
}

pub fn apply(args: ApplyArgs, quiet: bool) -> Result<(), Error> {
    let desired = read_file(&args.file)?;
    let client = Client::new(&args.server)?;
    runtime()?.block_on(apply_all(&client, &desired, &args, quiet))
}

async fn apply_all(
    client: &Client,
    desired: &Desired,
    args: &ApplyArgs,
    quiet: bool,
) -> Result<(), Error> {
    let say = |line: String| {
        if !quiet {
            println!("{line}");
        }
    };
    let dry = if args.dry_run { " (dry run)" } else { "" };
    let mut tally = Tally::default();
    // Names a dry run would create, so plans that use them are not checked against the server.
    let mut new_names: BTreeSet<(&str, String)> = BTreeSet::new();
    for kind in KINDS {
        for (name, fields) in desired.get(kind.table).into_iter().flatten() {
            let path = format!("/{}/{name}", kind.table);
            let current = client.get(&path).await?;
            let mut body = fields.clone();
            body.insert("name".into(), Value::String(name.clone()));
            let mut notes = Vec::new();
            for &secret in kind.secrets {
                let Some(reference) = body.remove(secret) else {
                    continue;
                };
                match resolve(secret, &reference)
                    .map_err(|r| input_err(format!("{}.{name}", kind.table), r))?
                {
                    Secret::Value(v) => {
                        body.insert(secret.into(), Value::String(v));
                    }
                    Secret::Unset(var) => {
                        let stored = current
                            .as_ref()
                            .and_then(|a| a.body.get(format!("{secret}_set")))
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                        if !stored {
                            return Err(input_err(
                                format!("{}.{name}.{secret}", kind.table),
                                format!("environment variable {var} is not set"),
                            ));
                        }
                        notes.push(format!("{secret}: {var} is not set; kept the stored value"));
                    }
                }
            }
            if let Some(Value::Object(headers)) = body.remove("headers") {
                // A webhook's header values are secrets too: each is a reference.
                let mut resolved = Map::new();
                let mut unset = None;
                for (h, reference) in &headers {
                    match resolve(h, reference)
                        .map_err(|r| input_err(format!("{}.{name}.headers", kind.table), r))?
                    {
                        Secret::Value(v) => {
                            resolved.insert(h.clone(), Value::String(v));
                        }
                        Secret::Unset(var) => unset = Some(var),
                    }
                }
                match unset {
                    None => {
                        body.insert("headers".into(), Value::Object(resolved));
                    }
                    Some(var) if current.is_some() => notes.push(format!(
                        "headers: {var} is not set; kept the stored headers"
                    )),
                    Some(var) => {
                        return Err(input_err(
                            format!("{}.{name}.headers", kind.table),
                            format!("environment variable {var} is not set"),
                        ));
                    }
                }
            }
            if kind.table == "plans" {
                // Pausing is an operator's switch: a file that does not mention it keeps it.
                if !body.contains_key("paused")
                    && let Some(p) = current.as_ref().and_then(|a| a.body.get("paused"))
                {
                    body.insert("paused".into(), p.clone());
                }
                if args.dry_run {
                    let deps = [("source", "sources"), ("endpoint", "endpoints")];
                    let notifiers = body
                        .get("alerts")
                        .and_then(|a| a.get("notify"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.get("notifier")?.as_str());
                    let pending = deps
                        .iter()
                        .find_map(|(f, table)| {
                            let n = body.get(*f)?.as_str()?;
                            new_names
                                .contains(&(*table, n.to_string()))
                                .then(|| format!("{f} `{n}`"))
                        })
                        .or_else(|| {
                            notifiers
                                .into_iter()
                                .find(|n| new_names.contains(&("notifiers", n.to_string())))
                                .map(|n| format!("notifier `{n}`"))
                        });
                    if let Some(dep) = pending {
                        say(format!(
                            "+ {} {name}{dry} (not checked by the server: its {dep} is new too)",
                            kind.noun
                        ));
                        tally.created += 1;
                        continue;
                    }
                }
            }
            let put = format!("{path}{}", if args.dry_run { "?dry_run=true" } else { "" });
            let after = client
                .call(Method::PUT, &put, Some(&Value::Object(body)))
                .await
                .map_err(|e| Error::Other(format!("{} {name}: {e}", kind.noun)))?
                .ok_or_else(|| Error::Other(format!("{} {name}: PUT answered 404", kind.noun)))?;
            let line = match (&current, &after) {
                (None, _)
                | (
                    _,
                    Answer {
                        status: StatusCode::CREATED,
                        ..
                    },
                ) => {
                    tally.created += 1;
                    new_names.insert((kind.table, name.clone()));
                    format!("+ {} {name}{dry}", kind.noun)
                }
                (Some(before), after) if before.version != after.version => {
                    tally.changed += 1;
                    let mut diff = changes(&before.body, &after.body);
                    if diff.is_empty() {
                        diff.push("secrets".into());
                    }
                    format!("~ {} {name}{dry}: {}", kind.noun, diff.join("; "))
                }
                _ => {
                    tally.unchanged += 1;
                    format!("= {} {name}", kind.noun)
                }
            };
            say(line);
            for n in notes {
                say(format!("  note: {n}"));
            }
        }
    }
    // Deletions go the other way: plans before the sources and endpoints they name.
    for kind in KINDS.iter().rev() {
        let wanted = desired.get(kind.table);
        for item in client.list(&format!("/{}", kind.table)).await? {
            let Some(name) = item.get("name").and_then(Value::as_str) else {
                continue;
            };
            if wanted.is_some_and(|w| w.contains_key(name)) {
                continue;
            }
            if !args.prune {
                say(format!(
                    "  note: {} {name} is on the server but not in the file; kept (--prune deletes it)",
                    kind.noun
                ));
                continue;
            }
            if !args.dry_run {
                client
                    .call(Method::DELETE, &format!("/{}/{name}", kind.table), None)
                    .await
                    .map_err(|e| Error::Other(format!("deleting {} {name}: {e}", kind.noun)))?;
            }
            tally.deleted += 1;
            say(format!("- {} {name}{dry}", kind.noun));
        }
    }
    say(format!(
        "{}{} created, {} changed, {} unchanged, {} deleted",
        if args.dry_run { "dry run: " } else { "" },
        tally.created,
        tally.changed,
        tally.unchanged,
        tally.deleted
    ));
    Ok(())
}

/// The configuration fields that differ between two answers, as `field: old → new`.
fn changes(before: &Value, after: &Value) -> Vec<String> {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| !NOT_CONFIG.contains(&k.as_str()))
        .filter_map(|k| {
            let (old, new) = (
                b.get(k).unwrap_or(&Value::Null),
                a.get(k).unwrap_or(&Value::Null),
            );
            (old != new).then(|| format!("{k}: {old} → {new}"))
        })
        .collect()
}

pub fn export(args: ExportArgs) -> Result<(), Error> {
    let client = Client::new(&args.server)?;
    let text = runtime()?.block_on(export_text(&client, &args.server.server))?;
    match &args.output {
        Some(p) => std::fs::write(p, text)
            .map_err(|e| Error::Other(format!("writing {}: {e}", p.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// The environment variable an exported secret reference names.
fn secret_var(kind: &Kind, name: &str, field: &str) -> String {
    format!("HOLDFAST_{}_{name}_{field}", kind.noun)
        .to_uppercase()
        .replace('-', "_")
}

/// Fields in the order a reader expects them; others follow in the server's order.
const FIRST: &[&str] = &["kind", "source", "endpoint", "url", "schedule", "timezone"];

async fn export_text(client: &Client, server: &str) -> Result<String, Error> {
    let mut doc = toml::Table::new();
    let mut refs = Vec::new();
    for kind in KINDS {
        let mut items = toml::Table::new();
        for item in client.list(&format!("/{}", kind.table)).await? {
            let Some(obj) = item.as_object() else {
                continue;
            };
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut t = toml::Table::new();
            let keys = FIRST
                .iter()
                .copied()
                .filter(|k| obj.contains_key(*k))
                .chain(
                    obj.keys()
                        .map(String::as_str)
                        .filter(|k| !FIRST.contains(k)),
                );
            for k in keys {
                let v = &obj[k];
                if NOT_CONFIG.contains(&k) || k.ends_with("_set") {
                    continue;
                }
                if k == "headers" {
                    // Header values are write-only: references, named after the header.
                    let mut refs_t = toml::Table::new();
                    for h in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        let var = secret_var(kind, &name, &format!("header_{h}"));
                        let mut r = toml::Table::new();
                        r.insert("env".into(), toml::Value::String(var.clone()));
                        refs_t.insert(h.to_string(), toml::Value::Table(r));
                        refs.push(format!("#   {var}: {} {name}, header {h}", kind.noun));
                    }
                    if !refs_t.is_empty() {
                        t.insert(k.to_string(), toml::Value::Table(refs_t));
                    }
                    continue;
                }
                // Defaults that say nothing are left out.
                let quiet_default = match v {
                    Value::Bool(b) => !b,
                    Value::Object(m) => m.is_empty(),
                    _ => false,
                };
                let empty_list = matches!(v, Value::Array(a) if a.is_empty());
                if (quiet_default || empty_list)
                    && matches!(
                        k,
                        "paused" | "single_stream" | "all_databases" | "labels" | "default" | "to"
                    )
                {
                    continue;
                }
                if let Some(tv) = to_toml(v) {
                    t.insert(k.to_string(), tv);
                }
            }
            for &secret in kind.secrets {
                if obj.get(&format!("{secret}_set")).and_then(Value::as_bool) == Some(true) {
                    let var = secret_var(kind, &name, secret);
                    let mut r = toml::Table::new();
                    r.insert("env".into(), toml::Value::String(var.clone()));
                    t.insert(secret.to_string(), toml::Value::Table(r));
                    refs.push(format!("#   {var}: {} {name}, {secret}", kind.noun));
                }
            }
            items.insert(name, toml::Value::Table(t));
        }
        if !items.is_empty() {
            doc.insert(kind.table.into(), toml::Value::Table(items));
        }
    }
    let mut head = format!(
        "# Holdfast configuration exported from {server}.\n# Apply it with: holdfast apply -f FILE\n"
    );
    if !refs.is_empty() {
        head.push_str(
            "#\n# Secrets are references, not values. Set these variables before applying to a server\n\
             # that does not hold them yet (a server that does keeps its stored values):\n",
        );
        for r in refs {
            head.push_str(&r);
            head.push('\n');
        }
    }
    let mut body = String::new();
    for (table, items) in &doc {
        for (name, fields) in items.as_table().into_iter().flatten() {
            body.push_str(&format!("[{table}.{}]\n", key(name)));
            for (k, v) in fields.as_table().into_iter().flatten() {
                body.push_str(&format!("{} = {}\n", key(k), render(v)));
            }
            body.push('\n');
        }
    }
    Ok(format!("{head}\n{}\n", body.trim_end_matches('\n')))
}

/// A TOML key: bare when it can be.
fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

/// A value on one line: nested tables as inline tables (`{ env = "VAR" }`), so each resource
/// reads as one block.
fn render(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            let fields: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), render(v)))
                .collect();
            if fields.is_empty() {
                "{}".into()
            } else {
                format!("{{ {} }}", fields.join(", "))
            }
        }
        toml::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// JSON to TOML; `null` (an unset optional field) has no TOML form and is left out.
fn to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().filter_map(to_toml).collect()),
        // A retention's `style` says how to read the rest: first.
        Value::Object(m) => toml::Value::Table(
            m.iter()
                .filter(|(k, _)| *k == "style")
                .chain(m.iter().filter(|(k, _)| *k != "style"))
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_unknown_tables_and_bad_shapes() {
        let e = parse("[endpoint.x]\nkind='local'\n").unwrap_err();
        assert!(e.contains("unknown table `endpoint`"), "{e}");
        let e = parse("plans = 3\n").unwrap_err();
        assert!(e.contains("`plans` must be a table"), "{e}");
        let e = parse("[plans]\nnightly = 1\n").unwrap_err();
        assert!(e.contains("`plans.nightly` must be a table"), "{e}");
        let e = parse("[plans.a]\nname = 'b'\n").unwrap_err();
        assert!(e.contains("leave `name` out"), "{e}");
        let e = parse("[plans.a]\nschedule = \n").unwrap_err();
        assert!(e.contains("line 2"), "TOML errors say where: {e}");
    }

    #[test]
    fn export_output_parses_back_to_the_same_fields() {
        let mut t = toml::Table::new();
        let v = serde_json::json!({"kind": "postgres", "labels": {"site": "eu"}, "command": null, "n": 3});
        if let Some(toml::Value::Table(x)) = to_toml(&v) {
            t.insert("s".into(), toml::Value::Table(x));
        }
        let text = format!(
            "[sources.s]\n{}",
            t["s"]
                .as_table()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{} = {}\n", key(k), render(v)))
                .collect::<String>()
        );
        assert!(text.contains("labels = { site = \"eu\" }"), "{text}");
        let back = parse(&text).unwrap();
        let s = &back["sources"]["s"];
        assert_eq!(s["kind"], "postgres");
        assert_eq!(s["labels"]["site"], "eu");
        assert_eq!(s["n"], 3);
        assert!(!s.contains_key("command"), "null fields are left out");
    }

    #[test]
    fn secret_variables_are_shell_names() {
        assert_eq!(
            secret_var(&ENDPOINTS, "off-site", "secret_access_key"),
            "HOLDFAST_ENDPOINT_OFF_SITE_SECRET_ACCESS_KEY"
        );
    }

    #[test]
    fn changes_ignore_bookkeeping() {
        let a = serde_json::json!({"schedule": "0 3 * * *", "version": 1, "next_runs": []});
        let b = serde_json::json!({"schedule": "0 4 * * *", "version": 2, "next_runs": ["x"]});
        assert_eq!(
            changes(&a, &b),
            vec![r#"schedule: "0 3 * * *" → "0 4 * * *""#]
        );
    }
}
