//! Sign-in: user name, password and, once MFA is enrolled, the authenticator's 6-digit code.
//! The control plane sets the session cookie (HttpOnly) and the CSRF cookie; the shell then
//! re-reads `GET /api/me`.

use yew::prelude::*;

use crate::api::{self, ApiError};
use crate::components::input_value;
use crate::views::{LoginAnswer, LoginRequest};

/// Properties.
#[derive(Properties, PartialEq)]
pub struct SignInProps {
    /// Called once signed in.
    pub on_signed_in: Callback<()>,
}

/// A sign-in refusal for people.
fn explain(err: &ApiError) -> String {
    match err.code.as_str() {
        "mfa_required" => "This admin signs in with an authenticator code: enter the 6 digits it shows.".into(),
        "mfa_invalid" => "The authenticator code is not valid (wrong, expired or already used). Enter the current one.".into(),
        "mfa_locked" => "Too many wrong codes: sign-in with MFA is locked for a while.".into(),
        "admin_disabled" => "This admin has been disabled.".into(),
        _ if err.status == 401 => "Wrong user name or password.".into(),
        _ => err.message.clone(),
    }
}

/// The sign-in page.
#[function_component]
pub fn SignInPage(props: &SignInProps) -> Html {
    let username = use_state(String::new);
    let password = use_state(String::new);
    let totp = use_state(String::new);
    let busy = use_state(|| false);
    let error = use_state(|| None::<String>);
    let need_code = use_state(|| false);

    let onsubmit = {
        let (username, password, totp) = (username.clone(), password.clone(), totp.clone());
        let (busy, error, need_code) = (busy.clone(), error.clone(), need_code.clone());
        let done = props.on_signed_in.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if *busy {
                return;
            }
            let code = totp.trim().to_string();
            let request = LoginRequest {
                username: username.trim().to_string(),
                password: (*password).clone(),
                totp: (!code.is_empty()).then_some(code),
            };
            let (busy, error, need_code, done) =
                (busy.clone(), error.clone(), need_code.clone(), done.clone());
            busy.set(true);
            error.set(None);
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, LoginAnswer>("/api/login", &request).await {
                    Ok(_) => done.emit(()),
                    Err(err) => {
                        if err.code.starts_with("mfa_") {
                            need_code.set(true);
                        }
                        error.set(Some(explain(&err)));
                    }
                }
                busy.set(false);
            });
        })
    };
    let bind = |state: &UseStateHandle<String>| {
        let state = state.clone();
        Callback::from(move |e: InputEvent| state.set(input_value(&e)))
    };
    html! {
        <main class="sign-in" id="main">
            <form class="card sign-in-card" onsubmit={onsubmit} aria-labelledby="sign-in-title">
                <h1 id="sign-in-title">{ "Sign in to the SASE console" }</h1>
                <label for="username">{ "User name" }</label>
                <input id="username" name="username" autocomplete="username" required=true
                       value={(*username).clone()} oninput={bind(&username)} />
                <label for="password">{ "Password" }</label>
                <input id="password" name="password" type="password" autocomplete="current-password"
                       required=true value={(*password).clone()} oninput={bind(&password)} />
                <label for="totp">
                    { "Authenticator code" }
                    if !*need_code { <span class="muted">{ " (if MFA is enrolled)" }</span> }
                </label>
                <input id="totp" name="totp" inputmode="numeric" autocomplete="one-time-code"
                       pattern="[0-9]{6}" maxlength="6" required={*need_code}
                       value={(*totp).clone()} oninput={bind(&totp)} />
                if let Some(message) = &*error {
                    <p class="error-box" role="alert">{ message }</p>
                }
                <button class="button primary" type="submit" disabled={*busy}>
                    { if *busy { "Signing in…" } else { "Sign in" } }
                </button>
            </form>
        </main>
    }
}
