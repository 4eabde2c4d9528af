//! Errors of the gateway's set-up steps: compiling a policy bundle and installing a fetched JWK
//! set. Request decisions never fail; they end in a [`crate::Verdict`] instead.

use sase_model::PolicyError;

/// Why a policy bundle could not be compiled into a [`crate::CompiledPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The policy does not pass `sase_model` validation.
    #[error(transparent)]
    InvalidPolicy(#[from] PolicyError),
    /// An issuer's inline JWK set holds no usable key.
    #[error("issuer {issuer}: {source}")]
    IssuerKeys {
        /// Id of the issuer.
        issuer: String,
        /// What is wrong with its keys.
        #[source]
        source: KeyError,
    },
    /// A route's path template does not parse.
    #[error("resource {resource}, route {route}: bad path template: {reason}")]
    PathTemplate {
        /// Resource name.
        resource: String,
        /// Route id.
        route: String,
        /// Why the template is malformed.
        reason: String,
    },
    /// A resource's OpenAPI document does not compile into validators.
    #[error("resource {resource}: API contract: {source}")]
    Contract {
        /// Resource name.
        resource: String,
        /// What is wrong, and where in the document.
        #[source]
        source: crate::contract::ContractError,
    },
    /// A resource's client certificate CA does not parse.
    #[error("resource {resource}: client certificates: {reason}")]
    ClientCertificates {
        /// Resource name.
        resource: String,
        /// What is wrong with the CA.
        reason: String,
    },
    /// A resource names an issuer id the policy does not define.
    #[error("resource {resource} trusts unknown issuer {issuer}")]
    UnknownIssuer {
        /// Resource name.
        resource: String,
        /// Issuer id that was not found.
        issuer: String,
    },
}

/// Why a JWK set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The document is larger than [`crate::MAX_JWKS_BYTES`].
    #[error("JWK set is larger than {max} bytes")]
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// The document is not JSON.
    #[error("JWK set is not JSON: {0}")]
    NotJson(String),
    /// The document is JSON but not an object with a `keys` array.
    #[error("not a JWK set: expected an object with a \"keys\" array")]
    NotAKeySet,
    /// The set lists more than [`crate::MAX_JWKS_KEYS`] keys.
    #[error("JWK set lists more than {max} keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// No key of the set can verify signatures with an accepted algorithm.
    #[error("JWK set holds no usable signature key ({skipped} skipped)")]
    NoUsableKey {
        /// How many keys were skipped (encryption keys, symmetric keys, unsupported curves…).
        skipped: usize,
    },
}
