//! `sase-quic` on arbitrary datagrams: the Initial reader of the edge's `sni_filter` relay sees
//! packets from anyone, so parsing, decrypting and reassembling must never panic and must stay
//! within the flow's bounds.
//!
//! Input: the first byte picks the path. Even: the rest is a sequence of datagrams, each with
//! a two-byte big-endian length, fed to one `InitialFlow`. Odd: the rest is taken as the frames
//! of Initial packets, sealed with real Initial keys (so the fuzzer reaches frame parsing, CRYPTO
//! reassembly and ClientHello parsing behind the AEAD), split at the second byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sase_quic::packet::{initial_frames, initial_keys, seal_initial};
use sase_quic::{hello, FlowLimits, InitialFlow, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = FlowLimits {
        max_crypto_bytes: 4096,
        max_packets: 8,
    };
    let mut flow = InitialFlow::new(limits);
    if mode % 2 == 0 {
        let mut rest = rest;
        while rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
            let datagram = &rest[2..2 + len];
            rest = &rest[2 + len..];
            let _ = sase_quic::starts_with_initial(datagram);
            if flow.push_datagram(datagram).is_err() {
                break;
            }
        }
    } else {
        let _ = initial_frames(rest);
        let _ = hello::parse_client_hello(rest);
        let version = if mode & 2 == 0 { Version::V1 } else { Version::V2 };
        let dcid = [mode; 8];
        let Ok(keys) = initial_keys(version, &dcid, rustls::Side::Client) else {
            return;
        };
        let split = usize::from(rest.first().copied().unwrap_or(0)).min(rest.len());
        for (pn, frames) in [&rest[split..], &rest[..split]].into_iter().enumerate() {
            let Ok(packet) = seal_initial(&keys, version, &dcid, &[1, 2], &[], pn as u64, 2, frames)
            else {
                return;
            };
            if flow.push_datagram(&packet).is_err() {
                break;
            }
        }
    }
});
