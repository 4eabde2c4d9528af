//! What every page reads from the shell, and the fetch hook pages share.
//!
//! The shell provides a [`Shell`] context: the signed-in admin, the tenants in their scope, the
//! tenant selected in the top bar, and callbacks to change the selection or reload the tenants.
//! [`use_load`] runs a `GET` whenever its path changes (or on `reload`), keeping the previous
//! answer on screen while a reload (e.g. a poll) is in flight, and ignores answers to paths no
//! longer wanted.

use std::cell::RefCell;
use std::rc::Rc;

use sase_model::fleet::Tenant;
use serde::de::DeserializeOwned;
use yew::prelude::*;

use crate::api::{self, ApiError};
use crate::views::Me;

/// The shell's context.
#[derive(Clone, PartialEq)]
pub struct Shell {
    /// The signed-in admin.
    pub me: Rc<Me>,
    /// Tenants in the admin's scope.
    pub tenants: Rc<Vec<Tenant>>,
    /// The tenant the pages work on (the top bar's switcher).
    pub tenant_id: Option<String>,
    /// Selects another tenant.
    pub select_tenant: Callback<String>,
    /// Reloads the tenant list (after creating one).
    pub reload_tenants: Callback<()>,
}

impl Shell {
    /// The selected tenant.
    pub fn tenant(&self) -> Option<&Tenant> {
        let id = self.tenant_id.as_deref()?;
        self.tenants.iter().find(|t| t.id == id)
    }
}

/// The shell's context (pages are only rendered inside it).
#[hook]
pub fn use_shell() -> Shell {
    use_context::<Shell>().expect("pages render inside the shell's context")
}

/// The state of a fetch.
#[derive(Debug, Clone, PartialEq)]
pub enum Load<T> {
    /// Nothing to fetch (no path).
    Idle,
    /// First answer not in yet.
    Loading,
    /// The latest answer.
    Ready(T),
    /// The latest call failed.
    Failed(ApiError),
}

/// A fetch and the callback that repeats it.
pub struct Loaded<T> {
    /// Its state.
    pub state: UseStateHandle<Load<T>>,
    /// Fetches again (keeping the current answer on screen meanwhile).
    pub reload: Callback<()>,
}

/// Counts reloads (a reducer, so that a callback made in an earlier render still counts up).
#[derive(Default, PartialEq)]
struct Generation(u64);

impl Reducible for Generation {
    type Action = ();
    fn reduce(self: Rc<Self>, (): ()) -> Rc<Self> {
        Rc::new(Generation(self.0 + 1))
    }
}

/// `GET path` whenever `path` changes or `reload` is emitted; `None` fetches nothing.
#[hook]
pub fn use_load<T>(path: Option<String>) -> Loaded<T>
where
    T: DeserializeOwned + Clone + PartialEq + 'static,
{
    let state = use_state(|| Load::Idle);
    let generation = use_reducer(Generation::default);
    let wanted: Rc<RefCell<Option<String>>> = use_mut_ref(|| None);
    {
        let state = state.clone();
        use_effect_with((path, generation.0), move |(path, _)| {
            let changed = *wanted.borrow() != *path;
            *wanted.borrow_mut() = path.clone();
            match path.clone() {
                None => state.set(Load::Idle),
                Some(path) => {
                    if changed || !matches!(*state, Load::Ready(_)) {
                        state.set(Load::Loading);
                    }
                    wasm_bindgen_futures::spawn_local(async move {
                        let answer = api::get::<T>(&path).await;
                        if wanted.borrow().as_deref() != Some(path.as_str()) {
                            return;
                        }
                        state.set(match answer {
                            Ok(value) => Load::Ready(value),
                            Err(err) => Load::Failed(err),
                        });
                    });
                }
            }
        });
    }
    let reload = {
        let dispatcher = generation.dispatcher();
        Callback::from(move |()| dispatcher.dispatch(()))
    };
    Loaded { state, reload }
}

/// Emits `tick` every `period_ms` while the component is mounted and `active` is true.
#[hook]
pub fn use_interval(period_ms: u32, active: bool, tick: Callback<()>) {
    // The latest callback, so that the timer never calls one from an earlier render.
    let latest = use_mut_ref(|| tick.clone());
    *latest.borrow_mut() = tick;
    use_effect_with((period_ms, active), move |(period, active)| {
        let timer = active.then(|| {
            gloo_timers::callback::Interval::new(*period, move || latest.borrow().emit(()))
        });
        move || drop(timer)
    });
}
