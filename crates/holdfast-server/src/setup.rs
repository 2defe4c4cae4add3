//! What the first start sets up (the admin token, the `local` endpoint), the admin token
//! checks of later starts and its recovery, and the private files of the data directory.

use std::path::PathBuf;

use holdfast_store::{Kind, NewResource, NewToken, Store, UserRow};

use crate::model::{EndpointKind, EndpointSecrets, StoredEndpoint};
use crate::secrets::{self};

use crate::startup::ServeError;
use crate::state::AppState;

/// What the first start set up, for the operator to see once (the binary prints it).
#[derive(Debug, Default)]
pub struct FirstStart {
    /// The admin token made at this start; `None` when there was one already, or it came from
    /// `HOLDFAST_ADMIN_TOKEN` (`from_env` then).
    pub admin_token: Option<String>,
    pub admin_token_from_env: bool,
    /// The `admin` account made at this start and its one-time password (`None` when it
    /// came from `HOLDFAST_ADMIN_PASSWORD`).
    pub admin_account: Option<Option<String>>,
    /// The `local` endpoint created at this start: its repository and password file.
    pub local_endpoint: Option<(PathBuf, PathBuf)>,
}

/// Admin tokens shorter than this are refused: they can be guessed.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// `HOLDFAST_ADMIN_TOKEN` either works or stops the start with a reason: never ignored.
pub(crate) async fn check_admin_token(state: &AppState, made_now: bool) -> Result<(), ServeError> {
    let Some(t) = &state.config.admin_token else {
        return Ok(());
    };
    if made_now {
        return Ok(());
    }
    match state.store.token_by_hash(&secrets::hash_token(t)).await {
        Ok(Some(t)) if t.revoked_at.is_none() => Ok(()),
        Ok(_) => Err(ServeError::AdminToken(
            "it is not a live token of this server (the admin token is made at the first start \
             and revoked tokens stay revoked); unset it, or make a new admin token with \
             `holdfast admin reset-token` on this host"
                .into(),
        )),
        Err(e) => Err(ServeError::AdminToken(format!(
            "cannot check it against the metadata store: {e}"
        ))),
    }
}

/// Revokes every admin token and makes a new one, on the metadata store directly (for the
/// server host, when the admin token is lost). Returns the new token.
pub async fn reset_admin_token(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> Result<String, ServeError> {
    let url = match database_url {
        Some(u) => u.to_string(),
        None => {
            let db = data_dir.join("holdfast.db");
            if !db.exists() {
                return Err(ServeError::DataDir {
                    path: db,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no metadata store here: pass the server's --data-dir or --database-url",
                    ),
                });
            }
            format!("sqlite://{}", db.display())
        }
    };
    let store_err = |source| ServeError::Store {
        url: holdfast_core::location::redact_url(&url),
        source,
    };
    let store = Store::open(&url).await.map_err(store_err)?;
    let now = jiff::Timestamp::now().as_millisecond();
    let admin = store
        .user_by_name("admin")
        .await
        .map_err(store_err)?
        .map(|u| u.id);
    // The new token first, so that revoking the old ones never leaves no way in.
    let token = secrets::new_token();
    let new = store
        .insert_token(&admin_token_row(&secrets::hash_token(&token), admin), now)
        .await
        .map_err(store_err)?;
    for t in store.tokens().await.map_err(store_err)? {
        if t.name == "admin" && t.kind == "api" && t.revoked_at.is_none() && t.id != new {
            store.revoke_token(t.id, now).await.map_err(store_err)?;
        }
    }
    store.close().await;
    Ok(token)
}

fn admin_token_row(hash: &str, user_id: Option<i64>) -> NewToken<'_> {
    NewToken {
        name: "admin",
        hash,
        kind: "api",
        user_id,
        role: "admin",
        ..NewToken::default()
    }
}

/// Makes the `admin` account when there is no account yet (a first start, or the first
/// start after accounts came), and gives it the tokens that have no owner.
async fn admin_account(state: &AppState, done: &mut FirstStart) -> Result<Option<i64>, String> {
    let store = &state.store;
    let e = |e: holdfast_store::StoreError| e.to_string();
    if let Some(u) = store.user_by_name("admin").await.map_err(e)? {
        return Ok(Some(u.id));
    }
    if !store.users().await.map_err(e)?.is_empty()
        || !store
            .set_setting_once("admin-account", "created")
            .await
            .map_err(e)?
    {
        return Ok(None);
    }
    let (password, shown) = match &state.config.admin_password {
        Some(p) => (p.clone(), None),
        None => {
            let p = secrets::new_password();
            (p.clone(), Some(p))
        }
    };
    let id = store
        .insert_user(&UserRow {
            id: 0,
            name: "admin".into(),
            kind: "user".into(),
            role: "admin".into(),
            password_hash: Some(crate::access::password::hash(&password)),
            failed_logins: 0,
            locked_until: None,
            created_at: state.now(),
            disabled_at: None,
            oidc_subject: None,
            scope: None,
        })
        .await
        .map_err(e)?;
    store.adopt_tokens(id).await.map_err(e)?;
    done.admin_account = Some(shown);
    Ok(Some(id))
}

/// What the first start set up.
pub(crate) async fn first_start(state: &AppState) -> Result<FirstStart, String> {
    let store = &state.store;
    let now = state.now();
    let mut done = FirstStart::default();
    let admin = admin_account(state, &mut done).await?;
    if store.tokens().await.map_err(|e| e.to_string())?.is_empty()
        && store
            .set_setting_once("admin-token", "created")
            .await
            .map_err(|e| e.to_string())?
    {
        let token = match &state.config.admin_token {
            Some(t) => {
                done.admin_token_from_env = true;
                t.clone()
            }
            None => {
                let t = secrets::new_token();
                done.admin_token = Some(t.clone());
                t
            }
        };
        store
            .insert_token(&admin_token_row(&secrets::hash_token(&token), admin), now)
            .await
            .map_err(|e| e.to_string())?;
    }
    if store
        .count(Kind::Endpoint)
        .await
        .map_err(|e| e.to_string())?
        == 0
        && store
            .set_setting_once("default-endpoint", "local")
            .await
            .map_err(|e| e.to_string())?
    {
        let dir = state.config.data_dir.join("repository");
        let pw_file = state.config.data_dir.join("repository.password");
        let password = match std::fs::read_to_string(&pw_file) {
            Ok(p) => p.trim().to_string(),
            Err(_) => {
                let p = secrets::new_password();
                secrets::write_private(&pw_file, &format!("{p}\n"))
                    .map_err(|e| format!("cannot write {}: {e}", pw_file.display()))?;
                p
            }
        };
        let spec = StoredEndpoint {
            kind: EndpointKind::Local,
            url: dir.display().to_string(),
            access_key_id: None,
            user: None,
            prune_schedule: "0 4 * * 0".into(),
            prune_timezone: "UTC".into(),
            agent_access: crate::model::AgentAccess::Server,
        };
        let sealed = state.seal(
            Kind::Endpoint,
            "local",
            &EndpointSecrets {
                password: Some(password),
                ..Default::default()
            },
        );
        store
            .create(
                Kind::Endpoint,
                &NewResource {
                    name: "local".into(),
                    spec: serde_json::to_string(&spec).expect("spec serializes"),
                    secrets: Some(sealed),
                    plan: None,
                },
                now,
            )
            .await
            .map_err(|e| e.to_string())?;
        state
            .schedule_prune("local", &spec)
            .await
            .map_err(|e| e.to_string())?;
        done.local_endpoint = Some((dir, pw_file));
    }
    Ok(done)
}

/// Makes `dir` private to the server's user (0700), creating it when missing.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The embedded agent's name, kept in `file` so that it stays the same across restarts (a new
/// name at each start would leave a trail of offline agents): the host's name and a random
/// suffix, made at the first start.
pub(crate) fn embedded_agent_name(file: &std::path::Path) -> std::io::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(60)
        .collect();
    let host = if host.is_empty() {
        "holdfast".into()
    } else {
        host
    };
    let name = format!("{host}-{}", hex::encode(secrets::random_bytes::<3>()));
    secrets::write_private(file, &format!("{name}\n"))?;
    Ok(name)
}

/// Makes the SQLite database and its WAL and shared-memory files private (0600), creating the
/// database file when missing: SQLite gives the files it creates the database file's mode.
pub(crate) fn private_sqlite(db: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
