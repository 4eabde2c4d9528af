//! Mints an ES256 (ECDSA P-256) test token and its JWK set, for `tests/perf/gateway.sh` (the
//! demo issuer in `sase_testkit::issuer` signs with Ed25519 only). Generates a fresh key with
//! `ring`, writes `<out-dir>/jwks.json` and `<out-dir>/token.txt`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Parser;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Mint an ES256 token and its JWK set")]
struct Args {
    /// Where jwks.json and token.txt go.
    #[arg(long)]
    out_dir: PathBuf,
    /// `iss` claim.
    #[arg(long)]
    iss: String,
    /// `aud` claim.
    #[arg(long)]
    aud: String,
    /// `sub` claim.
    #[arg(long)]
    sub: String,
    /// `scope` claim (space-separated scopes).
    #[arg(long, default_value = "")]
    scope: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow!("generating a P-256 key"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow!("loading the P-256 key"))?;
    // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
    let point = pair.public_key().as_ref();
    if point.len() != 65 {
        return Err(anyhow!("unexpected public key length {}", point.len()));
    }
    let kid = "perf-es256";
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let now = sase_testkit::issuer::now_unix();
    let claims = json!({
        "iss": args.iss, "aud": args.aud, "sub": args.sub, "scope": args.scope,
        "iat": now, "exp": now + args.ttl,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let token = jsonwebtoken::encode(&header, &claims, &key)?;
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("jwks.json"), serde_json::to_vec(&jwks)?)?;
    std::fs::write(args.out_dir.join("token.txt"), token)?;
    Ok(())
}
