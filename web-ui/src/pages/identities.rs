//! The Identities page, for the selected tenant: remote (ZTNA) users with their groups, TOTP
//! state and revocation (disable ends every session and pulls the user's tunnels from the edges
//! at once; the API answers with the new policy version), MFA reset by re-enrolling TOTP (the
//! new secret is shown once), the groups those users form, their registered devices and client
//! sessions (each revocable); and the console's own admin accounts (disable, MFA reset).

use serde::{Deserialize, Serialize};
use yew::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{
    badge, empty, fmt_ago, fmt_time, input_value, load_view, no_tenant, now_ms, ErrorBox,
    PageHeader, Tone,
};
use crate::pages::policy::fields::split_list;
use crate::shell::{use_load, use_shell};

/// `GET …/ztna/users` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemoteUser {
    /// Id.
    pub id: String,
    /// Name.
    pub username: String,
    /// Groups.
    pub groups: Vec<String>,
    /// TOTP enrolled.
    pub totp_enrolled: bool,
    /// Disabled (revoked).
    pub disabled: bool,
    /// Created (Unix ms).
    pub created_at_ms: i64,
}

/// `GET …/ztna/devices` row (the part shown).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemoteDevice {
    /// Id.
    pub id: String,
    /// Owner (user id).
    pub user_id: String,
    /// Name.
    pub name: String,
    /// Tunnel address.
    pub address: String,
    /// Last posture report time.
    #[serde(default)]
    pub posture_at_ms: Option<i64>,
    /// Revoked.
    pub revoked: bool,
}

/// `GET …/ztna/sessions` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemoteSession {
    /// Id.
    pub id: String,
    /// User id.
    pub user_id: String,
    /// Started.
    pub created_at_ms: i64,
    /// Ends.
    pub expires_at_ms: i64,
    /// Revoked.
    pub revoked: bool,
}

/// `GET /api/admins` row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdminAccount {
    /// Id.
    pub id: String,
    /// User name.
    pub username: String,
    /// Role.
    pub role: String,
    /// Customer tenant, for customer roles.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// MFA enrolled.
    pub mfa_enabled: bool,
    /// Disabled.
    pub disabled: bool,
}

/// A revocation's outcome.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Revoked {
    sessions_ended: u64,
    version: u64,
    pushed_to: usize,
}

/// A new TOTP secret, shown once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct TotpEnrolment {
    secret: String,
    otpauth_uri: String,
}

#[derive(Serialize)]
struct NewUser {
    username: String,
    password: String,
    groups: Vec<String>,
}

#[derive(Serialize)]
struct GroupsBody {
    groups: Vec<String>,
}

/// Which user a text is about.
fn user_name(users: &[RemoteUser], id: &str) -> String {
    users
        .iter()
        .find(|u| u.id == id)
        .map_or_else(|| id.to_string(), |u| u.username.clone())
}

/// The groups the users form, with their members, sorted by name.
pub fn groups_of(users: &[RemoteUser]) -> Vec<(String, Vec<String>)> {
    let mut map = std::collections::BTreeMap::<String, Vec<String>>::new();
    for u in users {
        for g in &u.groups {
            map.entry(g.clone()).or_default().push(u.username.clone());
        }
    }
    map.into_iter().collect()
}

/// The Identities page.
#[function_component]
pub fn IdentitiesPage() -> Html {
    let shell = use_shell();
    let admins = html! { <Admins /> };
    let Some(tenant_id) = shell.tenant_id.clone() else {
        return html! { <><PageHeader title="Identities" />{ no_tenant() }{ admins }</> };
    };
    html! {
        <>
            <PageHeader title="Identities"
                subtitle="Remote users, their groups, devices and sessions (ZTNA), and the console's admin accounts. Revocation takes effect on the edges at once." />
            <Remote key={tenant_id.clone()} tenant_id={tenant_id.clone()} />
            { admins }
        </>
    }
}

#[derive(Properties, PartialEq)]
struct RemoteProps {
    tenant_id: String,
}

/// What a button did: a message, or the API's error.
type Outcome = UseStateHandle<Option<Result<String, ApiError>>>;

fn outcome_view(outcome: &Outcome) -> Html {
    match &**outcome {
        Some(Ok(text)) => {
            html! { <div class="notice" role="status" id="identities-notice">{ text }</div> }
        }
        Some(Err(e)) => html! { <ErrorBox error={e.clone()} /> },
        None => html! {},
    }
}

#[function_component]
fn Remote(props: &RemoteProps) -> Html {
    let shell = use_shell();
    let base = format!("/api/tenants/{}/ztna", api::enc(&props.tenant_id));
    let users = use_load::<Vec<RemoteUser>>(Some(format!("{base}/users")));
    let devices = use_load::<Vec<RemoteDevice>>(Some(format!("{base}/devices")));
    let sessions = use_load::<Vec<RemoteSession>>(Some(format!("{base}/sessions")));
    let outcome: Outcome = use_state(|| None);
    let secret = use_state(|| None::<(String, TotpEnrolment)>);
    let can_write = shell.me.can("policy.write");
    let reload_all = {
        let r = [
            users.reload.clone(),
            devices.reload.clone(),
            sessions.reload.clone(),
        ];
        Callback::from(move |()| r.iter().for_each(|r| r.emit(())))
    };
    // POSTs `url` and reports a revocation's effect.
    let revoke = {
        let (outcome, reload_all) = (outcome.clone(), reload_all.clone());
        Callback::from(move |(url, what): (String, String)| {
            let (outcome, reload_all) = (outcome.clone(), reload_all.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let answer = api::post::<_, Revoked>(&url, &()).await.map(|r| {
                    format!(
                        "{what}: {} session(s) ended; policy version {} pushed to {} edge(s).",
                        r.sessions_ended, r.version, r.pushed_to
                    )
                });
                outcome.set(Some(answer));
                reload_all.emit(());
            });
        })
    };
    let users_list = match &*users.state {
        crate::shell::Load::Ready(list) => list.clone(),
        _ => Vec::new(),
    };
    let now = now_ms();
    html! {
        <>
            { outcome_view(&outcome) }
            if let Some((who, t)) = &*secret {
                <div class="notice" role="status">
                    <p>{ format!("New authenticator secret for {who} (shown only now):") }</p>
                    <p class="secret" id="totp-secret">{ &t.secret }</p>
                    <p class="muted mono">{ &t.otpauth_uri }</p>
                </div>
            }
            <div class="grid-2">
                <section class="card" aria-labelledby="users-title">
                    <h2 id="users-title">{ "Remote users" }</h2>
                    { load_view(&users.state, "users", &users.reload, |list: &Vec<RemoteUser>| {
                        if list.is_empty() {
                            return empty("No remote user yet.");
                        }
                        html! {
                            <div class="table-wrap"><table id="remote-users">
                                <thead><tr><th>{ "User" }</th><th>{ "Groups" }</th><th>{ "MFA" }</th><th>{ "State" }</th>
                                    if can_write { <th><span class="visually-hidden">{ "Actions" }</span></th> }</tr></thead>
                                <tbody>{ for list.iter().map(|u| {
                                    let user_url = format!("{base}/users/{}", api::enc(&u.id));
                                    let disable = { let (r, url, n) = (revoke.clone(), format!("{user_url}/disable"), u.username.clone()); move |_| r.emit((url.clone(), format!("{n} revoked"))) };
                                    let enable = {
                                        let (outcome, reload, url, n) = (outcome.clone(), reload_all.clone(), format!("{user_url}/enable"), u.username.clone());
                                        move |_| {
                                            let (outcome, reload, url, n) = (outcome.clone(), reload.clone(), url.clone(), n.clone());
                                            wasm_bindgen_futures::spawn_local(async move {
                                                let answer = api::post::<_, serde_json::Value>(&url, &()).await.map(|_| format!("{n} enabled again."));
                                                outcome.set(Some(answer));
                                                reload.emit(());
                                            });
                                        }
                                    };
                                    let reset = {
                                        let (outcome, secret, reload, url, n) = (outcome.clone(), secret.clone(), reload_all.clone(), format!("{user_url}/totp"), u.username.clone());
                                        move |_| {
                                            let (outcome, secret, reload, url, n) = (outcome.clone(), secret.clone(), reload.clone(), url.clone(), n.clone());
                                            wasm_bindgen_futures::spawn_local(async move {
                                                match api::post::<_, TotpEnrolment>(&url, &()).await {
                                                    Ok(t) => { outcome.set(Some(Ok(format!("MFA of {n} reset: they sign in with the new secret.")))); secret.set(Some((n, t))); }
                                                    Err(e) => outcome.set(Some(Err(e))),
                                                }
                                                reload.emit(());
                                            });
                                        }
                                    };
                                    html! {
                                        <tr key={u.id.clone()} data-user={u.username.clone()}>
                                            <td><strong>{ &u.username }</strong><br/><span class="muted">{ format!("since {}", fmt_time(u.created_at_ms)) }</span></td>
                                            <td>
                                                if can_write { <GroupsEditor url={format!("{user_url}/groups")} user={u.username.clone()} groups={u.groups.clone()} done={reload_all.clone()} outcome={outcome.clone()} /> }
                                                else { { u.groups.join(", ") } }
                                            </td>
                                            <td>{ if u.totp_enrolled { badge(Tone::Good, "TOTP") } else { badge(Tone::Warn, "not enrolled") } }</td>
                                            <td class="state">{ if u.disabled { badge(Tone::Bad, "Revoked") } else { badge(Tone::Good, "Active") } }</td>
                                            if can_write {
                                                <td class="actions">
                                                    if u.disabled {
                                                        <button class="button" type="button" onclick={enable} aria-label={format!("Enable {}", u.username)}>{ "Enable" }</button>
                                                    } else {
                                                        <button class="button danger" type="button" onclick={disable} aria-label={format!("Revoke {}", u.username)}>{ "Revoke" }</button>
                                                    }
                                                    <button class="button" type="button" onclick={reset} aria-label={format!("Reset MFA of {}", u.username)}>{ "Reset MFA" }</button>
                                                </td>
                                            }
                                        </tr>
                                    }
                                }) }</tbody>
                            </table></div>
                        }
                    }) }
                    if can_write { <NewUserForm url={format!("{base}/users")} done={reload_all.clone()} /> }
                </section>
                <section class="card" aria-labelledby="groups-title">
                    <h2 id="groups-title">{ "Groups" }</h2>
                    <p class="muted">{ "Formed by the users' memberships; access rules and routes name them." }</p>
                    { match groups_of(&users_list).as_slice() {
                        [] => empty("No group yet."),
                        groups => html! { <dl class="details">{ for groups.iter().map(|(g, members)| html! {
                            <><dt>{ g }</dt><dd>{ members.join(", ") }</dd></>
                        }) }</dl> },
                    } }
                </section>
            </div>
            <section class="card" aria-labelledby="rdevices-title">
                <h2 id="rdevices-title">{ "Devices" }</h2>
                { load_view(&devices.state, "devices", &devices.reload, |list: &Vec<RemoteDevice>| {
                    if list.is_empty() { return empty("No registered device."); }
                    html! { <div class="table-wrap"><table id="remote-devices">
                        <thead><tr><th>{ "Device" }</th><th>{ "User" }</th><th>{ "Address" }</th><th>{ "Posture reported" }</th><th>{ "State" }</th>
                            if can_write { <th><span class="visually-hidden">{ "Actions" }</span></th> }</tr></thead>
                        <tbody>{ for list.iter().map(|d| {
                            let go = { let (r, url, n) = (revoke.clone(), format!("{base}/devices/{}/revoke", api::enc(&d.id)), d.name.clone()); move |_| r.emit((url.clone(), format!("Device {n} revoked"))) };
                            html! { <tr key={d.id.clone()}>
                                <td>{ &d.name }<br/><span class="muted mono">{ &d.id }</span></td>
                                <td>{ user_name(&users_list, &d.user_id) }</td>
                                <td class="mono">{ &d.address }</td>
                                <td>{ d.posture_at_ms.map_or_else(|| "never".to_string(), |ms| fmt_ago(ms, now)) }</td>
                                <td>{ if d.revoked { badge(Tone::Bad, "Revoked") } else { badge(Tone::Good, "Active") } }</td>
                                if can_write { <td>if !d.revoked { <button class="button danger" type="button" onclick={go} aria-label={format!("Revoke device {}", d.name)}>{ "Revoke" }</button> }</td> }
                            </tr> }
                        }) }</tbody>
                    </table></div> }
                }) }
            </section>
            <section class="card" aria-labelledby="sessions-title">
                <h2 id="sessions-title">{ "Sessions" }</h2>
                { load_view(&sessions.state, "sessions", &sessions.reload, |list: &Vec<RemoteSession>| {
                    if list.is_empty() { return empty("No client session."); }
                    html! { <div class="table-wrap"><table id="remote-sessions">
                        <thead><tr><th>{ "User" }</th><th>{ "Started" }</th><th>{ "Ends" }</th><th>{ "State" }</th>
                            if can_write { <th><span class="visually-hidden">{ "Actions" }</span></th> }</tr></thead>
                        <tbody>{ for list.iter().take(200).map(|s| {
                            let live = !s.revoked && s.expires_at_ms > now;
                            let go = { let (r, url) = (revoke.clone(), format!("{base}/sessions/{}/revoke", api::enc(&s.id))); move |_| r.emit((url.clone(), "Session revoked".to_string())) };
                            html! { <tr key={s.id.clone()}>
                                <td>{ user_name(&users_list, &s.user_id) }</td>
                                <td>{ fmt_time(s.created_at_ms) }</td>
                                <td>{ fmt_time(s.expires_at_ms) }</td>
                                <td>{ if s.revoked { badge(Tone::Bad, "Revoked") } else if live { badge(Tone::Good, "Live") } else { badge(Tone::Plain, "Expired") } }</td>
                                if can_write { <td>if live { <button class="button danger" type="button" onclick={go} aria-label="Revoke session">{ "Revoke" }</button> }</td> }
                            </tr> }
                        }) }</tbody>
                    </table></div> }
                }) }
            </section>
        </>
    }
}

#[derive(Properties, PartialEq)]
struct GroupsEditorProps {
    url: String,
    user: String,
    groups: Vec<String>,
    done: Callback<()>,
    outcome: Outcome,
}

/// A user's groups, editable in place (saved on Enter or with the button).
#[function_component]
fn GroupsEditor(props: &GroupsEditorProps) -> Html {
    let text = use_state(|| props.groups.join(", "));
    let id = format!("groups-{}", props.user);
    let onsubmit = {
        let (text, url, done, outcome, user) = (
            text.clone(),
            props.url.clone(),
            props.done.clone(),
            props.outcome.clone(),
            props.user.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = GroupsBody {
                groups: split_list(&text),
            };
            let (url, done, outcome, user) =
                (url.clone(), done.clone(), outcome.clone(), user.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let answer = api::put::<_, serde_json::Value>(&url, &body)
                    .await
                    .map(|_| format!("Groups of {user} saved."));
                outcome.set(Some(answer));
                done.emit(());
            });
        })
    };
    html! {
        <form class="inline-form row" onsubmit={onsubmit}>
            <label for={id.clone()} class="visually-hidden">{ format!("Groups of {}", props.user) }</label>
            <input id={id} size="18" value={(*text).clone()}
                oninput={{ let t = text.clone(); move |e: InputEvent| t.set(input_value(&e)) }} />
            <button class="button" type="submit">{ "Save" }</button>
        </form>
    }
}

#[derive(Properties, PartialEq)]
struct NewUserProps {
    url: String,
    done: Callback<()>,
}

#[function_component]
fn NewUserForm(props: &NewUserProps) -> Html {
    let name = use_state(String::new);
    let password = use_state(String::new);
    let groups = use_state(String::new);
    let error = use_state(|| None::<ApiError>);
    let onsubmit = {
        let (name, password, groups, error) = (
            name.clone(),
            password.clone(),
            groups.clone(),
            error.clone(),
        );
        let (url, done) = (props.url.clone(), props.done.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = NewUser {
                username: name.trim().to_string(),
                password: (*password).clone(),
                groups: split_list(&groups),
            };
            let (name, password, groups, error, url, done) = (
                name.clone(),
                password.clone(),
                groups.clone(),
                error.clone(),
                url.clone(),
                done.clone(),
            );
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, serde_json::Value>(&url, &body).await {
                    Ok(_) => {
                        error.set(None);
                        name.set(String::new());
                        password.set(String::new());
                        groups.set(String::new());
                        done.emit(());
                    }
                    Err(e) => error.set(Some(e)),
                }
            });
        })
    };
    html! {
        <form onsubmit={onsubmit} aria-labelledby="new-user-title">
            <h3 id="new-user-title">{ "Add a remote user" }</h3>
            <div class="row">
                <div class="field"><label for="new-user-name">{ "User name" }</label>
                    <input id="new-user-name" required=true value={(*name).clone()} oninput={{ let n = name.clone(); move |e: InputEvent| n.set(input_value(&e)) }} /></div>
                <div class="field"><label for="new-user-password">{ "Password (12+ characters)" }</label>
                    <input id="new-user-password" type="password" required=true minlength="12" autocomplete="new-password" value={(*password).clone()}
                        oninput={{ let p = password.clone(); move |e: InputEvent| p.set(input_value(&e)) }} /></div>
                <div class="field"><label for="new-user-groups">{ "Groups" }</label>
                    <input id="new-user-groups" value={(*groups).clone()} oninput={{ let g = groups.clone(); move |e: InputEvent| g.set(input_value(&e)) }} /></div>
                <button class="button primary" type="submit">{ "Add user" }</button>
            </div>
            if let Some(e) = &*error { <ErrorBox error={e.clone()} /> }
        </form>
    }
}

/// The console's admin accounts in the signed-in admin's scope.
#[function_component]
fn Admins() -> Html {
    let shell = use_shell();
    let admins = use_load::<Vec<AdminAccount>>(
        shell
            .me
            .can("admins.read")
            .then(|| "/api/admins".to_string()),
    );
    let outcome: Outcome = use_state(|| None);
    if !shell.me.can("admins.read") {
        return html! {};
    }
    let can_manage = shell.me.can("admins.manage");
    let me = shell.me.id.clone();
    let call = {
        let (outcome, reload) = (outcome.clone(), admins.reload.clone());
        Callback::from(move |(url, delete, text): (String, bool, String)| {
            let (outcome, reload) = (outcome.clone(), reload.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let answer = if delete {
                    api::delete(&url).await
                } else {
                    api::post::<_, serde_json::Value>(&url, &())
                        .await
                        .map(|_| ())
                };
                outcome.set(Some(answer.map(|()| text)));
                reload.emit(());
            });
        })
    };
    html! {
        <section class="card" aria-labelledby="admins-title">
            <h2 id="admins-title">{ "Console admins" }</h2>
            { outcome_view(&outcome) }
            { load_view(&admins.state, "admins", &admins.reload, |list: &Vec<AdminAccount>| html! {
                <div class="table-wrap"><table id="admins">
                    <thead><tr><th>{ "Admin" }</th><th>{ "Role" }</th><th>{ "MFA" }</th><th>{ "State" }</th>
                        if can_manage { <th><span class="visually-hidden">{ "Actions" }</span></th> }</tr></thead>
                    <tbody>{ for list.iter().map(|a| {
                        let url = format!("/api/admins/{}", api::enc(&a.id));
                        let disable = { let (c, u, n) = (call.clone(), format!("{url}/disable"), a.username.clone()); move |_| c.emit((u.clone(), false, format!("{n} disabled; their sessions and tokens ended."))) };
                        let reset = { let (c, u, n) = (call.clone(), format!("{url}/mfa"), a.username.clone()); move |_| c.emit((u.clone(), true, format!("MFA of {n} reset: they enrol again at their next sign-in."))) };
                        let own = a.id == me;
                        html! { <tr key={a.id.clone()}>
                            <td>{ &a.username }{ if own { " (you)" } else { "" } }</td>
                            <td>{ a.role.replace('_', " ") }{ a.tenant_id.as_ref().map(|t| format!(" · {t}")).unwrap_or_default() }</td>
                            <td>{ if a.mfa_enabled { badge(Tone::Good, "enrolled") } else { badge(Tone::Warn, "not enrolled") } }</td>
                            <td>{ if a.disabled { badge(Tone::Bad, "Disabled") } else { badge(Tone::Good, "Active") } }</td>
                            if can_manage { <td class="actions">
                                if !own && !a.disabled { <button class="button danger" type="button" onclick={disable} aria-label={format!("Disable {}", a.username)}>{ "Disable" }</button> }
                                if !own && a.mfa_enabled { <button class="button" type="button" onclick={reset} aria-label={format!("Reset MFA of {}", a.username)}>{ "Reset MFA" }</button> }
                            </td> }
                        </tr> }
                    }) }</tbody>
                </table></div>
            }) }
        </section>
    }
}
