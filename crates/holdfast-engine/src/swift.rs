//! Logging in to OpenStack Swift: OpenDAL's Swift service takes a storage URL and a ready
//! token, so the engine gets both first, from TempAuth (v1) or Keystone (v3).

use holdfast_core::RepoLocation;
use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::repo::RepoConfig;

pub struct Login {
    pub storage_url: String,
    pub token: String,
}

/// Logs in with the endpoint's user and key (TempAuth) or password (Keystone v3, when the
/// auth URL ends in `/v3`).
pub fn login(cfg: &RepoConfig) -> Result<Login> {
    let (location, creds) = (&cfg.location, &cfg.creds);
    let err = |detail: String| Error::storage(cfg.describe(), location.kind(), detail);
    let RepoLocation::Swift {
        auth_url,
        project,
        domain,
        region,
        ..
    } = location
    else {
        return Err(Error::Other("not a Swift location".into()));
    };
    let auth_err = |detail: String| Error::StorageAuth {
        repo: cfg.describe(),
        credential: location.kind().credential().to_string(),
        detail,
    };
    let (Some(user), Some(key)) = (&creds.user, &creds.secret) else {
        return Err(auth_err("no user or key given".into()));
    };
    let unreachable = |e: reqwest::Error| err(format!("cannot reach the auth URL {auth_url}: {e}"));
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Other(format!("HTTP client: {e}")))?;
    let refused = |s: reqwest::StatusCode| matches!(s.as_u16(), 401 | 403);
    let keystone = auth_url.trim_end_matches('/').ends_with("/v3");
    if !keystone {
        let resp = client
            .get(auth_url)
            .header("X-Auth-User", user)
            .header("X-Auth-Key", key.expose_secret())
            .send()
            .map_err(unreachable)?;
        let status = resp.status();
        if refused(status) {
            return Err(auth_err(format!(
                "TempAuth at {auth_url} answered {status}"
            )));
        }
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        return match (header("x-storage-url"), header("x-auth-token")) {
            (Some(storage_url), Some(token)) if status.is_success() => {
                ensure_container(&client, location, &storage_url, &token, &err)?;
                Ok(Login { storage_url, token })
            }
            _ => Err(err(format!(
                "TempAuth at {auth_url} answered {status} without a storage URL and token"
            ))),
        };
    }

    let domain = domain.as_deref().unwrap_or("Default");
    let mut body = serde_json::json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": user, "domain": {"name": domain},
                              "password": key.expose_secret()}}}}});
    if let Some(p) = project {
        body["auth"]["scope"] =
            serde_json::json!({"project": {"name": p, "domain": {"name": domain}}});
    }
    let url = format!("{}/auth/tokens", auth_url.trim_end_matches('/'));
    let resp = client.post(&url).json(&body).send().map_err(unreachable)?;
    let status = resp.status();
    if refused(status) {
        return Err(auth_err(format!(
            "Keystone at {auth_url} answered {status}"
        )));
    }
    let token = resp
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let catalog: serde_json::Value = resp
        .json()
        .map_err(|e| err(format!("Keystone's answer is unreadable: {e}")))?;
    let (Some(token), true) = (token, status.is_success()) else {
        return Err(err(format!(
            "Keystone at {auth_url} answered {status} without a token"
        )));
    };
    let storage_url = object_store_url(&catalog, region.as_deref()).ok_or_else(|| {
        err(format!(
            "Keystone's catalog has no public object-store endpoint{}",
            region
                .as_ref()
                .map(|r| format!(" in region {r}"))
                .unwrap_or_default()
        ))
    })?;
    ensure_container(&client, location, &storage_url, &token, &err)?;
    Ok(Login { storage_url, token })
}

/// Creates the container when it does not exist yet (as restic does).
fn ensure_container(
    client: &reqwest::blocking::Client,
    location: &RepoLocation,
    storage_url: &str,
    token: &str,
    err: &dyn Fn(String) -> Error,
) -> Result<()> {
    let RepoLocation::Swift { container, .. } = location else {
        return Ok(());
    };
    let url = format!("{}/{container}", storage_url.trim_end_matches('/'));
    let head = client
        .head(&url)
        .header("X-Auth-Token", token)
        .send()
        .map_err(|e| err(format!("cannot reach {url}: {e}")))?;
    if head.status().is_success() {
        return Ok(());
    }
    let put = client
        .put(&url)
        .header("X-Auth-Token", token)
        .send()
        .map_err(|e| err(format!("cannot reach {url}: {e}")))?;
    if put.status().is_success() {
        Ok(())
    } else {
        Err(err(format!(
            "creating container `{container}` answered {}",
            put.status()
        )))
    }
}

/// The public object-store URL in a Keystone v3 token's catalog.
fn object_store_url(token: &serde_json::Value, region: Option<&str>) -> Option<String> {
    token["token"]["catalog"]
        .as_array()?
        .iter()
        .filter(|s| s["type"] == "object-store")
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| {
            e["interface"] == "public"
                && region.is_none_or(|r| e["region"] == r || e["region_id"] == r)
        })
        .and_then(|e| e["url"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keystone_catalog_gives_the_public_object_store_of_the_region() {
        let t = serde_json::json!({"token": {"catalog": [
            {"type": "identity", "endpoints": [{"interface": "public", "region": "a", "url": "x"}]},
            {"type": "object-store", "endpoints": [
                {"interface": "internal", "region": "a", "url": "http://internal"},
                {"interface": "public", "region": "a", "url": "http://a/v1/AUTH_p"},
                {"interface": "public", "region": "b", "url": "http://b/v1/AUTH_p"}]}]}});
        assert_eq!(
            super::object_store_url(&t, Some("b")).as_deref(),
            Some("http://b/v1/AUTH_p")
        );
        assert_eq!(
            super::object_store_url(&t, None).as_deref(),
            Some("http://a/v1/AUTH_p")
        );
        assert_eq!(super::object_store_url(&t, Some("c")), None);
    }
}
