//! A policy bundle compiled for enforcement: path templates parsed, host names normalised,
//! issuer references resolved and inline JWKs turned into verification keys, all once per
//! bundle. Also the first decision step, choosing the resource and route of a request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use sase_model::policy::{JwtAlgorithm, Method, PathTemplate};
use sase_model::BundlePayload;
use std::sync::Arc;

use crate::contract::{CompiledContract, Operation};
use crate::error::CompileError;
use crate::jwks::JwksStore;
use crate::keys::{parse_key_set, VerificationKey};

/// Source of [`CompiledPolicy::generation`]: every compilation gets a new number, so that
/// anything derived from one compiled policy (cached token verifications) can tell it apart
/// from any other, even one compiled from the same bundle version.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A policy bundle ready for [`crate::decide`]. Built once per bundle; immutable, `Send` and
/// `Sync`, so it can be shared behind an `Arc` and swapped when a new bundle arrives.
#[derive(Debug)]
pub struct CompiledPolicy {
    tenant_id: String,
    version: u64,
    generation: u64,
    pub(crate) issuers: Vec<CompiledIssuer>,
    /// Group name -> member subjects.
    pub(crate) groups: BTreeMap<String, BTreeSet<String>>,
    resources: Vec<CompiledResource>,
}

/// A trusted issuer.
#[derive(Debug)]
pub(crate) struct CompiledIssuer {
    pub(crate) id: String,
    /// Expected `iss` claim.
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<JwtAlgorithm>,
    pub(crate) leeway_seconds: u32,
    /// Longest token accepted, in bytes.
    pub(crate) max_token_bytes: usize,
    pub(crate) keys: IssuerKeySource,
}

/// Where an issuer's keys are.
#[derive(Debug)]
pub(crate) enum IssuerKeySource {
    /// Written into the policy, compiled with it.
    Static(Vec<VerificationKey>),
    /// Fetched by the shell from a URL and held in a [`crate::JwksStore`].
    Url(RemoteKeys),
}

/// A `jwks_url` issuer's fetch settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKeys {
    /// Where the JWK set is fetched from.
    pub url: String,
    /// Background refresh interval, in milliseconds.
    pub refresh_ms: i64,
    /// How long keys may be used past a due refresh that did not succeed, in milliseconds.
    pub max_stale_ms: i64,
}

impl RemoteKeys {
    /// Whether keys installed at `installed_at_ms` may still verify tokens at `now_ms`: until
    /// one refresh interval plus the stale allowance has passed since they were fetched.
    pub(crate) fn usable_at(&self, installed_at_ms: i64, now_ms: i64) -> bool {
        now_ms
            < installed_at_ms
                .saturating_add(self.refresh_ms)
                .saturating_add(self.max_stale_ms)
    }
}

/// A protected resource.
#[derive(Debug)]
pub(crate) struct CompiledResource {
    pub(crate) name: String,
    /// Lower-case host names; empty means any host.
    hosts: Vec<String>,
    pub(crate) upstream: String,
    /// Indices into [`CompiledPolicy::issuers`].
    pub(crate) issuers: Vec<usize>,
    routes: Vec<CompiledRoute>,
    pub(crate) max_body_bytes: u64,
    /// mTLS client certificate settings (CA compiled), when the resource has them.
    pub(crate) client_certs: Option<Arc<crate::client_cert::ClientCertCheck>>,
    /// The `api` settings (OpenAPI operations, response hardening), when the resource has them.
    pub(crate) contract: Option<Arc<CompiledContract>>,
}

/// A route of a resource.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub(crate) id: String,
    pub(crate) methods: Vec<Method>,
    template: PathTemplate,
    pub(crate) scopes: Vec<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) public: bool,
    /// The OpenAPI operation of each method that has one.
    pub(crate) operations: Vec<(Method, Arc<Operation>)>,
    /// Ownership, GraphQL and egress checks of the route (`None`: nothing to check).
    pub(crate) guards: Option<Arc<crate::guards::RouteGuards>>,
}

impl CompiledRoute {
    /// The operation for `method`, if the document has one.
    pub(crate) fn operation(&self, method: Method) -> Option<Arc<Operation>> {
        self.operations
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, op)| op.clone())
    }
}

impl CompiledPolicy {
    /// Compiles a verified bundle payload.
    ///
    /// # Errors
    /// When the policy does not validate, or an issuer's inline JWK set holds no usable key.
    pub fn compile(payload: &BundlePayload) -> Result<CompiledPolicy, CompileError> {
        let policy = &payload.policy;
        policy.validate()?;

        let mut issuers = Vec::with_capacity(policy.issuers.len());
        for issuer in &policy.issuers {
            let keys = match (&issuer.keys.jwks_url, &issuer.keys.jwks) {
                (_, Some(set)) => {
                    IssuerKeySource::Static(parse_key_set(set).map_err(|source| {
                        CompileError::IssuerKeys {
                            issuer: issuer.id.clone(),
                            source,
                        }
                    })?)
                }
                (Some(url), None) => IssuerKeySource::Url(RemoteKeys {
                    url: url.clone(),
                    refresh_ms: i64::from(issuer.keys.refresh_interval_seconds()) * 1000,
                    max_stale_ms: i64::from(issuer.keys.max_stale()) * 1000,
                }),
                // Validation guarantees one of the two; refuse rather than trust nothing silently.
                (None, None) => {
                    return Err(CompileError::IssuerKeys {
                        issuer: issuer.id.clone(),
                        source: crate::KeyError::NotAKeySet,
                    })
                }
            };
            issuers.push(CompiledIssuer {
                id: issuer.id.clone(),
                issuer: issuer.issuer.clone(),
                audiences: issuer.audiences.clone(),
                algorithms: issuer.algorithms.clone(),
                leeway_seconds: issuer.leeway_seconds,
                max_token_bytes: usize::try_from(issuer.max_token_bytes).unwrap_or(usize::MAX),
                keys,
            });
        }

        let groups = policy
            .groups
            .iter()
            .map(|(name, group)| (name.clone(), group.members.iter().cloned().collect()))
            .collect();

        let mut resources = Vec::with_capacity(policy.resources.len());
        for resource in &policy.resources {
            let mut issuer_indices = Vec::with_capacity(resource.issuers.len());
            for id in &resource.issuers {
                let index = issuers.iter().position(|i| &i.id == id).ok_or_else(|| {
                    CompileError::UnknownIssuer {
                        resource: resource.name.clone(),
                        issuer: id.clone(),
                    }
                })?;
                issuer_indices.push(index);
            }
            let contract = match &resource.api {
                Some(api) => Some(Arc::new(CompiledContract::compile(api).map_err(
                    |source| CompileError::Contract {
                        resource: resource.name.clone(),
                        source,
                    },
                )?)),
                None => None,
            };
            let mut routes = Vec::with_capacity(resource.routes.len());
            for route in &resource.routes {
                let template = PathTemplate::parse(&route.path).map_err(|reason| {
                    CompileError::PathTemplate {
                        resource: resource.name.clone(),
                        route: route.id.clone(),
                        reason: reason.to_string(),
                    }
                })?;
                let operations = match &contract {
                    Some(c) => route
                        .methods
                        .iter()
                        .filter_map(|m| c.operation(*m, &template.shape()).map(|op| (*m, op)))
                        .collect(),
                    None => Vec::new(),
                };
                let guards =
                    crate::guards::RouteGuards::compile(resource, route, &template).map(Arc::new);
                routes.push(CompiledRoute {
                    guards,
                    id: route.id.clone(),
                    operations,
                    methods: route.methods.clone(),
                    template,
                    scopes: route.scopes.clone(),
                    groups: route.groups.clone(),
                    public: route.public,
                });
            }
            let client_certs = match &resource.client_certificates {
                Some(c) => Some(Arc::new(
                    crate::client_cert::ClientCertCheck::compile(c).map_err(|reason| {
                        CompileError::ClientCertificates {
                            resource: resource.name.clone(),
                            reason,
                        }
                    })?,
                )),
                None => None,
            };
            resources.push(CompiledResource {
                client_certs,
                name: resource.name.clone(),
                hosts: resource
                    .hosts
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                upstream: resource.upstream.clone(),
                issuers: issuer_indices,
                routes,
                max_body_bytes: resource.max_body_bytes,
                contract,
            });
        }

        Ok(CompiledPolicy {
            tenant_id: payload.tenant_id.clone(),
            version: payload.version,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            issuers,
            groups,
            resources,
        })
    }

    /// Version of the bundle this policy was compiled from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Tenant the policy belongs to.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// A number unique to this compilation within the process (see the cache of verified
    /// tokens, which never serves a verification made under another policy).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether some resource takes client certificates (the listener then asks for one).
    pub fn wants_client_certificates(&self) -> bool {
        self.resources.iter().any(|r| r.client_certs.is_some())
    }

    /// `(issuer id, URL)` of every issuer whose keys come from a `jwks_url`.
    pub fn jwks_urls(&self) -> Vec<(String, String)> {
        self.remote_issuers()
            .map(|(id, remote)| (id.to_string(), remote.url.clone()))
            .collect()
    }

    /// `(issuer id, fetch settings)` of every `jwks_url` issuer.
    pub fn remote_issuers(&self) -> impl Iterator<Item = (&str, &RemoteKeys)> {
        self.issuers.iter().filter_map(|issuer| match &issuer.keys {
            IssuerKeySource::Url(remote) => Some((issuer.id.as_str(), remote)),
            IssuerKeySource::Static(_) => None,
        })
    }

    /// `(issuer id, URL)` of the `jwks_url` issuers whose JWK set the shell should fetch at
    /// `now_ms` in the background: never fetched from this URL, or fetched longer than the
    /// refresh interval ago — and in either case not attempted within the last
    /// [`crate::REFETCH_INTERVAL_MS`] (so an unreachable endpoint is retried every 10 s, not
    /// hammered).
    pub fn refreshes_due(&self, store: &JwksStore, now_ms: i64) -> Vec<(String, String)> {
        self.remote_issuers()
            .filter(|(id, remote)| store.refresh_due(id, remote, now_ms))
            .map(|(id, remote)| (id.to_string(), remote.url.clone()))
            .collect()
    }

    /// The largest `max_token_bytes` among the issuers a resource trusts (0 when it trusts
    /// none): longer tokens are refused before anything in them is decoded.
    pub(crate) fn largest_token_limit(&self, resource: &CompiledResource) -> usize {
        resource
            .issuers
            .iter()
            .filter_map(|&i| self.issuers.get(i))
            .map(|issuer| issuer.max_token_bytes)
            .max()
            .unwrap_or(0)
    }

    /// The resource and route for a request: among resources naming the host (in policy order),
    /// then resources answering any host, the first route allowing the method whose template
    /// matches the path. `None` means deny by default (404).
    pub(crate) fn find_route(
        &self,
        method: &str,
        host: Option<&str>,
        path: &str,
    ) -> Option<(&CompiledResource, &CompiledRoute)> {
        let method = Method::from_http(method)?;
        if !path_is_clean(path) {
            return None;
        }
        let host = host.and_then(normalize_host);
        let host_specific = self.resources.iter().filter(|r| {
            host.as_deref()
                .is_some_and(|h| r.hosts.iter().any(|rh| rh == h))
        });
        let any_host = self.resources.iter().filter(|r| r.hosts.is_empty());
        host_specific.chain(any_host).find_map(|resource| {
            resource
                .routes
                .iter()
                .find(|route| {
                    route.methods.contains(&method) && route.template.matches(path).is_some()
                })
                .map(|route| (resource, route))
        })
    }
}

impl CompiledPolicy {
    /// Names of the policy's resources, in policy order.
    pub fn resource_names(&self) -> impl Iterator<Item = &str> {
        self.resources.iter().map(|r| r.name.as_str())
    }

    /// Name and upstream URL of each resource, in policy order (the tunnel shell redirects
    /// tunnel flows to plain-HTTP upstream addresses into the pipeline).
    pub fn resource_upstreams(&self) -> impl Iterator<Item = (&str, &str)> {
        self.resources
            .iter()
            .map(|r| (r.name.as_str(), r.upstream.as_str()))
    }

    /// The route of the resource named `resource` that matches `method` and `path` (the dry
    /// run replays recorded requests by resource name: the host is not recorded).
    pub(crate) fn find_route_by_resource(
        &self,
        resource: &str,
        method: &str,
        path: &str,
    ) -> Option<(&CompiledResource, &CompiledRoute)> {
        let method = Method::from_http(method)?;
        if !path_is_clean(path) {
            return None;
        }
        let resource = self.resources.iter().find(|r| r.name == resource)?;
        resource
            .routes
            .iter()
            .find(|route| route.methods.contains(&method) && route.template.matches(path).is_some())
            .map(|route| (resource, route))
    }
}

/// The host of a `Host` header value: port stripped, trailing dot removed, lower case.
fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // IPv6 literal: `[::1]:8080`.
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Refuses paths that an upstream might resolve differently from the template match: `.` and
/// `..` segments (also percent-encoded), encoded slashes and backslashes, and NUL.
fn path_is_clean(path: &str) -> bool {
    if path.contains(['\0', '\\']) {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return false;
    }
    !lower.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalize_host("API.Example.com:8443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            normalize_host("api.example.com.").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host(":80"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert!(path_is_clean("/orders/42"));
        assert!(path_is_clean("/"));
        for bad in [
            "/orders/..",
            "/orders/./x",
            "/orders/%2e%2E",
            "/orders/%2E",
            "/orders/a%2Fb",
            "/orders/a%2fb",
            "/orders/a%5cb",
            "/orders/a\\b",
            "/orders/a\0",
            "/orders/a%00",
        ] {
            assert!(!path_is_clean(bad), "{bad:?}");
        }
    }
}
