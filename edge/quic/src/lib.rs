//! `sase-quic`: reads the server name and ALPN of a QUIC connection from its client Initial
//! packets, without I/O and without terminating anything.
//!
//! What the edge needs to filter QUIC by name (`sni_filter`) and to audit QUIC decisions:
//!
//! * [`packet::parse_long_header`] — long headers (RFC 9000 §17.2), coalesced packets;
//! * [`packet::initial_keys`] — Initial secrets for QUIC v1 (RFC 9001 §5.2) and v2 (RFC 9369
//!   §3.3), through `rustls::quic`;
//! * [`packet::open`] — header-protection removal and AEAD decryption of an Initial;
//! * [`hello::CryptoStream`] — CRYPTO frames reassembled across packets and out of order
//!   (post-quantum ClientHellos span several packets; Chromium scatters its frames), bounded;
//! * [`hello::parse_client_hello`] — SNI and ALPN;
//! * [`InitialFlow`] — the state of one flow: datagrams in, [`Progress`] out, with a bound on
//!   packets and bytes so a flow that never completes its ClientHello is given up;
//! * [`packet::connection_close`] — a server Initial with `CONNECTION_CLOSE`, to refuse a flow
//!   at once instead of letting the client time out.
//!
//! Nothing here panics on network input: every read is bounds-checked and every failure is an
//! [`Error`].

pub mod hello;
pub mod packet;

pub use hello::{ClientHelloInfo, CryptoStream};
pub use packet::{LongHeader, LongType, Version};
use rustls::quic::Keys;
use rustls::Side;

/// Why a datagram could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than a field needs.
    #[error("truncated")]
    Truncated,
    /// A short-header packet (not the start of a connection).
    #[error("not a long-header packet")]
    NotLongHeader,
    /// A version this parser does not read (or version negotiation).
    #[error("unsupported QUIC version {0:#010x}")]
    UnsupportedVersion(u32),
    /// Structurally wrong.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Key derivation or header protection failed (never with valid lengths).
    #[error("crypto failure")]
    Crypto,
    /// AEAD authentication failed: not an Initial of this connection, or tampered.
    #[error("decryption failed")]
    Decrypt,
    /// The first handshake message is not a ClientHello.
    #[error("the crypto stream does not start with a ClientHello")]
    NotClientHello,
    /// More CRYPTO data or packets than the flow's bounds allow.
    #[error("ClientHello exceeds the flow's bounds")]
    TooLarge,
    /// The first packet of the flow is not an Initial.
    #[error("the first packet is not an Initial")]
    NotInitial,
}

/// Bounds of one flow.
#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    /// Largest ClientHello accepted (bytes of crypto stream).
    pub max_crypto_bytes: usize,
    /// Most client Initial packets read before the flow is given up.
    pub max_packets: usize,
}

impl Default for FlowLimits {
    fn default() -> FlowLimits {
        FlowLimits {
            max_crypto_bytes: 16 * 1024,
            max_packets: 16,
        }
    }
}

/// Where a flow stands after a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The ClientHello is not complete yet.
    NeedMore,
    /// The ClientHello is complete.
    Complete(Hello),
}

/// Everything learned from a flow's client Initials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The QUIC version.
    pub version: Version,
    /// Destination connection id of the first Initial (the Initial key material).
    pub dcid: Vec<u8>,
    /// The client's source connection id.
    pub scid: Vec<u8>,
    /// SNI and ALPN.
    pub client_hello: ClientHelloInfo,
}

/// The client side of one QUIC flow, until its ClientHello is complete.
pub struct InitialFlow {
    limits: FlowLimits,
    state: Option<FlowState>,
    packets: usize,
}

struct FlowState {
    version: Version,
    dcid: Vec<u8>,
    scid: Vec<u8>,
    keys: Keys,
    crypto: CryptoStream,
    largest_pn: Option<u64>,
}

impl InitialFlow {
    /// A flow that has seen nothing yet.
    pub fn new(limits: FlowLimits) -> InitialFlow {
        InitialFlow {
            limits,
            state: None,
            packets: 0,
        }
    }

    /// The version seen in the first Initial, if any.
    pub fn version(&self) -> Option<Version> {
        self.state.as_ref().map(|s| s.version)
    }

    /// Reads one datagram from the client. Coalesced packets other than Initials (0-RTT) are
    /// skipped; Initials that fail to decrypt are ignored (they may be forged by an off-path
    /// sender) but count against the packet bound.
    ///
    /// # Errors
    /// The first datagram is not a readable Initial, the ClientHello is malformed, or the
    /// flow went past its bounds.
    pub fn push_datagram(&mut self, datagram: &[u8]) -> Result<Progress, Error> {
        let mut rest = datagram;
        while !rest.is_empty() {
            if rest[0] & 0x80 == 0 {
                // Short header: the handshake is past Initials, or garbage/padding.
                break;
            }
            let header = packet::parse_long_header(rest)?;
            let packet = &rest[..header.packet_len];
            rest = &rest[header.packet_len..];
            if header.kind != LongType::Initial {
                if self.state.is_none() {
                    return Err(Error::NotInitial);
                }
                continue;
            }
            self.packets += 1;
            if self.packets > self.limits.max_packets {
                return Err(Error::TooLarge);
            }
            if self.state.is_none() {
                let keys = packet::initial_keys(header.version, &header.dcid, Side::Server)?;
                self.state = Some(FlowState {
                    version: header.version,
                    dcid: header.dcid.clone(),
                    scid: header.scid.clone(),
                    keys,
                    crypto: CryptoStream::new(self.limits.max_crypto_bytes),
                    largest_pn: None,
                });
            }
            let Some(state) = self.state.as_mut() else {
                return Err(Error::NotInitial);
            };
            if header.version != state.version || header.dcid != state.dcid {
                continue;
            }
            let opened = match packet::open(&state.keys, packet, &header, state.largest_pn) {
                Ok(opened) => opened,
                Err(Error::Decrypt) if state.largest_pn.is_some() => continue,
                Err(err) => {
                    if state.largest_pn.is_none() {
                        // Nothing of this flow was readable: forget the keys of a bad start.
                        self.state = None;
                    }
                    return Err(err);
                }
            };
            state.largest_pn = Some(
                state
                    .largest_pn
                    .map_or(opened.packet_number, |l| l.max(opened.packet_number)),
            );
            for frame in packet::initial_frames(&opened.payload)? {
                if let packet::InitialFrame::Crypto { offset, data } = frame {
                    state.crypto.insert(offset, data)?;
                }
            }
            if let Some(hello) = hello::parse_client_hello(state.crypto.contiguous())? {
                return Ok(Progress::Complete(Hello {
                    version: state.version,
                    dcid: state.dcid.clone(),
                    scid: state.scid.clone(),
                    client_hello: hello,
                }));
            }
        }
        if self.state.is_none() {
            return Err(Error::NotInitial);
        }
        Ok(Progress::NeedMore)
    }
}

/// Whether a datagram starts with a client Initial of a supported version (the start of a new
/// flow), without decrypting it.
pub fn starts_with_initial(datagram: &[u8]) -> bool {
    packet::parse_long_header(datagram).is_ok_and(|h| h.kind == LongType::Initial)
}
