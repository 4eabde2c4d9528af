//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits) for admin MFA.
//!
//! Written over `ring`'s HMAC (already in the build) instead of adding the `totp-rs` crate:
//! the algorithm is a few lines, checked here against the RFC 6238 test vectors, and the
//! workspace lock file stays untouched. Codes from the previous, current and next step are
//! accepted (clock skew); the caller refuses a step at or before the last one used (replay).

use ring::hmac;

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 (RFC 4648, no padding), as authenticator apps expect the secret.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(B32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes base32 (case-insensitive, padding and blanks ignored); `None` on other characters.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !matches!(c, b'=' | b' ' | b'-')) {
        let v = B32.iter().position(|&x| x == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// A new 160-bit secret, base32.
pub fn new_secret() -> String {
    use rand::RngCore as _;
    let mut key = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut key);
    base32_encode(&key)
}

/// The code for a key at a step (HOTP, RFC 4226).
pub fn code_at(key: &[u8], step: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = (u32::from(mac[offset]) & 0x7f) << 24
        | u32::from(mac[offset + 1]) << 16
        | u32::from(mac[offset + 2]) << 8
        | u32::from(mac[offset + 3]);
    binary % 10u32.pow(DIGITS)
}

/// Checks a 6-digit code against a base32 secret at `now_ms`. Returns the matched step.
pub fn verify(secret_b32: &str, code: &str, now_ms: i64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let key = base32_decode(secret_b32)?;
    let now = u64::try_from(now_ms).ok()? / 1000 / STEP_SECONDS;
    [now.saturating_sub(1), now, now + 1]
        .into_iter()
        .find(|&step| code_at(&key, step) == wanted)
}

/// The `otpauth://` URI for enrolment (QR code content).
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        let key = b"12345678901234567890";
        // (time in seconds, 8-digit code from RFC 6238 appendix B); we use the last 6 digits.
        for (t, code8) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(code_at(key, t / 30), code8 % 1_000_000, "t={t}");
        }
        let secret = base32_encode(key);
        assert_eq!(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(verify(&secret, "287082", 59_000), Some(1));
        assert_eq!(verify(&secret, "287082", 89_000), Some(1), "previous step");
        assert_eq!(verify(&secret, "287082", 200_000), None);
        assert_eq!(verify(&secret, "28708", 59_000), None);
        assert_eq!(verify(&secret, "abcdef", 59_000), None);
    }

    #[test]
    fn base32_round_trips() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(
                base32_decode(&base32_encode(&data)).as_deref(),
                Some(&data[..])
            );
        }
        assert_eq!(base32_decode("not*base32"), None);
        let uri = otpauth_uri("SASE control", "alice@x", &new_secret());
        assert!(
            uri.starts_with("otpauth://totp/SASE%20control:alice%40x?secret="),
            "{uri}"
        );
    }
}
