//! `Transport`: a connection's byte stream as its task polls it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A connection's byte stream, as its task polls it: one task reads and writes the whole
/// stream (no split halves, no lock between them).
pub(crate) trait Transport: AsyncWrite + Send + Unpin + Sized {
    /// Whether the transport can wait for data without a buffer: then an idle connection
    /// holds no read buffer at all.
    const WAITS_WITHOUT_BUFFER: bool;

    /// Reads into `buf`, first making room for `want` more bytes (once data is ready, when
    /// the transport can tell); returns the bytes read and the room there was.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<(usize, usize)>>;

    /// Writes from the front of `buf`, advancing it past what was written.
    fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_once(self.write_buf(buf), cx)
    }

    /// Shuts the stream down for writing.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_shutdown(cx)
    }
}

/// Makes room for `want` more bytes; returns the room there is.
pub(super) fn make_room(buf: &mut BytesMut, want: usize) -> usize {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    buf.capacity() - buf.len()
}

/// Polls a reading or writing future of tokio's once: they hold only their borrows, so a
/// new one each poll loses nothing.
pub(super) fn poll_once<F: Future>(future: F, cx: &mut Context<'_>) -> Poll<F::Output> {
    std::pin::pin!(future).poll(cx)
}

/// Plain TCP waits for readiness before it reserves a read buffer.
impl Transport for tokio::net::TcpStream {
    const WAITS_WITHOUT_BUFFER: bool = true;

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<(usize, usize)>> {
        loop {
            std::task::ready!(self.poll_read_ready(cx))?;
            let room = make_room(buf, want);
            match self.try_read_buf(buf) {
                Ok(n) => return Poll::Ready(Ok((n, room))),
                // Readiness was stale: `poll_read_ready` registers for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Every other transport (TLS, WebSocket, QUIC, PROXY) is one boxed state machine.
impl Transport for Box<dyn crate::listener::Io> {
    const WAITS_WITHOUT_BUFFER: bool = false;

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<io::Result<(usize, usize)>> {
        let room = make_room(buf, want);
        poll_once(self.read_buf(buf), cx).map_ok(|n| (n, room))
    }
}
