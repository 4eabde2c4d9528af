//! Fetching JWK sets for `jwks_url` issuers: at policy change (in the background) and when a
//! token names an unknown key (inline, rate-limited by the gateway's `JwksStore`).

use std::time::Duration;

use crate::policy::ActivePolicy;
use crate::proxy::{now_ms, Edge};

/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Fetches and installs the keys of `issuer_id` if the rate limit allows.
pub async fn refresh(edge: &Edge, policy: &ActivePolicy, issuer_id: &str) {
    let now = now_ms();
    {
        let mut store = edge.policy.jwks.write().unwrap_or_else(|p| p.into_inner());
        if !store.may_refetch(issuer_id, now) {
            return;
        }
        store.note_fetch_attempt(issuer_id, now);
    }
    let Some((_, url)) = policy
        .compiled
        .jwks_urls()
        .into_iter()
        .find(|(id, _)| id == issuer_id)
    else {
        return;
    };
    let fetched = async {
        let response = edge
            .jwks_client
            .get(&url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await?
            .error_for_status()?;
        response.bytes().await
    }
    .await;
    match fetched {
        Ok(bytes) => {
            let mut store = edge.policy.jwks.write().unwrap_or_else(|p| p.into_inner());
            match store.install(issuer_id, &bytes, now_ms()) {
                Ok(keys) => tracing::info!(issuer = %issuer_id, keys, "JWKS installed"),
                Err(err) => tracing::warn!(issuer = %issuer_id, %err, "JWKS refused"),
            }
        }
        Err(err) => tracing::warn!(issuer = %issuer_id, %url, %err, "JWKS fetch failed"),
    }
}

/// Fetches keys for every `jwks_url` issuer of a newly applied policy.
pub async fn refresh_all(edge: &Edge, policy: &ActivePolicy) {
    for (issuer_id, _) in policy.compiled.jwks_urls() {
        refresh(edge, policy, &issuer_id).await;
    }
}
