//! Fan-out across control-plane replicas on PostgreSQL: an edge is connected to one replica,
//! a change can be made on any. Every change that must reach edges is announced with
//! `pg_notify` on [`CHANNEL`]; every replica listens and pushes the current state of that
//! tenant to the edges connected to it (the database is the only state; the notification
//! only says "look again"). A replica ignores its own announcements (it pushed already).
//!
//! On SQLite there is one process, so announcing is a no-op. When the listener loses its
//! connection it reconnects and then pushes the current policy to every edge it holds, so a
//! notification missed meanwhile costs nothing but a redundant push.

use std::sync::OnceLock;
use std::time::Duration;

use sase_model::channel::ControlMessage;
use serde::{Deserialize, Serialize};

use crate::state::SharedState;
use crate::store::Backend;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "sase_fanout";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The tenant's policy (or a rollout of it) changed.
    Policy {
        /// Tenant.
        tenant_id: String,
    },
    /// The tenant's revocations (CAEP) changed.
    Revocations {
        /// Tenant.
        tenant_id: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// Replica that announced it.
    from: String,
    change: Change,
}

/// This process's replica id (random per start).
fn replica_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| crate::state::new_id("replica"))
}

/// Announces a change to the other replicas (PostgreSQL only; failures are logged: the change
/// is stored, and replicas catch up on their next reconnect).
pub async fn announce(state: &SharedState, change: Change) {
    if state.store.backend() != Backend::Postgres {
        return;
    }
    let Ok(payload) = serde_json::to_string(&Envelope {
        from: replica_id().to_string(),
        change,
    }) else {
        return;
    };
    if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(&payload)
        .execute(state.store.pool())
        .await
    {
        tracing::warn!(%err, "cannot announce a change to the other replicas");
    }
}

/// Pushes the tenant's current policy to each of its edges connected here (each gets the
/// bundle it should run: the stable one outside a rollout's canaries). Returns how many got it.
pub async fn push_policy(state: &SharedState, tenant_id: &str) -> usize {
    let mut pushed = 0;
    for device in state.hub.connected_in(tenant_id) {
        match crate::rollouts::bundle_for(state, tenant_id, &device).await {
            Ok(Some(bundle)) => {
                if state
                    .hub
                    .send_to(&device, &ControlMessage::Policy { bundle })
                {
                    pushed += 1;
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(?err, %device, "cannot load the bundle to push"),
        }
    }
    pushed
}

async fn push_revocations(state: &SharedState, tenant_id: &str) {
    match crate::caep::hello_messages(state, tenant_id).await {
        Ok(messages) => {
            for device in state.hub.connected_in(tenant_id) {
                for m in &messages {
                    state.hub.send_to(&device, m);
                }
            }
        }
        Err(err) => tracing::warn!(?err, "cannot load revocations to push"),
    }
}

async fn apply(state: &SharedState, change: &Change) {
    match change {
        Change::Policy { tenant_id } => {
            let pushed = push_policy(state, tenant_id).await;
            tracing::info!(tenant = %tenant_id, pushed, "policy change from another replica pushed");
        }
        Change::Revocations { tenant_id } => push_revocations(state, tenant_id).await,
    }
}

/// Listens for other replicas' announcements, forever (PostgreSQL only; returns at once on
/// SQLite).
pub async fn run_listener(state: SharedState, database_url: String) {
    if state.store.backend() != Backend::Postgres {
        return;
    }
    let mut first = true;
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&database_url).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(%err, "replica fan-out: cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::warn!(%err, "replica fan-out: cannot listen; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        if !first {
            // Whatever was announced while the listener was away: push the current state.
            for tenant in state.store.tenants().await.unwrap_or_default() {
                push_policy(&state, &tenant.id).await;
                push_revocations(&state, &tenant.id).await;
            }
        }
        first = false;
        tracing::info!("replica fan-out listening");
        loop {
            match listener.recv().await {
                Ok(notification) => {
                    let Ok(envelope) = serde_json::from_str::<Envelope>(notification.payload())
                    else {
                        tracing::warn!("replica fan-out: unreadable notification ignored");
                        continue;
                    };
                    if envelope.from != replica_id() {
                        apply(&state, &envelope.change).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "replica fan-out: connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
