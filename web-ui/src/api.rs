//! The API client. The browser signs in with a cookie session (`sase_session`, HttpOnly) set by
//! `POST /api/login`; every state-changing call sends `X-CSRF-Token` with the token read from
//! the readable `sase_csrf` cookie (see `control-plane/server/src/csrf.rs`). Bearer tokens are
//! for scripts, never for the browser. Errors come back as [`ApiError`] with the API's stable
//! code and message (and field errors for validation failures); a `401` outside sign-in calls
//! the handler the shell registered with [`on_unauthorized`] (back to the sign-in page).

use std::cell::RefCell;

use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use yew::Callback;

/// A field-level problem of a refused request (`sase_model::ValidationError` on the wire).
pub type FieldError = sase_model::ValidationError;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ApiError {
    /// HTTP status (0 when the request did not reach the server).
    #[serde(skip)]
    pub status: u16,
    /// Stable code (`unauthorized`, `policy_invalid`, …).
    #[serde(rename = "error")]
    pub code: String,
    /// Human explanation.
    pub message: String,
    /// Field-level problems.
    #[serde(default)]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    fn network(err: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: 0,
            code: "network".into(),
            message: format!("the control plane could not be reached ({err})"),
            errors: Vec::new(),
        }
    }

    fn unreadable(status: u16, err: impl std::fmt::Display) -> ApiError {
        ApiError {
            status,
            code: "unreadable_answer".into(),
            message: format!("the control plane's answer could not be read ({err})"),
            errors: Vec::new(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

thread_local! {
    static UNAUTHORIZED: RefCell<Option<Callback<()>>> = const { RefCell::new(None) };
}

/// Registers what to do when the session is gone (`401` on any call but sign-in).
pub fn on_unauthorized(callback: Callback<()>) {
    UNAUTHORIZED.with(|u| *u.borrow_mut() = Some(callback));
}

/// A cookie's value from `document.cookie`.
fn cookie(name: &str) -> Option<String> {
    let document = web_sys::window()?.document()?;
    let html = document.dyn_into::<web_sys::HtmlDocument>().ok()?;
    let all = html.cookie().ok()?;
    all.split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

fn with_csrf(builder: RequestBuilder) -> RequestBuilder {
    match cookie("sase_csrf") {
        Some(token) => builder.header("X-CSRF-Token", &token),
        None => builder,
    }
}

async fn check(path: &str, response: Response) -> Result<Response, ApiError> {
    if response.ok() {
        return Ok(response);
    }
    let status = response.status();
    let mut err = match response.json::<ApiError>().await {
        Ok(err) => err,
        Err(_) => ApiError {
            status,
            code: format!("http_{status}"),
            message: format!("the control plane answered {status}"),
            errors: Vec::new(),
        },
    };
    err.status = status;
    if status == 401 && path != "/api/login" {
        if let Some(cb) = UNAUTHORIZED.with(|u| u.borrow().clone()) {
            cb.emit(());
        }
    }
    Err(err)
}

async fn send(path: &str, request: Result<Request, gloo_net::Error>) -> Result<Response, ApiError> {
    let request = request.map_err(ApiError::network)?;
    let response = request.send().await.map_err(ApiError::network)?;
    check(path, response).await
}

async fn json<T: DeserializeOwned>(response: Response) -> Result<T, ApiError> {
    let status = response.status();
    response
        .json::<T>()
        .await
        .map_err(|e| ApiError::unreadable(status, e))
}

/// `GET path`, the answer as `T`.
///
/// # Errors
/// As [`ApiError`] says.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    json(send(path, Request::get(path).build()).await?).await
}

/// `GET path`, the answer as text (exports).
///
/// # Errors
/// As [`ApiError`] says.
pub async fn get_text(path: &str) -> Result<String, ApiError> {
    let response = send(path, Request::get(path).build()).await?;
    let status = response.status();
    response
        .text()
        .await
        .map_err(|e| ApiError::unreadable(status, e))
}

async fn with_body<B: Serialize>(
    builder: RequestBuilder,
    path: &str,
    body: Option<&B>,
) -> Result<Response, ApiError> {
    let builder = with_csrf(builder);
    let request = match body {
        Some(body) => builder.json(body),
        None => builder.build(),
    };
    send(path, request).await
}

/// `POST path` with a JSON body, the answer as `T`.
///
/// # Errors
/// As [`ApiError`] says.
pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    json(with_body(Request::post(path), path, Some(body)).await?).await
}

/// `POST path` (with an optional JSON body) whose answer has no body worth reading (`204`).
///
/// # Errors
/// As [`ApiError`] says.
pub async fn post_no_answer<B: Serialize>(path: &str, body: Option<&B>) -> Result<(), ApiError> {
    with_body(Request::post(path), path, body).await.map(|_| ())
}

/// `PUT path` with a JSON body, the answer as `T`.
///
/// # Errors
/// As [`ApiError`] says.
pub async fn put<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    json(with_body(Request::put(path), path, Some(body)).await?).await
}

/// `DELETE path`.
///
/// # Errors
/// As [`ApiError`] says.
pub async fn delete(path: &str) -> Result<(), ApiError> {
    with_body::<()>(Request::delete(path), path, None)
        .await
        .map(|_| ())
}

/// Percent-encodes a query value or path segment.
pub fn enc(value: &str) -> String {
    String::from(js_sys::encode_uri_component(value))
}
