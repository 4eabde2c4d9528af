//! The tenant's ZTNA access rules (`/api/tenants/{id}/ztna/rules`): which group may reach which
//! networks, protocols and ports through the tunnel, with MFA freshness. Listed with delete; a
//! new rule is checked as you type by the model's own parsers (`IpCidr`, `PortRange`,
//! `TunnelAclRule`) and `sase_model::ztna::AccessRule::validate`, errors under their fields.

use std::rc::Rc;

use sase_model::tunnel::{IpCidr, PortRange, TunnelAclRule};
use sase_model::ztna::{AccessRule, ZtnaError};
use sase_model::ValidationError;
use serde::Deserialize;
use yew::prelude::*;

use super::fields::{NumberField, SelectField, TextField};
use crate::api::{self, ApiError};
use crate::components::{empty, load_view, ErrorBox};
use crate::shell::use_load;

/// `GET …/ztna/rules` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleView {
    /// Id.
    pub id: String,
    /// The rule.
    #[serde(flatten)]
    pub rule: AccessRule,
}

/// The new-rule form's text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleDraft {
    /// Rule name.
    pub name: String,
    /// Group.
    pub group: String,
    /// Destination network (`10.0.0.0/24`).
    pub destination: String,
    /// `tcp`, `udp` or `icmp`.
    pub protocol: String,
    /// Ports (`443`, `8000-8080`; empty: all).
    pub ports: String,
    /// Longest time since the TOTP check, seconds.
    pub mfa_max_age_secs: Option<u64>,
}

fn err(path: &str, message: impl ToString) -> ValidationError {
    ValidationError {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// The rule a draft describes, or every problem found, at field paths as the API names them.
pub fn build_rule(d: &RuleDraft) -> Result<AccessRule, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let destination = IpCidr::try_from(d.destination.trim().to_string())
        .map_err(|e| errors.push(err("resources[0].destination", e)))
        .ok();
    let ports = if d.ports.trim().is_empty() {
        None
    } else {
        PortRange::try_from(d.ports.trim().to_string())
            .map_err(|e| errors.push(err("resources[0].ports", e)))
            .ok()
    };
    let protocol = if d.protocol.is_empty() {
        "tcp"
    } else {
        d.protocol.as_str()
    };
    let resource = destination.and_then(|dest| {
        let raw = serde_json::json!({
            "destination": dest.to_string(),
            "protocol": protocol,
            "ports": ports.map(|p| p.to_string()),
        });
        serde_json::from_value::<TunnelAclRule>(raw)
            .map_err(|e| errors.push(err("resources[0].ports", e)))
            .ok()
    });
    let rule = AccessRule {
        name: d.name.trim().to_string(),
        group: d.group.trim().to_string(),
        resources: resource.into_iter().collect(),
        posture: None,
        mfa_max_age_secs: d.mfa_max_age_secs,
    };
    if errors.is_empty() {
        if let Err(ZtnaError::Invalid { path, message }) = rule.validate() {
            errors.push(err(&path, message));
        }
    }
    if errors.is_empty() {
        Ok(rule)
    } else {
        Err(errors)
    }
}

/// A rule's resources for people: `10.0.0.0/24 tcp 443`.
fn resources_text(rule: &AccessRule) -> String {
    rule.resources
        .iter()
        .map(|r| {
            let proto = super::fields::enum_str(&r.protocol);
            match &r.ports {
                Some(p) => format!("{} {proto} {p}", r.destination),
                None => format!("{} {proto}", r.destination),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Properties: the tenant's ZTNA API base and whether the admin may change rules.
#[derive(Properties, PartialEq)]
pub struct AccessRulesProps {
    /// `/api/tenants/{id}/ztna`.
    pub base: String,
    /// `policy.write`.
    pub can_write: bool,
}

/// The access rules card.
#[function_component]
pub fn AccessRules(props: &AccessRulesProps) -> Html {
    let rules = use_load::<Vec<RuleView>>(Some(format!("{}/rules", props.base)));
    let draft = use_state(|| RuleDraft {
        protocol: "tcp".into(),
        ..RuleDraft::default()
    });
    let touched = use_state(|| false);
    let failure = use_state(|| None::<ApiError>);
    let built = build_rule(&draft);
    let errors: Rc<Vec<ValidationError>> = Rc::new(match (&built, *touched) {
        (Err(e), true) => e.clone(),
        _ => Vec::new(),
    });
    let set = |f: fn(&mut RuleDraft, String)| {
        let (draft, touched) = (draft.clone(), touched.clone());
        Callback::from(move |v: String| {
            let mut d = (*draft).clone();
            f(&mut d, v);
            draft.set(d);
            touched.set(true);
        })
    };
    let onsubmit = {
        let (draft, touched, failure, reload) = (
            draft.clone(),
            touched.clone(),
            failure.clone(),
            rules.reload.clone(),
        );
        let url = format!("{}/rules", props.base);
        let built = built.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            touched.set(true);
            let Ok(rule) = built.clone() else { return };
            let (draft, touched, failure, reload, url) = (
                draft.clone(),
                touched.clone(),
                failure.clone(),
                reload.clone(),
                url.clone(),
            );
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, serde_json::Value>(&url, &rule).await {
                    Ok(_) => {
                        failure.set(None);
                        draft.set(RuleDraft {
                            protocol: "tcp".into(),
                            ..RuleDraft::default()
                        });
                        touched.set(false);
                        reload.emit(());
                    }
                    Err(e) => failure.set(Some(e)),
                }
            });
        })
    };
    let delete = {
        let (failure, reload, base) = (failure.clone(), rules.reload.clone(), props.base.clone());
        Callback::from(move |id: String| {
            let (failure, reload, url) = (
                failure.clone(),
                reload.clone(),
                format!("{base}/rules/{}", api::enc(&id)),
            );
            wasm_bindgen_futures::spawn_local(async move {
                failure.set(api::delete(&url).await.err());
                reload.emit(());
            });
        })
    };
    let can_write = props.can_write;
    html! {
        <section class="card" aria-labelledby="access-rules-title">
            <h2 id="access-rules-title">{ "ZTNA access rules" }</h2>
            <p class="muted">{ "Which group may reach which networks through the tunnel; the edges follow at once." }</p>
            { load_view(&rules.state, "access rules", &rules.reload, |list: &Vec<RuleView>| {
                if list.is_empty() { return empty("No access rule: remote users reach nothing."); }
                html! { <div class="table-wrap"><table id="access-rules">
                    <thead><tr><th>{ "Rule" }</th><th>{ "Group" }</th><th>{ "Reaches" }</th><th>{ "MFA age" }</th>
                        if can_write { <th><span class="visually-hidden">{ "Actions" }</span></th> }</tr></thead>
                    <tbody>{ for list.iter().map(|r| {
                        let (d, id) = (delete.clone(), r.id.clone());
                        html! { <tr key={r.id.clone()}>
                            <td>{ &r.rule.name }</td><td>{ &r.rule.group }</td><td class="mono">{ resources_text(&r.rule) }</td>
                            <td>{ r.rule.mfa_max_age_secs.map_or_else(|| "session".to_string(), |s| format!("{s} s")) }</td>
                            if can_write { <td><button class="button danger" type="button" aria-label={format!("Delete rule {}", r.rule.name)}
                                onclick={move |_| d.emit(id.clone())}>{ "Delete" }</button></td> }
                        </tr> }
                    }) }</tbody>
                </table></div> }
            }) }
            if can_write {
                <form onsubmit={onsubmit}>
                    <h3>{ "Add a rule" }</h3>
                    <div class="row">
                        <TextField id="rule-name" label="Name" path="name" errors={errors.clone()} value={draft.name.clone()}
                            onchange={set(|d, v| d.name = v)} />
                        <TextField id="rule-group" label="Group" path="group" errors={errors.clone()} value={draft.group.clone()}
                            onchange={set(|d, v| d.group = v)} />
                        <TextField id="rule-destination" label="Network" path="resources[0].destination" errors={errors.clone()}
                            value={draft.destination.clone()} hint="e.g. 10.20.0.0/24" onchange={set(|d, v| d.destination = v)} />
                        <SelectField id="rule-protocol" label="Protocol" path="resources[0].protocol" errors={errors.clone()}
                            value={draft.protocol.clone()} options={vec![("tcp", "TCP"), ("udp", "UDP"), ("icmp", "ICMP")]}
                            onchange={set(|d, v| d.protocol = v)} />
                        <TextField id="rule-ports" label="Ports" path="resources[0].ports" errors={errors.clone()}
                            value={draft.ports.clone()} hint="443 or 8000-8080; empty: all" onchange={set(|d, v| d.ports = v)} />
                        <NumberField id="rule-mfa" label="MFA at most (s old)" path="mfa_max_age_secs" errors={errors.clone()}
                            value={draft.mfa_max_age_secs} max={u64::from(u32::MAX)} optional=true
                            onchange={{ let (draft, touched) = (draft.clone(), touched.clone()); Callback::from(move |v: Option<u64>| {
                                let mut d = (*draft).clone(); d.mfa_max_age_secs = v; draft.set(d); touched.set(true);
                            }) }} />
                        <button class="button primary" type="submit" disabled={built.is_err() && *touched}>{ "Add rule" }</button>
                    </div>
                    if let Some(e) = &*failure { <ErrorBox error={e.clone()} /> }
                </form>
            }
        </section>
    }
}
