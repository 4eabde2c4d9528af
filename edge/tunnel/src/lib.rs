//! `sase-tunnel`: the ZTNA tunnel core of the edge, without I/O.
//!
//! WireGuard peers over [`boringtun`]'s `Tunn`, a peer table keyed by public key and by
//! receiver index, the **allowed-IP check** on every decrypted packet (boringtun does not do
//! it: the inner source must be the peer's assigned tunnel address) and a **per-identity
//! L3/L4 ACL** ([`acl`], default deny) compiled from the typed rules of
//! [`sase_model::tunnel`]. The API is datagrams in, actions out:
//!
//! * [`Tunnel::on_udp`] — a datagram from the network → [`Action::Send`] (handshake responses,
//!   cookie replies, queued data), [`Action::Deliver`] (an inner packet that passed both
//!   checks) or [`Action::Drop`] with a [`DropCause`];
//! * [`Tunnel::on_tun`] — an inner packet from the LAN side, routed to the peer whose tunnel
//!   address is its destination;
//! * [`Tunnel::on_timer`] — rekeys, keepalives, retries, and the handshake rate limiter.
//!
//! ## Routing a datagram to its peer
//!
//! The core reads the WireGuard message type and receiver index itself
//! ([`packet::parse_wg_header`]). Responses, cookie replies and data carry a receiver index
//! that boringtun builds as `peer_index << 8 | session`; the upper 24 bits select the peer
//! directly. A handshake initiation names no index: its mac1 (and, under load, mac2) is checked
//! by the shared `RateLimiter`, then `parse_handshake_anon` decrypts the initiator's static key,
//! which is looked up in the key table. No datagram is ever tried against every peer.
//!
//! ## Cookies under load
//!
//! One `RateLimiter` (keyed to the edge's public key) is shared by the front check and every
//! `Tunn`. Beyond `handshake_rate_limit` handshake messages per second, an initiation without a
//! valid mac2 gets a cookie reply instead of a response (and is counted in
//! [`GlobalCounters::cookie_replies`]). [`Tunnel::on_timer`] resets the budget once a second.
//!
//! ## Time
//!
//! The core's own bookkeeping (last handshake, limiter resets) uses the injected `now`.
//! boringtun does **not** accept an injected clock: its session timers, handshake
//! retransmission, TAI64N timestamps, cookie secret rotation and rate-limiter resets read its
//! own monotonic clock (`sleepyinstant`, CLOCK_BOOTTIME on Linux). Its `mock-instant` feature
//! swaps that clock for the thread-local `mock_instant::MockClock`; the tests in
//! `edge/tunnel/clock-tests/` (a workspace of their own, so that feature never reaches a product
//! binary through cargo's feature unification) enable it and advance it together with their `now`, which is how rekeys
//! after REKEY_AFTER_TIME are tested in simulated time. Production builds keep the real clock.
//!
//! ## boringtun version: 0.7.1
//!
//! Decided by trying both (details in `docs/ZTNA.md`):
//! * 0.6.0 cannot be built in this workspace: it pins `x25519-dalek =2.0.0-rc.3`, which pins
//!   `curve25519-dalek =4.0.0-rc.3`, and that pre-release does not satisfy the `^4` that
//!   `ed25519-dalek 2` (used by `sase-model` for signed bundles) requires; cargo refuses the
//!   graph. Using 0.6.0 would mean forking it or downgrading the signing stack.
//! * The `noise` module (all this core uses: `Tunn`, `parse_handshake_anon`, `RateLimiter`)
//!   differs between 0.6.0 and 0.7.1 only in error-return signatures (`Tunn::new` no longer
//!   returns a `Result`) and `AtomicUsize` → `portable_atomic::AtomicU64` for the sending
//!   counter; the timer and session logic is the same text.
//! * Upstream issue 495 (sessions one-way deaf 15-30 s after a handshake with 0.7.1, none
//!   with 0.6.0, root cause not identified) is guarded by tests: `clock-tests/tests/core.rs` runs sessions
//!   over twenty simulated minutes (ten rekeys, pings every second and every 7 s, every one
//!   answered), and `tests/e2e/tunnel-interop.sh` with `TUNNEL_SOAK_SECONDS=600` pings through
//!   a real wireguard-go peer once a second across rekeys and reports any stall.

pub mod acl;
mod core;
pub mod nat;
pub mod packet;

pub use crate::core::{
    Action, DropCause, GlobalCounters, PeerConfig, PeerCounters, PeerId, Tunnel, TunnelConfig,
    TunnelError,
};
pub use acl::Acl;
pub use nat::{Nat, NatConfig, NatCounters, NatOutcome};
