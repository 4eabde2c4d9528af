//! SIEM forwarding: each tenant can name sinks (a SIEM's syslog or JSON collector) that receive
//! the tenant's stored audit log continuously, in log order, at least once — and the tenant's
//! records of the admin-action trail (sign-ins, account and configuration changes), in trail
//! order, with their own cursor.
//!
//! * Formats: syslog RFC 5424 (facility `log audit`, the decision in structured data, the event
//!   as JSON in MSG), JSON lines (`{"log_index", "hash", "event"}`), and OCSF 1.1 JSON lines
//!   ([`sase_model::ocsf`]).
//! * Transports: TCP, and TLS (RFC 5425: TLS 1.2+, octet-counting framing, the sink's CA pinned
//!   per sink). Syslog uses octet counting on both (RFC 6587 §3.4.1); the JSON formats use one
//!   line per event.
//! * Delivery: a persisted cursor per sink (the next log position to send). Events written to a
//!   connection count as delivered once the connection has stayed up for [`CONFIRM_AFTER`]
//!   since they were written; when it breaks before that, they are sent again on the next
//!   connection. So a receiver that goes away (or a control-plane restart) costs duplicates,
//!   never a gap. Syslog over TCP has no acknowledgements: a receiver that takes bytes off the
//!   socket and then crashes before storing them is outside what any syslog sender can see
//!   (RELP would close that; not built).
//! * Failures are recorded on the sink (`last_error`, visible in the API with the lag) and
//!   raise one `siem_delivery_failed` alert per failure streak; the forwarder retries with a
//!   backoff of at most [`MAX_BACKOFF`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::FutureExt;
use sase_model::audit::{AuditEvent, Decision};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{now_ms, SharedState};
use crate::store::{Alert, Store, StoreError, StoreResult};

/// Events read and sent per round and sink.
pub const BATCH: usize = 500;

/// How long a connection must stay up after events were written before they count as
/// delivered.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// Longest wait between two attempts to reach a failing sink.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Most sinks per tenant.
pub const MAX_SINKS_PER_TENANT: usize = 16;

/// Private enterprise number in syslog structured-data ids. 32473 is the number IANA reserves
/// for documentation (RFC 5612); the project uses it until it registers its own.
pub const SD_ID: &str = "sase@32473";

/// What a sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// Syslog RFC 5424, octet-counted.
    Syslog,
    /// One JSON object per line: `{"log_index", "hash", "event"}`.
    JsonLines,
    /// One OCSF 1.1 object per line.
    Ocsf,
}

impl SinkFormat {
    fn as_str(self) -> &'static str {
        match self {
            SinkFormat::Syslog => "syslog",
            SinkFormat::JsonLines => "json_lines",
            SinkFormat::Ocsf => "ocsf",
        }
    }

    fn parse(s: &str) -> Option<SinkFormat> {
        [SinkFormat::Syslog, SinkFormat::JsonLines, SinkFormat::Ocsf]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// How a sink is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkTransport {
    /// Plain TCP (for a collector on a trusted network).
    Tcp,
    /// TLS over TCP (RFC 5425), verified against the sink's CA.
    Tls,
}

impl SinkTransport {
    fn as_str(self) -> &'static str {
        match self {
            SinkTransport::Tcp => "tcp",
            SinkTransport::Tls => "tls",
        }
    }

    fn parse(s: &str) -> Option<SinkTransport> {
        [SinkTransport::Tcp, SinkTransport::Tls]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// Where a new sink starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkStart {
    /// With the first stored event (the whole retained trail).
    #[default]
    Beginning,
    /// With the next event stored.
    Now,
}

/// A sink to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSink {
    /// Name, unique in the tenant (1-64 characters: letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// What to send.
    pub format: SinkFormat,
    /// How.
    pub transport: SinkTransport,
    /// `host:port` (`[v6]:port` for IPv6 literals).
    pub address: String,
    /// TLS: the CA certificate(s) the sink's certificate must chain to, PEM.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// TLS: the name the sink's certificate must carry (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Where to start (default: the beginning of the trail).
    #[serde(default)]
    pub start: SinkStart,
}

/// A sink as stored, with its delivery state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SinkView {
    /// Sink id.
    pub id: String,
    /// Tenant whose trail it receives.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Format.
    pub format: SinkFormat,
    /// Transport.
    pub transport: SinkTransport,
    /// `host:port`.
    pub address: String,
    /// TLS server name checked.
    pub server_name: Option<String>,
    /// Next log position to deliver: events before it are delivered.
    pub cursor: u64,
    /// Size of the tenant's log now.
    pub log_size: u64,
    /// Events stored but not yet delivered (`log_size - cursor`).
    pub lag: u64,
    /// Admin actions of the tenant delivered up to this trail position.
    pub admin_cursor: i64,
    /// Why the last attempt failed, until one succeeds.
    pub last_error: Option<String>,
    /// When events were last confirmed delivered (Unix ms).
    pub last_delivered_at_ms: Option<i64>,
    /// When the sink was created (Unix ms).
    pub created_at_ms: i64,
}

/// A stored sink, as the forwarder uses it.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    /// Sink id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// Format.
    pub format: SinkFormat,
    /// Transport.
    pub transport: SinkTransport,
    /// `host:port`.
    pub address: String,
    /// TLS server name.
    pub server_name: Option<String>,
    /// TLS CA, PEM.
    pub ca_pem: Option<String>,
    /// Next log position to deliver.
    pub cursor: u64,
    /// Last admin-action trail position delivered.
    pub admin_cursor: i64,
    /// Last failure.
    pub last_error: Option<String>,
    /// Last confirmed delivery.
    pub last_delivered_at_ms: Option<i64>,
    /// Creation time.
    pub created_at_ms: i64,
}

/// One event of a tenant's log, as the forwarder sends it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Position in the tenant's log.
    pub log_index: u64,
    /// Chain hash of the event.
    pub hash: String,
    /// The event as stored.
    pub event_json: String,
}

/// One admin action of a tenant, as the forwarder sends it.
#[derive(Debug, Clone)]
pub struct AdminEntry {
    /// Trail position.
    pub seq: i64,
    /// When (Unix ms).
    pub ts_ms: i64,
    /// Admin id.
    pub actor_id: String,
    /// Admin user name.
    pub actor: String,
    /// Admin role.
    pub actor_role: String,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Before/after diff, JSON.
    pub diff_json: String,
    /// Hash in the admin-action chain.
    pub hash: String,
}

impl AdminEntry {
    fn as_ref(&self) -> sase_model::ocsf::AdminActionRef<'_> {
        sase_model::ocsf::AdminActionRef {
            seq: self.seq,
            ts_ms: self.ts_ms,
            actor_id: &self.actor_id,
            actor: &self.actor,
            actor_role: &self.actor_role,
            tenant_id: self.tenant_id.as_deref(),
            action: &self.action,
            target: &self.target,
            hash: &self.hash,
        }
    }

    fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq, "ts_ms": self.ts_ms, "actor_id": self.actor_id, "actor": self.actor,
            "actor_role": self.actor_role, "tenant_id": self.tenant_id, "action": self.action,
            "target": self.target,
            "diff": serde_json::from_str::<serde_json::Value>(&self.diff_json).unwrap_or(serde_json::Value::Null),
            "hash": self.hash,
        })
    }
}

fn to_u64(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative counter {v}")))
}

fn to_i64(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("counter {v} out of range")))
}

fn sink_from_row(row: &sqlx::any::AnyRow) -> StoreResult<SinkRecord> {
    let format: String = row.try_get("format")?;
    let transport: String = row.try_get("transport")?;
    Ok(SinkRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        format: SinkFormat::parse(&format)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown sink format {format}")))?,
        transport: SinkTransport::parse(&transport)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown sink transport {transport}")))?,
        address: row.try_get("address")?,
        server_name: row.try_get("server_name")?,
        ca_pem: row.try_get("ca_pem")?,
        cursor: to_u64(row.try_get("cursor")?)?,
        admin_cursor: row.try_get("admin_cursor")?,
        last_error: row.try_get("last_error")?,
        last_delivered_at_ms: row.try_get("last_delivered_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

const SINK_COLUMNS: &str = "id, tenant_id, name, format, transport, address, server_name, ca_pem, cursor, admin_cursor, last_error, last_delivered_at_ms, created_at_ms";

impl Store {
    /// Stores a new sink. `false` when the tenant already has one with that name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_siem_sink(&self, sink: &SinkRecord) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO siem_sinks (id, tenant_id, name, format, transport, address, server_name, ca_pem, cursor, created_at_ms, admin_cursor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )
        .bind(&sink.id)
        .bind(&sink.tenant_id)
        .bind(&sink.name)
        .bind(sink.format.as_str())
        .bind(sink.transport.as_str())
        .bind(&sink.address)
        .bind(sink.server_name.as_deref())
        .bind(sink.ca_pem.as_deref())
        .bind(to_i64(sink.cursor)?)
        .bind(sink.created_at_ms)
        .bind(sink.admin_cursor)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// A tenant's sinks, or every sink when `tenant_id` is `None`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn siem_sinks(&self, tenant_id: Option<&str>) -> StoreResult<Vec<SinkRecord>> {
        let rows = match tenant_id {
            Some(tenant_id) => {
                sqlx::query(&format!(
                    "SELECT {SINK_COLUMNS} FROM siem_sinks WHERE tenant_id = $1 ORDER BY name"
                ))
                .bind(tenant_id)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SINK_COLUMNS} FROM siem_sinks ORDER BY id"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(sink_from_row).collect()
    }

    /// Deletes a tenant's sink. `false` when there was none.
    ///
    /// # Errors
    /// Database failure.
    pub async fn delete_siem_sink(&self, tenant_id: &str, id: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM siem_sinks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Moves a sink's cursor forward (never back) and clears its error.
    ///
    /// # Errors
    /// Database failure.
    pub async fn advance_siem_cursor(
        &self,
        id: &str,
        cursor: u64,
        admin_cursor: i64,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE siem_sinks SET cursor = $1, admin_cursor = $2, last_error = NULL, last_delivered_at_ms = $3 WHERE id = $4 AND cursor <= $1 AND admin_cursor <= $2",
        )
        .bind(to_i64(cursor)?)
        .bind(admin_cursor)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records why a sink could not be reached (or clears it with `None`).
    ///
    /// # Errors
    /// Database failure.
    pub async fn set_siem_error(&self, id: &str, error: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE siem_sinks SET last_error = $1 WHERE id = $2")
            .bind(error)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Events of a tenant's log from position `from`, in log order, at most `limit`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn log_entries(
        &self,
        tenant_id: &str,
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<LogEntry>> {
        let rows = sqlx::query(
            "SELECT log_index, hash, event_json FROM audit_events WHERE tenant_id = $1 AND log_index >= $2 AND event_json <> '' ORDER BY log_index LIMIT $3",
        )
        .bind(tenant_id)
        .bind(to_i64(from)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LogEntry {
                    log_index: to_u64(r.try_get("log_index")?)?,
                    hash: r.try_get("hash")?,
                    event_json: r.try_get("event_json")?,
                })
            })
            .collect()
    }

    /// The tenant's admin actions after trail position `after`, in order, at most `limit`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn tenant_admin_actions(
        &self,
        tenant_id: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<AdminEntry>> {
        let rows = sqlx::query(
            "SELECT seq, ts_ms, actor_id, actor, actor_role, tenant_id, action, target, diff_json, hash FROM admin_actions WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminEntry {
                    seq: r.try_get("seq")?,
                    ts_ms: r.try_get("ts_ms")?,
                    actor_id: r.try_get("actor_id")?,
                    actor: r.try_get("actor")?,
                    actor_role: r.try_get("actor_role")?,
                    tenant_id: r.try_get("tenant_id")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    diff_json: r.try_get("diff_json")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// The highest admin-action trail position (0 when empty).
    ///
    /// # Errors
    /// Database failure.
    pub async fn admin_trail_head(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT MAX(seq) AS m FROM admin_actions")
            .fetch_one(self.pool())
            .await?;
        let head: Option<i64> = row.try_get("m")?;
        Ok(head.unwrap_or(0))
    }

    /// Number of events in a tenant's log.
    ///
    /// # Errors
    /// Database failure.
    pub async fn log_size(&self, tenant_id: &str) -> StoreResult<u64> {
        let row = sqlx::query("SELECT size FROM audit_logs WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => to_u64(row.try_get("size")?),
            None => Ok(0),
        }
    }
}

// ---- formats -------------------------------------------------------------------------------

/// RFC 3339 UTC timestamp with milliseconds, as RFC 5424 wants it.
fn rfc3339_ms(ts_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "-".to_string(),
    }
}

/// A header field of RFC 5424: printable US-ASCII without spaces, at most `max` characters,
/// `-` when empty.
fn header_field(value: &str, max: usize) -> String {
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".to_string()
    } else {
        cleaned
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3), control characters dropped.
fn sd_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().filter(|c| !c.is_control()) {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Syslog severity of an event: warning for refusals, notice for allowed requests with WAF
/// findings, informational otherwise.
fn severity(event: &AuditEvent) -> u8 {
    match event.decision {
        Decision::Deny => 4,
        Decision::Allow if event.waf.as_ref().is_some_and(|w| !w.rule_ids.is_empty()) => 5,
        Decision::Allow => 6,
    }
}

/// Facility 13, "log audit".
const FACILITY_LOG_AUDIT: u8 = 13;

/// One RFC 5424 message (without framing) for a stored event.
pub fn syslog_message(entry: &LogEntry, event: &AuditEvent) -> String {
    let pri = u16::from(FACILITY_LOG_AUDIT) * 8 + u16::from(severity(event));
    let mut sd = format!(
        "[{SD_ID} tenant=\"{}\" device=\"{}\" seq=\"{}\" log_index=\"{}\" kind=\"{}\" decision=\"{}\" reason=\"{}\" ref=\"{}\" policy_version=\"{}\"",
        sd_value(&event.tenant_id),
        sd_value(&event.device_id),
        event.seq,
        entry.log_index,
        event.kind.as_str(),
        event.decision.as_str(),
        event.reason.as_str(),
        sd_value(&event.reference),
        event.policy_version,
    );
    if let Some(identity) = &event.identity {
        sd.push_str(&format!(" identity=\"{}\"", sd_value(identity)));
    }
    if let Some(http) = &event.http {
        sd.push_str(&format!(
            " method=\"{}\" path=\"{}\" status=\"{}\" resource=\"{}\" route=\"{}\" client=\"{}\"",
            sd_value(&http.method),
            sd_value(&http.path),
            http.status,
            sd_value(&http.resource),
            sd_value(&http.route),
            sd_value(&http.client_ip),
        ));
    }
    sd.push(']');
    // MSG: the event as JSON (UTF-8, so with a BOM, RFC 5424 §6.4).
    format!(
        "<{pri}>1 {} {} sase-edge - {} {sd} \u{feff}{}",
        rfc3339_ms(event.ts_ms),
        header_field(&event.device_id, 255),
        header_field(event.kind.as_str(), 32),
        entry.event_json,
    )
}

/// The bytes sent for one event in a sink's format.
///
/// # Errors
/// When the stored event does not parse (a corrupt row: the forwarder stops at it rather than
/// skip it silently).
pub fn encode(format: SinkFormat, entry: &LogEntry) -> Result<Vec<u8>, serde_json::Error> {
    let event: AuditEvent = serde_json::from_str(&entry.event_json)?;
    Ok(match format {
        SinkFormat::Syslog => {
            let message = syslog_message(entry, &event);
            format!("{} {message}", message.len()).into_bytes()
        }
        SinkFormat::JsonLines => {
            let event_value: serde_json::Value = serde_json::from_str(&entry.event_json)?;
            let mut line = serde_json::to_vec(&serde_json::json!({
                "log_index": entry.log_index,
                "hash": entry.hash,
                "event": event_value,
            }))?;
            line.push(b'\n');
            line
        }
        SinkFormat::Ocsf => {
            let mut line = serde_json::to_vec(&sase_model::ocsf::to_ocsf(&event, &entry.hash))?;
            line.push(b'\n');
            line
        }
    })
}

/// The bytes sent for one admin action in a sink's format.
///
/// # Errors
/// Serialisation failure (not expected for these plain values).
pub fn encode_admin(format: SinkFormat, entry: &AdminEntry) -> Result<Vec<u8>, serde_json::Error> {
    Ok(match format {
        SinkFormat::Syslog => {
            let mut sd = format!(
                "[{SD_ID} kind=\"admin_action\" seq=\"{}\" actor=\"{}\" role=\"{}\" action=\"{}\" target=\"{}\"",
                entry.seq,
                sd_value(&entry.actor),
                sd_value(&entry.actor_role),
                sd_value(&entry.action),
                sd_value(&entry.target),
            );
            if let Some(t) = &entry.tenant_id {
                sd.push_str(&format!(" tenant=\"{}\"", sd_value(t)));
            }
            sd.push(']');
            // Facility 13 (log audit), severity 5 (notice).
            let message = format!(
                "<{}>1 {} sase-control sase-control - admin_action {sd} \u{feff}{}",
                u16::from(FACILITY_LOG_AUDIT) * 8 + 5,
                rfc3339_ms(entry.ts_ms),
                serde_json::to_string(&entry.as_json())?,
            );
            format!("{} {message}", message.len()).into_bytes()
        }
        SinkFormat::JsonLines => {
            let mut line =
                serde_json::to_vec(&serde_json::json!({"admin_action": entry.as_json()}))?;
            line.push(b'\n');
            line
        }
        SinkFormat::Ocsf => {
            let mut line =
                serde_json::to_vec(&sase_model::ocsf::admin_action_to_ocsf(&entry.as_ref()))?;
            line.push(b'\n');
            line
        }
    })
}

// ---- API -----------------------------------------------------------------------------------

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits `host:port` / `[v6]:port`.
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    host_ok.then(|| (host.to_string(), port))
}

fn root_store(ca_pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(ca_pem.as_bytes());
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| format!("ca_pem: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_pem: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca_pem: no certificate found".to_string());
    }
    Ok(roots)
}

fn view(sink: &SinkRecord, log_size: u64) -> SinkView {
    SinkView {
        id: sink.id.clone(),
        tenant_id: sink.tenant_id.clone(),
        name: sink.name.clone(),
        format: sink.format,
        transport: sink.transport,
        address: sink.address.clone(),
        server_name: sink.server_name.clone(),
        cursor: sink.cursor,
        log_size,
        lag: log_size.saturating_sub(sink.cursor),
        admin_cursor: sink.admin_cursor,
        last_error: sink.last_error.clone(),
        last_delivered_at_ms: sink.last_delivered_at_ms,
        created_at_ms: sink.created_at_ms,
    }
}

/// Creates a SIEM sink for a tenant's audit trail.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/siem/sinks",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = NewSink,
    responses((status = 201, body = SinkView), (status = 400), (status = 409)))]
pub async fn create_sink(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(new): Json<NewSink>,
) -> Result<(StatusCode, Json<SinkView>), ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditSign, &tenant_id).await?;
    if !valid_name(&new.name) {
        return Err(ApiError::bad_request(
            "name: 1-64 characters: letters, digits, '-', '_', '.'",
        ));
    }
    let (host, _) = split_address(&new.address)
        .ok_or_else(|| ApiError::bad_request("address: expected host:port"))?;
    let (ca_pem, server_name) = match new.transport {
        SinkTransport::Tls => {
            let ca = new
                .ca_pem
                .as_deref()
                .ok_or_else(|| ApiError::bad_request("ca_pem: required for transport tls"))?;
            root_store(ca).map_err(ApiError::bad_request)?;
            let name = new.server_name.clone().unwrap_or(host);
            rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| ApiError::bad_request("server_name: not a DNS name or address"))?;
            (Some(ca.to_string()), Some(name))
        }
        SinkTransport::Tcp => {
            if new.ca_pem.is_some() || new.server_name.is_some() {
                return Err(ApiError::bad_request(
                    "ca_pem, server_name: only for transport tls",
                ));
            }
            (None, None)
        }
    };
    let existing = state.store.siem_sinks(Some(&tenant_id)).await?;
    if existing.len() >= MAX_SINKS_PER_TENANT {
        return Err(ApiError::bad_request(format!(
            "a tenant has at most {MAX_SINKS_PER_TENANT} sinks"
        )));
    }
    let log_size = state.store.log_size(&tenant_id).await?;
    let sink = SinkRecord {
        id: uuid_like(),
        tenant_id: tenant_id.clone(),
        name: new.name.clone(),
        format: new.format,
        transport: new.transport,
        address: new.address.clone(),
        server_name,
        ca_pem,
        cursor: match new.start {
            SinkStart::Beginning => 0,
            SinkStart::Now => log_size,
        },
        admin_cursor: match new.start {
            SinkStart::Beginning => 0,
            SinkStart::Now => state.store.admin_trail_head().await?,
        },
        last_error: None,
        last_delivered_at_ms: None,
        created_at_ms: now_ms(),
    };
    if !state.store.insert_siem_sink(&sink).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("the tenant already has a sink named {}", sink.name),
        ));
    }
    let created = view(&sink, log_size);
    crate::admin_audit::record(
        &state,
        &admin,
        "siem.sink_create",
        Some(&tenant_id),
        &sink.id,
        serde_json::Value::Null,
        serde_json::json!({
            "name": sink.name, "format": sink.format, "transport": sink.transport,
            "address": sink.address, "server_name": sink.server_name, "cursor": sink.cursor,
        }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists a tenant's SIEM sinks with their delivery state (cursor, lag, last error).
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/siem/sinks",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [SinkView])))]
pub async fn list_sinks(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<SinkView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    let log_size = state.store.log_size(&tenant_id).await?;
    let sinks = state.store.siem_sinks(Some(&tenant_id)).await?;
    Ok(Json(sinks.iter().map(|s| view(s, log_size)).collect()))
}

/// Deletes a tenant's SIEM sink; forwarding to it stops.
#[utoipa::path(delete, path = "/api/tenants/{tenant_id}/siem/sinks/{sink_id}",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("sink_id" = String, Path, description = "sink id")),
    responses((status = 204), (status = 404)))]
pub async fn delete_sink(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, sink_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditSign, &tenant_id).await?;
    let before = state
        .store
        .siem_sinks(Some(&tenant_id))
        .await?
        .into_iter()
        .find(|s| s.id == sink_id);
    let Some(before) = before else {
        return Err(ApiError::not_found("no such sink"));
    };
    if !state.store.delete_siem_sink(&tenant_id, &sink_id).await? {
        return Err(ApiError::not_found("no such sink"));
    }
    crate::admin_audit::record(
        &state,
        &admin,
        "siem.sink_delete",
        Some(&tenant_id),
        &sink_id,
        serde_json::json!({"name": before.name, "address": before.address, "cursor": before.cursor}),
        serde_json::Value::Null,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn uuid_like() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

// ---- forwarder -----------------------------------------------------------------------------

trait SinkStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SinkStream for T {}

/// An open connection to a sink and what was written on it but is not yet confirmed.
struct Link {
    stream: Box<dyn SinkStream>,
    /// Next log position to send on this connection.
    sent_cursor: u64,
    /// Last admin-action trail position sent on this connection.
    sent_admin: i64,
    /// `(cursor, admin cursor after the write, when)` of writes not yet confirmed, oldest first.
    unconfirmed: VecDeque<(u64, i64, Instant)>,
}

/// Per-sink state of the forwarder.
#[derive(Default)]
struct SinkRuntime {
    link: Option<Link>,
    failures: u32,
    retry_at: Option<Instant>,
}

async fn connect(sink: &SinkRecord) -> Result<Box<dyn SinkStream>, String> {
    let (host, port) =
        split_address(&sink.address).ok_or_else(|| "address: expected host:port".to_string())?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| format!("connect to {}: timed out", sink.address))?
    .map_err(|e| format!("connect to {}: {e}", sink.address))?;
    let _ = tcp.set_nodelay(true);
    match sink.transport {
        SinkTransport::Tcp => Ok(Box::new(tcp)),
        SinkTransport::Tls => {
            let roots = root_store(sink.ca_pem.as_deref().unwrap_or_default())?;
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = sink.server_name.clone().unwrap_or(host);
            let server_name = rustls::pki_types::ServerName::try_from(name)
                .map_err(|_| "server_name: not a DNS name or address".to_string())?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls =
                tokio::time::timeout(Duration::from_secs(5), connector.connect(server_name, tcp))
                    .await
                    .map_err(|_| format!("tls handshake with {}: timed out", sink.address))?
                    .map_err(|e| format!("tls handshake with {}: {e}", sink.address))?;
            Ok(Box::new(tls))
        }
    }
}

/// Whether the receiver is still there: syslog receivers never send, so a readable end of
/// stream (or an error) means the connection is gone.
fn still_open(link: &mut Link) -> bool {
    let mut scratch = [0u8; 256];
    !matches!(
        link.stream.read(&mut scratch).now_or_never(),
        Some(Ok(0)) | Some(Err(_))
    )
}

/// One round for one sink: confirm, (re)connect, send the next batch. Returns whether more
/// events are waiting.
async fn forward_round(
    store: &Store,
    sink: &SinkRecord,
    runtime: &mut SinkRuntime,
) -> Result<bool, String> {
    if let Some(link) = runtime.link.as_mut() {
        if !still_open(link) {
            runtime.link = None;
            return Err(format!("{} closed the connection", sink.address));
        }
        let mut confirmed = None;
        while let Some((cursor, admin, at)) = link.unconfirmed.front().copied() {
            if at.elapsed() < CONFIRM_AFTER {
                break;
            }
            confirmed = Some((cursor, admin));
            link.unconfirmed.pop_front();
        }
        if let Some((cursor, admin)) = confirmed {
            store
                .advance_siem_cursor(&sink.id, cursor, admin, now_ms())
                .await
                .map_err(|e| format!("store: {e}"))?;
        }
    }
    if runtime.link.is_none() {
        let stream = connect(sink).await?;
        runtime.link = Some(Link {
            stream,
            sent_cursor: sink.cursor,
            sent_admin: sink.admin_cursor,
            unconfirmed: VecDeque::new(),
        });
        tracing::info!(sink = %sink.name, tenant = %sink.tenant_id, address = %sink.address, cursor = sink.cursor, "SIEM sink connected");
    }
    let Some(link) = runtime.link.as_mut() else {
        return Ok(false);
    };
    let entries = store
        .log_entries(&sink.tenant_id, link.sent_cursor, BATCH)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let actions = store
        .tenant_admin_actions(&sink.tenant_id, link.sent_admin, BATCH)
        .await
        .map_err(|e| format!("store: {e}"))?;
    if entries.is_empty() && actions.is_empty() {
        return Ok(false);
    }
    let next = entries
        .last()
        .map_or(link.sent_cursor, |last| last.log_index + 1);
    let next_admin = actions.last().map_or(link.sent_admin, |last| last.seq);
    let mut bytes = Vec::with_capacity((entries.len() + actions.len()) * 512);
    for entry in &entries {
        let encoded = encode(sink.format, entry)
            .map_err(|e| format!("stored event at log index {}: {e}", entry.log_index))?;
        bytes.extend_from_slice(&encoded);
    }
    for action in &actions {
        let encoded = encode_admin(sink.format, action)
            .map_err(|e| format!("admin action {}: {e}", action.seq))?;
        bytes.extend_from_slice(&encoded);
    }
    let written = tokio::time::timeout(Duration::from_secs(10), async {
        link.stream.write_all(&bytes).await?;
        link.stream.flush().await
    })
    .await;
    match written {
        Ok(Ok(())) => {
            link.sent_cursor = next;
            link.sent_admin = next_admin;
            link.unconfirmed
                .push_back((next, next_admin, Instant::now()));
            Ok(entries.len() == BATCH || actions.len() == BATCH)
        }
        Ok(Err(e)) => {
            runtime.link = None;
            Err(format!("write to {}: {e}", sink.address))
        }
        Err(_) => {
            runtime.link = None;
            Err(format!("write to {}: timed out", sink.address))
        }
    }
}

/// Forwards every tenant's trail to its sinks, forever. `poll` is how often it looks for new
/// events when all sinks are caught up.
pub async fn run_forwarder(state: SharedState, poll: Duration) {
    let mut runtimes: HashMap<String, SinkRuntime> = HashMap::new();
    loop {
        let sinks = match state.store.siem_sinks(None).await {
            Ok(sinks) => sinks,
            Err(err) => {
                tracing::warn!(%err, "SIEM forwarder cannot read its sinks");
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        runtimes.retain(|id, _| sinks.iter().any(|s| &s.id == id));
        let mut more = false;
        for sink in &sinks {
            let runtime = runtimes.entry(sink.id.clone()).or_default();
            if runtime.retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            match forward_round(&state.store, sink, runtime).await {
                Ok(pending) => {
                    more |= pending;
                    if runtime.failures > 0 {
                        runtime.failures = 0;
                        runtime.retry_at = None;
                        if let Err(err) = state.store.set_siem_error(&sink.id, None).await {
                            tracing::warn!(%err, "cannot clear a SIEM sink's error");
                        }
                    }
                }
                Err(why) => {
                    runtime.link = None;
                    runtime.failures = runtime.failures.saturating_add(1);
                    let backoff = Duration::from_millis(250)
                        .saturating_mul(1 << runtime.failures.min(6))
                        .min(MAX_BACKOFF);
                    runtime.retry_at = Some(Instant::now() + backoff);
                    tracing::warn!(sink = %sink.name, tenant = %sink.tenant_id, %why, "SIEM delivery failed; retrying");
                    if let Err(err) = state.store.set_siem_error(&sink.id, Some(&why)).await {
                        tracing::warn!(%err, "cannot record a SIEM sink's error");
                    }
                    if runtime.failures == 1 {
                        let alert = Alert {
                            id: uuid_like(),
                            tenant_id: Some(sink.tenant_id.clone()),
                            device_id: None,
                            kind: "siem_delivery_failed".to_string(),
                            detail: format!("sink {}: {why}", sink.name),
                            created_at_ms: now_ms(),
                        };
                        if let Err(err) = state.store.insert_alert(&alert).await {
                            tracing::warn!(%err, "cannot raise a SIEM alert");
                        }
                    }
                }
            }
        }
        if !more {
            tokio::time::sleep(poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sase_model::audit::{EventKind, HttpDetails};
    use sase_model::Reason;

    fn entry() -> (LogEntry, AuditEvent) {
        let event = AuditEvent {
            seq: 3,
            prev_hash: "00".repeat(32),
            ts_ms: 1_795_000_000_042,
            tenant_id: "t-1".into(),
            device_id: "dev 1".into(),
            kind: EventKind::HttpRequest,
            decision: Decision::Deny,
            reason: Reason::RouteNotFound,
            reference: "ref\"]x".into(),
            policy_version: 2,
            identity: None,
            http: Some(HttpDetails {
                resource: String::new(),
                route: String::new(),
                method: "GET".into(),
                path: "/a]b\\c".into(),
                status: 404,
                latency_us: 10,
                client_ip: "127.0.0.1".into(),
                scopes: Vec::new(),
                groups: Vec::new(),
            }),
            detail: None,
            waf: None,
            quic: None,
            tunnel: None,
        };
        let entry = LogEntry {
            log_index: 9,
            hash: event.hash(),
            event_json: serde_json::to_string(&event).unwrap_or_default(),
        };
        (entry, event)
    }

    #[test]
    fn syslog_messages_follow_rfc5424() {
        let (entry, event) = entry();
        let m = syslog_message(&entry, &event);
        // PRI 13*8+4 (warning), version 1, UTC time with ms, host without spaces.
        assert!(m.starts_with("<108>1 20"), "{m}");
        assert!(m.contains(".042Z dev1 sase-edge - http_request ["), "{m}");
        assert!(m.contains(" sase-edge - http_request [sase@32473 tenant=\"t-1\""));
        // SD-PARAM escapes.
        assert!(m.contains("ref=\"ref\\\"\\]x\""), "{m}");
        assert!(m.contains("path=\"/a\\]b\\\\c\""), "{m}");
        // MSG is the event JSON after a BOM.
        let msg = m.split('\u{feff}').nth(1).unwrap_or_default();
        let back: AuditEvent = serde_json::from_str(msg).expect("event JSON in MSG");
        assert_eq!(back, event);
    }

    #[test]
    fn syslog_framing_counts_octets() {
        let (entry, _) = entry();
        let bytes = encode(SinkFormat::Syslog, &entry).expect("encodes");
        let text = String::from_utf8(bytes).expect("utf-8");
        let (len, rest) = text.split_once(' ').expect("length prefix");
        assert_eq!(len.parse::<usize>().ok(), Some(rest.len()));
    }

    #[test]
    fn json_formats_are_one_line_per_event() {
        let (entry, _) = entry();
        for format in [SinkFormat::JsonLines, SinkFormat::Ocsf] {
            let bytes = encode(format, &entry).expect("encodes");
            assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(bytes.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            match format {
                SinkFormat::JsonLines => {
                    assert_eq!(v["log_index"], 9);
                    assert_eq!(v["event"]["seq"], 3);
                }
                _ => assert_eq!(v["class_uid"], 4002),
            }
        }
    }

    #[test]
    fn a_corrupt_stored_event_is_an_error_not_a_skip() {
        let (mut entry, _) = entry();
        entry.event_json = "{not json".into();
        assert!(encode(SinkFormat::Syslog, &entry).is_err());
    }

    #[test]
    fn addresses_and_names_are_checked() {
        assert_eq!(
            split_address("siem.example:6514"),
            Some(("siem.example".into(), 6514))
        );
        assert_eq!(split_address("[::1]:514"), Some(("::1".into(), 514)));
        assert_eq!(split_address("host"), None);
        assert_eq!(split_address("host:0"), None);
        assert_eq!(split_address("ho st:1"), None);
        assert!(valid_name("splunk-eu.1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
    }
}
