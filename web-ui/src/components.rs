//! Shared pieces of every page: the loading and error states, status badges, headers, empty
//! states and time formatting. Pages never show raw JSON: errors show the API's message and
//! field problems, values are formatted here.

use yew::prelude::*;

use crate::api::ApiError;
use crate::shell::Load;

/// "Loading …" with a spinner, announced to screen readers.
#[derive(Properties, PartialEq)]
pub struct LoadingProps {
    /// What is loading ("devices").
    #[prop_or(AttrValue::Static("data"))]
    pub what: AttrValue,
}

/// The loading state.
#[function_component]
pub fn Loading(props: &LoadingProps) -> Html {
    html! {
        <div class="loading" role="status" aria-live="polite">
            <span class="spinner" aria-hidden="true"></span>
            { format!("Loading {}…", props.what) }
        </div>
    }
}

/// An error box.
#[derive(Properties, PartialEq)]
pub struct ErrorBoxProps {
    /// The failure.
    pub error: ApiError,
    /// Offered as "Try again".
    #[prop_or_default]
    pub retry: Option<Callback<()>>,
}

/// The error state: the API's message, its field problems and a retry button.
#[function_component]
pub fn ErrorBox(props: &ErrorBoxProps) -> Html {
    let e = &props.error;
    let title = match e.status {
        0 => "Cannot reach the control plane".to_string(),
        401 => "Not signed in".to_string(),
        403 => "Not allowed".to_string(),
        404 => "Not found".to_string(),
        409 => "Conflict".to_string(),
        422 | 400 => "Refused".to_string(),
        429 => "Too many attempts".to_string(),
        s if s >= 500 => "The control plane failed".to_string(),
        s => format!("Error {s}"),
    };
    html! {
        <div class="error-box" role="alert">
            <strong>{ title }</strong>
            <p>{ &e.message }</p>
            if !e.errors.is_empty() {
                <ul class="field-errors">
                    { for e.errors.iter().map(|f| html! {
                        <li><code>{ &f.path }</code>{ ": " }{ &f.message }</li>
                    }) }
                </ul>
            }
            if let Some(retry) = props.retry.clone() {
                <button class="button" onclick={Callback::from(move |_| retry.emit(()))}>
                    { "Try again" }
                </button>
            }
        </div>
    }
}

/// Renders a [`Load`]: loading, error (with retry) or `ready(value)`.
pub fn load_view<T>(
    load: &Load<T>,
    what: &'static str,
    retry: &Callback<()>,
    ready: impl FnOnce(&T) -> Html,
) -> Html {
    match load {
        Load::Idle => html! {},
        Load::Loading => html! { <Loading what={what} /> },
        Load::Failed(error) => html! { <ErrorBox error={error.clone()} retry={retry.clone()} /> },
        Load::Ready(value) => ready(value),
    }
}

/// Badge tones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Healthy, allowed.
    Good,
    /// Needs a look.
    Warn,
    /// Broken, denied.
    Bad,
    /// Neutral.
    Plain,
}

/// A small coloured label (always with text: colour is never the only signal).
pub fn badge(tone: Tone, text: impl Into<String>) -> Html {
    let class = match tone {
        Tone::Good => "badge good",
        Tone::Warn => "badge warn",
        Tone::Bad => "badge bad",
        Tone::Plain => "badge",
    };
    html! { <span class={class}>{ text.into() }</span> }
}

/// A page's title line with optional actions on the right.
#[derive(Properties, PartialEq)]
pub struct PageHeaderProps {
    /// Title.
    pub title: AttrValue,
    /// One sentence on what the page is for.
    #[prop_or_default]
    pub subtitle: Option<AttrValue>,
    /// Buttons.
    #[prop_or_default]
    pub children: Html,
}

/// The page header.
#[function_component]
pub fn PageHeader(props: &PageHeaderProps) -> Html {
    html! {
        <header class="page-header">
            <div>
                <h1>{ &props.title }</h1>
                if let Some(sub) = &props.subtitle { <p class="muted">{ sub }</p> }
            </div>
            <div class="actions">{ props.children.clone() }</div>
        </header>
    }
}

/// "Nothing here yet" with a hint.
pub fn empty(text: &str) -> Html {
    html! { <p class="empty">{ text }</p> }
}

/// Shown by tenant-scoped pages when no tenant is selected.
pub fn no_tenant() -> Html {
    empty("No customer tenant yet: create one on the Tenants page, then pick it in the top bar.")
}

/// Now, Unix ms (browser clock).
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// A Unix-ms time as `YYYY-MM-DD HH:MM:SS` in the browser's time zone.
pub fn fmt_time(ms: i64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        d.get_full_year(),
        d.get_month() + 1,
        d.get_date(),
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds()
    )
}

/// How long ago (`12 s ago`, `3 min ago`, `2 h ago`, `4 d ago`).
pub fn fmt_ago(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A value from an `<input>`/`<select>`/`<textarea>` event.
pub fn input_value(e: &Event) -> String {
    use wasm_bindgen::JsCast;
    let Some(target) = e.target() else {
        return String::new();
    };
    if let Some(i) = target.dyn_ref::<web_sys::HtmlInputElement>() {
        return i.value();
    }
    if let Some(s) = target.dyn_ref::<web_sys::HtmlSelectElement>() {
        return s.value();
    }
    if let Some(t) = target.dyn_ref::<web_sys::HtmlTextAreaElement>() {
        return t.value();
    }
    String::new()
}
