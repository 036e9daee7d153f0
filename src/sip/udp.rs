//! The SIP UDP socket handed to rsipstack: a plain tokio socket whose receive side repairs each
//! datagram (see `repair.rs`) before rsipstack's parser sees it. Sending is untouched.

use std::net::SocketAddr;

use rsipstack::platform::net::UdpSocket as StackUdpSocket;

use super::repair::repair_datagram;

pub struct RepairingUdpSocket {
    socket: tokio::net::UdpSocket,
}

impl RepairingUdpSocket {
    /// Binds `addr` (no address or port reuse: a taken port is an error).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<RepairingUdpSocket> {
        Ok(RepairingUdpSocket {
            socket: tokio::net::UdpSocket::bind(addr).await?,
        })
    }
}

#[async_trait::async_trait]
impl StackUdpSocket for RepairingUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let (len, from) = self.socket.recv_from(buf).await?;
        let repaired = match repair_datagram(&buf[..len]) {
            std::borrow::Cow::Owned(fixed) if fixed.len() <= buf.len() => fixed,
            // Nothing to repair, or no room for the repair: as received.
            _ => return Ok((len, from)),
        };
        buf[..repaired.len()].copy_from_slice(&repaired);
        Ok((repaired.len(), from))
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}
