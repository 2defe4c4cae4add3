//! `holdfast serve`'s OpenID Connect flags: sign-in to the UI through a provider (Keycloak,
//! Authentik, Dex, Entra ID, Google, …), with the provider's groups mapped to roles.

use holdfast_core::agent::Secret;
use holdfast_server::{OidcConfig, Role};

#[derive(Debug, clap::Args)]
pub struct OidcArgs {
    /// Sign in to the UI through this OpenID provider (its issuer URL; https, or http on
    /// loopback). Needs --oidc-client-id and at least one --oidc-role.
    #[arg(long, env = "HOLDFAST_OIDC_ISSUER")]
    oidc_issuer: Option<String>,
    /// The client id registered for Holdfast at the provider.
    #[arg(long, env = "HOLDFAST_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    /// A file holding the client secret (none: a public client, PKCE only). The secret
    /// itself may come from HOLDFAST_OIDC_CLIENT_SECRET instead, never from a flag.
    #[arg(long, env = "HOLDFAST_OIDC_CLIENT_SECRET_FILE")]
    oidc_client_secret_file: Option<std::path::PathBuf>,
    /// This server's /ui/oidc/callback as browsers reach it, registered at the provider
    /// [default: http://LISTEN/ui/oidc/callback].
    #[arg(long, env = "HOLDFAST_OIDC_REDIRECT_URL")]
    oidc_redirect_url: Option<String>,
    /// GROUP=ROLE (repeatable): members of the provider's group GROUP get ROLE (admin,
    /// operator, restorer, auditor, viewer); the highest wins. A user in no mapped group is
    /// refused.
    #[arg(long = "oidc-role", value_parser = parse_mapping)]
    oidc_roles: Vec<(String, Role)>,
    /// Scopes asked for besides `openid` (repeatable) [default: profile, email].
    #[arg(long = "oidc-scope")]
    oidc_scopes: Vec<String>,
    /// The claim that lists the user's groups (in the ID token or from userinfo).
    #[arg(long, default_value = "groups")]
    oidc_groups_claim: String,
    /// What the sign-in button calls the provider.
    #[arg(long, default_value = "single sign-on")]
    oidc_label: String,
}

fn parse_mapping(s: &str) -> Result<(String, Role), String> {
    let (group, role) = s
        .rsplit_once('=')
        .filter(|(g, _)| !g.is_empty())
        .ok_or_else(|| format!("`{s}`: GROUP=ROLE, e.g. dba=operator"))?;
    let role = Role::parse(role).ok_or_else(|| {
        format!("`{s}`: unknown role `{role}` (admin, operator, restorer, auditor, viewer)")
    })?;
    Ok((group.to_string(), role))
}

impl OidcArgs {
    /// The server's configuration; `Ok(None)` without --oidc-issuer. Errors name the flag.
    pub fn config(self, listen: std::net::SocketAddr) -> Result<Option<OidcConfig>, String> {
        let Some(issuer) = self.oidc_issuer.filter(|i| !i.is_empty()) else {
            if self.oidc_client_id.is_some() || !self.oidc_roles.is_empty() {
                return Err("--oidc-client-id and --oidc-role need --oidc-issuer".into());
            }
            return Ok(None);
        };
        let client_id = self.oidc_client_id.ok_or(
            "--oidc-issuer needs --oidc-client-id (the client registered at the provider)",
        )?;
        let client_secret = match self.oidc_client_secret_file {
            Some(f) => Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| format!("--oidc-client-secret-file {}: {e}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("HOLDFAST_OIDC_CLIENT_SECRET").ok(),
        }
        .filter(|s| !s.is_empty())
        .map(Secret);
        let scopes = if self.oidc_scopes.is_empty() {
            vec!["profile".into(), "email".into()]
        } else {
            self.oidc_scopes
        };
        let config = OidcConfig {
            redirect_url: self
                .oidc_redirect_url
                .unwrap_or_else(|| format!("http://{listen}/ui/oidc/callback")),
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id,
            client_secret,
            scopes,
            groups_claim: self.oidc_groups_claim,
            roles: self.oidc_roles,
            label: self.oidc_label,
        };
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Some(config))
    }
}
