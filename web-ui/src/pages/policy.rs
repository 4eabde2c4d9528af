//! The Policy page: the selected tenant's policy as forms ([`forms`]) validated as you type by
//! `sase_model::policy::Policy::validate` — the control plane's own check, compiled into the
//! console — with each error shown at its field path ([`fields`]); a YAML view (editable,
//! parsed with `Policy::parse_yaml` as typed); a line diff against the deployed version
//! ([`diff`]); and the deploy actions: deploy to every edge (`PUT …/policy`), start a canary
//! (`POST …/policy/rollouts`), promote it, roll back (`POST …/policy/rollback`), with the
//! latest rollout and the version history. The ZTNA access rules (group → networks through the
//! tunnel) have their own API and card ([`access_rules`]).

pub mod access_rules;
pub mod diff;
pub mod fields;
pub mod forms;

use std::rc::Rc;

use sase_model::policy::Policy;
use sase_model::ValidationError;
use serde::{Deserialize, Serialize};
use yew::prelude::*;

use self::forms::{Edit, PolicyForm};
use crate::api::{self, ApiError};
use crate::components::{
    badge, fmt_time, input_value, load_view, no_tenant, ErrorBox, PageHeader, Tone,
};
use crate::shell::{use_interval, use_load, use_shell, Load};

/// `GET /api/tenants/{id}/policy` and each `…/policy/versions` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PolicyVersion {
    /// Version number.
    pub version: u64,
    /// The policy.
    pub policy: Policy,
    /// Who made it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_at_ms: i64,
    /// Edges it was pushed to at once (answers to a change).
    #[serde(default)]
    pub pushed_to: Option<usize>,
}

/// `GET …/policy/rollouts/latest`, the part shown.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rollout {
    /// Version rolled out.
    pub version: u64,
    /// Version the rest of the fleet keeps meanwhile.
    pub stable_version: u64,
    /// `canary`, `promoted`, `rolled_back` or `superseded`.
    pub status: String,
    /// Canary window (ms).
    pub window_ms: i64,
    /// Started (Unix ms).
    pub started_at_ms: i64,
    /// Why it was decided so.
    #[serde(default)]
    pub reason: Option<String>,
    /// The canaries.
    pub canaries: Vec<CanaryHealth>,
}

/// One canary's health.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CanaryHealth {
    /// Device.
    pub device_id: String,
    /// `None` until it reports.
    pub healthy: Option<bool>,
    /// Failing upstreams.
    #[serde(default)]
    pub failing: Vec<String>,
}

#[derive(Serialize)]
struct NewRollout<'a> {
    policy: &'a Policy,
    canary: CanaryPick,
    window_secs: u64,
}

#[derive(Serialize)]
struct CanaryPick {
    percent: u8,
}

#[derive(Serialize)]
struct RollbackRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

/// Every problem `sase-model` finds in `policy` (empty when valid).
pub fn validation_errors(policy: &Policy) -> Vec<ValidationError> {
    policy.validate().err().map(|e| e.0).unwrap_or_default()
}

/// The policy as YAML (what the YAML view and the diff show).
pub fn to_yaml(policy: &Policy) -> String {
    serde_yaml::to_string(policy).unwrap_or_else(|e| format!("# cannot show as YAML: {e}\n"))
}

/// The policy being edited and the deployed version it started from.
#[derive(Clone, PartialEq, Default)]
struct Draft {
    policy: Rc<Policy>,
    base: Option<u64>,
}

enum DraftAction {
    Replace(Policy, Option<u64>),
    Apply(Edit),
}

impl Reducible for Draft {
    type Action = DraftAction;
    fn reduce(self: Rc<Self>, action: DraftAction) -> Rc<Self> {
        match action {
            DraftAction::Replace(policy, base) => Rc::new(Draft {
                policy: Rc::new(policy),
                base,
            }),
            DraftAction::Apply(edit) => {
                let mut next = (*self.policy).clone();
                edit(&mut next);
                Rc::new(Draft {
                    policy: Rc::new(next),
                    base: self.base,
                })
            }
        }
    }
}

/// The Policy page.
#[function_component]
pub fn PolicyPage() -> Html {
    let shell = use_shell();
    let Some(tenant_id) = shell.tenant_id.clone() else {
        return html! { <><PageHeader title="Policy" />{ no_tenant() }</> };
    };
    html! { <PolicyEditor key={tenant_id.clone()} tenant_id={tenant_id.clone()} /> }
}

#[derive(Properties, PartialEq)]
struct EditorProps {
    tenant_id: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Tab {
    Form,
    Yaml,
    Diff,
}

/// The deployed version: `Ok(None)` when the tenant has none yet.
fn deployed_of(load: &Load<PolicyVersion>) -> Option<Result<Option<&PolicyVersion>, &ApiError>> {
    match load {
        Load::Ready(v) => Some(Ok(Some(v))),
        Load::Failed(e) if e.status == 404 => Some(Ok(None)),
        Load::Failed(e) => Some(Err(e)),
        Load::Idle | Load::Loading => None,
    }
}

#[function_component]
fn PolicyEditor(props: &EditorProps) -> Html {
    let shell = use_shell();
    let t = api::enc(&props.tenant_id);
    let base = format!("/api/tenants/{t}/policy");
    let deployed = use_load::<PolicyVersion>(Some(base.clone()));
    let rollout = use_load::<Rollout>(Some(format!("{base}/rollouts/latest")));
    let versions = use_load::<Vec<PolicyVersion>>(Some(format!("{base}/versions")));
    let canary_running = matches!(&*rollout.state, Load::Ready(r) if r.status == "canary");
    use_interval(3_000, canary_running, rollout.reload.clone());
    let draft = use_reducer(Draft::default);
    let tab = use_state(|| Tab::Form);
    let notice = use_state(|| None::<String>);
    let failure = use_state(|| None::<ApiError>);
    let busy = use_state(|| false);
    let percent = use_state(|| "50".to_string());
    let window = use_state(|| "300".to_string());

    // A newly loaded deployed version (first load, after a deploy) becomes the draft.
    {
        let draft = draft.dispatcher();
        let loaded = match &*deployed.state {
            Load::Ready(v) => Some(Some((v.version, v.policy.clone()))),
            Load::Failed(e) if e.status == 404 => Some(None),
            _ => None,
        };
        let key = loaded.as_ref().map(|l| l.as_ref().map(|(v, _)| *v));
        use_effect_with(key, move |_| match loaded {
            Some(Some((version, policy))) => {
                draft.dispatch(DraftAction::Replace(policy, Some(version)))
            }
            Some(None) => draft.dispatch(DraftAction::Replace(Policy::default(), None)),
            None => {}
        });
    }

    let Some(deployed_state) = deployed_of(&deployed.state) else {
        return html! { <><PageHeader title="Policy" />{ load_view(&deployed.state, "the policy", &deployed.reload, |_| html! {}) }</> };
    };
    let deployed_version = match deployed_state {
        Ok(v) => v.cloned(),
        Err(e) => {
            return html! { <><PageHeader title="Policy" /><ErrorBox error={e.clone()} retry={deployed.reload.clone()} /></> };
        }
    };

    let policy = draft.policy.clone();
    let errors: Rc<Vec<ValidationError>> = Rc::new(validation_errors(&policy));
    let deployed_yaml = deployed_version
        .as_ref()
        .map(|v| to_yaml(&v.policy))
        .unwrap_or_default();
    let draft_yaml = to_yaml(&policy);
    let changed = deployed_version.as_ref().map(|v| &v.policy) != Some(&*policy);
    let can_write = shell.me.can("policy.write");

    let edit = {
        let d = draft.dispatcher();
        Callback::from(move |e: Edit| d.dispatch(DraftAction::Apply(e)))
    };
    let replace = {
        let (d, b) = (draft.dispatcher(), draft.base);
        Callback::from(move |p: Policy| d.dispatch(DraftAction::Replace(p, b)))
    };
    // Runs an API call, then shows its outcome and reloads what it changed.
    let run = {
        let (notice, failure, busy) = (notice.clone(), failure.clone(), busy.clone());
        let reloads = [
            deployed.reload.clone(),
            rollout.reload.clone(),
            versions.reload.clone(),
        ];
        move |call: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, ApiError>>>,
        >| {
            let (notice, failure, busy, reloads) = (
                notice.clone(),
                failure.clone(),
                busy.clone(),
                reloads.clone(),
            );
            busy.set(true);
            notice.set(None);
            failure.set(None);
            wasm_bindgen_futures::spawn_local(async move {
                match call.await {
                    Ok(text) => notice.set(Some(text)),
                    Err(e) => failure.set(Some(e)),
                }
                busy.set(false);
                for r in &reloads {
                    r.emit(());
                }
            });
        }
    };
    let deploy = {
        let (run, policy, base) = (run.clone(), policy.clone(), base.clone());
        Callback::from(move |_| {
            let (policy, base) = (policy.clone(), base.clone());
            run(Box::pin(async move {
                let v: PolicyVersion = api::put(&base, &*policy).await?;
                Ok(format!(
                    "Deployed as version {}, pushed to {} edge(s).",
                    v.version,
                    v.pushed_to.unwrap_or(0)
                ))
            }))
        })
    };
    let canary = {
        let (run, policy, base) = (run.clone(), policy.clone(), base.clone());
        let (percent, window, failure) = (percent.clone(), window.clone(), failure.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let pct = percent
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p));
            let win = window
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|w| (1..=86_400).contains(w));
            let (Some(pct), Some(win)) = (pct, win) else {
                failure.set(Some(ApiError {
                    status: 400,
                    code: "invalid".into(),
                    message: "Canary share: 1-100 %; window: 1-86400 seconds.".into(),
                    errors: Vec::new(),
                }));
                return;
            };
            let (policy, base) = (policy.clone(), base.clone());
            run(Box::pin(async move {
                let body = NewRollout {
                    policy: &policy,
                    canary: CanaryPick { percent: pct },
                    window_secs: win,
                };
                let r: Rollout = api::post(&format!("{base}/rollouts"), &body).await?;
                Ok(format!(
                    "Canary started: version {} on {} edge(s) for {} s; the rest keep version {}.",
                    r.version,
                    r.canaries.len(),
                    r.window_ms / 1000,
                    r.stable_version
                ))
            }))
        })
    };
    let rollback = {
        let (run, base) = (run.clone(), base.clone());
        Callback::from(move |version: Option<u64>| {
            let base = base.clone();
            run(Box::pin(async move {
                api::post::<_, serde_json::Value>(
                    &format!("{base}/rollback"),
                    &RollbackRequest { version },
                )
                .await?;
                Ok(match version {
                    Some(v) => format!(
                        "Rolled back to the policy of version {v} (published as a new version)."
                    ),
                    None => "Rolled back to the previous policy (published as a new version)."
                        .to_string(),
                })
            }))
        })
    };
    let promote = {
        let (run, base) = (run.clone(), base.clone());
        Callback::from(move |_| {
            let base = base.clone();
            run(Box::pin(async move {
                let r: Rollout = api::post(&format!("{base}/rollouts/promote"), &()).await?;
                Ok(format!("Version {} promoted to every edge.", r.version))
            }))
        })
    };
    let discard = {
        let (d, v) = (draft.dispatcher(), deployed_version.clone());
        Callback::from(move |_| {
            d.dispatch(DraftAction::Replace(
                v.as_ref().map(|v| v.policy.clone()).unwrap_or_default(),
                v.as_ref().map(|v| v.version),
            ))
        })
    };

    let tab_button = |which: Tab, label: String, id: &'static str| {
        let tab = tab.clone();
        let selected = *tab == which;
        html! {
            <button class={classes!("tab", selected.then_some("selected"))} role="tab" id={id}
                aria-selected={selected.to_string()} type="button"
                onclick={move |_| tab.set(which)}>{ label }</button>
        }
    };
    let diff_lines = diff::changed_lines(&deployed_yaml, &draft_yaml);
    let status = if errors.is_empty() {
        badge(Tone::Good, "Valid")
    } else {
        badge(Tone::Bad, format!("{} problem(s)", errors.len()))
    };
    let deploy_blocked = !errors.is_empty() || !changed || *busy || !can_write;
    html! {
        <>
            <PageHeader title="Policy"
                subtitle={match &deployed_version {
                    Some(v) => format!("Deployed: version {} by {} at {}.", v.version, v.created_by, fmt_time(v.created_at_ms)),
                    None => "Nothing deployed yet: the edges refuse every request.".to_string(),
                }}>
                { status }
                if changed { { badge(Tone::Warn, "Changed, not deployed") } }
            </PageHeader>
            if !errors.is_empty() {
                <div class="error-box" role="status" id="policy-errors">
                    <strong>{ "The policy is not valid (as the control plane would say):" }</strong>
                    <ul class="field-errors">
                        { for errors.iter().map(|e| html! { <li><code>{ &e.path }</code>{ ": " }{ &e.message }</li> }) }
                    </ul>
                </div>
            }
            if let Some(n) = &*notice { <div class="notice" role="status" id="policy-notice">{ n }</div> }
            if let Some(e) = &*failure { <ErrorBox error={e.clone()} /> }
            <div class="tabs" role="tablist" aria-label="Policy views">
                { tab_button(Tab::Form, "Form".into(), "tab-form") }
                { tab_button(Tab::Yaml, "YAML".into(), "tab-yaml") }
                { tab_button(Tab::Diff, format!("Diff against deployed ({diff_lines})"), "tab-diff") }
            </div>
            <div class="grid-2">
                <div role="tabpanel">
                    { match *tab {
                        Tab::Form => html! { <>
                            <PolicyForm policy={policy.clone()} errors={errors.clone()} edit={edit} />
                            <access_rules::AccessRules base={format!("/api/tenants/{t}/ztna")} can_write={can_write} />
                        </> },
                        Tab::Yaml => html! { <YamlView yaml={draft_yaml.clone()} apply={replace} /> },
                        Tab::Diff => diff::view(&deployed_yaml, &draft_yaml),
                    } }
                </div>
                <aside>
                    <section class="card" aria-labelledby="deploy-title">
                        <h2 id="deploy-title">{ "Deploy" }</h2>
                        if !can_write { <p class="muted">{ "You may read this policy but not change it." }</p> }
                        <div class="row">
                            <button class="button primary" id="deploy" type="button" disabled={deploy_blocked} onclick={deploy}>
                                { "Deploy to every edge" }
                            </button>
                            <button class="button" type="button" disabled={!changed} onclick={discard}>{ "Discard changes" }</button>
                        </div>
                        <form class="row" onsubmit={canary}>
                            <div class="field">
                                <label for="canary-percent">{ "Canary share (%)" }</label>
                                <input id="canary-percent" inputmode="numeric" size="4" value={(*percent).clone()}
                                    oninput={{ let p = percent.clone(); move |e: InputEvent| p.set(input_value(&e)) }} />
                            </div>
                            <div class="field">
                                <label for="canary-window">{ "Healthy for (s)" }</label>
                                <input id="canary-window" inputmode="numeric" size="6" value={(*window).clone()}
                                    oninput={{ let w = window.clone(); move |e: InputEvent| w.set(input_value(&e)) }} />
                            </div>
                            <button class="button" id="canary" type="submit" disabled={deploy_blocked}>{ "Start canary" }</button>
                        </form>
                        <div class="row">
                            <button class="button danger" id="rollback" type="button"
                                disabled={*busy || !can_write || deployed_version.is_none()}
                                onclick={{ let r = rollback.clone(); move |_| r.emit(None) }}>{ "Roll back" }</button>
                        </div>
                    </section>
                    <section class="card" aria-labelledby="rollout-title">
                        <h2 id="rollout-title">{ "Latest rollout" }</h2>
                        { match &*rollout.state {
                            Load::Failed(e) if e.status == 404 => html! { <p class="empty">{ "No canary rollout yet." }</p> },
                            other => load_view(other, "the rollout", &rollout.reload, |r: &Rollout| html! {
                                <>
                                    <dl class="details">
                                        <dt>{ "Version" }</dt><dd>{ format!("v{} (stable v{})", r.version, r.stable_version) }</dd>
                                        <dt>{ "Status" }</dt><dd>{ match r.status.as_str() {
                                            "canary" => badge(Tone::Warn, "Canary running"),
                                            "promoted" => badge(Tone::Good, "Promoted"),
                                            "rolled_back" => badge(Tone::Bad, "Rolled back"),
                                            s => badge(Tone::Plain, s.replace('_', " ")),
                                        } }</dd>
                                        <dt>{ "Started" }</dt><dd>{ fmt_time(r.started_at_ms) }</dd>
                                        if let Some(why) = &r.reason { <dt>{ "Why" }</dt><dd>{ why }</dd> }
                                        <dt>{ "Canaries" }</dt><dd>
                                            { for r.canaries.iter().map(|c| html! { <div>
                                                <span class="mono">{ &c.device_id }</span>{ " " }
                                                { match c.healthy { Some(true) => badge(Tone::Good, "healthy"), Some(false) => badge(Tone::Bad, format!("failing {}", c.failing.join(", "))), None => badge(Tone::Plain, "not reported") } }
                                            </div> }) }
                                        </dd>
                                    </dl>
                                    if r.status == "canary" && can_write {
                                        <button class="button" type="button" onclick={promote.clone()}>{ "Promote now" }</button>
                                    }
                                </>
                            }),
                        } }
                    </section>
                    <section class="card" aria-labelledby="versions-title">
                        <h2 id="versions-title">{ "Versions" }</h2>
                        { load_view(&versions.state, "versions", &versions.reload, |list: &Vec<PolicyVersion>| html! {
                            <div class="table-wrap"><table>
                                <thead><tr><th>{ "Version" }</th><th>{ "By" }</th><th>{ "When" }</th><th><span class="visually-hidden">{ "Actions" }</span></th></tr></thead>
                                <tbody>{ for list.iter().take(10).map(|v| {
                                    let (r, ver) = (rollback.clone(), v.version);
                                    let current = deployed_version.as_ref().map(|d| d.version) == Some(v.version);
                                    html! { <tr key={v.version}>
                                        <td>{ format!("v{}", v.version) }</td><td>{ &v.created_by }</td><td>{ fmt_time(v.created_at_ms) }</td>
                                        <td>if !current && can_write {
                                            <button class="button" type="button" aria-label={format!("Roll back to version {}", v.version)}
                                                onclick={move |_| r.emit(Some(ver))}>{ "Restore" }</button>
                                        } else if current { { badge(Tone::Good, "deployed") } }</td>
                                    </tr> }
                                }) }</tbody>
                            </table></div>
                        }) }
                    </section>
                </aside>
            </div>
        </>
    }
}

#[derive(Properties, PartialEq)]
struct YamlProps {
    yaml: String,
    apply: Callback<Policy>,
}

/// The policy as YAML, editable: text that parses and validates replaces the form's policy at
/// once; otherwise the errors show under it.
#[function_component]
fn YamlView(props: &YamlProps) -> Html {
    let text = use_state(|| props.yaml.clone());
    let problems = use_state(Vec::<ValidationError>::new);
    let oninput = {
        let (text, problems, apply) = (text.clone(), problems.clone(), props.apply.clone());
        move |e: InputEvent| {
            let t = input_value(&e);
            match Policy::parse_yaml(&t) {
                Ok(p) => {
                    problems.set(Vec::new());
                    apply.emit(p);
                }
                Err(err) => problems.set(err.0),
            }
            text.set(t);
        }
    };
    html! {
        <section class="card">
            <h2><label for="policy-yaml">{ "YAML" }</label></h2>
            <p class="muted">{ "Edits here apply to the form as soon as they parse and validate." }</p>
            <textarea id="policy-yaml" class="code" rows="28" spellcheck="false" value={(*text).clone()} oninput={oninput} />
            if !problems.is_empty() {
                <ul class="field-error" role="alert" id="policy-yaml-errors">
                    { for problems.iter().map(|e| html! { <li><code>{ &e.path }</code>{ ": " }{ &e.message }</li> }) }
                </ul>
            }
        </section>
    }
}
