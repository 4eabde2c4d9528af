//! Incidents: opened from audit events, tracked against the NIS2 Article 23 reporting deadlines
//! ([`sase_model::incident`]: early warning 24 h, notification 72 h, final report one month
//! after the notification), with alerts as deadlines approach or pass, and an incident report
//! exported as JSON or as a Markdown document.
//!
//! * `POST /api/tenants/{t}/incidents` opens one (title, severity, when the entity became
//!   aware, the audit events by reference); `GET` lists them with their clocks.
//! * `POST …/{id}/events` links more events; `POST …/{id}/submissions` records that a
//!   milestone was submitted to the CSIRT / authority (with its reference there); `POST
//!   …/{id}/close` closes it.
//! * `GET …/{id}` shows it with its events and timeline; `GET …/{id}/report?format=json|markdown`
//!   exports the report.
//! * [`run_deadline_watch`] raises `incident_deadline_approaching` (6 h before the early
//!   warning, 12 h before the notification, 3 days before the final report) and
//!   `incident_deadline_missed`, once each per milestone.
//!
//! Reading needs `audit.read`; changing needs `incidents.manage`. Every change is in the
//! admin-action trail and in the incident's own timeline.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sase_model::incident::{
    clock, format_remaining, IncidentClock, Milestone, MilestoneState, Submissions,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::rbac::{self, Permission};
use crate::state::{now_ms, SharedState};
use crate::store::{Alert, Store, StoreError, StoreResult};

/// Most events linked to one incident.
pub const MAX_EVENTS_PER_INCIDENT: usize = 10_000;

/// How severe an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// An incident to open.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    /// Short title (1-200 characters).
    pub title: String,
    /// What is known (up to 20,000 characters).
    #[serde(default)]
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// When the entity became aware of the incident (Unix ms; default: now). The deadlines
    /// count from here.
    #[serde(default)]
    pub aware_at_ms: Option<i64>,
    /// Reference ids of the audit events that show it.
    #[serde(default)]
    pub references: Vec<String>,
}

/// Events to link.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkEvents {
    /// Reference ids of audit events of the tenant.
    pub references: Vec<String>,
}

/// A milestone submitted to the CSIRT or competent authority.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubmission {
    /// `early_warning`, `notification` or `final_report`.
    pub milestone: String,
    /// When it was submitted (Unix ms; default: now).
    #[serde(default)]
    pub submitted_at_ms: Option<i64>,
    /// The authority's reference for it (ticket number), if any.
    #[serde(default)]
    pub authority_reference: Option<String>,
    /// Note for the timeline.
    #[serde(default)]
    pub note: Option<String>,
}

/// Closing an incident.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseIncident {
    /// Why (for the timeline and the report).
    pub note: String,
}

/// One milestone as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MilestoneView {
    /// `early_warning`, `notification`, `final_report`.
    pub milestone: String,
    /// Deadline (Unix ms).
    pub due_ms: i64,
    /// When submitted (Unix ms), if it was.
    pub submitted_at_ms: Option<i64>,
    /// Submitted after the deadline.
    pub late: bool,
    /// Time left until the deadline when pending (negative: overdue).
    pub remaining_ms: Option<i64>,
    /// `remaining_ms` for people: `1d 02h 05m`, `overdue 3h 10m`.
    pub countdown: Option<String>,
}

/// An incident as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentView {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// `open` or `closed`.
    pub status: String,
    /// When the entity became aware (Unix ms).
    pub aware_at_ms: i64,
    /// When opened here (Unix ms).
    pub created_at_ms: i64,
    /// Who opened it.
    pub created_by: String,
    /// When closed (Unix ms).
    pub closed_at_ms: Option<i64>,
    /// The three reporting milestones.
    pub milestones: Vec<MilestoneView>,
    /// The next milestone to submit, if any.
    pub next_milestone: Option<String>,
    /// Some pending milestone is past its deadline.
    pub overdue: bool,
    /// Number of linked audit events.
    pub event_count: u64,
}

/// A linked audit event, summarised.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkedEvent {
    /// Reference id.
    pub reference: String,
    /// Device.
    pub device_id: String,
    /// Position in the device's chain.
    pub seq: u64,
    /// Position in the tenant's log (for inclusion proofs).
    pub log_index: Option<u64>,
    /// Chain hash.
    pub hash: String,
    /// The event.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// One timeline entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub entry: String,
}

/// An incident with its events and timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    /// The incident.
    pub incident: IncidentView,
    /// Its audit events.
    pub events: Vec<LinkedEvent>,
    /// What happened to it.
    pub timeline: Vec<TimelineEntry>,
}

/// A stored incident.
#[derive(Debug, Clone)]
struct IncidentRow {
    id: String,
    tenant_id: String,
    title: String,
    description: String,
    severity: Severity,
    aware_at_ms: i64,
    created_at_ms: i64,
    created_by: String,
    submissions: Submissions,
    closed_at_ms: Option<i64>,
    alerted: String,
}

const INCIDENT_COLUMNS: &str = "id, tenant_id, title, description, severity, aware_at_ms, created_at_ms, created_by, early_warning_ms, notification_ms, final_report_ms, closed_at_ms, alerted";

fn row_to_incident(row: &sqlx::any::AnyRow) -> StoreResult<IncidentRow> {
    let severity: String = row.try_get("severity")?;
    Ok(IncidentRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| StoreError::Corrupt(format!("incident severity {severity}")))?,
        aware_at_ms: row.try_get("aware_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        created_by: row.try_get("created_by")?,
        submissions: Submissions {
            early_warning_ms: row.try_get("early_warning_ms")?,
            notification_ms: row.try_get("notification_ms")?,
            final_report_ms: row.try_get("final_report_ms")?,
        },
        closed_at_ms: row.try_get("closed_at_ms")?,
        alerted: row.try_get("alerted")?,
    })
}

fn new_id() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Store {
    async fn incident_rows(
        &self,
        tenant_id: Option<&str>,
        open_only: bool,
    ) -> StoreResult<Vec<IncidentRow>> {
        let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1 = 1");
        if tenant_id.is_some() {
            sql.push_str(" AND tenant_id = $1");
        }
        if open_only {
            sql.push_str(" AND closed_at_ms IS NULL");
        }
        sql.push_str(" ORDER BY created_at_ms DESC, id");
        let mut query = sqlx::query(&sql);
        if let Some(t) = tenant_id {
            query = query.bind(t);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(row_to_incident).collect()
    }

    async fn incident_row(&self, tenant_id: &str, id: &str) -> StoreResult<Option<IncidentRow>> {
        let row = sqlx::query(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(row_to_incident).transpose()
    }

    async fn incident_event_count(&self, id: &str) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM incident_events WHERE incident_id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Which of `references` are audit events of the tenant.
    async fn tenant_event(
        &self,
        tenant_id: &str,
        reference: &str,
    ) -> StoreResult<Option<LinkedEvent>> {
        let row = sqlx::query(
            "SELECT device_id, seq, hash, log_index, event_json FROM audit_events WHERE tenant_id = $1 AND reference = $2 AND event_json <> ''",
        )
        .bind(tenant_id)
        .bind(reference)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let json: String = row.try_get("event_json")?;
        let seq: i64 = row.try_get("seq")?;
        let log_index: Option<i64> = row.try_get("log_index")?;
        Ok(Some(LinkedEvent {
            reference: reference.to_string(),
            device_id: row.try_get("device_id")?,
            seq: u64::try_from(seq).unwrap_or(0),
            log_index: log_index.and_then(|i| u64::try_from(i).ok()),
            hash: row.try_get("hash")?,
            event: serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("stored event {reference}: {e}")))?,
        }))
    }

    async fn link_events(&self, id: &str, references: &[String], now: i64) -> StoreResult<u64> {
        let mut added = 0;
        for reference in references {
            let result = sqlx::query(
                "INSERT INTO incident_events (incident_id, reference, added_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(reference)
            .bind(now)
            .execute(self.pool())
            .await?;
            added += result.rows_affected();
        }
        Ok(added)
    }

    async fn incident_references(&self, id: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT reference FROM incident_events WHERE incident_id = $1 ORDER BY added_at_ms, reference",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("reference")?)).collect()
    }

    async fn add_timeline(&self, id: &str, actor: &str, entry: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO incident_timeline (id, incident_id, at_ms, actor, entry) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_id())
        .bind(id)
        .bind(at)
        .bind(actor)
        .bind(entry)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn timeline(&self, id: &str) -> StoreResult<Vec<TimelineEntry>> {
        let rows = sqlx::query(
            "SELECT at_ms, actor, entry FROM incident_timeline WHERE incident_id = $1 ORDER BY at_ms, id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TimelineEntry {
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                    entry: r.try_get("entry")?,
                })
            })
            .collect()
    }
}

fn milestone_views(clock: &IncidentClock, submissions: &Submissions) -> Vec<MilestoneView> {
    Milestone::ALL
        .into_iter()
        .map(|m| {
            let state = clock.state(m);
            let submitted_at_ms = match m {
                Milestone::EarlyWarning => submissions.early_warning_ms,
                Milestone::Notification => submissions.notification_ms,
                Milestone::FinalReport => submissions.final_report_ms,
            };
            let (late, remaining_ms) = match state {
                MilestoneState::Submitted { late, .. } => (*late, None),
                MilestoneState::Pending { remaining_ms, .. } => (false, Some(*remaining_ms)),
            };
            MilestoneView {
                milestone: m.as_str().to_string(),
                due_ms: state.due_ms(),
                submitted_at_ms,
                late,
                remaining_ms,
                countdown: remaining_ms.map(format_remaining),
            }
        })
        .collect()
}

fn view(row: &IncidentRow, event_count: u64, now: i64) -> IncidentView {
    let c = clock(row.aware_at_ms, &row.submissions, now);
    let closed = row.closed_at_ms.is_some();
    let milestones = milestone_views(&c, &row.submissions);
    IncidentView {
        id: row.id.clone(),
        tenant_id: row.tenant_id.clone(),
        title: row.title.clone(),
        description: row.description.clone(),
        severity: row.severity,
        status: if closed { "closed" } else { "open" }.to_string(),
        aware_at_ms: row.aware_at_ms,
        created_at_ms: row.created_at_ms,
        created_by: row.created_by.clone(),
        closed_at_ms: row.closed_at_ms,
        overdue: !closed && Milestone::ALL.into_iter().any(|m| c.state(m).overdue()),
        next_milestone: if closed {
            None
        } else {
            c.next.map(|(m, _)| m.as_str().to_string())
        },
        milestones,
        event_count,
    }
}

async fn check_references(
    state: &SharedState,
    tenant_id: &str,
    references: &[String],
) -> Result<(), ApiError> {
    if references.len() > MAX_EVENTS_PER_INCIDENT {
        return Err(ApiError::bad_request(format!(
            "references: at most {MAX_EVENTS_PER_INCIDENT}"
        )));
    }
    let mut unknown = Vec::new();
    for reference in references {
        if reference.len() > 128
            || state
                .store
                .tenant_event(tenant_id, reference)
                .await?
                .is_none()
        {
            unknown.push(reference.chars().take(128).collect::<String>());
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "references: no audit event of this tenant has reference {}",
            unknown.join(", ")
        )));
    }
    Ok(())
}

async fn load(state: &SharedState, tenant_id: &str, id: &str) -> Result<IncidentRow, ApiError> {
    state
        .store
        .incident_row(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such incident"))
}

/// Opens an incident from audit events.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/incidents",
    params(("tenant_id" = String, Path, description = "tenant id")),
    request_body = NewIncident,
    responses((status = 201, body = IncidentView), (status = 400)))]
pub async fn create(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
    Json(new): Json<NewIncident>,
) -> Result<(StatusCode, Json<IncidentView>), ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::IncidentsManage, &tenant_id).await?;
    let title = new.title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::bad_request("title: 1-200 characters"));
    }
    if new.description.chars().count() > 20_000 {
        return Err(ApiError::bad_request(
            "description: at most 20,000 characters",
        ));
    }
    let now = now_ms();
    let aware = new.aware_at_ms.unwrap_or(now);
    if aware > now + 300_000 || aware < now - 366 * 86_400_000 {
        return Err(ApiError::bad_request(
            "aware_at_ms: within the last year and not in the future",
        ));
    }
    check_references(&state, &tenant_id, &new.references).await?;
    let row = IncidentRow {
        id: new_id(),
        tenant_id: tenant_id.clone(),
        title: title.to_string(),
        description: new.description.clone(),
        severity: new.severity,
        aware_at_ms: aware,
        created_at_ms: now,
        created_by: admin.username.clone(),
        submissions: Submissions::default(),
        closed_at_ms: None,
        alerted: String::new(),
    };
    sqlx::query(
        "INSERT INTO incidents (id, tenant_id, title, description, severity, aware_at_ms, created_at_ms, created_by, alerted) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '')",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.title)
    .bind(&row.description)
    .bind(row.severity.as_str())
    .bind(row.aware_at_ms)
    .bind(row.created_at_ms)
    .bind(&row.created_by)
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    let linked = state
        .store
        .link_events(&row.id, &new.references, now)
        .await?;
    state
        .store
        .add_timeline(
            &row.id,
            &admin.username,
            &format!(
                "opened ({} severity, aware at {aware}) with {linked} audit events",
                row.severity.as_str()
            ),
            now,
        )
        .await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "incident.open",
        Some(&tenant_id),
        &row.id,
        serde_json::Value::Null,
        serde_json::json!({"title": row.title, "severity": row.severity, "aware_at_ms": aware, "events": linked}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&row, linked, now))))
}

/// Lists a tenant's incidents with their reporting clocks.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/incidents",
    params(("tenant_id" = String, Path, description = "tenant id")),
    responses((status = 200, body = [IncidentView])))]
pub async fn list(
    State(state): State<SharedState>,
    admin: Admin,
    Path(tenant_id): Path<String>,
) -> Result<Json<Vec<IncidentView>>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    let now = now_ms();
    let mut out = Vec::new();
    for row in state.store.incident_rows(Some(&tenant_id), false).await? {
        let count = state.store.incident_event_count(&row.id).await?;
        out.push(view(&row, count, now));
    }
    Ok(Json(out))
}

async fn detail(
    state: &SharedState,
    tenant_id: &str,
    id: &str,
) -> Result<IncidentDetail, ApiError> {
    let row = load(state, tenant_id, id).await?;
    let mut events = Vec::new();
    for reference in state.store.incident_references(id).await? {
        if let Some(event) = state.store.tenant_event(tenant_id, &reference).await? {
            events.push(event);
        }
    }
    let timeline = state.store.timeline(id).await?;
    Ok(IncidentDetail {
        incident: view(&row, events.len() as u64, now_ms()),
        events,
        timeline,
    })
}

/// One incident with its audit events and timeline.
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/incidents/{incident_id}",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("incident_id" = String, Path, description = "incident id")),
    responses((status = 200, body = IncidentDetail), (status = 404)))]
pub async fn get(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
) -> Result<Json<IncidentDetail>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    Ok(Json(detail(&state, &tenant_id, &id).await?))
}

/// Links more audit events to an incident.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/incidents/{incident_id}/events",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("incident_id" = String, Path, description = "incident id")),
    request_body = LinkEvents,
    responses((status = 200, body = IncidentView), (status = 400), (status = 404)))]
pub async fn link(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
    Json(body): Json<LinkEvents>,
) -> Result<Json<IncidentView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::IncidentsManage, &tenant_id).await?;
    let row = load(&state, &tenant_id, &id).await?;
    check_references(&state, &tenant_id, &body.references).await?;
    let count = state.store.incident_event_count(&id).await?;
    if count as usize + body.references.len() > MAX_EVENTS_PER_INCIDENT {
        return Err(ApiError::bad_request(format!(
            "an incident links at most {MAX_EVENTS_PER_INCIDENT} events"
        )));
    }
    let now = now_ms();
    let added = state.store.link_events(&id, &body.references, now).await?;
    state
        .store
        .add_timeline(
            &id,
            &admin.username,
            &format!("{added} audit events linked"),
            now,
        )
        .await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "incident.link_events",
        Some(&tenant_id),
        &id,
        serde_json::Value::Null,
        serde_json::json!({"added": added}),
    )
    .await?;
    Ok(Json(view(&row, count + added, now)))
}

/// Records that a reporting milestone was submitted.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/incidents/{incident_id}/submissions",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("incident_id" = String, Path, description = "incident id")),
    request_body = NewSubmission,
    responses((status = 200, body = IncidentView), (status = 400), (status = 409)))]
pub async fn submit(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
    Json(body): Json<NewSubmission>,
) -> Result<Json<IncidentView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::IncidentsManage, &tenant_id).await?;
    let mut row = load(&state, &tenant_id, &id).await?;
    let milestone = Milestone::parse(&body.milestone).ok_or_else(|| {
        ApiError::bad_request("milestone: one of early_warning, notification, final_report")
    })?;
    if row.closed_at_ms.is_some() {
        return Err(ApiError::conflict("the incident is closed"));
    }
    let now = now_ms();
    let at = body.submitted_at_ms.unwrap_or(now);
    if at > now + 300_000 || at < row.aware_at_ms {
        return Err(ApiError::bad_request(
            "submitted_at_ms: not before the incident was known, not in the future",
        ));
    }
    let (column, already) = match milestone {
        Milestone::EarlyWarning => ("early_warning_ms", row.submissions.early_warning_ms),
        Milestone::Notification => ("notification_ms", row.submissions.notification_ms),
        Milestone::FinalReport => ("final_report_ms", row.submissions.final_report_ms),
    };
    if already.is_some() {
        return Err(ApiError::conflict(format!(
            "{} was already recorded as submitted",
            milestone.as_str()
        )));
    }
    if milestone == Milestone::FinalReport && row.submissions.notification_ms.is_none() {
        return Err(ApiError::conflict(
            "the final report follows the incident notification (Art. 23(4)(d)): record the notification first",
        ));
    }
    if body
        .authority_reference
        .as_ref()
        .is_some_and(|r| r.len() > 200)
        || body.note.as_ref().is_some_and(|n| n.len() > 5_000)
    {
        return Err(ApiError::bad_request(
            "authority_reference: at most 200 characters; note: at most 5,000",
        ));
    }
    sqlx::query(&format!(
        "UPDATE incidents SET {column} = $1 WHERE id = $2 AND {column} IS NULL"
    ))
    .bind(at)
    .bind(&id)
    .execute(state.store.pool())
    .await
    .map_err(StoreError::from)?;
    match milestone {
        Milestone::EarlyWarning => row.submissions.early_warning_ms = Some(at),
        Milestone::Notification => row.submissions.notification_ms = Some(at),
        Milestone::FinalReport => row.submissions.final_report_ms = Some(at),
    }
    let c = clock(row.aware_at_ms, &row.submissions, now);
    let late = matches!(
        c.state(milestone),
        MilestoneState::Submitted { late: true, .. }
    );
    let mut entry = format!(
        "{} submitted at {at}{}",
        milestone.title(),
        if late { " (after the deadline)" } else { "" }
    );
    if let Some(r) = &body.authority_reference {
        entry.push_str(&format!("; authority reference {r}"));
    }
    if let Some(n) = &body.note {
        entry.push_str(&format!("; {n}"));
    }
    state
        .store
        .add_timeline(&id, &admin.username, &entry, now)
        .await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "incident.submit",
        Some(&tenant_id),
        &id,
        serde_json::Value::Null,
        serde_json::json!({"milestone": milestone, "submitted_at_ms": at, "late": late,
                           "authority_reference": body.authority_reference}),
    )
    .await?;
    let count = state.store.incident_event_count(&id).await?;
    Ok(Json(view(&row, count, now)))
}

/// Closes an incident.
#[utoipa::path(post, path = "/api/tenants/{tenant_id}/incidents/{incident_id}/close",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("incident_id" = String, Path, description = "incident id")),
    request_body = CloseIncident,
    responses((status = 200, body = IncidentView), (status = 409)))]
pub async fn close(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
    Json(body): Json<CloseIncident>,
) -> Result<Json<IncidentView>, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::IncidentsManage, &tenant_id).await?;
    let mut row = load(&state, &tenant_id, &id).await?;
    if row.closed_at_ms.is_some() {
        return Err(ApiError::conflict("the incident is already closed"));
    }
    let note = body.note.trim();
    if note.is_empty() || note.len() > 5_000 {
        return Err(ApiError::bad_request("note: 1-5,000 characters"));
    }
    let now = now_ms();
    sqlx::query("UPDATE incidents SET closed_at_ms = $1 WHERE id = $2 AND closed_at_ms IS NULL")
        .bind(now)
        .bind(&id)
        .execute(state.store.pool())
        .await
        .map_err(StoreError::from)?;
    row.closed_at_ms = Some(now);
    state
        .store
        .add_timeline(&id, &admin.username, &format!("closed: {note}"), now)
        .await?;
    crate::admin_audit::record(
        &state,
        &admin,
        "incident.close",
        Some(&tenant_id),
        &id,
        serde_json::json!({"status": "open"}),
        serde_json::json!({"status": "closed", "note": note}),
    )
    .await?;
    let count = state.store.incident_event_count(&id).await?;
    Ok(Json(view(&row, count, now)))
}

/// Report format.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct ReportQuery {
    /// `json` (default) or `markdown`.
    #[serde(default)]
    pub format: Option<String>,
}

fn utc(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => ms.to_string(),
    }
}

/// Markdown cell text: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The human-readable incident report.
pub fn markdown_report(d: &IncidentDetail, generated_at_ms: i64) -> String {
    let i = &d.incident;
    let mut out = String::new();
    out.push_str(&format!("# Incident report: {}\n\n", cell(&i.title)));
    out.push_str(&format!(
        "| | |\n|---|---|\n| Incident | `{}` |\n| Tenant | `{}` |\n| Severity | {} |\n| Status | {} |\n| Aware since | {} |\n| Opened | {} by {} |\n",
        i.id,
        i.tenant_id,
        i.severity.as_str(),
        i.status,
        utc(i.aware_at_ms),
        utc(i.created_at_ms),
        cell(&i.created_by)
    ));
    if let Some(c) = i.closed_at_ms {
        out.push_str(&format!("| Closed | {} |\n", utc(c)));
    }
    out.push_str(&format!(
        "| Report generated | {} |\n\n",
        utc(generated_at_ms)
    ));
    if !i.description.is_empty() {
        out.push_str("## Description\n\n");
        out.push_str(&i.description);
        out.push_str("\n\n");
    }
    out.push_str("## NIS2 Article 23 reporting\n\n| Milestone | Deadline | Submitted | Status |\n|---|---|---|---|\n");
    for m in &i.milestones {
        let title = Milestone::parse(&m.milestone).map_or("?", Milestone::title);
        let status = match (m.submitted_at_ms, &m.countdown) {
            (Some(_), _) if m.late => "submitted late".to_string(),
            (Some(_), _) => "submitted on time".to_string(),
            (None, Some(c)) if i.status == "closed" => format!("not submitted ({c} at closing)"),
            (None, Some(c)) => format!("pending: {c}"),
            (None, None) => "pending".to_string(),
        };
        out.push_str(&format!(
            "| {title} | {} | {} | {status} |\n",
            utc(m.due_ms),
            m.submitted_at_ms.map_or("—".to_string(), utc)
        ));
    }
    out.push_str(&format!(
        "\n## Evidence: {} audit events\n\nEach event can be checked offline against the tenant's signed checkpoint (`sase-audit verify`, inclusion proof by log index).\n\n| Time | Device | Seq | Log index | Kind | Decision | Reason | Method | Path | Reference |\n|---|---|---|---|---|---|---|---|---|---|\n",
        d.events.len()
    ));
    for e in &d.events {
        let ev = &e.event;
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | `{}` |\n",
            ev["ts_ms"].as_i64().map_or("?".to_string(), utc),
            e.device_id,
            e.seq,
            e.log_index.map_or("—".to_string(), |i| i.to_string()),
            cell(ev["kind"].as_str().unwrap_or("")),
            cell(ev["decision"].as_str().unwrap_or("")),
            cell(ev["reason"].as_str().unwrap_or("")),
            cell(ev["http"]["method"].as_str().unwrap_or("")),
            cell(ev["http"]["path"].as_str().unwrap_or("")),
            e.reference
        ));
    }
    out.push_str("\n## Timeline\n\n| Time | Who | What |\n|---|---|---|\n");
    for t in &d.timeline {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            utc(t.at_ms),
            cell(&t.actor),
            cell(&t.entry)
        ));
    }
    out
}

/// Exports the incident report (JSON, or a Markdown document with `format=markdown`).
#[utoipa::path(get, path = "/api/tenants/{tenant_id}/incidents/{incident_id}/report",
    params(("tenant_id" = String, Path, description = "tenant id"),
           ("incident_id" = String, Path, description = "incident id"),
           ReportQuery),
    responses((status = 200, description = "the report"), (status = 400), (status = 404)))]
pub async fn report(
    State(state): State<SharedState>,
    admin: Admin,
    Path((tenant_id, id)): Path<(String, String)>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    rbac::authorize_tenant(&state, &admin, Permission::AuditRead, &tenant_id).await?;
    let d = detail(&state, &tenant_id, &id).await?;
    let now = now_ms();
    match query.format.as_deref().unwrap_or("json") {
        "json" => Ok((
            [(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"incident-{id}.json\""),
            )],
            Json(serde_json::json!({
                "format": "sase-incident-report-v1",
                "generated_at_ms": now,
                "incident": d.incident,
                "events": d.events,
                "timeline": d.timeline,
            })),
        )
            .into_response()),
        "markdown" => Ok((
            [
                (
                    header::CONTENT_TYPE,
                    "text/markdown; charset=utf-8".to_string(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"incident-{id}.md\""),
                ),
            ],
            markdown_report(&d, now),
        )
            .into_response()),
        _ => Err(ApiError::bad_request("format: json or markdown")),
    }
}

/// How long before a deadline the approaching alert is raised.
fn warn_before(m: Milestone) -> i64 {
    match m {
        Milestone::EarlyWarning => 6 * 3_600_000,
        Milestone::Notification => 12 * 3_600_000,
        Milestone::FinalReport => 3 * 86_400_000,
    }
}

/// One pass of the deadline watch at `now`: raises the alerts due and remembers them.
///
/// # Errors
/// Store failures.
pub async fn check_deadlines(state: &SharedState, now: i64) -> Result<u32, StoreError> {
    let mut raised = 0;
    for row in state.store.incident_rows(None, true).await? {
        let c = clock(row.aware_at_ms, &row.submissions, now);
        let mut alerted = row.alerted.clone();
        for m in Milestone::ALL {
            let MilestoneState::Pending {
                due_ms,
                remaining_ms,
            } = *c.state(m)
            else {
                continue;
            };
            let (key, kind, what) = if remaining_ms < 0 {
                (
                    format!("{}:missed", m.as_str()),
                    "incident_deadline_missed",
                    format!(
                        "{} was due {} and is {}",
                        m.title(),
                        utc(due_ms),
                        format_remaining(remaining_ms)
                    ),
                )
            } else if remaining_ms <= warn_before(m) {
                (
                    format!("{}:soon", m.as_str()),
                    "incident_deadline_approaching",
                    format!(
                        "{} is due {} ({} left)",
                        m.title(),
                        utc(due_ms),
                        format_remaining(remaining_ms)
                    ),
                )
            } else {
                continue;
            };
            if alerted.split_whitespace().any(|k| k == key) {
                continue;
            }
            state
                .store
                .insert_alert(&Alert {
                    id: new_id(),
                    tenant_id: Some(row.tenant_id.clone()),
                    device_id: None,
                    kind: kind.to_string(),
                    detail: format!("incident {} \"{}\": {what}", row.id, row.title),
                    created_at_ms: now,
                })
                .await?;
            alerted.push(' ');
            alerted.push_str(&key);
            raised += 1;
        }
        if alerted != row.alerted {
            sqlx::query("UPDATE incidents SET alerted = $1 WHERE id = $2")
                .bind(alerted.trim())
                .bind(&row.id)
                .execute(state.store.pool())
                .await?;
        }
    }
    Ok(raised)
}

/// Runs [`check_deadlines`] every `period`, forever.
pub async fn run_deadline_watch(state: SharedState, period: Duration) {
    loop {
        if let Err(err) = check_deadlines(&state, now_ms()).await {
            tracing::warn!(%err, "incident deadline watch failed");
        }
        tokio::time::sleep(period).await;
    }
}
