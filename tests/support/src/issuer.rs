//! Test token issuer: Ed25519 signing keys, their public JWK set, and
//! EdDSA-signed JWT minting.
//!
//! This is the logic behind the `sase-token` binary, exposed as a library so
//! that Rust end-to-end drivers can mint tokens in-process instead of shelling
//! out. Keys are stored as PKCS#8 PEM (`issuer.pem`, mode 0600) next to the
//! matching JWK set (`jwks.json`), which is what the gateway is configured to
//! trust.
//!
//! The key id (`kid`) is derived from the public key (first 16 hex characters
//! of its SHA-256), so it is stable for a given key across runs and tools.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the private key written by [`keygen`].
pub const KEY_FILE: &str = "issuer.pem";
/// File name of the public JWK set written by [`keygen`].
pub const JWKS_FILE: &str = "jwks.json";
/// Default token lifetime in seconds when [`MintOptions::ttl_secs`] is not changed.
pub const DEFAULT_TTL_SECS: i64 = 3600;

/// An Ed25519 issuer signing key.
pub struct IssuerKey {
    signing: SigningKey,
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl IssuerKey {
    /// Generates a fresh key from the operating system RNG.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let signing = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Self { signing }
    }

    /// Builds a key from a 32-byte Ed25519 seed (deterministic; for tests).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Parses a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let signing = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 PEM Ed25519 private key: {e}"))?;
        Ok(Self { signing })
    }

    /// Reads and parses a PKCS#8 PEM key file.
    pub fn load(path: &Path) -> Result<Self> {
        let pem = fs::read_to_string(path)
            .with_context(|| format!("reading issuer key {}", path.display()))?;
        Self::from_pkcs8_pem(&pem).with_context(|| format!("parsing {}", path.display()))
    }

    /// Encodes the key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        let pem = self
            .signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding PKCS#8 PEM: {e}"))?;
        Ok(pem.to_string())
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The key id: first 16 hex characters of SHA-256 over the public key.
    pub fn kid(&self) -> String {
        let digest = Sha256::digest(self.public_key_bytes());
        let mut kid = hex::encode(digest);
        kid.truncate(16);
        kid
    }

    /// The public JWK for this key (with the derived `kid`).
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: URL_SAFE_NO_PAD.encode(self.public_key_bytes()),
            kid: self.kid(),
            alg: "EdDSA".to_owned(),
            key_use: "sig".to_owned(),
        }
    }

    /// A JWK set containing only this key's public JWK.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk()],
        }
    }

    /// The key in the form `jsonwebtoken` signs with (PKCS#8 DER).
    fn encoding_key(&self) -> Result<EncodingKey> {
        let der = self
            .signing
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encoding PKCS#8 DER: {e}"))?;
        Ok(EncodingKey::from_ed_der(der.as_bytes()))
    }

    /// Mints a compact EdDSA JWT; see [`mint`].
    pub fn mint(&self, opts: &MintOptions) -> Result<String> {
        mint(self, opts)
    }
}

/// A public Ed25519 JSON Web Key (RFC 8037 `OKP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type, always `OKP`.
    pub kty: String,
    /// Curve, always `Ed25519`.
    pub crv: String,
    /// Base64url (no padding) of the 32-byte public key.
    pub x: String,
    /// Key id.
    pub kid: String,
    /// Algorithm, always `EdDSA`.
    pub alg: String,
    /// Public key use, always `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
}

/// A JWK set (`{"keys":[...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys in the set.
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Pretty-printed JSON with a trailing newline, as written to `jwks.json`.
    pub fn to_json_pretty(&self) -> Result<String> {
        let mut s = serde_json::to_string_pretty(self).context("serialising JWK set")?;
        s.push('\n');
        Ok(s)
    }
}

/// What [`keygen`] did.
#[derive(Debug)]
pub struct KeygenOutput {
    /// Path of the private key (`DIR/issuer.pem`).
    pub key_path: PathBuf,
    /// Path of the JWK set (`DIR/jwks.json`).
    pub jwks_path: PathBuf,
    /// Key id of the key.
    pub kid: String,
    /// `true` if a new key was generated, `false` if an existing one was reused.
    pub created: bool,
    /// The loaded or generated key.
    pub key: IssuerKey,
}

/// Ensures `dir/issuer.pem` exists (generating it with mode 0600 if not) and
/// (re)writes `dir/jwks.json` for it. Idempotent: an existing key is reused.
pub fn keygen(dir: &Path) -> Result<KeygenOutput> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join(KEY_FILE);
    let jwks_path = dir.join(JWKS_FILE);

    let (key, created) = if key_path.exists() {
        (IssuerKey::load(&key_path)?, false)
    } else {
        let key = IssuerKey::generate();
        let pem = key.to_pkcs8_pem()?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("creating {}", key_path.display()))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", key_path.display()))?;
        (key, true)
    };
    // Tighten permissions even when reusing a key created by something else
    // (the umask may have widened them).
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", key_path.display()))?;

    write_atomically(&jwks_path, key.jwks().to_json_pretty()?.as_bytes())?;

    Ok(KeygenOutput {
        key_path,
        jwks_path,
        kid: key.kid(),
        created,
        key,
    })
}

/// Writes `bytes` to a temporary sibling of `path` and renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Parameters for [`mint`].
#[derive(Debug, Clone)]
pub struct MintOptions {
    /// `iss` claim.
    pub iss: String,
    /// `aud` claim.
    pub aud: String,
    /// `sub` claim.
    pub sub: String,
    /// Optional space-separated `scope` claim.
    pub scope: Option<String>,
    /// `groups` claim (omitted when empty).
    pub groups: Vec<String>,
    /// Lifetime: `exp = iat + ttl_secs` unless [`Self::exp_offset`] is set.
    pub ttl_secs: i64,
    /// If set, `nbf = iat + nbf_offset` (may be negative or in the future).
    pub nbf_offset: Option<i64>,
    /// If set, overrides the TTL: `exp = iat + exp_offset`. Negative values
    /// produce an already-expired token.
    pub exp_offset: Option<i64>,
    /// `kid` header; defaults to the key's derived kid when `None`.
    pub kid: Option<String>,
    /// Issued-at time in Unix seconds; defaults to now when `None`.
    pub issued_at: Option<i64>,
}

impl MintOptions {
    /// Options with the required claims, a one-hour TTL and nothing else.
    pub fn new(iss: impl Into<String>, aud: impl Into<String>, sub: impl Into<String>) -> Self {
        Self {
            iss: iss.into(),
            aud: aud.into(),
            sub: sub.into(),
            scope: None,
            groups: Vec::new(),
            ttl_secs: DEFAULT_TTL_SECS,
            nbf_offset: None,
            exp_offset: None,
            kid: None,
            issued_at: None,
        }
    }
}

/// The claims carried by a minted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Not before (Unix seconds), if requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id (random, 16 hex characters).
    pub jti: String,
    /// Space-separated scopes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Group memberships, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Builds the claims [`mint`] would sign for `opts` (with a fresh `jti`).
pub fn build_claims(opts: &MintOptions) -> Result<TokenClaims> {
    if opts.exp_offset.is_none() && opts.ttl_secs <= 0 {
        bail!("ttl must be positive (use exp_offset for expired tokens)");
    }
    let iat = opts.issued_at.unwrap_or_else(now_unix);
    let exp_delta = opts.exp_offset.unwrap_or(opts.ttl_secs);
    let exp = iat
        .checked_add(exp_delta)
        .context("exp overflows a 64-bit timestamp")?;
    let nbf = opts
        .nbf_offset
        .map(|off| iat.checked_add(off).context("nbf overflows"))
        .transpose()?;
    let mut jti = [0u8; 8];
    OsRng.fill_bytes(&mut jti);
    Ok(TokenClaims {
        iss: opts.iss.clone(),
        aud: opts.aud.clone(),
        sub: opts.sub.clone(),
        iat,
        exp,
        nbf,
        jti: hex::encode(jti),
        scope: opts.scope.clone().filter(|s| !s.trim().is_empty()),
        groups: opts.groups.clone(),
    })
}

/// Signs arbitrary claims as an EdDSA JWT with header `{"typ":"JWT","alg":"EdDSA","kid":..}`.
///
/// Useful for negative tests that need claims [`mint`] would not produce.
pub fn sign_claims<T: Serialize>(key: &IssuerKey, kid: Option<&str>, claims: &T) -> Result<String> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.map_or_else(|| key.kid(), str::to_owned));
    jsonwebtoken::encode(&header, claims, &key.encoding_key()?).context("signing JWT")
}

/// Mints a compact EdDSA JWT for `opts`, signed by `key`.
pub fn mint(key: &IssuerKey, opts: &MintOptions) -> Result<String> {
    let claims = build_claims(opts)?;
    sign_claims(key, opts.kid.as_deref(), &claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    fn decoding_key(key: &IssuerKey) -> DecodingKey {
        let json = serde_json::to_value(key.jwk()).expect("jwk json");
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(json).expect("jsonwebtoken jwk");
        DecodingKey::from_jwk(&jwk).expect("decoding key")
    }

    fn validation() -> Validation {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&["orders-api"]);
        v.set_issuer(&["https://idp.example.test"]);
        v.leeway = 0;
        v
    }

    fn opts() -> MintOptions {
        let mut o = MintOptions::new("https://idp.example.test", "orders-api", "alice");
        o.scope = Some("orders:read orders:write".into());
        o.groups = vec!["staff".into(), "ops".into()];
        o
    }

    #[test]
    fn minted_token_verifies_with_jwk_and_claims_round_trip() {
        let key = IssuerKey::generate();
        let o = opts();
        let token = mint(&key, &o).expect("mint");
        assert_eq!(token.split('.').count(), 3);

        let header = decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(key.kid().as_str()));

        let data = decode::<TokenClaims>(&token, &decoding_key(&key), &validation())
            .expect("token verifies");
        let c = data.claims;
        assert_eq!(c.iss, o.iss);
        assert_eq!(c.aud, o.aud);
        assert_eq!(c.sub, "alice");
        assert_eq!(c.scope.as_deref(), Some("orders:read orders:write"));
        assert_eq!(c.groups, vec!["staff".to_owned(), "ops".to_owned()]);
        assert_eq!(c.exp - c.iat, DEFAULT_TTL_SECS);
        assert!((c.iat - now_unix()).abs() <= 5);
        assert_eq!(c.nbf, None);
        assert_eq!(c.jti.len(), 16);
    }

    #[test]
    fn other_key_does_not_verify() {
        let key = IssuerKey::generate();
        let other = IssuerKey::generate();
        let token = mint(&key, &opts()).expect("mint");
        assert!(decode::<TokenClaims>(&token, &decoding_key(&other), &validation()).is_err());
    }

    #[test]
    fn expired_and_nbf_offsets() {
        let key = IssuerKey::generate();
        let mut o = opts();
        o.exp_offset = Some(-60);
        o.nbf_offset = Some(-120);
        let token = mint(&key, &o).expect("mint");
        let err = decode::<TokenClaims>(&token, &decoding_key(&key), &validation())
            .expect_err("expired token must be rejected");
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );

        let mut v = validation();
        v.validate_exp = false;
        let c = decode::<TokenClaims>(&token, &decoding_key(&key), &v)
            .expect("signature still valid")
            .claims;
        assert_eq!(c.exp - c.iat, -60);
        assert_eq!(c.nbf, Some(c.iat - 120));
    }

    #[test]
    fn explicit_iat_and_kid() {
        let key = IssuerKey::from_seed(&[7u8; 32]);
        let mut o = opts();
        o.issued_at = Some(1_000);
        o.ttl_secs = 10;
        o.kid = Some("custom-kid".into());
        let token = mint(&key, &o).expect("mint");
        assert_eq!(
            decode_header(&token).expect("header").kid.as_deref(),
            Some("custom-kid")
        );
        let mut v = validation();
        v.validate_exp = false;
        let c = decode::<TokenClaims>(&token, &decoding_key(&key), &v)
            .expect("verifies")
            .claims;
        assert_eq!((c.iat, c.exp), (1_000, 1_010));
    }

    #[test]
    fn zero_ttl_rejected() {
        let key = IssuerKey::generate();
        let mut o = opts();
        o.ttl_secs = 0;
        assert!(mint(&key, &o).is_err());
    }

    #[test]
    fn kid_is_stable_and_pem_round_trips() {
        let key = IssuerKey::from_seed(&[42u8; 32]);
        let kid = key.kid();
        assert_eq!(kid.len(), 16);
        assert!(kid.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(kid, IssuerKey::from_seed(&[42u8; 32]).kid());

        let pem = key.to_pkcs8_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let reloaded = IssuerKey::from_pkcs8_pem(&pem).expect("reload");
        assert_eq!(reloaded.kid(), kid);
        assert_eq!(reloaded.jwk(), key.jwk());
        assert_ne!(IssuerKey::from_seed(&[43u8; 32]).kid(), kid);
    }

    #[test]
    fn jwk_shape() {
        let key = IssuerKey::from_seed(&[1u8; 32]);
        let v = serde_json::to_value(key.jwks()).expect("json");
        let k = &v["keys"][0];
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["crv"], "Ed25519");
        assert_eq!(k["alg"], "EdDSA");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kid"], key.kid());
        let x = URL_SAFE_NO_PAD
            .decode(k["x"].as_str().expect("x is a string"))
            .expect("x is base64url");
        assert_eq!(x, key.public_key_bytes());
    }

    #[test]
    fn keygen_is_idempotent_and_private() {
        let dir = std::env::temp_dir().join(format!(
            "sase-testkit-keygen-{}-{}",
            std::process::id(),
            now_unix()
        ));
        let first = keygen(&dir).expect("keygen");
        assert!(first.created);
        let mode = fs::metadata(&first.key_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        fs::remove_file(&first.jwks_path).expect("rm jwks");
        let second = keygen(&dir).expect("keygen again");
        assert!(!second.created);
        assert_eq!(second.kid, first.kid);
        let jwks: JwkSet =
            serde_json::from_str(&fs::read_to_string(&second.jwks_path).expect("read jwks"))
                .expect("parse jwks");
        assert_eq!(jwks, first.key.jwks());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(IssuerKey::from_pkcs8_pem("not a key").is_err());
    }
}
