//! Form fields of the policy editor, each showing the validation errors found at its field path.
//!
//! The errors come from `sase_model::policy::Policy::validate` (the control plane's own check,
//! compiled into the console), with paths like `resources[0].routes[1].scopes[0]`; a field
//! shows every error at its path or below it. List and number fields keep the text as typed
//! (`read, wri` while typing) and hand the parsed value up; text that is not a number is
//! reported at the field itself, since the typed policy cannot hold it.

use std::rc::Rc;

use sase_model::ValidationError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use yew::prelude::*;

use crate::components::input_value;

/// The validation errors of a policy, shared by every field.
pub type Errors = Rc<Vec<ValidationError>>;

/// Messages of the errors at `path` or below it (`path[..]`, `path.…`).
pub fn errors_at(errors: &[ValidationError], path: &str) -> Vec<String> {
    errors
        .iter()
        .filter(|e| {
            e.path == path
                || e.path
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
        })
        .map(|e| {
            if e.path == path {
                e.message.clone()
            } else {
                format!(
                    "{}: {}",
                    &e.path[path.len()..].trim_start_matches('.'),
                    e.message
                )
            }
        })
        .collect()
}

/// A serde enum's text form (`block`, `token_bucket`, `GET`).
pub fn enum_str<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A serde enum from its text form.
pub fn enum_parse<T: DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
}

/// Splits `a, b ,c` into `["a", "b", "c"]`.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Common properties: DOM id, label, field path and the policy's errors.
#[derive(Properties, PartialEq, Clone)]
pub struct FieldProps<V: PartialEq + Clone + 'static> {
    /// DOM id of the input (the label points at it; tests find fields by it).
    pub id: AttrValue,
    /// Label.
    pub label: AttrValue,
    /// Field path in the policy (`resources[0].upstream`).
    pub path: AttrValue,
    /// The policy's validation errors.
    pub errors: Errors,
    /// Current value.
    pub value: V,
    /// New value.
    pub onchange: Callback<V>,
    /// Hint under the field.
    #[prop_or_default]
    pub hint: Option<AttrValue>,
}

/// Label, input and the errors under it.
fn frame(id: &str, label: &str, hint: Option<&AttrValue>, errors: &[String], input: Html) -> Html {
    let err_id = format!("{id}-errors");
    html! {
        <div class="field">
            <label for={id.to_string()}>{ label }</label>
            { input }
            if let Some(hint) = hint { <span class="muted hint">{ hint }</span> }
            if !errors.is_empty() {
                <ul class="field-error" id={err_id} role="alert">
                    { for errors.iter().map(|e| html! { <li>{ e }</li> }) }
                </ul>
            }
        </div>
    }
}

fn described(id: &str, errors: &[String]) -> Option<String> {
    (!errors.is_empty()).then(|| format!("{id}-errors"))
}

/// A text field.
#[function_component]
pub fn TextField(props: &FieldProps<String>) -> Html {
    let errors = errors_at(&props.errors, &props.path);
    let onchange = props.onchange.clone();
    let input = html! {
        <input id={props.id.clone()} type="text" value={props.value.clone()}
            aria-invalid={(!errors.is_empty()).to_string()}
            aria-describedby={described(&props.id, &errors)}
            oninput={move |e: InputEvent| onchange.emit(input_value(&e))} />
    };
    frame(&props.id, &props.label, props.hint.as_ref(), &errors, input)
}

/// A comma-separated list field (`read, write`).
#[function_component]
pub fn ListField(props: &FieldProps<Vec<String>>) -> Html {
    let text = use_state(|| props.value.join(", "));
    // The text as last typed or set, read by the effect below. The state above is not enough:
    // when the parent renders with the new list before this field's own update is applied, the
    // effect's copy of the state is the text from before the keystroke, which would replace what
    // was typed ("a, b," shown as "a, b").
    let latest = use_mut_ref(|| props.value.join(", "));
    {
        // Follow outside changes (YAML edits, a reload) without fighting the typist.
        let (text, latest) = (text.clone(), latest.clone());
        use_effect_with(props.value.clone(), move |value| {
            if split_list(&latest.borrow()) != *value {
                let joined = value.join(", ");
                latest.borrow_mut().clone_from(&joined);
                text.set(joined);
            }
        });
    }
    let errors = errors_at(&props.errors, &props.path);
    let oninput = {
        let (text, latest, onchange) = (text.clone(), latest.clone(), props.onchange.clone());
        move |e: InputEvent| {
            let t = input_value(&e);
            latest.borrow_mut().clone_from(&t);
            let list = split_list(&t);
            text.set(t);
            onchange.emit(list);
        }
    };
    let input = html! {
        <input id={props.id.clone()} type="text" value={(*text).clone()}
            aria-invalid={(!errors.is_empty()).to_string()}
            aria-describedby={described(&props.id, &errors)} oninput={oninput} />
    };
    let hint = props
        .hint
        .clone()
        .or(Some(AttrValue::Static("Comma-separated.")));
    frame(&props.id, &props.label, hint.as_ref(), &errors, input)
}

/// Properties of a number field.
#[derive(Properties, PartialEq, Clone)]
pub struct NumberProps {
    /// DOM id.
    pub id: AttrValue,
    /// Label.
    pub label: AttrValue,
    /// Field path.
    pub path: AttrValue,
    /// The policy's errors.
    pub errors: Errors,
    /// Current value (`None` when empty).
    pub value: Option<u64>,
    /// New value (`None`: emptied, allowed only when `optional`).
    pub onchange: Callback<Option<u64>>,
    /// Largest value the field's type holds.
    pub max: u64,
    /// Whether the field may be left empty.
    #[prop_or_default]
    pub optional: bool,
    /// Hint.
    #[prop_or_default]
    pub hint: Option<AttrValue>,
}

/// What a number field's text means: a value, empty, or why it is not one.
pub fn parse_number(text: &str, max: u64, optional: bool) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return if optional {
            Ok(None)
        } else {
            Err("required".to_string())
        };
    }
    match t.parse::<u64>() {
        Ok(v) if v <= max => Ok(Some(v)),
        Ok(_) => Err(format!("at most {max}")),
        Err(_) => Err("must be a whole number".to_string()),
    }
}

/// A whole-number field.
#[function_component]
pub fn NumberField(props: &NumberProps) -> Html {
    let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let text = use_state(|| show(props.value));
    let local = use_state(|| None::<String>);
    {
        let (text, local) = (text.clone(), local.clone());
        use_effect_with(props.value, move |value| {
            if local.is_none() && parse_number(&text, u64::MAX, true) != Ok(*value) {
                text.set(value.map(|v| v.to_string()).unwrap_or_default());
            }
        });
    }
    let mut errors = errors_at(&props.errors, &props.path);
    if let Some(e) = &*local {
        errors.insert(0, e.clone());
    }
    let oninput = {
        let (text, local, onchange) = (text.clone(), local.clone(), props.onchange.clone());
        let (max, optional) = (props.max, props.optional);
        move |e: InputEvent| {
            let t = input_value(&e);
            match parse_number(&t, max, optional) {
                Ok(v) => {
                    local.set(None);
                    onchange.emit(v);
                }
                Err(why) => local.set(Some(why)),
            }
            text.set(t);
        }
    };
    let input = html! {
        <input id={props.id.clone()} type="text" inputmode="numeric" value={(*text).clone()}
            aria-invalid={(!errors.is_empty()).to_string()}
            aria-describedby={described(&props.id, &errors)} oninput={oninput} />
    };
    frame(&props.id, &props.label, props.hint.as_ref(), &errors, input)
}

/// Properties of a choice field.
#[derive(Properties, PartialEq, Clone)]
pub struct SelectProps {
    /// DOM id.
    pub id: AttrValue,
    /// Label.
    pub label: AttrValue,
    /// Field path.
    pub path: AttrValue,
    /// The policy's errors.
    pub errors: Errors,
    /// Current value (text form).
    pub value: String,
    /// `(value, label)` choices.
    pub options: Vec<(&'static str, &'static str)>,
    /// New value.
    pub onchange: Callback<String>,
}

/// A `<select>`.
#[function_component]
pub fn SelectField(props: &SelectProps) -> Html {
    let errors = errors_at(&props.errors, &props.path);
    let onchange = props.onchange.clone();
    let input = html! {
        <select id={props.id.clone()} aria-invalid={(!errors.is_empty()).to_string()}
            onchange={move |e: Event| onchange.emit(input_value(&e))}>
            { for props.options.iter().map(|(v, l)| html! {
                <option value={*v} selected={props.value == *v}>{ *l }</option>
            }) }
        </select>
    };
    frame(&props.id, &props.label, None, &errors, input)
}

/// A checkbox with its errors.
#[function_component]
pub fn CheckField(props: &FieldProps<bool>) -> Html {
    let errors = errors_at(&props.errors, &props.path);
    let onchange = props.onchange.clone();
    let value = props.value;
    html! {
        <div class="field check">
            <label for={props.id.clone()}>
                <input id={props.id.clone()} type="checkbox" checked={value}
                    aria-describedby={described(&props.id, &errors)}
                    onchange={move |_| onchange.emit(!value)} />
                { " " }{ &props.label }
            </label>
            if !errors.is_empty() {
                <ul class="field-error" id={format!("{}-errors", props.id)} role="alert">
                    { for errors.iter().map(|e| html! { <li>{ e }</li> }) }
                </ul>
            }
        </div>
    }
}
