//! TCP: connect from an optional source address, Nagle off.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::net::{TcpSocket, TcpStream};

use crate::transport::TransportError;

/// Connects to `addr`, binding to `source` first if given. With a source address the port is
/// chosen at connect time (`IP_BIND_ADDRESS_NO_PORT`), so that each source address offers
/// its full ephemeral range towards each destination.
pub(crate) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, TransportError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(TransportError::Tcp)?;
    if let Some(ip) = source {
        set_bind_no_port(&socket);
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(TransportError::Tcp)?;
    }
    let stream = socket.connect(addr).await.map_err(TransportError::Tcp)?;
    stream.set_nodelay(true).map_err(TransportError::Tcp)?;
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+); without it the bind itself reserves a port,
/// which limits one source address to one ephemeral range for every destination. Failure
/// only costs that optimisation.
fn set_bind_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: the fd is a valid socket owned by `socket`; the option value is a c_int that
    // lives through the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
