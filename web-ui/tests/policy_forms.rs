//! Component tests of the policy editor's forms, in a real browser (headless Chromium through
//! `wasm-bindgen-test-runner`; `tests/console/component-tests.sh` runs them): the forms are
//! mounted as the Policy page mounts them (a policy, `validation_errors` of it — i.e.
//! `sase_model::policy::Policy::validate` — and the edit callback), typed into with real input
//! events, and the errors shown at each field are checked against what the validator says.
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use sase_console::pages::policy::fields::{errors_at, parse_number};
use sase_console::pages::policy::forms::{Edit, PolicyForm};
use sase_console::pages::policy::{to_yaml, validation_errors};
use sase_model::policy::Policy;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;
use web_sys::{Element, HtmlInputElement};
use yew::prelude::*;

wasm_bindgen_test_configure!(run_in_browser);

const GOOD: &str = r#"
issuers:
  - id: demo
    issuer: https://idp.example
    audiences: [orders]
    algorithms: [EdDSA]
    keys:
      jwks: {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"}]}
resources:
  - name: orders-api
    upstream: http://127.0.0.1:9000
    issuers: [demo]
    routes:
      - id: list
        methods: [GET]
        path: /orders
        scopes: [orders:read]
      - id: health
        methods: [GET]
        path: /health
        public: true
"#;

thread_local! {
    static LATEST: std::cell::RefCell<Option<Policy>> = const { std::cell::RefCell::new(None) };
}

/// The editor as the page wires it: state, validation, form.
#[function_component]
fn Harness() -> Html {
    let policy = use_state(|| Rc::new(Policy::parse_yaml(GOOD).expect("fixture is valid")));
    LATEST.with(|l| *l.borrow_mut() = Some((**policy).clone()));
    let errors = Rc::new(validation_errors(&policy));
    let edit = {
        let policy = policy.clone();
        Callback::from(move |e: Edit| {
            let mut next = (**policy).clone();
            e(&mut next);
            policy.set(Rc::new(next));
        })
    };
    html! { <PolicyForm policy={(*policy).clone()} errors={errors} edit={edit} /> }
}

fn latest() -> Policy {
    LATEST.with(|l| l.borrow().clone()).expect("rendered")
}

async fn mount() -> Element {
    let document = gloo_utils_document();
    let root = document.create_element("div").expect("div");
    document
        .body()
        .expect("body")
        .append_child(&root)
        .expect("append");
    yew::Renderer::<Harness>::with_root(root.clone()).render();
    settle().await;
    root
}

fn gloo_utils_document() -> web_sys::Document {
    web_sys::window()
        .expect("window")
        .document()
        .expect("document")
}

/// Waits until the console is quiet after an event: Yew runs its renders and effects as
/// microtasks, and a `MutationObserver` reports DOM changes as microtasks too, so once a
/// zero-delay timeout (the next macrotask) fires, everything the event scheduled so far has run
/// and been counted. The wait repeats until a whole event-loop turn passes without a change to
/// the document, so a render that schedules another (a field's effect updating its text) is
/// waited for as well. A console that never stops changing the page fails the test.
async fn settle() {
    const MAX_TURNS: u32 = 200;
    let changes = Rc::new(std::cell::Cell::new(0u32));
    let counter = changes.clone();
    let on_change = Closure::<dyn FnMut(js_sys::Array)>::new(move |records: js_sys::Array| {
        counter.set(counter.get() + records.length());
    });
    let observer =
        web_sys::MutationObserver::new(on_change.as_ref().unchecked_ref()).expect("observer");
    let options = web_sys::MutationObserverInit::new();
    options.set_subtree(true);
    options.set_child_list(true);
    options.set_attributes(true);
    options.set_character_data(true);
    observer
        .observe_with_options(&gloo_utils_document().body().expect("body"), &options)
        .expect("observe");
    let mut quiet = false;
    for _ in 0..MAX_TURNS {
        let before = changes.get();
        gloo_timers::future::TimeoutFuture::new(0).await;
        if changes.get() == before {
            quiet = true;
            break;
        }
    }
    observer.disconnect();
    assert!(
        quiet,
        "the console kept changing the page for {MAX_TURNS} event-loop turns"
    );
}

fn input(root: &Element, id: &str) -> HtmlInputElement {
    root.query_selector(&format!("#{id}"))
        .expect("selector")
        .unwrap_or_else(|| panic!("no #{id}"))
        .dyn_into::<HtmlInputElement>()
        .expect("an input")
}

async fn type_into(root: &Element, id: &str, text: &str) {
    let el = input(root, id);
    el.set_value(text);
    let event = web_sys::InputEvent::new("input").expect("event");
    el.dispatch_event(&event).expect("dispatch");
    settle().await;
}

async fn click(root: &Element, id: &str) {
    root.query_selector(&format!("#{id}"))
        .expect("selector")
        .unwrap_or_else(|| panic!("no #{id}"))
        .dyn_into::<web_sys::HtmlElement>()
        .expect("an element")
        .click();
    settle().await;
}

/// The messages shown under a field (empty when none).
fn shown(root: &Element, id: &str) -> Vec<String> {
    let Some(list) = root
        .query_selector(&format!("#{id}-errors"))
        .expect("selector")
    else {
        return Vec::new();
    };
    let items = list.query_selector_all("li").expect("items");
    (0..items.length())
        .filter_map(|i| items.item(i).and_then(|n| n.text_content()))
        .collect()
}

#[wasm_bindgen_test]
async fn a_valid_policy_shows_no_error() {
    let root = mount().await;
    assert!(validation_errors(&latest()).is_empty());
    assert_eq!(
        root.query_selector_all(".field-error").expect("q").length(),
        0
    );
    assert_eq!(input(&root, "res-0-route-0-path").value(), "/orders");
    assert_eq!(input(&root, "res-0-route-0-scopes").value(), "orders:read");
}

#[wasm_bindgen_test]
async fn a_bad_path_is_reported_at_the_path_field_as_the_validator_says() {
    let root = mount().await;
    type_into(&root, "res-0-route-0-path", "orders").await;
    let policy = latest();
    assert_eq!(policy.resources[0].routes[0].path, "orders");
    let expected = errors_at(&validation_errors(&policy), "resources[0].routes[0].path");
    assert!(
        !expected.is_empty(),
        "sase-model refuses a path without a leading /"
    );
    assert_eq!(shown(&root, "res-0-route-0-path"), expected);
    assert_eq!(
        input(&root, "res-0-route-0-path")
            .get_attribute("aria-invalid")
            .as_deref(),
        Some("true")
    );
    // Other fields stay clean.
    assert!(shown(&root, "res-0-route-0-scopes").is_empty());
    // Fixing it clears the error.
    type_into(&root, "res-0-route-0-path", "/orders/{id}").await;
    assert!(shown(&root, "res-0-route-0-path").is_empty());
    assert!(validation_errors(&latest()).is_empty());
}

#[wasm_bindgen_test]
async fn a_public_route_with_scopes_is_refused_and_scopes_edit_as_a_list() {
    let root = mount().await;
    type_into(&root, "res-0-route-0-scopes", "orders:read, orders:write,").await;
    assert_eq!(
        latest().resources[0].routes[0].scopes,
        vec!["orders:read".to_string(), "orders:write".to_string()]
    );
    // The text stays as typed (trailing comma and all) while the policy holds the list.
    assert_eq!(
        input(&root, "res-0-route-0-scopes").value(),
        "orders:read, orders:write,"
    );
    click(&root, "res-0-route-0-public").await;
    assert!(latest().resources[0].routes[0].public);
    assert_eq!(
        shown(&root, "res-0-route-0-public"),
        vec!["a public route cannot require scopes or groups".to_string()]
    );
    type_into(&root, "res-0-route-0-scopes", "").await;
    assert!(shown(&root, "res-0-route-0-public").is_empty());
    assert!(validation_errors(&latest()).is_empty());
}

#[wasm_bindgen_test]
async fn waf_numbers_are_checked_locally_and_by_the_validator() {
    let root = mount().await;
    type_into(&root, "res-0-waf-paranoia", "two").await;
    assert_eq!(
        shown(&root, "res-0-waf-paranoia"),
        vec!["must be a whole number".to_string()]
    );
    assert_eq!(
        latest().resources[0].waf.paranoia_level,
        1,
        "unparsable text leaves the policy as it was"
    );
    type_into(&root, "res-0-waf-paranoia", "7").await;
    assert_eq!(latest().resources[0].waf.paranoia_level, 7);
    assert_eq!(
        shown(&root, "res-0-waf-paranoia"),
        vec!["must be 1, 2, 3 or 4".to_string()]
    );
    type_into(&root, "res-0-waf-paranoia", "3").await;
    assert!(shown(&root, "res-0-waf-paranoia").is_empty());
    assert!(validation_errors(&latest()).is_empty());
}

#[wasm_bindgen_test]
async fn an_added_rate_limit_is_validated_at_its_own_path() {
    let root = mount().await;
    click(&root, "res-0-add-rate").await;
    assert_eq!(
        latest().resources[0].limits.as_ref().map(|l| l.rate.len()),
        Some(1)
    );
    assert!(
        validation_errors(&latest()).is_empty(),
        "{:?}",
        validation_errors(&latest())
    );
    type_into(&root, "res-0-rate-0-requests", "0").await;
    let expected = errors_at(
        &validation_errors(&latest()),
        "resources[0].limits.rate[0].requests",
    );
    assert!(
        !expected.is_empty(),
        "sase-model refuses 0 requests per window"
    );
    assert_eq!(shown(&root, "res-0-rate-0-requests"), expected);
}

#[wasm_bindgen_test]
fn numbers_and_yaml_round_trip() {
    assert_eq!(parse_number("42", 100, false), Ok(Some(42)));
    assert_eq!(parse_number("", 100, true), Ok(None));
    assert_eq!(parse_number("", 100, false), Err("required".to_string()));
    assert_eq!(
        parse_number("101", 100, false),
        Err("at most 100".to_string())
    );
    let policy = Policy::parse_yaml(GOOD).expect("valid");
    assert_eq!(
        Policy::parse_yaml(&to_yaml(&policy)).expect("round trip"),
        policy
    );
}

#[wasm_bindgen_test]
fn access_rules_are_checked_by_the_model_at_their_field_paths() {
    use sase_console::pages::policy::access_rules::{build_rule, RuleDraft};
    let good = RuleDraft {
        name: "finance-apps".into(),
        group: "finance".into(),
        destination: "10.20.0.0/24".into(),
        protocol: "tcp".into(),
        ports: "443".into(),
        mfa_max_age_secs: Some(3600),
    };
    let rule = build_rule(&good).expect("valid");
    assert_eq!(rule.resources.len(), 1);
    assert_eq!(rule.resources[0].destination.to_string(), "10.20.0.0/24");
    let paths = |d: &RuleDraft| -> Vec<String> {
        build_rule(d)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect()
    };
    let host_bits = RuleDraft {
        destination: "10.20.0.1/24".into(),
        ..good.clone()
    };
    assert_eq!(
        paths(&host_bits),
        vec!["resources[0].destination".to_string()]
    );
    let icmp_ports = RuleDraft {
        protocol: "icmp".into(),
        ..good.clone()
    };
    assert_eq!(paths(&icmp_ports), vec!["resources[0].ports".to_string()]);
    let bad_name = RuleDraft {
        name: "Finance Apps".into(),
        ..good.clone()
    };
    assert_eq!(paths(&bad_name), vec!["name".to_string()]);
    let stale = RuleDraft {
        mfa_max_age_secs: Some(0),
        ..good
    };
    assert_eq!(paths(&stale), vec!["mfa_max_age_secs".to_string()]);
}
