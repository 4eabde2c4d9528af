//! QUIC long headers (RFC 9000 §17.2), Initial packet protection (RFC 9001 §5, RFC 9369 §3)
//! and the frames an Initial packet may carry.
//!
//! Keys, header protection and AEAD come from `rustls::quic` with the ring provider: Initial
//! packets always use `TLS_AES_128_GCM_SHA256`.

use rustls::quic::Keys;
use rustls::Side;

use crate::Error;

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;
/// Longest connection id of QUIC v1 and v2.
pub const MAX_CID_LEN: usize = 20;

/// The QUIC versions whose Initial packets can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// QUIC version 1, RFC 9000 / RFC 9001.
    V1,
    /// QUIC version 2, RFC 9369.
    V2,
}

impl Version {
    /// The version of a wire value, if supported.
    pub fn from_wire(v: u32) -> Option<Version> {
        match v {
            VERSION_1 => Some(Version::V1),
            VERSION_2 => Some(Version::V2),
            _ => None,
        }
    }

    /// The wire value.
    pub fn wire(self) -> u32 {
        match self {
            Version::V1 => VERSION_1,
            Version::V2 => VERSION_2,
        }
    }

    /// Short name for audit events (`v1`, `v2`).
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }

    /// The two type bits of an Initial packet (v1: 0b00, v2: 0b01).
    fn initial_type_bits(self) -> u8 {
        match self {
            Version::V1 => 0b00,
            Version::V2 => 0b01,
        }
    }

    fn rustls(self) -> rustls::quic::Version {
        match self {
            Version::V1 => rustls::quic::Version::V1,
            Version::V2 => rustls::quic::Version::V2,
        }
    }
}

/// Long-header packet types, independent of the version's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongType {
    /// Initial.
    Initial,
    /// 0-RTT.
    ZeroRtt,
    /// Handshake.
    Handshake,
    /// Retry.
    Retry,
}

fn long_type(version: Version, bits: u8) -> LongType {
    match (version, bits & 0b11) {
        (Version::V1, 0) | (Version::V2, 1) => LongType::Initial,
        (Version::V1, 1) | (Version::V2, 2) => LongType::ZeroRtt,
        (Version::V1, 2) | (Version::V2, 3) => LongType::Handshake,
        _ => LongType::Retry,
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        let b = *self.buf.get(self.pos).ok_or(Error::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u24(&mut self) -> Result<usize, Error> {
        let b = self.bytes(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(Error::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// A QUIC variable-length integer (RFC 9000 §16).
    pub(crate) fn varint(&mut self) -> Result<u64, Error> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for _ in 1..len {
            v = v << 8 | u64::from(self.u8()?);
        }
        Ok(v)
    }

    pub(crate) fn varint_usize(&mut self) -> Result<usize, Error> {
        usize::try_from(self.varint()?).map_err(|_| Error::Truncated)
    }
}

/// Appends a QUIC variable-length integer (values up to 2^62 - 1).
pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & 0x3fff_ffff_ffff_ffff) | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// What the unprotected part of a long header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongHeader {
    /// The version (only supported versions are returned).
    pub version: Version,
    /// The packet type.
    pub kind: LongType,
    /// Destination connection id.
    pub dcid: Vec<u8>,
    /// Source connection id.
    pub scid: Vec<u8>,
    /// Offset of the packet number field (Initial, 0-RTT, Handshake).
    pub pn_offset: usize,
    /// Length of this packet in the datagram (coalesced packets follow it).
    pub packet_len: usize,
}

/// Reads the long header at the start of `packet` (one packet of a possibly coalesced
/// datagram). Short headers, version negotiation and unknown versions are errors.
///
/// # Errors
/// [`Error::NotLongHeader`], [`Error::UnsupportedVersion`], [`Error::Truncated`],
/// [`Error::Malformed`].
pub fn parse_long_header(packet: &[u8]) -> Result<LongHeader, Error> {
    let mut r = Reader::new(packet);
    let first = r.u8()?;
    if first & 0x80 == 0 {
        return Err(Error::NotLongHeader);
    }
    let wire = r.u32()?;
    let version = Version::from_wire(wire).ok_or(Error::UnsupportedVersion(wire))?;
    if first & 0x40 == 0 {
        return Err(Error::Malformed("fixed bit is zero"));
    }
    let kind = long_type(version, first >> 4);
    let dcid_len = usize::from(r.u8()?);
    if dcid_len > MAX_CID_LEN {
        return Err(Error::Malformed("connection id longer than 20 bytes"));
    }
    let dcid = r.bytes(dcid_len)?.to_vec();
    let scid_len = usize::from(r.u8()?);
    if scid_len > MAX_CID_LEN {
        return Err(Error::Malformed("connection id longer than 20 bytes"));
    }
    let scid = r.bytes(scid_len)?.to_vec();
    if kind == LongType::Retry {
        // A Retry has no length: it fills the rest of the datagram.
        return Ok(LongHeader {
            version,
            kind,
            dcid,
            scid,
            pn_offset: r.pos(),
            packet_len: packet.len(),
        });
    }
    if kind == LongType::Initial {
        let token_len = r.varint_usize()?;
        r.bytes(token_len)?;
    }
    let length = r.varint_usize()?;
    let pn_offset = r.pos();
    if length > r.remaining() {
        return Err(Error::Truncated);
    }
    Ok(LongHeader {
        version,
        kind,
        dcid,
        scid,
        pn_offset,
        packet_len: pn_offset + length,
    })
}

/// Initial keys for a connection, derived from the client's first destination connection id.
pub fn initial_keys(version: Version, client_dcid: &[u8], side: Side) -> Result<Keys, Error> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .ok_or(Error::Crypto)?;
    let quic = suite.quic.ok_or(Error::Crypto)?;
    Ok(Keys::initial(
        version.rustls(),
        suite,
        quic,
        client_dcid,
        side,
    ))
}

/// Expands a truncated packet number (RFC 9000 §A.3).
fn decode_pn(largest: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let Some(largest) = largest else {
        return truncated;
    };
    let expected = largest.saturating_add(1);
    let win: u64 = 1 << (pn_len * 8);
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | truncated;
    if candidate.saturating_add(hwin) <= expected && candidate < (1u64 << 62) - win {
        candidate + win
    } else if candidate > expected.saturating_add(hwin) && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

/// One decrypted long-header packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The full packet number.
    pub packet_number: u64,
    /// The unprotected header (first byte and packet number in clear).
    pub header: Vec<u8>,
    /// The decrypted payload (frames).
    pub payload: Vec<u8>,
}

/// Removes header protection and decrypts one long-header packet (`packet` is exactly the
/// packet, `header` its parsed header) with the `remote` keys of `keys`.
///
/// # Errors
/// [`Error::Truncated`] when the packet is too short to sample, [`Error::Decrypt`] when
/// authentication fails.
pub fn open(
    keys: &Keys,
    packet: &[u8],
    header: &LongHeader,
    largest_pn: Option<u64>,
) -> Result<Opened, Error> {
    let packet = packet.get(..header.packet_len).ok_or(Error::Truncated)?;
    let pn_offset = header.pn_offset;
    let sample_len = keys.remote.header.sample_len();
    let sample = packet
        .get(pn_offset + 4..pn_offset + 4 + sample_len)
        .ok_or(Error::Truncated)?;
    let mut first = packet[0];
    let mut pn_bytes = [0u8; 4];
    pn_bytes.copy_from_slice(
        packet
            .get(pn_offset..pn_offset + 4)
            .ok_or(Error::Truncated)?,
    );
    keys.remote
        .header
        .decrypt_in_place(sample, &mut first, &mut pn_bytes)
        .map_err(|_| Error::Crypto)?;
    let pn_len = usize::from(first & 0x03) + 1;
    let mut truncated = 0u64;
    for b in &pn_bytes[..pn_len] {
        truncated = truncated << 8 | u64::from(*b);
    }
    let packet_number = decode_pn(largest_pn, truncated, pn_len);
    let mut head = packet[..pn_offset + pn_len].to_vec();
    head[0] = first;
    head[pn_offset..].copy_from_slice(&pn_bytes[..pn_len]);
    let mut payload = packet[pn_offset + pn_len..].to_vec();
    let plain_len = keys
        .remote
        .packet
        .decrypt_in_place(packet_number, &head, &mut payload)
        .map_err(|_| Error::Decrypt)?
        .len();
    payload.truncate(plain_len);
    Ok(Opened {
        packet_number,
        header: head,
        payload,
    })
}

/// Builds a protected Initial packet carrying `frames`, sealed with the `local` keys of `keys`
/// (used to answer a refused flow with `CONNECTION_CLOSE`, and by tests to build client
/// Initials). `pn_len` is 1 to 4; frames are padded so the header-protection sample exists.
///
/// # Errors
/// [`Error::Malformed`] for connection ids longer than 20 bytes or a bad `pn_len`,
/// [`Error::Crypto`] if sealing fails.
#[allow(clippy::too_many_arguments)]
pub fn seal_initial(
    keys: &Keys,
    version: Version,
    dcid: &[u8],
    scid: &[u8],
    token: &[u8],
    packet_number: u64,
    pn_len: usize,
    frames: &[u8],
) -> Result<Vec<u8>, Error> {
    if dcid.len() > MAX_CID_LEN || scid.len() > MAX_CID_LEN || !(1..=4).contains(&pn_len) {
        return Err(Error::Malformed(
            "bad connection id or packet number length",
        ));
    }
    let tag_len = 16;
    let mut payload = frames.to_vec();
    // The sample starts 4 bytes after the packet number and is 16 bytes long.
    while pn_len + payload.len() < 4 {
        payload.push(0);
    }
    let mut out = Vec::with_capacity(64 + payload.len());
    out.push(0xc0 | version.initial_type_bits() << 4 | (pn_len as u8 - 1));
    out.extend_from_slice(&version.wire().to_be_bytes());
    out.push(dcid.len() as u8);
    out.extend_from_slice(dcid);
    out.push(scid.len() as u8);
    out.extend_from_slice(scid);
    put_varint(&mut out, token.len() as u64);
    out.extend_from_slice(token);
    let length = (pn_len + payload.len() + tag_len) as u64;
    // Always the two-byte form when it fits, as most stacks do (and the RFC vectors).
    if length < 1 << 14 {
        out.extend_from_slice(&((length as u16) | 0x4000).to_be_bytes());
    } else {
        put_varint(&mut out, length);
    }
    let pn_offset = out.len();
    let pn_bytes = packet_number.to_be_bytes();
    out.extend_from_slice(&pn_bytes[8 - pn_len..]);
    let tag = keys
        .local
        .packet
        .encrypt_in_place(packet_number, &out, &mut payload)
        .map_err(|_| Error::Crypto)?;
    out.extend_from_slice(&payload);
    out.extend_from_slice(tag.as_ref());
    let sample_len = keys.local.header.sample_len();
    let sample = out
        .get(pn_offset + 4..pn_offset + 4 + sample_len)
        .ok_or(Error::Truncated)?
        .to_vec();
    let (first, rest) = out.split_at_mut(1);
    keys.local
        .header
        .encrypt_in_place(
            &sample,
            &mut first[0],
            &mut rest[pn_offset - 1..pn_offset - 1 + pn_len],
        )
        .map_err(|_| Error::Crypto)?;
    Ok(out)
}

/// A frame of an Initial packet that matters for reading the ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialFrame<'a> {
    /// CRYPTO data at an offset of the Initial crypto stream.
    Crypto {
        /// Offset in the stream.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// The peer closed the connection.
    Close {
        /// Error code.
        code: u64,
    },
}

/// The frames of a decrypted Initial payload. Only PADDING, PING, ACK, CRYPTO and
/// CONNECTION_CLOSE (transport) are allowed there (RFC 9000 §12.4); anything else is an error.
///
/// # Errors
/// [`Error::Truncated`], [`Error::Malformed`] for a frame not allowed in Initial packets.
pub fn initial_frames(payload: &[u8]) -> Result<Vec<InitialFrame<'_>>, Error> {
    let mut r = Reader::new(payload);
    let mut out = Vec::new();
    while !r.is_empty() {
        match r.varint()? {
            0x00 | 0x01 => {}
            t @ (0x02 | 0x03) => {
                r.varint()?; // largest acknowledged
                r.varint()?; // delay
                let ranges = r.varint()?;
                r.varint()?; // first range
                for _ in 0..ranges {
                    r.varint()?;
                    r.varint()?;
                }
                if t == 0x03 {
                    for _ in 0..3 {
                        r.varint()?;
                    }
                }
            }
            0x06 => {
                let offset = r.varint()?;
                let len = r.varint_usize()?;
                let data = r.bytes(len)?;
                out.push(InitialFrame::Crypto { offset, data });
            }
            0x1c => {
                let code = r.varint()?;
                r.varint()?; // frame type
                let len = r.varint_usize()?;
                r.bytes(len)?;
                out.push(InitialFrame::Close { code });
            }
            _ => return Err(Error::Malformed("frame not allowed in an Initial packet")),
        }
    }
    Ok(out)
}

/// Builds a server Initial that closes the connection with transport error `code`
/// (`0x02` = CONNECTION_REFUSED): the fast, explicit "no" to a client whose Initial was
/// refused. `client_dcid` is the destination id of the client's first Initial (the key
/// material), `client_scid` the client's source id (our destination), `server_scid` any id.
///
/// # Errors
/// As [`seal_initial`].
pub fn connection_close(
    version: Version,
    client_dcid: &[u8],
    client_scid: &[u8],
    server_scid: &[u8],
    code: u64,
) -> Result<Vec<u8>, Error> {
    let keys = initial_keys(version, client_dcid, Side::Server)?;
    let mut frames = vec![0x1c];
    put_varint(&mut frames, code);
    frames.push(0x00); // frame type: none
    frames.push(0x00); // no reason phrase
    seal_initial(&keys, version, client_scid, server_scid, &[], 0, 1, &frames)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            37,
            63,
            64,
            15293,
            16383,
            16384,
            494_878_333,
            (1 << 62) - 1,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.varint().ok(), Some(v));
            assert!(r.is_empty());
        }
        // RFC 9000 §A.1 examples.
        let mut r = Reader::new(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]);
        assert_eq!(r.varint().ok(), Some(151_288_809_941_952_652));
        let mut r = Reader::new(&[0x7b, 0xbd]);
        assert_eq!(r.varint().ok(), Some(15293));
    }

    #[test]
    fn packet_numbers_are_expanded() {
        // RFC 9000 §A.3 example.
        assert_eq!(decode_pn(Some(0xa82f30ea), 0x9b32, 2), 0xa82f9b32);
        assert_eq!(decode_pn(None, 2, 4), 2);
    }

    #[test]
    fn connection_close_opens_with_client_keys() {
        let dcid = [1u8, 2, 3, 4, 5, 6, 7, 8];
        for version in [Version::V1, Version::V2] {
            let packet = connection_close(version, &dcid, &[9, 9], &[7; 8], 0x02).unwrap();
            let header = parse_long_header(&packet).unwrap();
            assert_eq!(header.kind, LongType::Initial);
            assert_eq!(header.dcid, vec![9, 9]);
            assert_eq!(header.packet_len, packet.len());
            let keys = initial_keys(version, &dcid, Side::Client).unwrap();
            let opened = open(&keys, &packet, &header, None).unwrap();
            let frames = initial_frames(&opened.payload).unwrap();
            assert_eq!(frames, vec![InitialFrame::Close { code: 2 }]);
        }
    }

    #[test]
    fn short_headers_and_unknown_versions_are_refused() {
        assert!(matches!(
            parse_long_header(&[0x40, 1, 2, 3]),
            Err(Error::NotLongHeader)
        ));
        assert!(matches!(
            parse_long_header(&[0xc0, 0xfa, 0xce, 0xb0, 0x0c, 0]),
            Err(Error::UnsupportedVersion(0xfaceb00c))
        ));
        assert!(matches!(
            parse_long_header(&[0xc0, 0, 0, 0, 1, 21]),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(parse_long_header(&[]), Err(Error::Truncated)));
    }
}
