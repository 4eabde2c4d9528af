//! Upstream trust, the shell side: the edge's internal-token signer (an ES256 key generated at
//! start, held in memory only; its public key served at
//! [`sase_gateway::INTERNAL_JWKS_PATH`]), the replacement of the client's `Authorization` by an
//! internal token on resources with `token_translation`, and one HTTP client per resource with
//! `upstream_tls` (only that resource's CA trusted; the device certificate presented when
//! `client_certificate: device`), built on first use and rebuilt when the settings change.
//!
//! Why a key of its own rather than the device key: the device key authenticates the edge to
//! its control plane; internal tokens are read by every upstream, and a separate key keeps
//! their compromise or rotation independent (a restart rotates it; upstreams refetch the JWK
//! set on an unknown `kid`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use sase_gateway::{Allowed, Caller, InternalSigner};
use sase_model::upstream_trust::{UpstreamClientCertificate, UpstreamTls};

use crate::proxy::{full, Body};

/// The edge's upstream trust material.
pub struct UpstreamTrust {
    signer: InternalSigner,
    /// `device.pem` and `device.key` (the client certificate for `client_certificate: device`).
    device_cert: PathBuf,
    device_key: PathBuf,
    /// Per resource: the settings a client was built for, and the client.
    clients: Mutex<BTreeMap<String, (UpstreamTls, reqwest::Client)>>,
    /// The pooled client for `http://` upstreams without TLS settings.
    pub plain: crate::upstream::PlainHttp,
}

impl UpstreamTrust {
    /// Generates the internal signing key; `device_id` names the issuer
    /// (`sase-edge:<device id>`).
    ///
    /// # Errors
    /// When key generation fails.
    pub fn new(
        device_id: &str,
        device_cert: PathBuf,
        device_key: PathBuf,
    ) -> anyhow::Result<UpstreamTrust> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the internal token key")?;
        let signer = InternalSigner::new(
            key.serialize_pem().as_bytes(),
            key.public_key_raw(),
            &format!("sase-edge:{device_id}"),
        )?;
        Ok(UpstreamTrust {
            signer,
            device_cert,
            device_key,
            clients: Mutex::new(BTreeMap::new()),
            plain: crate::upstream::PlainHttp::new(),
        })
    }

    /// The signer of internal tokens.
    pub fn signer(&self) -> &InternalSigner {
        &self.signer
    }

    /// The answer to `GET` [`sase_gateway::INTERNAL_JWKS_PATH`].
    pub fn jwks_response(&self) -> Response<Body> {
        let mut response = Response::new(full(self.signer.jwks_json().to_string()));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        );
        response
    }

    /// Replaces the client's `Authorization` with an internal token when the route's resource
    /// translates tokens; returns the client to reach the upstream with (`default` unless the
    /// resource has `upstream_tls`).
    ///
    /// # Errors
    /// A message (for the log) when the token cannot be signed or the TLS client not built;
    /// the request is then refused as `upstream_unavailable`.
    pub fn prepare(
        &self,
        allowed: &Allowed,
        headers: &mut HeaderMap,
        default: &reqwest::Client,
        now_ms: i64,
        reference: &str,
    ) -> Result<reqwest::Client, String> {
        let Some(guards) = allowed.guards.as_ref() else {
            return Ok(default.clone());
        };
        if let Some(settings) = guards.translation() {
            headers.remove(header::AUTHORIZATION);
            let caller = Caller {
                sub: allowed.subject.as_deref(),
                claims: allowed.token.as_deref().map(|t| t.claims()),
            };
            let token = self
                .signer
                .mint(settings, caller, now_ms, reference)
                .map_err(|e| e.to_string())?;
            let value =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
            headers.insert(header::AUTHORIZATION, value);
        }
        match guards.upstream_tls() {
            Some(tls) => self.client(&allowed.resource, tls),
            None => Ok(default.clone()),
        }
    }

    fn client(&self, resource: &str, tls: &UpstreamTls) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_for, client)) = clients.get(resource) {
            if built_for == tls {
                return Ok(client.clone());
            }
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none());
        for cert in reqwest::Certificate::from_pem_bundle(tls.ca_pem.as_bytes())
            .map_err(|e| format!("upstream CA of {resource}: {e}"))?
        {
            builder = builder.add_root_certificate(cert);
        }
        if tls.client_certificate == UpstreamClientCertificate::Device {
            let mut pem = std::fs::read(&self.device_cert)
                .map_err(|e| format!("{}: {e}", self.device_cert.display()))?;
            pem.extend(
                std::fs::read(&self.device_key)
                    .map_err(|e| format!("{}: {e}", self.device_key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("device certificate as client identity: {e}"))?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|e| format!("upstream client of {resource}: {e}"))?;
        clients.insert(resource.to_string(), (tls.clone(), client.clone()));
        Ok(client)
    }
}
