//! The client Initial of RFC 9001 Appendix A.2 (QUIC v1) and RFC 9369 Appendix A.2 (QUIC v2):
//! decrypted to the RFC's plaintext, sealed back to the RFC's bytes, and read by
//! [`sase_quic::InitialFlow`] (SNI `example.com`, ALPN `alpn`). Then the same ClientHello
//! split over several packets with CRYPTO frames out of order, and the flow's bounds.

#![allow(clippy::unwrap_used)]

use rustls::Side;
use sase_quic::packet::{self, initial_keys, open, parse_long_header, seal_initial};
use sase_quic::{Error, FlowLimits, InitialFlow, LongType, Progress, Version};

const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text: String = std::fs::read_to_string(path)
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(text).unwrap()
}

/// The unprotected payload of A.2: one CRYPTO frame with the ClientHello, then PADDING to
/// 1162 bytes.
fn plaintext() -> Vec<u8> {
    let mut p = vector("initial_payload.hex");
    p.resize(1162, 0);
    p
}

fn check_vector(version: Version, file: &str, unprotected_header: &str) {
    let protected = vector(file);
    assert_eq!(protected.len(), 1200);
    let header = parse_long_header(&protected).unwrap();
    assert_eq!(header.version, version);
    assert_eq!(header.kind, LongType::Initial);
    assert_eq!(header.dcid, DCID);
    assert!(header.scid.is_empty());
    assert_eq!(header.pn_offset, 18);
    assert_eq!(header.packet_len, 1200);

    // Server side: decrypt the client's packet.
    let keys = initial_keys(version, &DCID, Side::Server).unwrap();
    let opened = open(&keys, &protected, &header, None).unwrap();
    assert_eq!(opened.packet_number, 2);
    assert_eq!(hex::encode(&opened.header), unprotected_header);
    assert_eq!(opened.payload, plaintext());

    // Client side: seal the plaintext to exactly the RFC's bytes.
    let keys = initial_keys(version, &DCID, Side::Client).unwrap();
    let sealed = seal_initial(&keys, version, &DCID, &[], &[], 2, 4, &plaintext()).unwrap();
    assert_eq!(hex::encode(&sealed), hex::encode(&protected));

    // The flow reads SNI and ALPN from it.
    let mut flow = InitialFlow::new(FlowLimits::default());
    match flow.push_datagram(&protected).unwrap() {
        Progress::Complete(hello) => {
            assert_eq!(hello.version, version);
            assert_eq!(hello.dcid, DCID);
            assert_eq!(hello.client_hello.sni.as_deref(), Some("example.com"));
            assert_eq!(hello.client_hello.alpn, vec!["alpn".to_string()]);
        }
        Progress::NeedMore => panic!("the A.2 ClientHello fits in one packet"),
    }
}

#[test]
fn rfc9001_appendix_a2_client_initial_v1() {
    check_vector(
        Version::V1,
        "rfc9001_client_initial.hex",
        "c300000001088394c8f03e5157080000449e00000002",
    );
}

#[test]
fn rfc9369_appendix_a2_client_initial_v2() {
    check_vector(
        Version::V2,
        "rfc9369_client_initial.hex",
        "d36b3343cf088394c8f03e5157080000449e00000002",
    );
}

/// The ClientHello handshake message of A.2 (inside its CRYPTO frame).
fn client_hello() -> Vec<u8> {
    let p = vector("initial_payload.hex");
    assert_eq!(&p[..4], &[0x06, 0x00, 0x40, 0xf1]);
    p[4..4 + 0xf1].to_vec()
}

fn crypto_frame(offset: usize, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    f.extend_from_slice(&[0x40 | (offset >> 8) as u8, offset as u8]);
    f.extend_from_slice(&[0x40 | (data.len() >> 8) as u8, data.len() as u8]);
    f.extend_from_slice(data);
    f
}

fn client_initial(version: Version, pn: u64, frames: &[u8]) -> Vec<u8> {
    let keys = initial_keys(version, &DCID, Side::Client).unwrap();
    let mut payload = frames.to_vec();
    payload.resize(1100, 0); // PADDING, as clients pad Initials to 1200 bytes
    seal_initial(&keys, version, &DCID, &[0xaa; 4], &[], pn, 2, &payload).unwrap()
}

#[test]
fn crypto_frames_across_packets_and_out_of_order() {
    for version in [Version::V1, Version::V2] {
        let hello = client_hello();
        // Packet 1 carries the tail and the middle (in that order); packet 0, which arrives
        // second, carries the head: the ClientHello completes only with the second datagram.
        let mut late = crypto_frame(160, &hello[160..]);
        late.extend(crypto_frame(80, &hello[80..160]));
        let first_sent = client_initial(version, 1, &late);
        let second_sent = client_initial(version, 0, &crypto_frame(0, &hello[..80]));

        let mut flow = InitialFlow::new(FlowLimits::default());
        assert_eq!(flow.push_datagram(&first_sent).unwrap(), Progress::NeedMore);
        assert_eq!(flow.version(), Some(version));
        match flow.push_datagram(&second_sent).unwrap() {
            Progress::Complete(h) => {
                assert_eq!(h.client_hello.sni.as_deref(), Some("example.com"));
                assert_eq!(h.scid, vec![0xaa; 4]);
            }
            Progress::NeedMore => panic!("all CRYPTO bytes were delivered"),
        }
    }
}

#[test]
fn coalesced_initials_in_one_datagram() {
    let hello = client_hello();
    let keys = initial_keys(Version::V1, &DCID, Side::Client).unwrap();
    let a = seal_initial(
        &keys,
        Version::V1,
        &DCID,
        &[],
        &[],
        0,
        1,
        &crypto_frame(100, &hello[100..]),
    )
    .unwrap();
    let b = seal_initial(
        &keys,
        Version::V1,
        &DCID,
        &[],
        &[],
        1,
        1,
        &crypto_frame(0, &hello[..100]),
    )
    .unwrap();
    let datagram = [a, b].concat();
    let mut flow = InitialFlow::new(FlowLimits::default());
    assert!(matches!(
        flow.push_datagram(&datagram).unwrap(),
        Progress::Complete(_)
    ));
}

#[test]
fn flows_that_never_complete_are_bounded() {
    let hello = client_hello();
    let limits = FlowLimits {
        max_crypto_bytes: 16 * 1024,
        max_packets: 4,
    };
    let mut flow = InitialFlow::new(limits);
    // The first byte of the ClientHello is withheld forever; the same tail is resent.
    let tail = client_initial(Version::V1, 0, &crypto_frame(1, &hello[1..]));
    for _ in 0..4 {
        assert_eq!(flow.push_datagram(&tail).unwrap(), Progress::NeedMore);
    }
    assert_eq!(flow.push_datagram(&tail), Err(Error::TooLarge));

    // A CRYPTO offset beyond the byte bound.
    let mut flow = InitialFlow::new(FlowLimits {
        max_crypto_bytes: 4096,
        max_packets: 16,
    });
    let far = client_initial(Version::V1, 0, &crypto_frame(0x0f90, &hello[..0x80]));
    assert_eq!(flow.push_datagram(&far), Err(Error::TooLarge));
}

#[test]
fn tampered_or_foreign_datagrams_are_refused() {
    let mut protected = vector("rfc9001_client_initial.hex");
    protected[100] ^= 1;
    let mut flow = InitialFlow::new(FlowLimits::default());
    assert_eq!(flow.push_datagram(&protected), Err(Error::Decrypt));
    // A short header as the first datagram.
    let mut flow = InitialFlow::new(FlowLimits::default());
    assert_eq!(flow.push_datagram(&[0x41, 1, 2, 3]), Err(Error::NotInitial));
    // A Handshake packet first.
    let keys = initial_keys(Version::V1, &DCID, Side::Client).unwrap();
    let mut hs = seal_initial(&keys, Version::V1, &DCID, &[], &[], 0, 1, &[1; 30]).unwrap();
    hs[0] = (hs[0] & 0xcf) | 0x20;
    assert_eq!(
        InitialFlow::new(FlowLimits::default()).push_datagram(&hs),
        Err(Error::NotInitial)
    );
    assert!(!sase_quic::starts_with_initial(&hs));
    assert!(sase_quic::starts_with_initial(&vector(
        "rfc9369_client_initial.hex"
    )));
    // A frame not allowed in Initial packets (STREAM).
    assert!(matches!(
        packet::initial_frames(&[0x08, 0x00, 0x00]),
        Err(Error::Malformed(_))
    ));
}
