//! The tenant tree: the admin's MSP → its customer tenants → each tenant's sites, with forms
//! to add a customer (MSP roles with `tenants.create`) and a site (`sites.write`). Each tenant
//! node loads its own sites; selecting a tenant here also selects it in the top bar.

use sase_model::fleet::{Site, Tenant};
use yew::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{empty, fmt_time, input_value, load_view, ErrorBox, PageHeader};
use crate::shell::{use_load, use_shell};
use crate::views::NameRequest;

/// The tenants page.
#[function_component]
pub fn TenantsPage() -> Html {
    let shell = use_shell();
    let me = shell.me.clone();
    html! {
        <>
            <PageHeader title="Tenants"
                subtitle="Your MSP, its customer tenants and their sites. Devices join a site with a claim code." />
            <section class="card" aria-labelledby="tree-title">
                <h2 id="tree-title">
                    <span class="node-kind">{ if me.is_msp() { "MSP" } else { "Customer" } }</span>
                    { if me.is_msp() { me.msp_id.clone() } else { shell.tenant().map(|t| t.name.clone()).unwrap_or_default() } }
                </h2>
                if shell.tenants.is_empty() {
                    { empty("No customer tenant yet.") }
                }
                <ul class="tree" aria-labelledby="tree-title">
                    { for shell.tenants.iter().map(|t| html! {
                        <TenantNode key={t.id.clone()} tenant={t.clone()}
                            selected={shell.tenant_id.as_deref() == Some(t.id.as_str())} />
                    }) }
                </ul>
                if me.can("tenants.create") {
                    <NameForm label="New customer tenant" button="Add customer" id="new-tenant"
                        path={AttrValue::from("/api/tenants")} done={shell.reload_tenants.clone()} />
                }
            </section>
        </>
    }
}

#[derive(Properties, PartialEq)]
struct TenantNodeProps {
    tenant: Tenant,
    selected: bool,
}

/// One customer and its sites.
#[function_component]
fn TenantNode(props: &TenantNodeProps) -> Html {
    let shell = use_shell();
    let t = &props.tenant;
    let sites = use_load::<Vec<Site>>(Some(format!("/api/tenants/{}/sites", api::enc(&t.id))));
    let select = {
        let (select, id) = (shell.select_tenant.clone(), t.id.clone());
        Callback::from(move |_| select.emit(id.clone()))
    };
    let count = match &*sites.state {
        crate::shell::Load::Ready(list) => format!("{} site(s)", list.len()),
        _ => String::new(),
    };
    html! {
        <li class="tenant-node">
            <details open=true>
                <summary>
                    <span class="node-kind">{ "Customer" }</span>
                    <strong>{ &t.name }</strong>
                    <span class="muted">{ format!("  {}  · created {}  · {count}", t.id, fmt_time(t.created_at_ms)) }</span>
                </summary>
                <p>
                    if props.selected {
                        { crate::components::badge(crate::components::Tone::Good, "selected in the top bar") }
                    } else {
                        <button class="linklike" onclick={select}>{ format!("Work on {}", t.name) }</button>
                    }
                </p>
                { load_view(&sites.state, "sites", &sites.reload, |list: &Vec<Site>| html! {
                    <ul>
                        if list.is_empty() { <li>{ empty("No site yet.") }</li> }
                        { for list.iter().map(|s| html! {
                            <li key={s.id.clone()}>
                                <span class="node-kind">{ "Site" }</span>
                                { &s.name }
                                <span class="muted">{ format!("  {}", s.id) }</span>
                            </li>
                        }) }
                    </ul>
                }) }
                if shell.me.can("sites.write") {
                    <NameForm label={format!("New site in {}", t.name)} button="Add site"
                        id={format!("new-site-{}", t.id)}
                        path={AttrValue::from(format!("/api/tenants/{}/sites", api::enc(&t.id)))}
                        done={sites.reload.clone()} />
                }
            </details>
        </li>
    }
}

#[derive(Properties, PartialEq)]
struct NameFormProps {
    label: AttrValue,
    button: AttrValue,
    id: AttrValue,
    path: AttrValue,
    done: Callback<()>,
}

/// "Name + button" creating a tenant or a site.
#[function_component]
fn NameForm(props: &NameFormProps) -> Html {
    let name = use_state(String::new);
    let error = use_state(|| None::<ApiError>);
    let busy = use_state(|| false);
    let onsubmit = {
        let (name, error, busy) = (name.clone(), error.clone(), busy.clone());
        let (path, done) = (props.path.clone(), props.done.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = NameRequest {
                name: name.trim().to_string(),
            };
            let (name, error, busy, path, done) = (
                name.clone(),
                error.clone(),
                busy.clone(),
                path.clone(),
                done.clone(),
            );
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, serde_json::Value>(&path, &body).await {
                    Ok(_) => {
                        name.set(String::new());
                        error.set(None);
                        done.emit(());
                    }
                    Err(err) => error.set(Some(err)),
                }
                busy.set(false);
            });
        })
    };
    let oninput = {
        let name = name.clone();
        Callback::from(move |e: InputEvent| name.set(input_value(&e)))
    };
    html! {
        <form class="inline-form" onsubmit={onsubmit}>
            <div class="row">
                <label for={props.id.clone()}>{ &props.label }
                    <input id={props.id.clone()} required=true maxlength="100"
                        value={(*name).clone()} oninput={oninput}
                        aria-invalid={error.is_some().to_string()} />
                </label>
                <button class="button" type="submit" disabled={*busy}>{ &props.button }</button>
            </div>
            if let Some(err) = &*error { <ErrorBox error={err.clone()} /> }
        </form>
    }
}
