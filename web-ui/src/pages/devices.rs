//! Devices of the selected tenant: state (online, lagging, offline, never connected,
//! decommissioned), last seen, edge version, applied vs expected bundle, health figures
//! (spool, load, memory); refreshed every few seconds. Claim codes: create one for a site
//! (shown once), list a site's codes. Decommissioning with a reason.

use sase_model::fleet::Site;
use yew::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{
    badge, empty, fmt_ago, fmt_time, input_value, load_view, no_tenant, now_ms, ErrorBox,
    PageHeader, Tone,
};
use crate::shell::{use_interval, use_load, use_shell, Load};
use crate::views::{ClaimCode, ClaimCodeRequest, Decommission, DeviceHealth, NewClaimCode};

/// How often the list refreshes (ms).
const POLL_MS: u32 = 3_000;

/// A device state for people.
pub fn state_badge(state: &str) -> Html {
    match state {
        "ok" => badge(Tone::Good, "Online"),
        "lagging" => badge(Tone::Warn, "Online, bundle lagging"),
        "silent" => badge(Tone::Bad, "Offline"),
        "pending" => badge(Tone::Plain, "Never connected"),
        "decommissioned" => badge(Tone::Plain, "Decommissioned"),
        other => badge(Tone::Plain, other.to_string()),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".to_string(), |v| v.to_string())
}

/// The devices page.
#[function_component]
pub fn DevicesPage() -> Html {
    let shell = use_shell();
    let Some(tenant_id) = shell.tenant_id.clone() else {
        return html! { <><PageHeader title="Devices" />{ no_tenant() }</> };
    };
    html! { <Devices key={tenant_id.clone()} tenant_id={tenant_id.clone()} /> }
}

#[derive(Properties, PartialEq)]
struct DevicesProps {
    tenant_id: String,
}

#[function_component]
fn Devices(props: &DevicesProps) -> Html {
    let shell = use_shell();
    let t = api::enc(&props.tenant_id);
    let health = use_load::<Vec<DeviceHealth>>(Some(format!("/api/tenants/{t}/fleet/health")));
    let sites = use_load::<Vec<Site>>(Some(format!("/api/tenants/{t}/sites")));
    use_interval(POLL_MS, true, health.reload.clone());
    let decommissioning = use_state(|| None::<DeviceHealth>);
    let now = now_ms();
    let site_name = {
        let sites = (*sites.state).clone();
        move |id: &str| match &sites {
            Load::Ready(list) => list
                .iter()
                .find(|s| s.id == id)
                .map_or_else(|| id.to_string(), |s| s.name.clone()),
            _ => id.to_string(),
        }
    };
    let can_write = shell.me.can("sites.write");
    let tenant_name = shell.tenant().map(|t| t.name.clone()).unwrap_or_default();
    html! {
        <>
            <PageHeader title="Devices"
                subtitle={format!("Edges of {tenant_name}: state, versions and health, refreshed every {} s.", POLL_MS / 1000)}>
                <button class="button" onclick={{ let r = health.reload.clone(); move |_| r.emit(()) }}>{ "Refresh" }</button>
            </PageHeader>
            <div class="grid-2">
                <section aria-labelledby="devices-title">
                    <h2 id="devices-title" class="visually-hidden">{ "Devices" }</h2>
                    { load_view(&health.state, "devices", &health.reload, |list: &Vec<DeviceHealth>| {
                        if list.is_empty() {
                            return empty("No device yet: create a claim code and enrol an edge with it (sase-edge enroll --claim <code>).");
                        }
                        html! {
                            <div class="table-wrap">
                                <table id="devices">
                                    <thead><tr>
                                        <th>{ "Device" }</th><th>{ "Site" }</th><th>{ "State" }</th>
                                        <th>{ "Last seen" }</th><th>{ "Edge version" }</th>
                                        <th>{ "Bundle applied / expected" }</th><th>{ "Health" }</th>
                                        if can_write { <th><span class="visually-hidden">{ "Actions" }</span></th> }
                                    </tr></thead>
                                    <tbody>
                                    { for list.iter().map(|d| {
                                        let start = {
                                            let (dec, d) = (decommissioning.clone(), d.clone());
                                            Callback::from(move |_| dec.set(Some(d.clone())))
                                        };
                                        let bundle_tone = match (d.applied_version, d.expected_version) {
                                            (Some(a), Some(e)) if a >= e => Tone::Good,
                                            (_, Some(_)) => Tone::Warn,
                                            _ => Tone::Plain,
                                        };
                                        html! {
                                            <tr key={d.device_id.clone()} data-device={d.device_id.clone()}>
                                                <td><strong>{ &d.name }</strong><br/><span class="muted mono">{ &d.device_id }</span></td>
                                                <td>{ site_name(&d.site_id) }</td>
                                                <td class="state">{ state_badge(&d.state) }</td>
                                                <td title={d.last_seen_ms.map(fmt_time).unwrap_or_default()}>
                                                    { d.last_seen_ms.map_or_else(|| "never".to_string(), |ms| fmt_ago(ms, now)) }
                                                </td>
                                                <td>{ opt(d.edge_version.clone()) }</td>
                                                <td>{ badge(bundle_tone, format!("v{} / v{}", opt(d.applied_version), opt(d.expected_version))) }</td>
                                                <td class="muted">
                                                    { format!("spool {} · load {} · mem {}",
                                                        opt(d.spooled_events),
                                                        d.load1.map_or_else(|| "—".into(), |l| format!("{l:.2}")),
                                                        d.mem_used_percent.map_or_else(|| "—".into(), |m| format!("{m:.0} %"))) }
                                                </td>
                                                if can_write {
                                                    <td>
                                                        if d.state != "decommissioned" {
                                                            <button class="button danger" onclick={start}
                                                                aria-label={format!("Decommission {}", d.name)}>{ "Decommission…" }</button>
                                                        }
                                                    </td>
                                                }
                                            </tr>
                                        }
                                    }) }
                                    </tbody>
                                </table>
                            </div>
                        }
                    }) }
                    if let Some(device) = (*decommissioning).clone() {
                        <DecommissionForm device={device}
                            close={{ let d = decommissioning.clone(); Callback::from(move |()| d.set(None)) }}
                            done={{ let (d, r) = (decommissioning.clone(), health.reload.clone()); Callback::from(move |()| { d.set(None); r.emit(()); }) }} />
                    }
                </section>
                if shell.me.can("claim_codes.create") || shell.me.can("tenants.read") {
                    { load_view(&sites.state, "sites", &sites.reload, |list: &Vec<Site>| html! {
                        <ClaimCodes sites={list.clone()} can_create={shell.me.can("claim_codes.create")} />
                    }) }
                }
            </div>
        </>
    }
}

#[derive(Properties, PartialEq)]
struct DecommissionProps {
    device: DeviceHealth,
    close: Callback<()>,
    done: Callback<()>,
}

/// Confirms a decommissioning and asks why.
#[function_component]
fn DecommissionForm(props: &DecommissionProps) -> Html {
    let reason = use_state(String::new);
    let error = use_state(|| None::<ApiError>);
    let busy = use_state(|| false);
    let input_ref = use_node_ref();
    {
        let input_ref = input_ref.clone();
        use_effect_with(props.device.device_id.clone(), move |_| {
            if let Some(input) = input_ref.cast::<web_sys::HtmlInputElement>() {
                let _ = input.focus();
            }
        });
    }
    let onsubmit = {
        let (reason, error, busy) = (reason.clone(), error.clone(), busy.clone());
        let (id, done) = (props.device.device_id.clone(), props.done.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = Decommission {
                reason: reason.trim().to_string(),
            };
            let path = format!("/api/devices/{}/decommission", api::enc(&id));
            let (error, busy, done) = (error.clone(), busy.clone(), done.clone());
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                match api::post_no_answer(&path, Some(&body)).await {
                    Ok(()) => done.emit(()),
                    Err(err) => error.set(Some(err)),
                }
                busy.set(false);
            });
        })
    };
    let cancel = {
        let close = props.close.clone();
        Callback::from(move |_| close.emit(()))
    };
    let onkeydown = {
        let close = props.close.clone();
        Callback::from(move |e: KeyboardEvent| {
            if e.key() == "Escape" {
                close.emit(());
            }
        })
    };
    html! {
        <form class="dialog" role="dialog" aria-labelledby="decommission-title" onsubmit={onsubmit} onkeydown={onkeydown}>
            <h3 id="decommission-title">{ format!("Decommission {}", props.device.name) }</h3>
            <p>{ "Its certificate is refused from now on and its channel is cut. This cannot be undone: a replacement box enrols with a new claim code." }</p>
            <div class="row">
                <label for="decommission-reason">{ "Reason (kept in the admin trail)" }
                    <input id="decommission-reason" ref={input_ref} required=true maxlength="200"
                        value={(*reason).clone()}
                        oninput={{ let r = reason.clone(); move |e: InputEvent| r.set(input_value(&e)) }} />
                </label>
                <button class="button danger" type="submit" disabled={*busy}>{ "Decommission" }</button>
                <button class="button" type="button" onclick={cancel}>{ "Cancel" }</button>
            </div>
            if let Some(err) = &*error { <ErrorBox error={err.clone()} /> }
        </form>
    }
}

#[derive(Properties, PartialEq)]
struct ClaimCodesProps {
    sites: Vec<Site>,
    can_create: bool,
}

/// Claim-code creation and a site's codes.
#[function_component]
fn ClaimCodes(props: &ClaimCodesProps) -> Html {
    let site = use_state(|| props.sites.first().map(|s| s.id.clone()));
    let ttl = use_state(|| "60".to_string());
    let created = use_state(|| None::<NewClaimCode>);
    let error = use_state(|| None::<ApiError>);
    let busy = use_state(|| false);
    let site_id = match &*site {
        Some(id) if props.sites.iter().any(|s| &s.id == id) => Some(id.clone()),
        _ => props.sites.first().map(|s| s.id.clone()),
    };
    let codes = use_load::<Vec<ClaimCode>>(
        site_id
            .as_ref()
            .map(|s| format!("/api/sites/{}/claim-codes", api::enc(s))),
    );
    use_interval(POLL_MS, site_id.is_some(), codes.reload.clone());
    if props.sites.is_empty() {
        return html! {
            <section class="card"><h2>{ "Claim codes" }</h2>
                { empty("This tenant has no site yet: add one on the Tenants page.") }</section>
        };
    }
    let onsubmit = {
        let (ttl, created, error, busy) =
            (ttl.clone(), created.clone(), error.clone(), busy.clone());
        let (site_id, reload) = (site_id.clone(), codes.reload.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(site_id) = site_id.clone() else {
                return;
            };
            let minutes = match ttl.trim().parse::<i64>() {
                Ok(m) if (1..=43_200).contains(&m) => m,
                _ => {
                    error.set(Some(ApiError {
                        status: 400,
                        code: "invalid".into(),
                        message: "The validity must be a whole number of minutes from 1 to 43200."
                            .into(),
                        errors: Vec::new(),
                    }));
                    return;
                }
            };
            let (created, error, busy, reload) =
                (created.clone(), error.clone(), busy.clone(), reload.clone());
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                let path = format!("/api/sites/{}/claim-codes", api::enc(&site_id));
                match api::post::<_, NewClaimCode>(
                    &path,
                    &ClaimCodeRequest {
                        ttl_minutes: minutes,
                    },
                )
                .await
                {
                    Ok(code) => {
                        error.set(None);
                        created.set(Some(code));
                        reload.emit(());
                    }
                    Err(err) => error.set(Some(err)),
                }
                busy.set(false);
            });
        })
    };
    let now = now_ms();
    html! {
        <section class="card" aria-labelledby="claim-title">
            <h2 id="claim-title">{ "Claim codes" }</h2>
            <div class="row">
                <label for="claim-site">{ "Site" }
                    <select id="claim-site" onchange={{ let s = site.clone(); move |e: Event| s.set(Some(input_value(&e))) }}>
                        { for props.sites.iter().map(|s| html! {
                            <option value={s.id.clone()} selected={site_id.as_deref() == Some(s.id.as_str())}>{ &s.name }</option>
                        }) }
                    </select>
                </label>
            </div>
            if props.can_create {
                <form onsubmit={onsubmit}>
                    <div class="row">
                        <label for="claim-ttl">{ "Valid for (minutes)" }
                            <input id="claim-ttl" type="number" min="1" max="43200" value={(*ttl).clone()}
                                oninput={{ let t = ttl.clone(); move |e: InputEvent| t.set(input_value(&e)) }} />
                        </label>
                        <button class="button primary" type="submit" disabled={*busy}>{ "Create claim code" }</button>
                    </div>
                </form>
            }
            if let Some(err) = &*error { <ErrorBox error={err.clone()} /> }
            if let Some(code) = &*created {
                <div class="notice" role="status" aria-live="polite">
                    <p>{ "Give this code to whoever installs the box. It is shown only now." }</p>
                    <p id="claim-code" class="secret">{ &code.code }</p>
                    <p class="muted">{ format!("Single use, until {}. On the box: ", fmt_time(code.expires_at_ms)) }
                        <code>{ format!("sase-edge enroll --claim {} …", code.code) }</code></p>
                </div>
            }
            <h3>{ "This site's codes" }</h3>
            { load_view(&codes.state, "claim codes", &codes.reload, |list: &Vec<ClaimCode>| {
                if list.is_empty() {
                    return empty("No code yet.");
                }
                html! {
                    <div class="table-wrap">
                        <table id="claim-codes">
                            <thead><tr><th>{ "Code id" }</th><th>{ "State" }</th><th>{ "Expires" }</th><th>{ "Device" }</th></tr></thead>
                            <tbody>
                            { for list.iter().map(|c| html! {
                                <tr key={c.id.clone()}>
                                    <td class="mono">{ &c.id }{ c.label.as_ref().map(|l| format!(" ({l})")).unwrap_or_default() }</td>
                                    <td>{ match c.status.as_str() {
                                        "pending" => badge(Tone::Warn, "Unused"),
                                        "used" => badge(Tone::Good, "Used"),
                                        "expired" => badge(Tone::Plain, "Expired"),
                                        "revoked" => badge(Tone::Bad, "Revoked"),
                                        s => badge(Tone::Plain, s.to_string()),
                                    } }</td>
                                    <td title={fmt_time(c.expires_at_ms)}>{
                                        if c.expires_at_ms > now { format!("in {} min", (c.expires_at_ms - now) / 60_000) } else { fmt_time(c.expires_at_ms) }
                                    }</td>
                                    <td class="mono">{ c.device_id.clone().unwrap_or_else(|| "—".into()) }</td>
                                </tr>
                            }) }
                            </tbody>
                        </table>
                    </div>
                }
            }) }
        </section>
    }
}
