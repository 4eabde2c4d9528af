//! Fetching JWK sets for `jwks_url` issuers — the I/O shell around `sase_gateway::JwksStore`,
//! which decides when (all timing logic lives there, with `now` injected):
//!
//! * in the background: [`run_refresher`] looks once a second at which issuers of the policy
//!   in force are due ([`sase_gateway::CompiledPolicy::refreshes_due`]: never fetched, or
//!   `refresh_seconds` since the last success; a failing endpoint is retried every 10 s);
//! * right after a policy is applied ([`refresh_all`]);
//! * inline, when a token names an unknown key ([`refresh`], rate-limited to one fetch per
//!   issuer every 10 s).
//!
//! While the endpoint is unreachable the keys of the last successful fetch keep working for
//! the issuer's `max_stale_seconds` past the due refresh; the gateway refuses the issuer's
//! tokens after that (`token_keys_unavailable`). Bodies are read up to
//! [`sase_gateway::MAX_JWKS_BYTES`]; redirects are not followed (see the client in `main`).

use std::sync::Arc;
use std::time::Duration;

use sase_gateway::MAX_JWKS_BYTES;

use crate::policy::ActivePolicy;
use crate::proxy::{now_ms, Edge};

/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the background refresher looks for due refreshes.
const TICK: Duration = Duration::from_secs(1);

/// Fetches and installs the keys of `issuer_id` if the rate limit allows. Fetches run one at a
/// time: a caller arriving while one is in flight waits for it (and then usually finds the rate
/// limit reached and the new keys installed).
pub async fn refresh(edge: &Edge, policy: &ActivePolicy, issuer_id: &str) {
    let _fetching = edge.policy.jwks_fetch.lock().await;
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
    match fetch(edge, &url).await {
        Ok(bytes) => {
            let mut store = edge.policy.jwks.write().unwrap_or_else(|p| p.into_inner());
            match store.install_from(issuer_id, &url, &bytes, now_ms()) {
                Ok(keys) => tracing::info!(issuer = %issuer_id, keys, "JWKS installed"),
                Err(err) => tracing::warn!(issuer = %issuer_id, %err, "JWKS refused"),
            }
        }
        Err(err) => {
            tracing::warn!(issuer = %issuer_id, %url, err = %format!("{err:#}"), "JWKS fetch failed")
        }
    }
}

/// GETs a JWK set, refusing non-2xx answers and bodies over [`MAX_JWKS_BYTES`].
async fn fetch(edge: &Edge, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut response = edge
        .jwks_client
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await?
        .error_for_status()?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        anyhow::bail!("JWK set is larger than {MAX_JWKS_BYTES} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            anyhow::bail!("JWK set is larger than {MAX_JWKS_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches keys for every `jwks_url` issuer of a newly applied policy.
pub async fn refresh_all(edge: &Edge, policy: &ActivePolicy) {
    for (issuer_id, _) in policy.compiled.jwks_urls() {
        refresh(edge, policy, &issuer_id).await;
    }
}

/// The background refresher: runs for the life of the daemon.
pub async fn run_refresher(edge: Arc<Edge>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(policy) = edge.policy.snapshot() else {
            continue;
        };
        let due = {
            let store = edge.policy.jwks.read().unwrap_or_else(|p| p.into_inner());
            policy.compiled.refreshes_due(&store, now_ms())
        };
        for (issuer_id, _) in due {
            tracing::debug!(issuer = %issuer_id, "JWKS refresh due");
            refresh(&edge, &policy, &issuer_id).await;
        }
    }
}
