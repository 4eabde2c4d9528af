//! The page for unknown paths.

use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::PageHeader;
use crate::routes::Route;

/// "No such page", with a way back.
#[function_component]
pub fn NotFoundPage() -> Html {
    html! {
        <>
            <PageHeader title="No such page" />
            <p>{ "This address is not a page of the console. " }
               <Link<Route> to={Route::Devices}>{ "Go to the devices" }</Link<Route>></p>
        </>
    }
}
