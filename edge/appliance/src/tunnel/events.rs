//! Tunnel audit events from the core's counters, without I/O: [`Tracker::observe`] compares
//! each peer's counters with what it saw before and says what to record —
//!
//! * `tunnel_connect` when a peer gets a session it did not have (first handshake);
//! * `tunnel_disconnect` when a session ends (expired, or the peer left the policy), with the
//!   bytes of the whole session;
//! * on summary ticks (`--tunnel-audit-interval`), per peer with activity: `tunnel_traffic`
//!   (bytes both ways in the interval) and `tunnel_denied` (refused packets by cause: ACL,
//!   spoofed source, malformed or fragmented inner packets, no route) — one event per peer and
//!   interval, never one per packet.

use std::collections::BTreeMap;
use std::sync::Arc;

use sase_model::audit::{Decision, EventKind, TunnelDetails};
use sase_model::Reason;
use sase_tunnel::{DropCause, PeerCounters};

use super::PeerIdentity;

/// Drop causes that are refused flows of an identity (not transport noise such as replays or
/// failed decryption, which `/metrics` counts).
const DENIED: [DropCause; 5] = [
    DropCause::AclDenied,
    DropCause::SpoofedSource,
    DropCause::BadInnerPacket,
    DropCause::Fragment,
    DropCause::NoRoute,
];

/// One peer as the core reports it now.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The peer's public key.
    pub key: [u8; 32],
    /// Who it is.
    pub who: Arc<PeerIdentity>,
    /// Whether it has a session.
    pub session: bool,
    /// Its last endpoint.
    pub endpoint: Option<String>,
    /// Its counters.
    pub counters: PeerCounters,
}

/// One event to record (the shell adds tenant, device, time, reference, policy version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelEvent {
    /// The kind.
    pub kind: EventKind,
    /// Allow, or deny for refused flows.
    pub decision: Decision,
    /// `allowed` or `tunnel_flow_denied`.
    pub reason: Reason,
    /// `tunnel|<subject>`.
    pub identity: String,
    /// Who and how much.
    pub details: TunnelDetails,
}

#[derive(Debug, Clone)]
struct Seen {
    who: Arc<PeerIdentity>,
    session: bool,
    endpoint: Option<String>,
    /// Counters when the session started.
    at_connect: (u64, u64),
    /// Counters at the last summary.
    summarised: PeerCounters,
    /// Counters at the last observation.
    last: PeerCounters,
}

/// Remembers what each peer's counters were. See the module documentation.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: BTreeMap<[u8; 32], Seen>,
}

fn cause_name(cause: DropCause) -> String {
    serde_json::to_value(cause)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{cause:?}"))
}

fn event(kind: EventKind, who: &PeerIdentity, endpoint: Option<String>) -> TunnelEvent {
    let denied = kind == EventKind::TunnelDenied;
    TunnelEvent {
        kind,
        decision: if denied {
            Decision::Deny
        } else {
            Decision::Allow
        },
        reason: if denied {
            Reason::TunnelFlowDenied
        } else {
            Reason::Allowed
        },
        identity: who.identity.clone(),
        details: TunnelDetails {
            endpoint,
            ..who.details.clone()
        },
    }
}

impl Tracker {
    /// Compares `samples` (every peer in force) with the previous observation. With
    /// `summary_ms = Some(interval)` it also summarises traffic and denied flows since the last
    /// summary.
    pub fn observe(&mut self, samples: Vec<Sample>, summary_ms: Option<u64>) -> Vec<TunnelEvent> {
        let mut out = Vec::new();
        let mut next = BTreeMap::new();
        for s in samples {
            let prev = self.seen.remove(&s.key);
            let was_up = prev.as_ref().is_some_and(|p| p.session);
            let mut seen = prev.unwrap_or_else(|| Seen {
                who: s.who.clone(),
                session: false,
                endpoint: None,
                at_connect: (0, 0),
                summarised: s.counters.clone(),
                last: s.counters.clone(),
            });
            if s.session && !was_up {
                seen.at_connect = (s.counters.rx_bytes, s.counters.tx_bytes);
                out.push(event(EventKind::TunnelConnect, &s.who, s.endpoint.clone()));
            } else if !s.session && was_up {
                out.push(disconnect(&seen, &s.counters));
            }
            if let Some(interval_ms) = summary_ms {
                out.extend(summaries(&s, &seen.summarised, interval_ms));
                seen.summarised = s.counters.clone();
            }
            seen.who = s.who.clone();
            seen.session = s.session;
            seen.endpoint = s.endpoint.clone().or(seen.endpoint);
            seen.last = s.counters;
            next.insert(s.key, seen);
        }
        // Peers gone from the policy: their sessions ended with them.
        for seen in self.seen.values() {
            if seen.session {
                out.push(disconnect(seen, &seen.last));
            }
        }
        self.seen = next;
        out
    }
}

fn disconnect(seen: &Seen, now: &PeerCounters) -> TunnelEvent {
    let mut e = event(
        EventKind::TunnelDisconnect,
        &seen.who,
        seen.endpoint.clone(),
    );
    e.details.rx_bytes = now.rx_bytes.saturating_sub(seen.at_connect.0);
    e.details.tx_bytes = now.tx_bytes.saturating_sub(seen.at_connect.1);
    e
}

fn summaries(s: &Sample, before: &PeerCounters, interval_ms: u64) -> Vec<TunnelEvent> {
    let mut out = Vec::new();
    let rx = s.counters.rx_bytes.saturating_sub(before.rx_bytes);
    let tx = s.counters.tx_bytes.saturating_sub(before.tx_bytes);
    if rx > 0 || tx > 0 {
        let mut e = event(EventKind::TunnelTraffic, &s.who, s.endpoint.clone());
        e.details.interval_ms = interval_ms;
        e.details.rx_bytes = rx;
        e.details.tx_bytes = tx;
        out.push(e);
    }
    let denied: BTreeMap<String, u64> = DENIED
        .iter()
        .filter_map(|cause| {
            let now = s.counters.drops.get(cause).copied().unwrap_or(0);
            let then = before.drops.get(cause).copied().unwrap_or(0);
            let n = now.saturating_sub(then);
            (n > 0).then(|| (cause_name(*cause), n))
        })
        .collect();
    if !denied.is_empty() {
        let mut e = event(EventKind::TunnelDenied, &s.who, s.endpoint.clone());
        e.details.interval_ms = interval_ms;
        e.details.denied = denied;
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str) -> Arc<PeerIdentity> {
        Arc::new(PeerIdentity::of(&sase_model::tunnel::TunnelPeer {
            name: name.into(),
            public_key: String::new(),
            address: "100.96.0.2".parse().expect("ip"),
            rules: Vec::new(),
            persistent_keepalive: None,
            subject: Some(format!("{name}@example.com")),
            groups: vec!["eng".into()],
            device: Some("dev-1".into()),
            session: Some("s-1".into()),
        }))
    }

    fn sample(session: bool, rx: u64, tx: u64, acl: u64) -> Sample {
        let mut counters = PeerCounters {
            rx_bytes: rx,
            tx_bytes: tx,
            ..Default::default()
        };
        if acl > 0 {
            counters.drops.insert(DropCause::AclDenied, acl);
        }
        counters.drops.insert(DropCause::DataReplay, 9);
        Sample {
            key: [1; 32],
            who: who("alice"),
            session,
            endpoint: Some("192.0.2.7:4000".into()),
            counters,
        }
    }

    fn kinds(events: &[TunnelEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn connect_summaries_and_disconnect() {
        let mut t = Tracker::default();
        assert!(t.observe(vec![sample(false, 0, 0, 0)], None).is_empty());
        let e = t.observe(vec![sample(true, 100, 50, 0)], None);
        assert_eq!(kinds(&e), ["tunnel_connect"]);
        assert_eq!(e[0].identity, "tunnel|alice@example.com");
        assert_eq!(e[0].details.device.as_deref(), Some("dev-1"));
        assert_eq!(e[0].details.session.as_deref(), Some("s-1"));
        // Nothing new between summaries.
        assert!(t.observe(vec![sample(true, 300, 80, 2)], None).is_empty());
        let e = t.observe(vec![sample(true, 400, 90, 5)], Some(10_000));
        assert_eq!(kinds(&e), ["tunnel_traffic", "tunnel_denied"]);
        assert_eq!((e[0].details.rx_bytes, e[0].details.tx_bytes), (400, 90));
        assert_eq!(e[1].decision, Decision::Deny);
        assert_eq!(e[1].reason, Reason::TunnelFlowDenied);
        // Replays are not denied flows of the identity.
        assert_eq!(
            e[1].details.denied,
            [("acl_denied".to_string(), 5)].into_iter().collect()
        );
        // A quiet interval: no summary at all.
        assert!(t
            .observe(vec![sample(true, 400, 90, 5)], Some(10_000))
            .is_empty());
        let e = t.observe(vec![sample(false, 500, 90, 5)], None);
        assert_eq!(kinds(&e), ["tunnel_disconnect"]);
        assert_eq!((e[0].details.rx_bytes, e[0].details.tx_bytes), (400, 40));
    }

    #[test]
    fn a_peer_removed_from_the_policy_disconnects() {
        let mut t = Tracker::default();
        assert_eq!(
            kinds(&t.observe(vec![sample(true, 10, 10, 0)], None)),
            ["tunnel_connect"]
        );
        let e = t.observe(Vec::new(), None);
        assert_eq!(kinds(&e), ["tunnel_disconnect"]);
        assert!(t.observe(Vec::new(), Some(1)).is_empty());
    }
}
