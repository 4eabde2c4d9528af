//! `sase-token`: issuer tool for the demo and tests. Generates an Ed25519
//! issuer key with its JWK set, prints the JWK set, and mints EdDSA JWTs.
//! The logic lives in [`sase_testkit::issuer`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sase_testkit::issuer::{self, IssuerKey, MintOptions, DEFAULT_TTL_SECS};

/// Ed25519 (EdDSA) JWT issuer for the SASE demo and tests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create DIR/issuer.pem (reused if present) and (re)write DIR/jwks.json.
    Keygen {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a signed JWT and print it on stdout.
    Mint {
        /// PKCS#8 PEM issuer key (DIR/issuer.pem).
        #[arg(long)]
        key: PathBuf,
        /// `iss` claim.
        #[arg(long)]
        iss: String,
        /// `aud` claim.
        #[arg(long)]
        aud: String,
        /// `sub` claim.
        #[arg(long)]
        sub: String,
        /// Space-separated `scope` claim, e.g. "orders:read orders:write".
        #[arg(long)]
        scope: Option<String>,
        /// Comma-separated `groups` claim, e.g. g1,g2.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime in seconds (exp = iat + ttl).
        #[arg(long, default_value_t = DEFAULT_TTL_SECS)]
        ttl: i64,
        /// Set nbf = iat + SECS (negative allowed).
        #[arg(long, allow_negative_numbers = true)]
        nbf_offset: Option<i64>,
        /// Override the TTL: exp = iat + SECS; negative gives an expired token.
        #[arg(long, allow_negative_numbers = true)]
        exp_offset: Option<i64>,
        /// `kid` header (default: first 16 hex chars of sha256(public key)).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Print the JWK set for a key on stdout.
    Jwks {
        /// PKCS#8 PEM issuer key.
        #[arg(long)]
        key: PathBuf,
    },
}

fn print_line(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Keygen { out } => {
            let res = issuer::keygen(&out)?;
            eprintln!(
                "{} key {} (kid {}), wrote {}",
                if res.created { "generated" } else { "reused" },
                res.key_path.display(),
                res.kid,
                res.jwks_path.display()
            );
        }
        Cmd::Mint {
            key,
            iss,
            aud,
            sub,
            scope,
            groups,
            ttl,
            nbf_offset,
            exp_offset,
            kid,
        } => {
            let key = IssuerKey::load(&key)?;
            let mut opts = MintOptions::new(iss, aud, sub);
            opts.scope = scope;
            opts.groups = groups
                .into_iter()
                .map(|g| g.trim().to_owned())
                .filter(|g| !g.is_empty())
                .collect();
            opts.ttl_secs = ttl;
            opts.nbf_offset = nbf_offset;
            opts.exp_offset = exp_offset;
            opts.kid = kid;
            print_line(&key.mint(&opts)?)?;
        }
        Cmd::Jwks { key } => {
            let key = IssuerKey::load(&key)?;
            print_line(key.jwks().to_json_pretty()?.trim_end())?;
        }
    }
    Ok(())
}
