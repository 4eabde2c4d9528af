//! The shell: asks `GET /api/me` whether a session exists, shows the sign-in page when not,
//! and otherwise the top bar (tenant switcher, signed-in admin, sign-out), the side navigation
//! and the routed page, inside the [`Shell`] context.

use std::rc::Rc;

use sase_model::fleet::Tenant;
use yew::prelude::*;
use yew_router::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{input_value, ErrorBox, Loading};
use crate::pages::sign_in::SignInPage;
use crate::routes::{switch, Route, NAV};
use crate::shell::{use_load, Load, Shell};
use crate::views::Me;

/// Where the session stands.
#[derive(Debug, Clone, PartialEq)]
enum Session {
    Checking,
    SignedOut,
    SignedIn(Rc<Me>),
    Failed(ApiError),
}

/// The application.
#[function_component]
pub fn App() -> Html {
    html! { <BrowserRouter><Gate /></BrowserRouter> }
}

/// Sign-in gate.
#[function_component]
fn Gate() -> Html {
    let session = use_state(|| Session::Checking);
    let check = {
        let session = session.clone();
        Callback::from(move |()| {
            let session = session.clone();
            wasm_bindgen_futures::spawn_local(async move {
                session.set(match api::get::<Me>("/api/me").await {
                    Ok(me) => Session::SignedIn(Rc::new(me)),
                    Err(e) if e.status == 401 => Session::SignedOut,
                    Err(e) => Session::Failed(e),
                });
            });
        })
    };
    {
        let check = check.clone();
        let session = session.clone();
        use_effect_with((), move |()| {
            api::on_unauthorized(Callback::from(move |()| session.set(Session::SignedOut)));
            check.emit(());
        });
    }
    match &*session {
        Session::Checking => {
            html! { <main class="centered"><Loading what="your session" /></main> }
        }
        Session::Failed(e) => html! {
            <main class="centered"><ErrorBox error={e.clone()} retry={check} /></main>
        },
        Session::SignedOut => html! { <SignInPage on_signed_in={check} /> },
        Session::SignedIn(me) => {
            let signed_out = {
                let session = session.clone();
                Callback::from(move |()| session.set(Session::SignedOut))
            };
            html! { <Layout me={me.clone()} signed_out={signed_out} /> }
        }
    }
}

#[derive(Properties, PartialEq)]
struct LayoutProps {
    me: Rc<Me>,
    signed_out: Callback<()>,
}

/// Top bar, side nav, page.
#[function_component]
fn Layout(props: &LayoutProps) -> Html {
    let tenants = use_load::<Vec<Tenant>>(Some("/api/tenants".into()));
    let selected = use_state(|| props.me.tenant_id.clone());
    let list: Rc<Vec<Tenant>> = match &*tenants.state {
        Load::Ready(list) => Rc::new(list.clone()),
        _ => Rc::new(Vec::new()),
    };
    // Keep a valid selection: the chosen tenant if it exists, else the first.
    let tenant_id = match selected.as_ref() {
        Some(id) if list.iter().any(|t| &t.id == id) => Some(id.clone()),
        _ => list.first().map(|t| t.id.clone()),
    };
    let shell = Shell {
        me: props.me.clone(),
        tenants: list.clone(),
        tenant_id: tenant_id.clone(),
        select_tenant: {
            let selected = selected.clone();
            Callback::from(move |id: String| selected.set(Some(id)))
        },
        reload_tenants: tenants.reload.clone(),
    };
    let on_tenant = {
        let select = shell.select_tenant.clone();
        Callback::from(move |e: Event| select.emit(input_value(&e)))
    };
    let sign_out = {
        let signed_out = props.signed_out.clone();
        Callback::from(move |_| {
            let signed_out = signed_out.clone();
            wasm_bindgen_futures::spawn_local(async move {
                // The session ends on screen whatever the answer; the server deletes it.
                let _ = api::post_no_answer::<()>("/api/logout", None).await;
                signed_out.emit(());
            });
        })
    };
    let me = &props.me;
    html! {
        <ContextProvider<Shell> context={shell}>
            <a class="skip-link" href="#main">{ "Skip to content" }</a>
            <header class="topbar">
                <span class="brand">{ "SASE console" }</span>
                <label class="tenant-switcher">
                    <span>{ "Tenant" }</span>
                    <select id="tenant-switcher" onchange={on_tenant} disabled={list.is_empty()}>
                        if list.is_empty() { <option>{ "no tenant yet" }</option> }
                        { for list.iter().map(|t| html! {
                            <option value={t.id.clone()} selected={tenant_id.as_deref() == Some(t.id.as_str())}>
                                { &t.name }
                            </option>
                        }) }
                    </select>
                </label>
                <span class="who" title={format!("{} in {}", me.role, me.msp_id)}>
                    <span class="who-name">{ &me.username }</span>
                    <span class="muted">{ role_label(&me.role) }</span>
                    if !me.mfa_enabled { { crate::components::badge(crate::components::Tone::Warn, "no MFA") } }
                </span>
                <button class="button subtle" onclick={sign_out}>{ "Sign out" }</button>
            </header>
            <div class="frame">
                <SideNav />
                <main id="main" tabindex="-1">
                    if let Load::Failed(e) = &*tenants.state {
                        <ErrorBox error={e.clone()} retry={tenants.reload.clone()} />
                    }
                    <Switch<Route> render={switch} />
                </main>
            </div>
        </ContextProvider<Shell>>
    }
}

/// A role for people.
pub fn role_label(role: &str) -> &'static str {
    match role {
        "msp_owner" => "MSP owner",
        "msp_engineer" => "MSP engineer",
        "customer_admin" => "Customer admin",
        "customer_auditor" => "Customer auditor",
        _ => "Admin",
    }
}

/// The side navigation, with the current page marked (`aria-current`).
#[function_component]
fn SideNav() -> Html {
    let current = use_route::<Route>();
    let navigator = use_navigator();
    html! {
        <nav class="sidenav" aria-label="Pages">
            <ul>
                { for NAV.iter().map(|(route, label)| {
                    let here = current == Some(*route) || (current == Some(Route::Home) && *route == Route::Devices);
                    let onclick = {
                        let navigator = navigator.clone();
                        let route = *route;
                        Callback::from(move |e: MouseEvent| {
                            e.prevent_default();
                            if let Some(n) = &navigator { n.push(&route); }
                        })
                    };
                    html! {
                        <li>
                            <a href={route.to_path()} onclick={onclick}
                               class={classes!(here.then_some("active"))}
                               aria-current={here.then_some("page")}>
                                { *label }
                            </a>
                        </li>
                    }
                }) }
            </ul>
        </nav>
    }
}
