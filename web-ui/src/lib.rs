//! `sase-console`: the web console, a Yew client-side app that `sase-control` serves at `/`.
//!
//! * [`app`] — the shell: sign-in gate, top bar (tenant switcher, signed-in admin), side nav,
//!   router.
//! * [`routes`] — the client-side routes, one per page.
//! * [`api`] — the API client: cookie session, `X-CSRF-Token` on state changes, typed errors.
//! * [`shell`] — what every page reads from the shell (the admin, the tenants, the selected
//!   tenant) and the [`shell::use_load`] hook for fetches with loading and error states.
//! * [`components`] — shared pieces: loading and error boxes, badges, time formatting.
//! * [`views`] — the API's answers that `sase-model` does not type.
//! * [`pages`] — one module per page.
//!
//! Everything is compiled for `wasm32` only; on the host this crate is empty (see
//! `Cargo.toml`), so host builds of the workspace do not build Yew.

#[cfg(target_arch = "wasm32")]
pub mod api;
#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod components;
#[cfg(target_arch = "wasm32")]
pub mod pages;
#[cfg(target_arch = "wasm32")]
pub mod routes;
#[cfg(target_arch = "wasm32")]
pub mod shell;
#[cfg(target_arch = "wasm32")]
pub mod views;

/// Mounts the console on the page's `<body>`.
#[cfg(target_arch = "wasm32")]
pub fn start() {
    yew::Renderer::<app::App>::new().render();
}
