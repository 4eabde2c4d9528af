//! The line diff of the deployed policy's YAML against the edited one (crate `similar`, Myers'
//! algorithm), shown as hunks with three lines of context.

use similar::{ChangeTag, TextDiff};
use yew::prelude::*;

use crate::components::empty;

/// Lines added or removed.
pub fn changed_lines(old: &str, new: &str) -> usize {
    TextDiff::from_lines(old, new)
        .iter_all_changes()
        .filter(|c| c.tag() != ChangeTag::Equal)
        .count()
}

/// The diff as hunks of lines marked `+` / `-`.
pub fn view(old: &str, new: &str) -> Html {
    let diff = TextDiff::from_lines(old, new);
    let groups = diff.grouped_ops(3);
    if groups.is_empty() {
        return html! { <section class="card">{ empty("No change: the form matches the deployed policy.") }</section> };
    }
    html! {
        <section class="card" aria-label="Changes against the deployed policy">
            <h2>{ "Changes against the deployed policy" }</h2>
            { for groups.iter().map(|group| html! {
                <pre class="diff">
                    { for group.iter().flat_map(|op| diff.iter_changes(op)).map(|c| {
                        let (class, sign, label) = match c.tag() {
                            ChangeTag::Delete => ("del", "-", "removed: "),
                            ChangeTag::Insert => ("add", "+", "added: "),
                            ChangeTag::Equal => ("ctx", " ", ""),
                        };
                        html! {
                            <span class={class}><span class="visually-hidden">{ label }</span>{ sign }{ " " }{ c.value().trim_end_matches('\n') }{ "\n" }</span>
                        }
                    }) }
                </pre>
            }) }
        </section>
    }
}
