//! The policy as forms: resources (hosts, upstream, issuers, body limit), their routes (methods,
//! path, required scopes and groups, public), WAF settings, rate limits, the access groups and
//! the QUIC block. Every change is an [`Edit`] of the typed `sase_model::policy::Policy`; the page
//! validates the result with `Policy::validate` and hands the errors back to the fields.

use std::rc::Rc;

use sase_model::limits::{Algorithm, LimitKey, Limits, RateLimit};
use sase_model::policy::{HttpResource, Method, Policy, Route, WafMode, WafSettings};
use sase_model::quic::{QuicMode, QuicPolicy, QuicRule};
use yew::prelude::*;

use super::fields::{
    enum_parse, enum_str, CheckField, Errors, ListField, NumberField, SelectField, TextField,
};
use crate::components::empty;

/// A change to the policy being edited.
pub type Edit = Rc<dyn Fn(&mut Policy)>;

/// Wraps a closure as an [`Edit`].
pub fn edit(f: impl Fn(&mut Policy) + 'static) -> Edit {
    Rc::new(f)
}

/// Properties shared by the form sections.
#[derive(Properties, Clone)]
pub struct FormProps {
    /// The policy being edited.
    pub policy: Rc<Policy>,
    /// Its validation errors.
    pub errors: Errors,
    /// Applies a change.
    pub edit: Callback<Edit>,
}

impl PartialEq for FormProps {
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy && self.errors == other.errors && self.edit == other.edit
    }
}

const METHODS: [Method; 7] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Patch,
    Method::Delete,
    Method::Options,
];

const WAF_MODES: [(&str, &str); 3] = [
    ("block", "Block (refuse over the threshold)"),
    ("detect", "Detect only"),
    ("off", "Off"),
];

const QUIC_MODES: [(&str, &str); 4] = [
    ("block", "Block (clients fall back to TCP)"),
    ("inspect", "Inspect (terminate HTTP/3)"),
    ("sni_filter", "Filter by server name"),
    ("drop", "Drop silently"),
];

/// A new resource with one route, for "Add resource".
pub fn new_resource(n: usize) -> HttpResource {
    HttpResource {
        name: format!("app-{n}"),
        hosts: Vec::new(),
        upstream: "http://127.0.0.1:8080".into(),
        issuers: Vec::new(),
        routes: vec![new_route(1)],
        max_body_bytes: 1024 * 1024,
        waf: WafSettings::default(),
        api: None,
        limits: None,
        egress: None,
        graphql: None,
        token_translation: None,
        upstream_tls: None,
        client_certificates: None,
    }
}

/// A new public `GET /` route, for "Add route".
pub fn new_route(n: usize) -> Route {
    Route {
        id: format!("route-{n}"),
        methods: vec![Method::Get],
        path: "/".into(),
        scopes: Vec::new(),
        groups: Vec::new(),
        public: true,
        retired: false,
        waf: None,
        limits: None,
        owner: Vec::new(),
        url_fields: Vec::new(),
    }
}

/// The whole form: resources, access groups, QUIC.
#[function_component]
pub fn PolicyForm(props: &FormProps) -> Html {
    let p = &props.policy;
    let add = {
        let e = props.edit.clone();
        move |_| {
            e.emit(edit(|p: &mut Policy| {
                let n = p.resources.len() + 1;
                p.resources.push(new_resource(n));
            }))
        }
    };
    html! {
        <div class="policy-form">
            <h2>{ "Resources" }</h2>
            if p.resources.is_empty() { { empty("No resource: nothing is published through the edges.") } }
            { for (0..p.resources.len()).map(|i| html! {
                <ResourceForm key={format!("r{i}")} index={i} form={props.clone()} />
            }) }
            <button class="button" type="button" id="add-resource" onclick={add}>{ "Add resource" }</button>
            <GroupsForm ..props.clone() />
            <QuicForm ..props.clone() />
        </div>
    }
}

/// Properties of a per-resource section.
#[derive(Properties, PartialEq, Clone)]
pub struct IndexProps {
    /// Resource index.
    pub index: usize,
    /// The form's state.
    pub form: FormProps,
}

/// Builds the callback that writes one field of resource `i`.
fn on_resource<V: 'static>(
    e: &Callback<Edit>,
    i: usize,
    set: impl Fn(&mut HttpResource, &V) + 'static,
) -> Callback<V> {
    let e = e.clone();
    let set = Rc::new(set);
    Callback::from(move |v: V| {
        let set = set.clone();
        let v = Rc::new(v);
        e.emit(edit(move |p: &mut Policy| {
            if let Some(r) = p.resources.get_mut(i) {
                set(r, &v);
            }
        }))
    })
}

/// One resource: its fields, WAF, rate limits and routes.
#[function_component]
pub fn ResourceForm(props: &IndexProps) -> Html {
    let i = props.index;
    let f = &props.form;
    let Some(r) = f.policy.resources.get(i) else {
        return html! {};
    };
    let errors = f.errors.clone();
    let at = format!("resources[{i}]");
    let id = format!("res-{i}");
    let e = &f.edit;
    let remove = {
        let e = e.clone();
        move |_| {
            e.emit(edit(move |p: &mut Policy| {
                if i < p.resources.len() {
                    p.resources.remove(i);
                }
            }))
        }
    };
    let add_route = {
        let e = e.clone();
        move |_| {
            e.emit(edit(move |p: &mut Policy| {
                if let Some(r) = p.resources.get_mut(i) {
                    let n = r.routes.len() + 1;
                    r.routes.push(new_route(n));
                }
            }))
        }
    };
    html! {
        <section class="card resource" aria-label={format!("Resource {}", r.name)}>
            <div class="row">
                <TextField id={format!("{id}-name")} label="Name" path={format!("{at}.name")} errors={errors.clone()}
                    value={r.name.clone()} onchange={on_resource(e, i, |r, v: &String| r.name.clone_from(v))} />
                <ListField id={format!("{id}-hosts")} label="Host names" path={format!("{at}.hosts")} errors={errors.clone()}
                    value={r.hosts.clone()} hint="Comma-separated; empty answers any host."
                    onchange={on_resource(e, i, |r, v: &Vec<String>| r.hosts.clone_from(v))} />
                <TextField id={format!("{id}-upstream")} label="Upstream URL" path={format!("{at}.upstream")} errors={errors.clone()}
                    value={r.upstream.clone()} onchange={on_resource(e, i, |r, v: &String| r.upstream.clone_from(v))} />
                <ListField id={format!("{id}-issuers")} label="Trusted issuers" path={format!("{at}.issuers")} errors={errors.clone()}
                    value={r.issuers.clone()} onchange={on_resource(e, i, |r, v: &Vec<String>| r.issuers.clone_from(v))} />
                <NumberField id={format!("{id}-max-body")} label="Largest body (bytes)" path={format!("{at}.max_body_bytes")}
                    errors={errors.clone()} value={Some(r.max_body_bytes)} max={u64::MAX}
                    onchange={on_resource(e, i, |r, v: &Option<u64>| r.max_body_bytes = v.unwrap_or(0))} />
                <button class="button danger" type="button" onclick={remove}
                    aria-label={format!("Remove resource {}", r.name)}>{ "Remove" }</button>
            </div>
            <h3>{ "Routes" }</h3>
            <div class="table-wrap">
                <table class="routes">
                    <thead><tr>
                        <th>{ "Id" }</th><th>{ "Methods" }</th><th>{ "Path" }</th>
                        <th>{ "Required scopes" }</th><th>{ "Required groups" }</th><th>{ "Public" }</th>
                        <th><span class="visually-hidden">{ "Actions" }</span></th>
                    </tr></thead>
                    <tbody>
                        { for (0..r.routes.len()).map(|o| html! { <RouteRow key={format!("r{i}-{o}")} index={i} route={o} form={f.clone()} /> }) }
                    </tbody>
                </table>
            </div>
            <button class="button" type="button" id={format!("{id}-add-route")} onclick={add_route}>{ "Add route" }</button>
            <WafForm index={i} form={f.clone()} />
            <RateLimits index={i} form={f.clone()} />
        </section>
    }
}

/// Properties of a route row.
#[derive(Properties, PartialEq, Clone)]
pub struct RouteProps {
    /// Resource index.
    pub index: usize,
    /// Route index.
    pub route: usize,
    /// The form's state.
    pub form: FormProps,
}

fn on_route<V: 'static>(
    e: &Callback<Edit>,
    i: usize,
    o: usize,
    set: impl Fn(&mut Route, &V) + 'static,
) -> Callback<V> {
    on_resource(e, i, move |r, v: &V| {
        if let Some(route) = r.routes.get_mut(o) {
            set(route, v);
        }
    })
}

/// One route as a table row (labels are visually hidden: the header names the columns).
#[function_component]
pub fn RouteRow(props: &RouteProps) -> Html {
    let (i, o, f) = (props.index, props.route, &props.form);
    let Some(route) = f.policy.resources.get(i).and_then(|r| r.routes.get(o)) else {
        return html! {};
    };
    let errors = f.errors.clone();
    let at = format!("resources[{i}].routes[{o}]");
    let id = format!("res-{i}-route-{o}");
    let e = &f.edit;
    let method_errors = super::fields::errors_at(&errors, &format!("{at}.methods"));
    let remove = on_resource(e, i, move |r, (): &()| {
        if o < r.routes.len() {
            r.routes.remove(o);
        }
    });
    html! {
        <tr data-route={route.id.clone()}>
            <td><TextField id={format!("{id}-id")} label="Route id" path={format!("{at}.id")} errors={errors.clone()}
                value={route.id.clone()} onchange={on_route(e, i, o, |r, v: &String| r.id.clone_from(v))} /></td>
            <td>
                <fieldset class="methods">
                    <legend class="visually-hidden">{ format!("Methods of {}", route.id) }</legend>
                    { for METHODS.iter().map(|m| {
                        let m = *m;
                        let on = route.methods.contains(&m);
                        let toggle = on_route(e, i, o, move |r, (): &()| {
                            if r.methods.contains(&m) { r.methods.retain(|x| *x != m) } else { r.methods.push(m); r.methods.sort(); }
                        });
                        html! {
                            <label class="method">
                                <input type="checkbox" checked={on} id={format!("{id}-m-{}", m.as_str())}
                                    onchange={move |_| toggle.emit(())} />{ m.as_str() }
                            </label>
                        }
                    }) }
                    if !method_errors.is_empty() {
                        <ul class="field-error" role="alert">{ for method_errors.iter().map(|m| html! { <li>{ m }</li> }) }</ul>
                    }
                </fieldset>
            </td>
            <td><TextField id={format!("{id}-path")} label="Path" path={format!("{at}.path")} errors={errors.clone()}
                value={route.path.clone()} onchange={on_route(e, i, o, |r, v: &String| r.path.clone_from(v))} /></td>
            <td><ListField id={format!("{id}-scopes")} label="Scopes" path={format!("{at}.scopes")} errors={errors.clone()}
                value={route.scopes.clone()} onchange={on_route(e, i, o, |r, v: &Vec<String>| r.scopes.clone_from(v))} /></td>
            <td><ListField id={format!("{id}-groups")} label="Groups" path={format!("{at}.groups")} errors={errors.clone()}
                value={route.groups.clone()} onchange={on_route(e, i, o, |r, v: &Vec<String>| r.groups.clone_from(v))} /></td>
            <td><CheckField id={format!("{id}-public")} label="No token" path={format!("{at}.public")} errors={errors.clone()}
                value={route.public} onchange={on_route(e, i, o, |r, v: &bool| r.public = *v)} /></td>
            <td><button class="button danger" type="button" aria-label={format!("Remove route {}", route.id)}
                onclick={move |_| remove.emit(())}>{ "Remove" }</button></td>
        </tr>
    }
}

/// The resource's WAF settings.
#[function_component]
pub fn WafForm(props: &IndexProps) -> Html {
    let (i, f) = (props.index, &props.form);
    let Some(r) = f.policy.resources.get(i) else {
        return html! {};
    };
    let errors = f.errors.clone();
    let at = format!("resources[{i}].waf");
    let id = format!("res-{i}-waf");
    let e = &f.edit;
    let w = &r.waf;
    html! {
        <fieldset class="subform">
            <legend>{ "Web application firewall (OWASP CRS)" }</legend>
            <div class="row">
                <SelectField id={format!("{id}-mode")} label="Mode" path={format!("{at}.mode")} errors={errors.clone()}
                    value={enum_str(&w.mode)} options={WAF_MODES.to_vec()}
                    onchange={on_resource(e, i, |r, v: &String| if let Some(m) = enum_parse::<WafMode>(v) { r.waf.mode = m })} />
                <NumberField id={format!("{id}-paranoia")} label="Paranoia level (1-4)" path={format!("{at}.paranoia_level")}
                    errors={errors.clone()} value={Some(u64::from(w.paranoia_level))} max={u64::from(u8::MAX)}
                    onchange={on_resource(e, i, |r, v: &Option<u64>| r.waf.paranoia_level = v.and_then(|v| u8::try_from(v).ok()).unwrap_or(0))} />
                <NumberField id={format!("{id}-inbound")} label="Inbound anomaly threshold" path={format!("{at}.inbound_threshold")}
                    errors={errors.clone()} value={Some(u64::from(w.inbound_threshold))} max={u64::from(u32::MAX)}
                    onchange={on_resource(e, i, |r, v: &Option<u64>| r.waf.inbound_threshold = v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))} />
                <NumberField id={format!("{id}-outbound")} label="Outbound anomaly threshold" path={format!("{at}.outbound_threshold")}
                    errors={errors.clone()} value={Some(u64::from(w.outbound_threshold))} max={u64::from(u32::MAX)}
                    onchange={on_resource(e, i, |r, v: &Option<u64>| r.waf.outbound_threshold = v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))} />
                <CheckField id={format!("{id}-responses")} label="Inspect responses" path={format!("{at}.inspect_responses")}
                    errors={errors.clone()} value={w.inspect_responses}
                    onchange={on_resource(e, i, |r, v: &bool| r.waf.inspect_responses = *v)} />
            </div>
        </fieldset>
    }
}

fn on_rate<V: 'static>(
    e: &Callback<Edit>,
    i: usize,
    k: usize,
    set: impl Fn(&mut RateLimit, &V) + 'static,
) -> Callback<V> {
    on_resource(e, i, move |r, v: &V| {
        if let Some(rate) = r.limits.as_mut().and_then(|l| l.rate.get_mut(k)) {
            set(rate, v);
        }
    })
}

fn u32_of(v: Option<u64>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// The resource's rate limits.
#[function_component]
pub fn RateLimits(props: &IndexProps) -> Html {
    let (i, f) = (props.index, &props.form);
    let Some(r) = f.policy.resources.get(i) else {
        return html! {};
    };
    let errors = f.errors.clone();
    let e = &f.edit;
    let rates = r
        .limits
        .as_ref()
        .map(|l| l.rate.clone())
        .unwrap_or_default();
    let add = on_resource(e, i, |r, (): &()| {
        let limits = r.limits.get_or_insert_with(Limits::default);
        let n = limits.rate.len() + 1;
        limits.rate.push(RateLimit {
            id: format!("limit-{n}"),
            per: LimitKey::Client,
            algorithm: Algorithm::TokenBucket,
            requests: 100,
            window_seconds: 60,
            burst: None,
            shared: false,
        });
    });
    html! {
        <fieldset class="subform">
            <legend>{ "Rate limits" }</legend>
            if rates.is_empty() { { empty("No rate limit on this resource.") } }
            { for rates.iter().enumerate().map(|(k, rate)| {
                let at = format!("resources[{i}].limits.rate[{k}]");
                let id = format!("res-{i}-rate-{k}");
                let remove = on_resource(e, i, move |r, (): &()| {
                    if let Some(l) = r.limits.as_mut() {
                        if k < l.rate.len() { l.rate.remove(k); }
                        if l == &Limits::default() { r.limits = None; }
                    }
                });
                html! {
                    <div class="row" key={id.clone()}>
                        <TextField id={format!("{id}-id")} label="Id" path={format!("{at}.id")} errors={errors.clone()}
                            value={rate.id.clone()} onchange={on_rate(e, i, k, |l, v: &String| l.id.clone_from(v))} />
                        <SelectField id={format!("{id}-per")} label="Counted per" path={format!("{at}.per")} errors={errors.clone()}
                            value={enum_str(&rate.per)} options={vec![("client", "Client (token subject)"), ("ip", "IP address"), ("route", "Route (everyone)")]}
                            onchange={on_rate(e, i, k, |l, v: &String| if let Some(p) = enum_parse::<LimitKey>(v) { l.per = p })} />
                        <SelectField id={format!("{id}-algorithm")} label="Algorithm" path={format!("{at}.algorithm")} errors={errors.clone()}
                            value={enum_str(&rate.algorithm)} options={vec![("token_bucket", "Token bucket"), ("sliding_window", "Sliding window")]}
                            onchange={on_rate(e, i, k, |l, v: &String| if let Some(a) = enum_parse::<Algorithm>(v) { l.algorithm = a })} />
                        <NumberField id={format!("{id}-requests")} label="Requests" path={format!("{at}.requests")} errors={errors.clone()}
                            value={Some(u64::from(rate.requests))} max={u64::from(u32::MAX)}
                            onchange={on_rate(e, i, k, |l, v: &Option<u64>| l.requests = u32_of(*v))} />
                        <NumberField id={format!("{id}-window")} label="Per seconds" path={format!("{at}.window_seconds")} errors={errors.clone()}
                            value={Some(u64::from(rate.window_seconds))} max={u64::from(u32::MAX)}
                            onchange={on_rate(e, i, k, |l, v: &Option<u64>| l.window_seconds = u32_of(*v))} />
                        <NumberField id={format!("{id}-burst")} label="Burst" path={format!("{at}.burst")} errors={errors.clone()}
                            value={rate.burst.map(u64::from)} max={u64::from(u32::MAX)} optional=true
                            onchange={on_rate(e, i, k, |l, v: &Option<u64>| l.burst = v.map(|v| u32_of(Some(v))))} />
                        <CheckField id={format!("{id}-shared")} label="Shared by all edges" path={format!("{at}.shared")} errors={errors.clone()}
                            value={rate.shared} onchange={on_rate(e, i, k, |l, v: &bool| l.shared = *v)} />
                        <button class="button danger" type="button" aria-label={format!("Remove rate limit {}", rate.id)}
                            onclick={move |_| remove.emit(())}>{ "Remove" }</button>
                    </div>
                }
            }) }
            <button class="button" type="button" id={format!("res-{i}-add-rate")} onclick={move |_| add.emit(())}>{ "Add rate limit" }</button>
        </fieldset>
    }
}

/// The access groups: named sets of subjects that routes may require.
#[function_component]
pub fn GroupsForm(props: &FormProps) -> Html {
    let errors = props.errors.clone();
    let e = props.edit.clone();
    let new_name = use_state(String::new);
    let add = {
        let (e, new_name) = (e.clone(), new_name.clone());
        Callback::from(move |ev: SubmitEvent| {
            ev.prevent_default();
            let name = new_name.trim().to_string();
            if name.is_empty() {
                return;
            }
            new_name.set(String::new());
            e.emit(edit(move |p: &mut Policy| {
                p.groups.entry(name.clone()).or_default();
            }))
        })
    };
    html! {
        <section class="card">
            <h2>{ "Access groups" }</h2>
            <p class="muted">{ "Routes may require membership; tokens may also carry group names in a groups claim." }</p>
            if props.policy.groups.is_empty() { { empty("No group.") } }
            { for props.policy.groups.iter().map(|(name, g)| {
                let (n1, n2) = (name.clone(), name.clone());
                let set = {
                    let e = e.clone();
                    Callback::from(move |v: Vec<String>| {
                        let n = n1.clone();
                        e.emit(edit(move |p: &mut Policy| {
                            if let Some(g) = p.groups.get_mut(&n) { g.members.clone_from(&v) }
                        }))
                    })
                };
                let remove = {
                    let e = e.clone();
                    move |_| { let n = n2.clone(); e.emit(edit(move |p: &mut Policy| { p.groups.remove(&n); })) }
                };
                html! {
                    <div class="row" key={name.clone()}>
                        <ListField id={format!("group-{name}-members")} label={format!("Members of {name}")}
                            path={format!("groups.{name}")} errors={errors.clone()} value={g.members.clone()} onchange={set} />
                        <button class="button danger" type="button" aria-label={format!("Remove group {name}")} onclick={remove}>{ "Remove" }</button>
                    </div>
                }
            }) }
            <form class="row" onsubmit={add}>
                <div class="field">
                    <label for="new-group">{ "New group" }</label>
                    <input id="new-group" value={(*new_name).clone()}
                        oninput={{ let n = new_name.clone(); move |ev: InputEvent| n.set(crate::components::input_value(&ev)) }} />
                </div>
                <button class="button" type="submit">{ "Add group" }</button>
            </form>
        </section>
    }
}

fn on_quic<V: 'static>(
    e: &Callback<Edit>,
    set: impl Fn(&mut QuicPolicy, &V) + 'static,
) -> Callback<V> {
    let e = e.clone();
    let set = Rc::new(set);
    Callback::from(move |v: V| {
        let set = set.clone();
        let v = Rc::new(v);
        e.emit(edit(move |p: &mut Policy| {
            set(p.quic.get_or_insert_with(QuicPolicy::default), &v)
        }))
    })
}

/// The QUIC (HTTP/3) block.
#[function_component]
pub fn QuicForm(props: &FormProps) -> Html {
    let errors = props.errors.clone();
    let e = &props.edit;
    let toggle = {
        let e = e.clone();
        let on = props.policy.quic.is_some();
        move |_| {
            e.emit(edit(move |p: &mut Policy| {
                p.quic = if on {
                    None
                } else {
                    Some(QuicPolicy::default())
                }
            }))
        }
    };
    html! {
        <section class="card">
            <h2>{ "QUIC (HTTP/3)" }</h2>
            <label for="quic-enabled">
                <input id="quic-enabled" type="checkbox" checked={props.policy.quic.is_some()} onchange={toggle} />
                { " Handle QUIC on the edges (off: no UDP listener)" }
            </label>
            if let Some(q) = &props.policy.quic {
                <div class="row">
                    <SelectField id="quic-mode" label="Default mode" path="quic.mode" errors={errors.clone()}
                        value={enum_str(&q.mode)} options={QUIC_MODES.to_vec()}
                        onchange={on_quic(e, |q, v: &String| if let Some(m) = enum_parse::<QuicMode>(v) { q.mode = m })} />
                </div>
                <h3>{ "Rules (first match wins)" }</h3>
                { for q.rules.iter().enumerate().map(|(k, rule)| {
                    let at = format!("quic.rules[{k}]");
                    let id = format!("quic-rule-{k}");
                    let opt = |s: &String| (!s.trim().is_empty()).then(|| s.trim().to_string());
                    let remove = on_quic(e, move |q, (): &()| { if k < q.rules.len() { q.rules.remove(k); } });
                    html! {
                        <div class="row" key={id.clone()}>
                            <TextField id={format!("{id}-resource")} label="Resource" path={format!("{at}.resource")} errors={errors.clone()}
                                value={rule.resource.clone().unwrap_or_default()}
                                onchange={on_quic(e, move |q, v: &String| if let Some(r) = q.rules.get_mut(k) { r.resource = opt(v) })} />
                            <TextField id={format!("{id}-sni")} label="Server name" path={format!("{at}.sni")} errors={errors.clone()}
                                value={rule.sni.clone().unwrap_or_default()}
                                onchange={on_quic(e, move |q, v: &String| if let Some(r) = q.rules.get_mut(k) { r.sni = opt(v) })} />
                            <SelectField id={format!("{id}-mode")} label="Mode" path={format!("{at}.mode")} errors={errors.clone()}
                                value={enum_str(&rule.mode)} options={QUIC_MODES.to_vec()}
                                onchange={on_quic(e, move |q, v: &String| if let (Some(r), Some(m)) = (q.rules.get_mut(k), enum_parse::<QuicMode>(v)) { r.mode = m })} />
                            <TextField id={format!("{id}-upstream")} label="Upstream (host:port)" path={format!("{at}.upstream")} errors={errors.clone()}
                                value={rule.upstream.clone().unwrap_or_default()}
                                onchange={on_quic(e, move |q, v: &String| if let Some(r) = q.rules.get_mut(k) { r.upstream = opt(v) })} />
                            <button class="button danger" type="button" aria-label={format!("Remove QUIC rule {}", k + 1)}
                                onclick={move |_| remove.emit(())}>{ "Remove" }</button>
                        </div>
                    }
                }) }
                <button class="button" type="button" id="quic-add-rule"
                    onclick={{ let add = on_quic(e, |q, (): &()| q.rules.push(QuicRule { resource: None, sni: None, mode: QuicMode::Block, upstream: None })); move |_| add.emit(()) }}>
                    { "Add QUIC rule" }
                </button>
            }
        </section>
    }
}
