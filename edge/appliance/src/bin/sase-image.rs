//! `sase-image`: the vendor's tool for firmware update bundles of the appliance image
//! (`image/build.sh` uses it): make a vendor key, pack and sign a root filesystem into a bundle,
//! verify and inspect one. The bundle format is [`sase_model::update`].

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use rand::RngCore as _;
use sase_model::update::{
    decode_header, header_len, SignedManifest, UpdateManifest, PREFIX_BYTES, PRODUCT,
};
use sha2::{Digest as _, Sha256};

#[derive(Parser)]
#[command(
    name = "sase-image",
    version,
    about = "Vendor tool for appliance update bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a vendor signing key (base64 seed, mode 0600) unless the file exists; prints
    /// the public key (base64).
    Keygen {
        /// Key file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the public key (base64) of a vendor key.
    Pubkey {
        /// Key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Packs a root filesystem image into a signed bundle.
    Pack {
        /// Vendor key file.
        #[arg(long)]
        key: PathBuf,
        /// The slot payload (squashfs root filesystem).
        #[arg(long)]
        payload: PathBuf,
        /// Image version (build number).
        #[arg(long)]
        version: u64,
        /// Human label.
        #[arg(long)]
        label: String,
        /// Kernel release of the image.
        #[arg(long = "kernel-release")]
        kernel_release: String,
        /// Architecture.
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// Output bundle.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verifies a bundle with a vendor public key and prints its manifest.
    Verify {
        /// Vendor public key (base64).
        #[arg(long)]
        pubkey: String,
        /// The bundle.
        bundle: PathBuf,
    },
}

fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed: [u8; 32] = B64
        .decode(text.trim())
        .context("vendor key is not base64")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("vendor key must be 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn sha256_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { out } => {
            if !out.exists() {
                let mut seed = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut seed);
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                writeln!(f, "{}", B64.encode(seed))?;
            }
            println!("{}", B64.encode(load_key(&out)?.verifying_key().as_bytes()));
        }
        Command::Pubkey { key } => {
            println!("{}", B64.encode(load_key(&key)?.verifying_key().as_bytes()));
        }
        Command::Pack {
            key,
            payload,
            version,
            label,
            kernel_release,
            arch,
            out,
        } => {
            let key = load_key(&key)?;
            let (payload_size, payload_sha256) = sha256_file(&payload)?;
            let manifest = UpdateManifest {
                product: PRODUCT.into(),
                arch,
                version,
                label,
                kernel_release,
                payload_size,
                payload_sha256,
                created_at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            };
            let prefix = SignedManifest::sign(&manifest, &key)?.encode_prefix()?;
            let tmp = out.with_extension("tmp");
            {
                let mut f = std::fs::File::create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
                f.write_all(&prefix)?;
                std::io::copy(&mut std::fs::File::open(&payload)?, &mut f)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &out)?;
            println!("{}", serde_json::to_string(&manifest)?);
        }
        Command::Verify { pubkey, bundle } => {
            let key = sase_model::bundle::verifying_key_from_b64(&pubkey)?;
            let mut f = std::fs::File::open(&bundle)
                .with_context(|| format!("opening {}", bundle.display()))?;
            let mut head = vec![0u8; PREFIX_BYTES];
            f.read_exact(&mut head)
                .context("shorter than a bundle prefix")?;
            let len = header_len(&head)?;
            head.resize(PREFIX_BYTES + len, 0);
            f.read_exact(&mut head[PREFIX_BYTES..])
                .context("truncated header")?;
            let (signed, _) = decode_header(&head)?;
            let manifest = signed.verify(&key)?;
            let mut hasher = Sha256::new();
            let size = std::io::copy(&mut f, &mut HashWriter(&mut hasher))?;
            let digest = hex::encode(hasher.finalize());
            if let Err(err) = manifest.check_payload(size, &digest) {
                bail!("{err}");
            }
            println!("{}", serde_json::to_string(&manifest)?);
        }
    }
    Ok(())
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
