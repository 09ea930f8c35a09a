//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in front of the
//! listener tells the client's real address in a header before the first byte of the
//! client's stream. A listener with `proxy_protocol = true` requires it; one without it
//! never reads one (a header there reaches the MQTT decoder and is refused as a malformed
//! CONNECT, which is what a client spoofing its address deserves).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The signature that starts a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest version 2 header accepted (addresses plus TLVs we skip).
const V2_MAX: usize = 16 + 2048;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// The stream does not start with a PROXY header.
    #[error("no PROXY protocol header (the listener requires one)")]
    Missing,
    /// The header is malformed.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// What a header says: the client's address, or `None` when the proxy speaks for itself
/// (v1 `UNKNOWN`, v2 `LOCAL`, or an address family other than TCP over IPv4/IPv6).
pub(crate) type Source = Option<SocketAddr>;

/// Parses a header at the start of `buf`: `Ok(None)` if more bytes are needed, else the
/// source and the header's length.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Source, usize)>, ProxyError> {
    let probe = buf.len().min(V2_SIGNATURE.len());
    if buf[..probe] == V2_SIGNATURE[..probe] {
        return if buf.len() < 16 {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let probe = buf.len().min(6);
    if buf[..probe] == b"PROXY "[..probe] {
        return if buf.len() < 6 {
            Ok(None)
        } else {
            parse_v1(buf)
        };
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Source, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError::Malformed("v1 line longer than 107 bytes"));
    }
    let line =
        std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Some((None, end + 2)));
    }
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("v1 needs 4 fields after the family"));
    };
    let parse_ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().map(IpAddr::V6),
            _ => {
                return Err(ProxyError::Malformed(
                    "v1 family is not TCP4, TCP6 or UNKNOWN",
                ));
            }
        }
        .map_err(|_| ProxyError::Malformed("v1 address does not match its family"))
    };
    let parse_port = |s: &str| -> Result<u16, ProxyError> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProxyError::Malformed("v1 port is not a number"));
        }
        s.parse()
            .map_err(|_| ProxyError::Malformed("v1 port out of range"))
    };
    let source = SocketAddr::new(parse_ip(src)?, parse_port(sport)?);
    parse_ip(dst)?;
    parse_port(dport)?;
    Ok(Some((Some(source), end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Source, usize)>, ProxyError> {
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > V2_MAX {
        return Err(ProxyError::Malformed("v2 header longer than 2064 bytes"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    match version_command & 0x0f {
        // LOCAL: the proxy's own connection (a health check); the socket's address stands.
        0 => return Ok(Some((None, total))),
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command is not LOCAL or PROXY")),
    }
    let source = match family {
        // TCP over IPv4.
        0x11 => {
            if body.len() < 12 {
                return Err(ProxyError::Malformed("v2 IPv4 addresses truncated"));
            }
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        // TCP over IPv6.
        0x21 => {
            if body.len() < 36 {
                return Err(ProxyError::Malformed("v2 IPv6 addresses truncated"));
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // UNSPEC, UDP, UNIX sockets: no address we can use.
        _ => None,
    };
    Ok(Some((source, total)))
}

/// Reads the header from `stream`; returns the source and the bytes read past it (the
/// client's first bytes), which must be read before the stream's.
pub(crate) async fn read_header<S>(stream: &mut S) -> Result<(Source, BytesMut), ProxyError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if !buf.is_empty()
            && let Some((source, len)) = parse(&buf)?
        {
            buf.advance(len);
            return Ok((source, buf));
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(ProxyError::Malformed("the stream ended in the header")),
            Ok(_) => {}
        }
    }
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n\x10rest";
        let (source, len) = parse(line).expect("valid").expect("complete");
        assert_eq!(source, Some("192.0.2.7:56324".parse().expect("addr")));
        assert_eq!(&line[len..], b"\x10rest");
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 1883\r\n";
        let (source, _) = parse(line).expect("valid").expect("complete");
        assert_eq!(source, Some("[2001:db8::7]:4000".parse().expect("addr")));
        let (source, len) = parse(b"PROXY UNKNOWN\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!((source, len), (None, 15));
    }

    #[test]
    fn v2_inet_inet6_local_and_tlvs() {
        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&1883u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let header = v2(1, 0x11, &body);
        let (source, len) = parse(&header).expect("valid").expect("complete");
        assert_eq!(source, Some("198.51.100.9:40000".parse().expect("addr")));
        assert_eq!(len, header.len());
        let mut body = vec![0u8; 36];
        body[15] = 1;
        body[32..34].copy_from_slice(&7u16.to_be_bytes());
        let (source, _) = parse(&v2(1, 0x21, &body))
            .expect("valid")
            .expect("complete");
        assert_eq!(source, Some("[::1]:7".parse().expect("addr")));
        let (source, _) = parse(&v2(0, 0x00, &[])).expect("valid").expect("complete");
        assert_eq!(source, None);
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\n";
        for cut in 1..line.len() {
            assert_eq!(parse(&line[..cut]), Ok(None), "cut at {cut}");
        }
        let header = v2(1, 0x11, &[1; 12]);
        for cut in 1..header.len() {
            assert_eq!(parse(&header[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(parse(b"\x10\x0c\x00\x04MQTT"), Err(ProxyError::Missing));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"[..],
            b"PROXY TCP4 ::1 5.6.7.8 1 1\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 1\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'A'; 200]].concat();
        assert!(matches!(parse(&long), Err(ProxyError::Malformed(_))));
        let mut header = v2(1, 0x11, &[0; 4]);
        assert!(
            matches!(parse(&header), Err(ProxyError::Malformed(_))),
            "truncated v4"
        );
        header[12] = 0x31;
        assert!(
            matches!(parse(&header), Err(ProxyError::Malformed(_))),
            "version 3"
        );
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(
            matches!(parse(&huge), Err(ProxyError::Malformed(_))),
            "too long"
        );
    }
}
