//! Continuous access evaluation: revocations derived from Security Event Tokens (RFC 8417)
//! carrying CAEP `session-revoked` and `credential-change` events, as the control plane pushes
//! them to edges (channel message `revocations`) and as edges keep them on disk.
//!
//! A [`Revocation`] names a subject (`iss`/`sub`, or `email`) and/or a session (`sid`): every
//! token of that subject or session **issued at or before** the event (`iat <=
//! event_time_ms`, or no `iat` at all) is refused until `expires_at_ms`. A token issued after
//! the event (the user signed in again) is not affected, which is what the `claims` challenge
//! sent with the refusal asks the client to get.
//!
//! [`revocations_from_set`] turns the (already signature-checked) claims of a SET into
//! revocations; it is pure and shared by the control plane and the tests.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// CAEP event type URI: a session was revoked.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP event type URI: a credential was changed (password reset, key revoked...).
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";

/// Longest identifier (subject, session, email, issuer, jti) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 512;
/// Most revocations one SET may produce.
pub const MAX_REVOCATIONS_PER_SET: usize = 16;
/// Most revocations in one channel message.
pub const MAX_REVOCATIONS_PER_MESSAGE: usize = 1000;

/// Which CAEP event produced a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationEvent {
    /// `session-revoked`.
    SessionRevoked,
    /// `credential-change`.
    CredentialChange,
}

/// One revocation in force at the edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Id of the revocation: the SET's `jti` and the event's index (`<jti>#<n>`).
    pub id: String,
    /// The CAEP event.
    pub event: RevocationEvent,
    /// Issuer of the subject's tokens (`iss`), when the subject was named with `iss_sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The subject (`sub` claim of its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The subject's e-mail address (`email` claim of its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The session (`sid` claim of its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the event happened (Unix ms): tokens issued at or before are refused.
    pub event_time_ms: i64,
    /// When the edges forget the revocation (Unix ms).
    pub expires_at_ms: i64,
}

impl Revocation {
    /// Whether the revocation is well formed: names a subject or a session, identifiers within
    /// [`MAX_ID_BYTES`], expiry after the event.
    pub fn is_valid(&self) -> bool {
        let fields = [&self.iss, &self.sub, &self.email, &self.sid];
        let ids_ok = fields.iter().all(|f| {
            f.as_ref()
                .is_none_or(|v| !v.is_empty() && v.len() <= MAX_ID_BYTES)
        });
        ids_ok
            && !self.id.is_empty()
            && self.id.len() <= MAX_ID_BYTES + 8
            && (self.sub.is_some() || self.email.is_some() || self.sid.is_some())
            && self.expires_at_ms > self.event_time_ms
    }

    /// Whether a token with these claims is revoked by this entry (ignoring expiry).
    /// `iss`, `sub`, `email`, `sid` and `iat_ms` come from the verified token.
    pub fn matches(
        &self,
        iss: &str,
        sub: &str,
        email: Option<&str>,
        sid: Option<&str>,
        iat_ms: Option<i64>,
    ) -> bool {
        if iat_ms.is_some_and(|iat| iat > self.event_time_ms) {
            return false;
        }
        if self.iss.as_deref().is_some_and(|i| i != iss) {
            return false;
        }
        if self.sub.as_deref().is_some_and(|s| s != sub) {
            return false;
        }
        if let Some(want) = self.email.as_deref() {
            if email.is_none_or(|e| !e.eq_ignore_ascii_case(want)) {
                return false;
            }
        }
        if let Some(want) = self.sid.as_deref() {
            if sid != Some(want) {
                return false;
            }
        }
        true
    }
}

/// Why a SET's claims were not accepted (the text goes into the RFC 8935 error description).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// A required claim is missing or has the wrong type.
    #[error("the SET's `{0}` claim is missing or malformed")]
    Claim(&'static str),
    /// No supported event, or an event without a usable subject.
    #[error("{0}")]
    Event(String),
}

/// The revocations a SET asks for. `claims` are the SET's verified claims; `received_ms` is
/// the control plane's clock, `ttl_ms` how long edges keep the revocation. Event types other
/// than CAEP `session-revoked` and `credential-change` are ignored; a SET with none of those is
/// an error.
///
/// The subject is the SET's top-level `sub_id` (RFC 9493 subject identifier) or the event's
/// `subject` member (CAEP drafts), in the formats `iss_sub`, `opaque` (`id` = `sub`),
/// `email`, or `complex` with `user` and/or `session` (an `opaque` session id = `sid`).
/// `event_timestamp` (seconds) defaults to the SET's `iat`.
///
/// # Errors
/// [`SetError`] when claims are missing or no usable event is present.
pub fn revocations_from_set(
    claims: &Map<String, Value>,
    received_ms: i64,
    ttl_ms: i64,
) -> Result<Vec<Revocation>, SetError> {
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_ID_BYTES)
        .ok_or(SetError::Claim("jti"))?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(SetError::Claim("iat"))?;
    let events = claims
        .get("events")
        .and_then(Value::as_object)
        .ok_or(SetError::Claim("events"))?;
    let top_subject = claims.get("sub_id");
    let mut out = Vec::new();
    for (n, (uri, payload)) in events.iter().enumerate() {
        let event = match uri.as_str() {
            SESSION_REVOKED => RevocationEvent::SessionRevoked,
            CREDENTIAL_CHANGE => RevocationEvent::CredentialChange,
            _ => continue,
        };
        let payload = payload
            .as_object()
            .ok_or_else(|| SetError::Event(format!("event {uri} is not an object")))?;
        let subject = payload.get("subject").or(top_subject).ok_or_else(|| {
            SetError::Event(format!("event {uri} names no subject (sub_id or subject)"))
        })?;
        let mut revocation = Revocation {
            id: format!("{jti}#{n}"),
            event,
            iss: None,
            sub: None,
            email: None,
            sid: None,
            event_time_ms: 0,
            expires_at_ms: 0,
        };
        read_subject(subject, &mut revocation, 0)
            .map_err(|why| SetError::Event(format!("event {uri}: {why}")))?;
        let event_secs = match payload.get("event_timestamp") {
            None => iat,
            Some(v) => v.as_i64().ok_or_else(|| {
                SetError::Event(format!("event {uri}: event_timestamp is not a number"))
            })?,
        };
        revocation.event_time_ms = event_secs.saturating_mul(1000);
        revocation.expires_at_ms = received_ms
            .max(revocation.event_time_ms)
            .saturating_add(ttl_ms.max(1));
        if !revocation.is_valid() {
            return Err(SetError::Event(format!(
                "event {uri}: the subject names no user or session usable for revocation"
            )));
        }
        out.push(revocation);
        if out.len() > MAX_REVOCATIONS_PER_SET {
            return Err(SetError::Event("too many events in one SET".into()));
        }
    }
    if out.is_empty() {
        return Err(SetError::Event(
            "the SET carries no CAEP session-revoked or credential-change event".into(),
        ));
    }
    Ok(out)
}

fn id_field(subject: &Map<String, Value>, name: &str) -> Result<String, String> {
    subject
        .get(name)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty() && v.len() <= MAX_ID_BYTES)
        .map(str::to_string)
        .ok_or_else(|| format!("subject member `{name}` missing or malformed"))
}

/// Reads a subject identifier (RFC 9493) into `r`; `session` fills `sid`.
fn read_subject(subject: &Value, r: &mut Revocation, depth: u8) -> Result<(), String> {
    let subject = subject.as_object().ok_or("the subject is not an object")?;
    let format = subject
        .get("format")
        .or_else(|| subject.get("subject_type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match format {
        "iss_sub" => {
            r.iss = Some(id_field(subject, "iss")?);
            r.sub = Some(id_field(subject, "sub")?);
        }
        "opaque" => r.sub = Some(id_field(subject, "id")?),
        "email" => r.email = Some(id_field(subject, "email")?.to_ascii_lowercase()),
        "complex" if depth == 0 => {
            if let Some(user) = subject.get("user") {
                read_subject(user, r, 1)?;
            }
            if let Some(session) = subject.get("session") {
                let session = session.as_object().ok_or("session is not an object")?;
                r.sid = Some(id_field(session, "id")?);
            }
        }
        other => return Err(format!("unsupported subject format `{other}`")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(events: Value, sub_id: Option<Value>) -> Map<String, Value> {
        let mut claims = json!({"iss": "https://idp", "jti": "j1", "iat": 1_000, "events": events});
        if let Some(s) = sub_id {
            claims["sub_id"] = s;
        }
        claims.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn session_revoked_with_complex_subject_names_user_and_session() {
        let claims = set(
            json!({SESSION_REVOKED: {"event_timestamp": 990}}),
            Some(json!({"format": "complex",
                        "user": {"format": "iss_sub", "iss": "https://idp", "sub": "alice"},
                        "session": {"format": "opaque", "id": "s-1"}})),
        );
        let r = revocations_from_set(&claims, 2_000_000, 60_000).expect("ok");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].event, RevocationEvent::SessionRevoked);
        assert_eq!(r[0].iss.as_deref(), Some("https://idp"));
        assert_eq!(r[0].sub.as_deref(), Some("alice"));
        assert_eq!(r[0].sid.as_deref(), Some("s-1"));
        assert_eq!(r[0].event_time_ms, 990_000);
        assert_eq!(r[0].expires_at_ms, 2_060_000);
        assert!(r[0].matches("https://idp", "alice", None, Some("s-1"), Some(900_000)));
        assert!(!r[0].matches("https://idp", "alice", None, Some("s-2"), Some(900_000)));
        // Issued after the event: a fresh sign-in is not revoked.
        assert!(!r[0].matches("https://idp", "alice", None, Some("s-1"), Some(991_000)));
    }

    #[test]
    fn credential_change_with_event_subject_and_email() {
        let claims = set(
            json!({CREDENTIAL_CHANGE: {"subject": {"format": "email", "email": "Bob@X.example"},
                                       "credential_type": "password", "change_type": "update"}}),
            None,
        );
        let r = revocations_from_set(&claims, 5_000, 1_000).expect("ok");
        assert_eq!(r[0].email.as_deref(), Some("bob@x.example"));
        assert_eq!(r[0].event_time_ms, 1_000_000);
        assert!(r[0].matches("any", "bob", Some("bob@x.example"), None, None));
        assert!(!r[0].matches("any", "bob", None, None, None));
    }

    #[test]
    fn refusals() {
        let no_subject = set(json!({SESSION_REVOKED: {}}), None);
        assert!(revocations_from_set(&no_subject, 0, 1).is_err());
        let other = set(
            json!({"https://example/other": {}}),
            Some(json!({"format": "opaque", "id": "a"})),
        );
        assert!(revocations_from_set(&other, 0, 1).is_err());
        let bad_format = set(
            json!({SESSION_REVOKED: {}}),
            Some(json!({"format": "phone_number", "phone_number": "+1"})),
        );
        assert!(revocations_from_set(&bad_format, 0, 1).is_err());
        let mut no_jti = set(
            json!({SESSION_REVOKED: {}}),
            Some(json!({"format": "opaque", "id": "a"})),
        );
        no_jti.remove("jti");
        assert_eq!(
            revocations_from_set(&no_jti, 0, 1),
            Err(SetError::Claim("jti"))
        );
        let nested = set(
            json!({SESSION_REVOKED: {}}),
            Some(json!({"format": "complex", "user": {"format": "complex", "user": {}}})),
        );
        assert!(revocations_from_set(&nested, 0, 1).is_err());
    }
}
