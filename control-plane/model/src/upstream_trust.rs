//! Trust between the edge and its clients and upstreams, per resource:
//!
//! * [`TokenTranslation`] — the client's `Authorization` header is stripped and the upstream
//!   receives a short-lived internal JWT (ES256) signed by the edge, carrying only the
//!   configured claims. The edge publishes the public key at
//!   `/.well-known/sase-edge/jwks.json` on its listeners.
//! * [`UpstreamTls`] — the CA the upstream's certificate must chain to, and whether the edge
//!   presents its device certificate (mTLS) to the upstream.
//! * [`ClientCertificates`] — mTLS on the published listener: the CA client certificates must
//!   chain to, which SAN gives the identity, and whether the certificate replaces the JWT or is
//!   required in addition to it.
//!
//! ```yaml
//! token_translation:
//!   audience: orders-backend
//!   claims: [sub, tenant, scopes, session_id]
//!   ttl_seconds: 60
//! upstream_tls:
//!   ca_pem: "-----BEGIN CERTIFICATE-----\n…"
//!   client_certificate: device
//! client_certificates:
//!   ca_pem: "-----BEGIN CERTIFICATE-----\n…"
//!   identity: uri              # uri | dns | email
//!   mode: additional           # alternative | additional
//! ```

use serde::{Deserialize, Serialize};

/// A claim the internal token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedClaim {
    /// The caller's subject (`sub`; for a client certificate, its SAN identity).
    Sub,
    /// The caller token's `tenant` claim (omitted when it has none).
    Tenant,
    /// The caller's scopes, as a space-separated `scope` claim.
    Scopes,
    /// The caller token's session id (`sid` claim), as `sid`.
    SessionId,
}

/// Token translation settings of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTranslation {
    /// `aud` of the internal token (what the upstream checks).
    pub audience: String,
    /// Claims copied from the caller (default: `sub` only).
    #[serde(default = "default_claims")]
    pub claims: Vec<ForwardedClaim>,
    /// Lifetime of the internal token, in seconds (default 60, between 5 and 300).
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u32,
}

fn default_claims() -> Vec<ForwardedClaim> {
    vec![ForwardedClaim::Sub]
}
fn default_ttl() -> u32 {
    60
}

/// Which client certificate the edge presents to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamClientCertificate {
    /// None (server-authenticated TLS only).
    #[default]
    None,
    /// The edge's device certificate (issued by the tenant CA at enrolment) and key.
    Device,
}

/// TLS settings towards an `https://` upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM certificate(s) of the CA the upstream's certificate must chain to (only these are
    /// trusted for this upstream).
    pub ca_pem: String,
    /// The client certificate presented (default `none`).
    #[serde(default)]
    pub client_certificate: UpstreamClientCertificate,
}

/// Which subject alternative name of a client certificate is the caller's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SanKind {
    /// The first URI SAN (e.g. `spiffe://tenant/ns/app`).
    #[default]
    Uri,
    /// The first DNS SAN.
    Dns,
    /// The first e-mail (rfc822Name) SAN.
    Email,
}

/// How a client certificate combines with the bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// A valid certificate is enough (no token needed; scopes and groups cannot be required
    /// then, ownership rules read the `sub` claim as the certificate's identity); without a
    /// certificate the token is checked as usual.
    Alternative,
    /// Both a valid certificate and a valid token are required.
    #[default]
    Additional,
}

/// mTLS client certificates on the published listener, for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificates {
    /// PEM certificate(s) of the CA(s) client certificates must chain to.
    pub ca_pem: String,
    /// Which SAN names the caller (default `uri`).
    #[serde(default)]
    pub identity: SanKind,
    /// `alternative` or `additional` (default `additional`).
    #[serde(default)]
    pub mode: ClientCertMode,
}

fn looks_like_pem_certificate(pem: &str) -> bool {
    pem.contains("-----BEGIN CERTIFICATE-----")
        && pem.contains("-----END CERTIFICATE-----")
        && pem.len() <= 64 * 1024
}

/// Checks the trust settings of a resource (`at` is its field path).
pub fn check(at: &str, resource: &crate::policy::HttpResource, push: &mut dyn FnMut(String, &str)) {
    if let Some(t) = &resource.token_translation {
        if t.audience.trim().is_empty() || t.audience.len() > 256 {
            push(
                format!("{at}.token_translation.audience"),
                "must be 1-256 characters",
            );
        }
        if t.claims.is_empty() {
            push(
                format!("{at}.token_translation.claims"),
                "must name at least one claim",
            );
        }
        if !(5..=300).contains(&t.ttl_seconds) {
            push(
                format!("{at}.token_translation.ttl_seconds"),
                "must be between 5 and 300",
            );
        }
    }
    if let Some(tls) = &resource.upstream_tls {
        if !resource.upstream.starts_with("https://") {
            push(
                format!("{at}.upstream_tls"),
                "only applies to an https:// upstream",
            );
        }
        if !looks_like_pem_certificate(&tls.ca_pem) {
            push(
                format!("{at}.upstream_tls.ca_pem"),
                "must hold PEM certificates (at most 64 KiB)",
            );
        }
    }
    if let Some(c) = &resource.client_certificates {
        if !looks_like_pem_certificate(&c.ca_pem) {
            push(
                format!("{at}.client_certificates.ca_pem"),
                "must hold PEM certificates (at most 64 KiB)",
            );
        }
        if c.mode == ClientCertMode::Additional && resource.issuers.is_empty() {
            push(
                format!("{at}.client_certificates.mode"),
                "`additional` needs a token, but the resource trusts no issuer",
            );
        }
        if c.mode == ClientCertMode::Alternative {
            for (r, route) in resource.routes.iter().enumerate() {
                if !route.scopes.is_empty() || !route.groups.is_empty() {
                    push(
                        format!("{at}.routes[{r}]"),
                        "with `alternative` client certificates a route cannot require scopes or groups (a certificate carries neither)",
                    );
                }
            }
        }
    }
}
