//! The audit explorer: filters (decision, reference id, resource, reason, identity, device,
//! time range), a live tail that re-runs the query every 2 s, the detail of one event with its
//! chain status (the device chain re-verified by the control plane, the event's inclusion proof
//! against the tenant's signed checkpoint), and the tenant's JSON-lines export (checkable
//! offline with `sase-audit verify`).

use sase_model::audit::Decision;
use sase_model::AuditEvent;
use wasm_bindgen::{JsCast, JsValue};
use yew::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{
    badge, empty, fmt_time, input_value, load_view, no_tenant, ErrorBox, PageHeader, Tone,
};
use crate::shell::{use_interval, use_load, use_shell, Load};
use crate::views::{AuditPage as Page, ChainReport, InclusionProof};

/// Live-tail period (ms).
const TAIL_MS: u32 = 2_000;

/// The filter form's values.
#[derive(Debug, Clone, Default, PartialEq)]
struct Filters {
    decision: String,
    reference: String,
    resource: String,
    reason: String,
    identity: String,
    device: String,
    from: String,
    to: String,
    limit: String,
}

/// A `datetime-local` value as Unix ms (browser time zone).
fn local_ms(value: &str) -> Option<i64> {
    if value.trim().is_empty() {
        return None;
    }
    let ms = js_sys::Date::new(&JsValue::from_str(value)).get_time();
    (!ms.is_nan()).then_some(ms as i64)
}

impl Filters {
    fn query(&self, tenant: &str) -> String {
        let mut q = format!("/api/audit?tenant={}", api::enc(tenant));
        for (key, value) in [
            ("decision", &self.decision),
            ("reference", &self.reference),
            ("resource", &self.resource),
            ("reason", &self.reason),
            ("identity", &self.identity),
            ("device", &self.device),
        ] {
            let value = value.trim();
            if !value.is_empty() {
                q.push_str(&format!("&{key}={}", api::enc(value)));
            }
        }
        if let Some(ms) = local_ms(&self.from) {
            q.push_str(&format!("&from_ms={ms}"));
        }
        if let Some(ms) = local_ms(&self.to) {
            q.push_str(&format!("&to_ms={ms}"));
        }
        let limit = if self.limit.is_empty() {
            "100"
        } else {
            &self.limit
        };
        q.push_str(&format!("&limit={limit}"));
        q
    }

    fn export(&self, tenant: &str) -> String {
        let mut q = format!("/api/tenants/{}/audit/export?", api::enc(tenant));
        let mut parts = Vec::new();
        if !self.device.trim().is_empty() {
            parts.push(format!("device={}", api::enc(self.device.trim())));
        }
        if let Some(ms) = local_ms(&self.from) {
            parts.push(format!("from_ms={ms}"));
        }
        if let Some(ms) = local_ms(&self.to) {
            parts.push(format!("to_ms={ms}"));
        }
        q.push_str(&parts.join("&"));
        q
    }
}

/// The audit page.
#[function_component]
pub fn AuditPage() -> Html {
    let shell = use_shell();
    let Some(tenant_id) = shell.tenant_id.clone() else {
        return html! { <><PageHeader title="Audit" />{ no_tenant() }</> };
    };
    html! { <Explorer key={tenant_id.clone()} tenant_id={tenant_id.clone()} /> }
}

#[derive(Properties, PartialEq)]
struct ExplorerProps {
    tenant_id: String,
}

fn decision_badge(d: Decision) -> Html {
    match d {
        Decision::Allow => badge(Tone::Good, "allow"),
        Decision::Deny => badge(Tone::Bad, "deny"),
    }
}

#[function_component]
fn Explorer(props: &ExplorerProps) -> Html {
    let form = use_state(Filters::default);
    let applied = use_state(Filters::default);
    let tail = use_state(|| false);
    let selected = use_state(|| None::<AuditEvent>);
    let export_state = use_state(|| None::<Result<String, ApiError>>);
    let page = use_load::<Page>(Some(applied.query(&props.tenant_id)));
    use_interval(TAIL_MS, *tail, page.reload.clone());

    let field = |name: &'static str| {
        let form = form.clone();
        Callback::from(move |e: Event| {
            let mut f = (*form).clone();
            let v = input_value(&e);
            match name {
                "decision" => f.decision = v,
                "reference" => f.reference = v,
                "resource" => f.resource = v,
                "reason" => f.reason = v,
                "identity" => f.identity = v,
                "device" => f.device = v,
                "from" => f.from = v,
                "to" => f.to = v,
                _ => f.limit = v,
            }
            form.set(f);
        })
    };
    let onsubmit = {
        let (form, applied, reload) = (form.clone(), applied.clone(), page.reload.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if *applied == *form {
                reload.emit(());
            } else {
                applied.set((*form).clone());
            }
        })
    };
    let clear = {
        let (form, applied) = (form.clone(), applied.clone());
        Callback::from(move |_| {
            form.set(Filters::default());
            applied.set(Filters::default());
        })
    };
    let export = {
        let (applied, export_state, tenant) = (
            applied.clone(),
            export_state.clone(),
            props.tenant_id.clone(),
        );
        Callback::from(move |_| {
            let path = applied.export(&tenant);
            let export_state = export_state.clone();
            let name = format!("audit-{tenant}.jsonl");
            export_state.set(Some(Ok("Preparing the export…".into())));
            wasm_bindgen_futures::spawn_local(async move {
                export_state.set(Some(match api::get_text(&path).await {
                    Ok(body) => {
                        let lines = body.lines().count();
                        match download(&name, &body) {
                            Ok(()) => Ok(format!("Exported {lines} lines to {name} (verify offline with sase-audit verify).")),
                            Err(e) => Err(ApiError { status: 0, code: "download".into(), message: e, errors: Vec::new() }),
                        }
                    }
                    Err(err) => Err(err),
                }));
            });
        })
    };
    let value = |v: &String| v.clone();
    html! {
        <>
            <PageHeader title="Audit"
                subtitle="Every decision the edges made, chained per device and signed per tenant.">
                <label class="row" for="live-tail">
                    <input id="live-tail" type="checkbox" checked={*tail}
                        onchange={{ let t = tail.clone(); move |_| t.set(!*t) }} />
                    { " Live tail" }
                </label>
                <button class="button" onclick={export}>{ "Export (JSON lines)" }</button>
            </PageHeader>
            <form class="card" onsubmit={onsubmit} aria-label="Filters">
                <div class="row">
                    <label for="f-decision">{ "Decision" }
                        <select id="f-decision" onchange={field("decision")}>
                            <option value="" selected={form.decision.is_empty()}>{ "any" }</option>
                            <option value="allow" selected={form.decision == "allow"}>{ "allow" }</option>
                            <option value="deny" selected={form.decision == "deny"}>{ "deny" }</option>
                        </select>
                    </label>
                    <label for="f-reference">{ "Reference id" }
                        <input id="f-reference" value={value(&form.reference)} onchange={field("reference")} size="26" />
                    </label>
                    <label for="f-resource">{ "Resource" }
                        <input id="f-resource" value={value(&form.resource)} onchange={field("resource")} size="12" />
                    </label>
                    <label for="f-reason">{ "Reason" }
                        <input id="f-reason" value={value(&form.reason)} onchange={field("reason")} size="14" placeholder="scope_missing" />
                    </label>
                    <label for="f-identity">{ "Identity" }
                        <input id="f-identity" value={value(&form.identity)} onchange={field("identity")} size="18" placeholder="issuer|subject" />
                    </label>
                    <label for="f-device">{ "Device id" }
                        <input id="f-device" value={value(&form.device)} onchange={field("device")} size="14" />
                    </label>
                    <label for="f-from">{ "From" }
                        <input id="f-from" type="datetime-local" value={value(&form.from)} onchange={field("from")} />
                    </label>
                    <label for="f-to">{ "To" }
                        <input id="f-to" type="datetime-local" value={value(&form.to)} onchange={field("to")} />
                    </label>
                    <label for="f-limit">{ "At most" }
                        <select id="f-limit" onchange={field("limit")}>
                            { for ["100", "50", "500", "1000"].iter().map(|l| html! {
                                <option value={*l} selected={form.limit == *l || (form.limit.is_empty() && *l == "100")}>{ *l }</option>
                            }) }
                        </select>
                    </label>
                    <button class="button primary" type="submit">{ "Search" }</button>
                    <button class="button" type="button" onclick={clear}>{ "Clear" }</button>
                </div>
            </form>
            if let Some(state) = &*export_state {
                { match state {
                    Ok(text) => html! { <p class="notice" role="status">{ text }</p> },
                    Err(err) => html! { <ErrorBox error={err.clone()} /> },
                } }
            }
            <div class="grid-2">
                <section aria-label="Events">
                    { load_view(&page.state, "audit events", &page.reload, |p: &Page| {
                        if p.events.is_empty() {
                            return empty("No event matches these filters.");
                        }
                        html! {
                            <div class="table-wrap">
                                <table id="audit-events">
                                    <thead><tr>
                                        <th>{ "Time" }</th><th>{ "Decision" }</th><th>{ "Reason" }</th>
                                        <th>{ "Request" }</th><th class="num">{ "Status" }</th>
                                        <th>{ "Identity" }</th><th>{ "Reference" }</th>
                                    </tr></thead>
                                    <tbody>
                                    { for p.events.iter().map(|ev| {
                                        let is_selected = selected.as_ref().is_some_and(|s| s.device_id == ev.device_id && s.seq == ev.seq);
                                        let pick = { let (s, ev) = (selected.clone(), ev.clone()); Callback::from(move |_| s.set(Some(ev.clone()))) };
                                        html! {
                                            <tr key={format!("{}-{}", ev.device_id, ev.seq)} class={classes!(is_selected.then_some("selected"))}
                                                data-reference={ev.reference.clone()}>
                                                <td><button class="linklike" onclick={pick}
                                                    aria-label={format!("Details of event {} of {}", ev.seq, ev.device_id)}>{ fmt_time(ev.ts_ms) }</button></td>
                                                <td>{ decision_badge(ev.decision) }</td>
                                                <td class="mono">{ ev.reason.as_str() }</td>
                                                <td class="mono">{ ev.http.as_ref().map_or_else(|| ev.kind.as_str().to_string(), |h| format!("{} {}", h.method, h.path)) }</td>
                                                <td class="num">{ ev.http.as_ref().map_or_else(String::new, |h| h.status.to_string()) }</td>
                                                <td>{ ev.identity.clone().unwrap_or_else(|| "—".into()) }</td>
                                                <td class="mono">{ &ev.reference }</td>
                                            </tr>
                                        }
                                    }) }
                                    </tbody>
                                </table>
                            </div>
                        }
                    }) }
                </section>
                <aside aria-live="polite">
                    if let Some(ev) = &*selected {
                        <EventDetail event={ev.clone()} tenant_id={props.tenant_id.clone()}
                            close={{ let s = selected.clone(); Callback::from(move |_| s.set(None)) }} />
                    } else {
                        <div class="card"><p class="muted">{ "Pick an event's time to see its detail and chain status." }</p></div>
                    }
                </aside>
            </div>
        </>
    }
}

/// Offers `body` as a file download (a Blob URL on a temporary link).
fn download(name: &str, body: &str) -> Result<(), String> {
    let fail = |e: JsValue| format!("the browser refused the download: {e:?}");
    let parts = js_sys::Array::of1(&JsValue::from_str(body));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("application/x-ndjson");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).map_err(fail)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(fail)?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let a = document
        .create_element("a")
        .map_err(fail)?
        .dyn_into::<web_sys::HtmlAnchorElement>()
        .map_err(|_| "not a link".to_string())?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    web_sys::Url::revoke_object_url(&url).map_err(fail)?;
    Ok(())
}

#[derive(Properties, PartialEq)]
struct DetailProps {
    event: AuditEvent,
    tenant_id: String,
    close: Callback<MouseEvent>,
}

/// One event: its fields, its device chain's status and its inclusion proof.
#[function_component]
fn EventDetail(props: &DetailProps) -> Html {
    let ev = &props.event;
    let chain = use_load::<ChainReport>(Some(format!(
        "/api/devices/{}/audit/verify",
        api::enc(&ev.device_id)
    )));
    let proof = use_load::<InclusionProof>(Some(format!(
        "/api/tenants/{}/audit/proof?device={}&seq={}",
        api::enc(&props.tenant_id),
        api::enc(&ev.device_id),
        ev.seq
    )));
    let row = |k: &str, v: String| html! { <><dt>{ k.to_string() }</dt><dd>{ v }</dd></> };
    html! {
        <div class="card" id="event-detail">
            <div class="page-header">
                <h2>{ format!("Event {} of {}", ev.seq, ev.device_id) }</h2>
                <button class="button" onclick={props.close.clone()}>{ "Close" }</button>
            </div>
            <dl class="details">
                { row("Time", fmt_time(ev.ts_ms)) }
                <dt>{ "Decision" }</dt><dd>{ decision_badge(ev.decision) }{ format!(" {}", ev.reason.as_str()) }</dd>
                { row("Kind", ev.kind.as_str().to_string()) }
                { row("Reference", ev.reference.clone()) }
                { row("Identity", ev.identity.clone().unwrap_or_else(|| "—".into())) }
                { row("Policy version", format!("v{}", ev.policy_version)) }
                if let Some(h) = &ev.http {
                    { row("Request", format!("{} {}", h.method, h.path)) }
                    { row("Resource / route", format!("{} / {}", if h.resource.is_empty() { "—" } else { &h.resource }, if h.route.is_empty() { "—" } else { &h.route })) }
                    { row("Status", h.status.to_string()) }
                    { row("Latency", format!("{:.1} ms", h.latency_us as f64 / 1000.0)) }
                    { row("Client", h.client_ip.clone()) }
                    if !h.scopes.is_empty() { { row("Token scopes", h.scopes.join(" ")) } }
                    if !h.groups.is_empty() { { row("Groups", h.groups.join(" ")) } }
                }
                if let Some(d) = &ev.detail { { row("Detail", d.clone()) } }
                if let Some(w) = &ev.waf { { row("WAF", format!("{w:?}")) } }
                { row("Previous hash", ev.prev_hash.clone()) }
            </dl>
            <h3>{ "Chain status" }</h3>
            <div id="chain-status">
            { load_view(&chain.state, "the device chain", &chain.reload, |c: &ChainReport| html! {
                <p>
                    if c.intact { { badge(Tone::Good, "chain intact") } } else { { badge(Tone::Bad, "chain broken") } }
                    { format!(" {} event(s) of this device re-verified, head at seq {}.", c.events, c.head_seq) }
                    if let Some(e) = &c.first_error { <br/><span class="error-text">{ format!("First problem: {e}") }</span> }
                </p>
            }) }
            { match &*proof.state {
                Load::Ready(p) => html! {
                    <p>{ badge(Tone::Good, "in the signed log") }
                       { format!(" log index {}, checkpoint over {} event(s){}, proof of {} hash(es).",
                            p.log_index, p.checkpoint.tree_size,
                            p.checkpoint.timestamp_ms.map(|t| format!(" signed {}", fmt_time(t))).unwrap_or_default(),
                            p.proof.len()) }</p>
                },
                Load::Failed(e) if e.status == 404 => html! {
                    <p>{ badge(Tone::Warn, "not in a checkpoint yet") }{ format!(" {}", e.message) }</p>
                },
                other => load_view(other, "the inclusion proof", &proof.reload, |_| html! {}),
            } }
            </div>
        </div>
    }
}
