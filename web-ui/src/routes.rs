//! The console's client-side routes. `sase-control` answers `index.html` for any path outside
//! `/api`, so each of these can be loaded directly or reloaded. Adding a page: a variant here,
//! a module under `pages/`, a line in [`switch`] and one in [`NAV`].

use yew::prelude::*;
use yew_router::prelude::*;

use crate::pages;

/// The pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Routable)]
pub enum Route {
    /// Home: the devices page.
    #[at("/")]
    Home,
    /// Sign in (shown whatever the path while signed out).
    #[at("/sign-in")]
    SignIn,
    /// MSP → customers → sites.
    #[at("/tenants")]
    Tenants,
    /// The selected tenant's devices, claim codes, decommissioning.
    #[at("/devices")]
    Devices,
    /// Policy editor (part B).
    #[at("/policy")]
    Policy,
    /// Users, groups, MFA, revocation (part B).
    #[at("/identities")]
    Identities,
    /// Audit explorer.
    #[at("/audit")]
    Audit,
    /// Incidents and their deadlines (part B).
    #[at("/incidents")]
    Incidents,
    /// Allowed/blocked requests and tunnel sessions over time (part B).
    #[at("/charts")]
    Charts,
    /// Anything else.
    #[not_found]
    #[at("/404")]
    NotFound,
}

/// The side navigation: route and label, in order.
pub const NAV: &[(Route, &str)] = &[
    (Route::Devices, "Devices"),
    (Route::Tenants, "Tenants"),
    (Route::Policy, "Policy"),
    (Route::Identities, "Identities"),
    (Route::Audit, "Audit"),
    (Route::Incidents, "Incidents"),
    (Route::Charts, "Charts"),
];

/// The page of a route (signed in).
pub fn switch(route: Route) -> Html {
    match route {
        Route::Home | Route::SignIn => html! { <Redirect<Route> to={Route::Devices} /> },
        Route::Tenants => html! { <pages::tenants::TenantsPage /> },
        Route::Devices => html! { <pages::devices::DevicesPage /> },
        Route::Policy => html! { <pages::policy::PolicyPage /> },
        Route::Identities => html! { <pages::identities::IdentitiesPage /> },
        Route::Audit => html! { <pages::audit::AuditPage /> },
        Route::Incidents => html! { <pages::incidents::IncidentsPage /> },
        Route::Charts => html! { <pages::charts::ChartsPage /> },
        Route::NotFound => html! { <pages::not_found::NotFoundPage /> },
    }
}
