//! OpenID Connect sign-in (authorization code flow with PKCE S256, a nonce and a state):
//! the provider's metadata and keys (discovered from its issuer, kept for a while), the
//! address a browser is sent to, and the checks of what comes back (the ID token's
//! signature, issuer, audience, expiry and nonce, by `openidconnect`), then the groups that
//! give a role. Accounts are the UI's business (`ui/oidc.rs`).

use std::time::{Duration, Instant};

use holdfast_core::agent::Secret;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
    UserInfoClaims,
};
use serde::{Deserialize, Serialize};

use super::Role;

/// How the server signs people in through an OpenID provider.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is ISSUER/.well-known/openid-configuration).
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client (PKCE only).
    pub client_secret: Option<Secret>,
    /// This server's `/ui/oidc/callback` as the browser reaches it, registered at the provider.
    pub redirect_url: String,
    /// Asked for besides `openid` (e.g. `profile`, `email`, `groups`).
    pub scopes: Vec<String>,
    /// The claim (in the ID token or from the userinfo endpoint) listing the user's groups.
    pub groups_claim: String,
    /// Group to role; a user gets the highest role any of their groups maps to.
    pub roles: Vec<(String, Role)>,
    /// What the sign-in button says: "Sign in with LABEL".
    pub label: String,
}

/// Roles from the most to the least a group can give (restorer and auditor grant different
/// things; a user in groups for both gets restorer).
const PRECEDENCE: [Role; 5] = [
    Role::Admin,
    Role::Operator,
    Role::Restorer,
    Role::Auditor,
    Role::Viewer,
];

impl OidcConfig {
    /// The role the groups give: the highest that one of them maps to; `None` when none maps.
    pub fn role_of(&self, groups: &[String]) -> Option<Role> {
        PRECEDENCE.into_iter().find(|r| {
            self.roles
                .iter()
                .any(|(g, role)| role == r && groups.iter().any(|have| have == g))
        })
    }

    /// What is wrong with this configuration, for the server to refuse to start with it.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match url::Url::parse(&self.issuer) {
            Err(e) => out.push(format!("--oidc-issuer {}: {e}", self.issuer)),
            Ok(u) if u.scheme() != "https" && !loopback(&u) => out.push(format!(
                "--oidc-issuer {}: must be https (plain http only on loopback)",
                self.issuer
            )),
            Ok(_) => {}
        }
        if let Err(e) = url::Url::parse(&self.redirect_url) {
            out.push(format!("--oidc-redirect-url {}: {e}", self.redirect_url));
        } else if !self.redirect_url.ends_with("/ui/oidc/callback") {
            out.push(format!(
                "--oidc-redirect-url {}: must be this server's /ui/oidc/callback",
                self.redirect_url
            ));
        }
        if self.client_id.is_empty() {
            out.push("--oidc-client-id is empty".into());
        }
        if self.roles.is_empty() {
            out.push("no --oidc-role GROUP=ROLE: nobody could sign in through the provider".into());
        }
        out
    }
}

fn loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// What the browser carries while it is at the provider (sealed in a cookie, so that any
/// replica can take the callback): the state to compare, the nonce the ID token must hold,
/// and the PKCE verifier.
#[derive(Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Unix ms when the browser was sent away.
    pub at: i64,
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `ISSUER#SUB`: stays the same when the user's name changes.
    pub subject: String,
    /// `preferred_username`, else the e-mail address, else `sub`.
    pub name: String,
    pub groups: Vec<String>,
}

/// Why a sign-in through the provider did not work, in words for the sign-in page (never
/// holding a token or a secret).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the OpenID provider cannot be reached or answered badly ({0}); try again shortly")]
    Provider(String),
    #[error("the provider's answer did not pass the checks ({0}); sign in again")]
    Rejected(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Extra(serde_json::Map<String, serde_json::Value>);
impl AdditionalClaims for Extra {}

/// Metadata and keys are read again after this long (keys rotate).
const KEEP: Duration = Duration::from_secs(15 * 60);

pub struct Oidc {
    pub config: OidcConfig,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
}

async fn send(
    http: reqwest::Client,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let resp = http.execute(reqwest::Request::try_from(req)?).await?;
    let mut out = http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        out = out.header(k, v);
    }
    let body = resp.bytes().await?.to_vec();
    Ok(out
        .body(body)
        .expect("status and headers came from a response"))
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Self {
        let http = reqwest::Client::builder()
            // Following redirects would let an answer send us anywhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            config,
            http,
            metadata: tokio::sync::Mutex::new(None),
        }
    }

    async fn provider(&self, fresh: bool) -> Result<CoreProviderMetadata, OidcError> {
        let mut kept = self.metadata.lock().await;
        if !fresh
            && let Some((m, at)) = kept.as_ref()
            && at.elapsed() < KEEP
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| OidcError::Provider(format!("issuer: {e}")))?;
        let http = |r| send(self.http.clone(), r);
        let m = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| OidcError::Provider(format!("discovery: {}", chain(&e))))?;
        *kept = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    fn client_id(&self) -> ClientId {
        ClientId::new(self.config.client_id.clone())
    }

    fn secret(&self) -> Option<ClientSecret> {
        self.config
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.0.clone()))
    }

    fn redirect(&self) -> Result<RedirectUrl, OidcError> {
        RedirectUrl::new(self.config.redirect_url.clone())
            .map_err(|e| OidcError::Provider(format!("redirect URL: {e}")))
    }

    /// Where to send the browser, and what it must bring back.
    pub async fn start(&self, now: i64) -> Result<(url::Url, Pending), OidcError> {
        let m = self.provider(false).await?;
        let client = CoreClient::from_provider_metadata(m, self.client_id(), self.secret())
            .set_redirect_uri(self.redirect()?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.config.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok((
            url,
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                at: now,
            },
        ))
    }

    /// Trades the code for tokens and checks them; reads the groups from the ID token or,
    /// when it has none, from the userinfo endpoint.
    pub async fn finish(&self, pending: Pending, code: String) -> Result<Identity, OidcError> {
        let r = self.finish_with(&pending, &code).await;
        if r.is_err() {
            // The provider may have rotated its keys (or changed): the next sign-in reads its
            // metadata again. The code is single-use, so this one is not retried.
            *self.metadata.lock().await = None;
        }
        r
    }

    async fn finish_with(&self, pending: &Pending, code: &str) -> Result<Identity, OidcError> {
        let m = self.provider(false).await?;
        let client = CoreClient::from_provider_metadata(m, self.client_id(), self.secret())
            .set_redirect_uri(self.redirect()?);
        let http = |r| send(self.http.clone(), r);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&http)
            .await
            .map_err(|e| OidcError::Rejected(format!("code exchange: {}", chain(&e))))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| OidcError::Rejected("no ID token in the token answer".into()))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce.clone()))
            .map_err(|e| OidcError::Rejected(format!("ID token: {}", chain(&e))))?;
        let sub = claims.subject().clone();
        // The token's signature is checked: its payload is what the provider said.
        let mut extra = payload(&id_token.to_string()).unwrap_or_default();
        let claim = &self.config.groups_claim;
        let mut name = claims
            .preferred_username()
            .map(|u| u.as_str().to_string())
            .or_else(|| claims.email().map(|e| e.as_str().to_string()));
        if (!extra.contains_key(claim) || name.is_none())
            && let Ok(req) = client.user_info(tokens.access_token().clone(), Some(sub.clone()))
        {
            let info: UserInfoClaims<Extra, CoreGenderClaim> = req
                .request_async(&http)
                .await
                .map_err(|e| OidcError::Rejected(format!("userinfo: {}", chain(&e))))?;
            if let Some(g) = info.additional_claims().0.get(claim) {
                extra.insert(claim.clone(), g.clone());
            }
            name = name
                .or_else(|| info.preferred_username().map(|u| u.as_str().to_string()))
                .or_else(|| info.email().map(|e| e.as_str().to_string()));
        }
        let groups = match extra.get(claim) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(g)) => vec![g.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            subject: format!("{}#{}", self.config.issuer, sub.as_str()),
            name: name.unwrap_or_else(|| sub.as_str().to_string()),
            groups,
        })
    }
}

/// The claims of a JWT whose signature has been checked.
fn payload(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(roles: &[(&str, Role)]) -> OidcConfig {
        OidcConfig {
            issuer: "https://id.example.com".into(),
            client_id: "holdfast".into(),
            client_secret: None,
            redirect_url: "https://backup.example.com/ui/oidc/callback".into(),
            scopes: vec![],
            groups_claim: "groups".into(),
            roles: roles.iter().map(|(g, r)| (g.to_string(), *r)).collect(),
            label: "SSO".into(),
        }
    }

    #[test]
    fn the_highest_mapped_group_gives_the_role_and_no_mapped_group_gives_none() {
        let c = config(&[
            ("ops", Role::Operator),
            ("dev", Role::Viewer),
            ("sec", Role::Auditor),
        ]);
        let g = |gs: &[&str]| gs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(c.role_of(&g(&["dev", "ops"])), Some(Role::Operator));
        assert_eq!(c.role_of(&g(&["dev", "sec"])), Some(Role::Auditor));
        assert_eq!(c.role_of(&g(&["staff"])), None);
        assert_eq!(c.role_of(&[]), None);
    }

    #[test]
    fn a_plain_http_issuer_off_loopback_and_a_config_without_roles_are_refused() {
        let mut c = config(&[]);
        c.issuer = "http://id.example.com".into();
        let p = c.problems().join("\n");
        assert!(p.contains("must be https"), "{p}");
        assert!(p.contains("--oidc-role"), "{p}");
        c.issuer = "http://127.0.0.1:9000".into();
        c.roles = vec![("ops".into(), Role::Operator)];
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }
}
