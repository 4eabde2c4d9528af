//! CRYPTO-stream reassembly (out of order, bounded) and the TLS ClientHello fields that
//! matter to a filter: server name (SNI) and ALPN protocols.

use crate::packet::Reader;
use crate::Error;

/// Most ranges kept apart before the stream is given up (bounds work per frame).
const MAX_RANGES: usize = 64;

/// The Initial crypto stream of one connection, reassembled from CRYPTO frames that may come
/// out of order, overlap or repeat. Never holds more than `max_bytes`.
#[derive(Debug, Clone)]
pub struct CryptoStream {
    max_bytes: usize,
    data: Vec<u8>,
    /// Received ranges `[start, end)`, sorted and merged.
    ranges: Vec<(usize, usize)>,
}

impl CryptoStream {
    /// An empty stream that accepts data up to offset `max_bytes`.
    pub fn new(max_bytes: usize) -> CryptoStream {
        CryptoStream {
            max_bytes,
            data: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// Adds the bytes of one CRYPTO frame.
    ///
    /// # Errors
    /// [`Error::TooLarge`] beyond `max_bytes` or too many separate ranges.
    pub fn insert(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| Error::TooLarge)?;
        let end = start.checked_add(bytes.len()).ok_or(Error::TooLarge)?;
        if end > self.max_bytes {
            return Err(Error::TooLarge);
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(bytes);
        self.ranges.push((start, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        if merged.len() > MAX_RANGES {
            return Err(Error::TooLarge);
        }
        self.ranges = merged;
        Ok(())
    }

    /// The bytes received contiguously from offset 0.
    pub fn contiguous(&self) -> &[u8] {
        match self.ranges.first() {
            Some(&(0, end)) => &self.data[..end],
            _ => &[],
        }
    }
}

/// What a ClientHello says that a filter needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHelloInfo {
    /// The server name (`server_name` extension, host_name entry), lower-cased.
    pub sni: Option<String>,
    /// The ALPN protocols offered, in order.
    pub alpn: Vec<String>,
}

/// Parses a complete ClientHello handshake message at the start of `stream`; `Ok(None)` when
/// more bytes are needed.
///
/// # Errors
/// [`Error::NotClientHello`] when the first message is something else, [`Error::Malformed`]
/// for inconsistent lengths.
pub fn parse_client_hello(stream: &[u8]) -> Result<Option<ClientHelloInfo>, Error> {
    let mut r = Reader::new(stream);
    let Ok(kind) = r.u8() else {
        return Ok(None);
    };
    if kind != 1 {
        return Err(Error::NotClientHello);
    }
    let Ok(len) = r.u24() else {
        return Ok(None);
    };
    let Ok(body) = r.bytes(len) else {
        return Ok(None);
    };
    let bad = |_| Error::Malformed("inconsistent ClientHello lengths");
    let mut r = Reader::new(body);
    r.u16().map_err(bad)?; // legacy_version
    r.bytes(32).map_err(bad)?; // random
    let sid = usize::from(r.u8().map_err(bad)?);
    r.bytes(sid).map_err(bad)?;
    let suites = usize::from(r.u16().map_err(bad)?);
    r.bytes(suites).map_err(bad)?;
    let compression = usize::from(r.u8().map_err(bad)?);
    r.bytes(compression).map_err(bad)?;
    let mut info = ClientHelloInfo::default();
    if r.is_empty() {
        return Ok(Some(info));
    }
    let ext_len = usize::from(r.u16().map_err(bad)?);
    let mut exts = Reader::new(r.bytes(ext_len).map_err(bad)?);
    while !exts.is_empty() {
        let ty = exts.u16().map_err(bad)?;
        let len = usize::from(exts.u16().map_err(bad)?);
        let data = exts.bytes(len).map_err(bad)?;
        match ty {
            0x0000 => info.sni = parse_sni(data)?,
            0x0010 => info.alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    Ok(Some(info))
}

fn parse_sni(data: &[u8]) -> Result<Option<String>, Error> {
    let bad = |_| Error::Malformed("bad server_name extension");
    let mut r = Reader::new(data);
    let list = usize::from(r.u16().map_err(bad)?);
    let mut r = Reader::new(r.bytes(list).map_err(bad)?);
    while !r.is_empty() {
        let kind = r.u8().map_err(bad)?;
        let len = usize::from(r.u16().map_err(bad)?);
        let name = r.bytes(len).map_err(bad)?;
        if kind == 0 {
            if name.is_empty()
                || name.len() > 253
                || !name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err(Error::Malformed("server name is not a DNS name"));
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn parse_alpn(data: &[u8]) -> Result<Vec<String>, Error> {
    let bad = |_| Error::Malformed("bad ALPN extension");
    let mut r = Reader::new(data);
    let list = usize::from(r.u16().map_err(bad)?);
    let mut r = Reader::new(r.bytes(list).map_err(bad)?);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = usize::from(r.u8().map_err(bad)?);
        let proto = r.bytes(len).map_err(bad)?;
        if out.len() < 16 {
            out.push(String::from_utf8_lossy(proto).into_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_in_any_order() {
        let mut s = CryptoStream::new(100);
        s.insert(10, &[2; 10]).unwrap();
        assert_eq!(s.contiguous(), &[] as &[u8]);
        s.insert(0, &[1; 5]).unwrap();
        assert_eq!(s.contiguous().len(), 5);
        s.insert(3, &[1; 8]).unwrap(); // overlaps both
        assert_eq!(s.contiguous().len(), 20);
        s.insert(0, &[1; 5]).unwrap(); // repeated
        assert_eq!(s.contiguous().len(), 20);
    }

    #[test]
    fn stream_is_bounded() {
        let mut s = CryptoStream::new(100);
        assert!(matches!(s.insert(95, &[0; 6]), Err(Error::TooLarge)));
        assert!(matches!(s.insert(u64::MAX, &[0; 1]), Err(Error::TooLarge)));
        let mut s = CryptoStream::new(10_000);
        let mut failed = false;
        for i in 0..100u64 {
            if s.insert(i * 3 + 1, &[0]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "too many holes must be refused");
    }

    #[test]
    fn partial_hello_asks_for_more() {
        assert_eq!(parse_client_hello(&[]).unwrap(), None);
        assert_eq!(parse_client_hello(&[1, 0, 0, 10, 3]).unwrap(), None);
        assert!(matches!(
            parse_client_hello(&[2, 0, 0, 1, 0]),
            Err(Error::NotClientHello)
        ));
    }
}
