//! The Incidents page: the selected tenant's incidents with their NIS2 reporting clocks (early
//! warning 24 h and notification 72 h after awareness, final report one month after the
//! notification (or its deadline); computed by the
//! control plane, `sase_model::incident`), counting down live in the browser every second;
//! open an incident, record a milestone's submission, close it, download its report.

use sase_model::incident::{format_remaining, Milestone};
use serde::{Deserialize, Serialize};
use yew::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{
    badge, empty, fmt_time, input_value, load_view, no_tenant, now_ms, ErrorBox, PageHeader, Tone,
};
use crate::shell::{use_interval, use_load, use_shell};

/// One reporting milestone (`IncidentView.milestones[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MilestoneView {
    /// `early_warning`, `notification`, `final_report`.
    pub milestone: String,
    /// Deadline (Unix ms).
    pub due_ms: i64,
    /// When submitted.
    #[serde(default)]
    pub submitted_at_ms: Option<i64>,
    /// Submitted after the deadline.
    pub late: bool,
}

/// `GET /api/tenants/{id}/incidents` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IncidentView {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// `low` … `critical`.
    pub severity: String,
    /// `open` or `closed`.
    pub status: String,
    /// Awareness (Unix ms): the clocks count from here.
    pub aware_at_ms: i64,
    /// Who opened it.
    pub created_by: String,
    /// The three milestones.
    pub milestones: Vec<MilestoneView>,
    /// Linked audit events.
    pub event_count: u64,
}

#[derive(Serialize)]
struct NewIncident {
    title: String,
    description: String,
    severity: String,
}

#[derive(Serialize)]
struct NewSubmission {
    milestone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    authority_reference: Option<String>,
}

#[derive(Serialize)]
struct CloseIncident {
    note: String,
}

/// A milestone's clock for people, at `now`: submitted (on time or late), or time left /
/// overdue, with a tone (overdue bad, under 6 h warn).
pub fn clock_text(m: &MilestoneView, now: i64) -> (Tone, String) {
    match m.submitted_at_ms {
        Some(at) if m.late => (Tone::Warn, format!("submitted late, {}", fmt_time(at))),
        Some(at) => (Tone::Good, format!("submitted {}", fmt_time(at))),
        None => {
            let left = m.due_ms - now;
            let tone = if left < 0 {
                Tone::Bad
            } else if left < 6 * 3_600_000 {
                Tone::Warn
            } else {
                Tone::Plain
            };
            let text = format_remaining(left);
            (
                tone,
                if left < 0 {
                    text
                } else {
                    format!("{text} left")
                },
            )
        }
    }
}

fn milestone_title(code: &str) -> String {
    Milestone::parse(code).map_or_else(|| code.replace('_', " "), |m| m.title().to_string())
}

/// The Incidents page.
#[function_component]
pub fn IncidentsPage() -> Html {
    let shell = use_shell();
    let Some(tenant_id) = shell.tenant_id.clone() else {
        return html! { <><PageHeader title="Incidents" />{ no_tenant() }</> };
    };
    html! { <Incidents key={tenant_id.clone()} tenant_id={tenant_id.clone()} /> }
}

#[derive(Properties, PartialEq)]
struct Props {
    tenant_id: String,
}

#[function_component]
fn Incidents(props: &Props) -> Html {
    let shell = use_shell();
    let base = format!("/api/tenants/{}/incidents", api::enc(&props.tenant_id));
    let list = use_load::<Vec<IncidentView>>(Some(base.clone()));
    // The countdowns tick every second; the list itself refreshes every 30 s.
    let now = use_state(now_ms);
    use_interval(1_000, true, {
        let now = now.clone();
        Callback::from(move |()| now.set(now_ms()))
    });
    use_interval(30_000, true, list.reload.clone());
    let can_write = shell.me.can("incidents.manage");
    html! {
        <>
            <PageHeader title="Incidents"
                subtitle="Significant incidents and their NIS2 reporting deadlines: early warning within 24 h, notification within 72 h, final report within one month of the notification." />
            <div class="grid-2">
                <section aria-labelledby="incidents-title">
                    <h2 id="incidents-title" class="visually-hidden">{ "Incidents" }</h2>
                    { load_view(&list.state, "incidents", &list.reload, |items: &Vec<IncidentView>| {
                        if items.is_empty() {
                            return empty("No incident recorded for this tenant.");
                        }
                        html! { <>{ for items.iter().map(|i| html! {
                            <IncidentCard key={i.id.clone()} incident={i.clone()} now={*now} base={base.clone()}
                                can_write={can_write} changed={list.reload.clone()} />
                        }) }</> }
                    }) }
                </section>
                if can_write {
                    <NewIncidentForm base={base.clone()} done={list.reload.clone()} />
                }
            </div>
        </>
    }
}

#[derive(Properties, PartialEq)]
struct CardProps {
    incident: IncidentView,
    now: i64,
    base: String,
    can_write: bool,
    changed: Callback<()>,
}

#[function_component]
fn IncidentCard(props: &CardProps) -> Html {
    let i = &props.incident;
    let error = use_state(|| None::<ApiError>);
    let path = format!("{}/{}", props.base, api::enc(&i.id));
    let post = {
        let (error, changed) = (error.clone(), props.changed.clone());
        move |url: String, body: serde_json::Value| {
            let (error, changed) = (error.clone(), changed.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, serde_json::Value>(&url, &body).await {
                    Ok(_) => {
                        error.set(None);
                        changed.emit(());
                    }
                    Err(e) => error.set(Some(e)),
                }
            });
        }
    };
    let severity = match i.severity.as_str() {
        "critical" => badge(Tone::Bad, "Critical"),
        "high" => badge(Tone::Bad, "High"),
        "medium" => badge(Tone::Warn, "Medium"),
        s => badge(Tone::Plain, s.to_string()),
    };
    let open = i.status == "open";
    html! {
        <article class="card incident" data-incident={i.id.clone()} aria-label={i.title.clone()}>
            <div class="row spread">
                <h3>{ &i.title }</h3>
                <span>{ severity }{ " " }{ if open { badge(Tone::Warn, "Open") } else { badge(Tone::Plain, "Closed") } }</span>
            </div>
            if !i.description.is_empty() { <p>{ &i.description }</p> }
            <p class="muted">{ format!("Aware since {} · opened by {} · {} linked audit event(s)", fmt_time(i.aware_at_ms), i.created_by, i.event_count) }</p>
            <table class="deadlines">
                <thead><tr><th>{ "Milestone" }</th><th>{ "Due" }</th><th>{ "Clock" }</th>
                    if props.can_write && open { <th><span class="visually-hidden">{ "Actions" }</span></th> }</tr></thead>
                <tbody>
                { for i.milestones.iter().map(|m| {
                    let (tone, text) = clock_text(m, props.now);
                    let submit = {
                        let (post, url, ms) = (post.clone(), format!("{path}/submissions"), m.milestone.clone());
                        move |_| post(url.clone(), serde_json::to_value(NewSubmission { milestone: ms.clone(), authority_reference: None }).unwrap_or_default())
                    };
                    html! {
                        <tr data-milestone={m.milestone.clone()}>
                            <td>{ milestone_title(&m.milestone) }</td>
                            <td>{ fmt_time(m.due_ms) }</td>
                            <td class="countdown">{ badge(tone, text) }</td>
                            if props.can_write && open {
                                <td>if m.submitted_at_ms.is_none() {
                                    <button class="button" type="button" onclick={submit}
                                        aria-label={format!("Mark {} submitted", milestone_title(&m.milestone))}>{ "Mark submitted" }</button>
                                }</td>
                            }
                        </tr>
                    }
                }) }
                </tbody>
            </table>
            <div class="row">
                <a class="button" href={format!("{path}/report?format=markdown")} download="">{ "Download report" }</a>
                if props.can_write && open {
                    <button class="button" type="button"
                        onclick={{ let (post, url) = (post.clone(), format!("{path}/close")); move |_| post(url.clone(), serde_json::to_value(CloseIncident { note: "closed from the console".into() }).unwrap_or_default()) }}>
                        { "Close incident" }
                    </button>
                }
            </div>
            if let Some(e) = &*error { <ErrorBox error={e.clone()} /> }
        </article>
    }
}

#[derive(Properties, PartialEq)]
struct NewProps {
    base: String,
    done: Callback<()>,
}

#[function_component]
fn NewIncidentForm(props: &NewProps) -> Html {
    let title = use_state(String::new);
    let description = use_state(String::new);
    let severity = use_state(|| "high".to_string());
    let error = use_state(|| None::<ApiError>);
    let busy = use_state(|| false);
    let onsubmit = {
        let (title, description, severity, error, busy) = (
            title.clone(),
            description.clone(),
            severity.clone(),
            error.clone(),
            busy.clone(),
        );
        let (base, done) = (props.base.clone(), props.done.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = NewIncident {
                title: title.trim().to_string(),
                description: description.trim().to_string(),
                severity: (*severity).clone(),
            };
            let (title, description, error, busy, base, done) = (
                title.clone(),
                description.clone(),
                error.clone(),
                busy.clone(),
                base.clone(),
                done.clone(),
            );
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, serde_json::Value>(&base, &body).await {
                    Ok(_) => {
                        error.set(None);
                        title.set(String::new());
                        description.set(String::new());
                        done.emit(());
                    }
                    Err(e) => error.set(Some(e)),
                }
                busy.set(false);
            });
        })
    };
    html! {
        <form class="card" onsubmit={onsubmit} aria-labelledby="new-incident-title">
            <h2 id="new-incident-title">{ "Open an incident" }</h2>
            <p class="muted">{ "The deadlines count from now (the moment you became aware)." }</p>
            <div class="field">
                <label for="incident-title">{ "Title" }</label>
                <input id="incident-title" required=true maxlength="200" value={(*title).clone()}
                    oninput={{ let t = title.clone(); move |e: InputEvent| t.set(input_value(&e)) }} />
            </div>
            <div class="field">
                <label for="incident-severity">{ "Severity" }</label>
                <select id="incident-severity" onchange={{ let s = severity.clone(); move |e: Event| s.set(input_value(&e)) }}>
                    { for [("low", "Low"), ("medium", "Medium"), ("high", "High"), ("critical", "Critical")].iter().map(|(v, l)| html! {
                        <option value={*v} selected={*severity == *v}>{ *l }</option>
                    }) }
                </select>
            </div>
            <div class="field">
                <label for="incident-description">{ "What is known" }</label>
                <textarea id="incident-description" rows="4" value={(*description).clone()}
                    oninput={{ let d = description.clone(); move |e: InputEvent| d.set(input_value(&e)) }} />
            </div>
            <button class="button primary" type="submit" disabled={*busy}>{ "Open incident" }</button>
            if let Some(e) = &*error { <ErrorBox error={e.clone()} /> }
        </form>
    }
}
