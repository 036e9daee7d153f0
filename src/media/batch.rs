//! Batched receive for the relay: one `recvmmsg(2)` reads every datagram waiting on a socket (up
//! to [`BATCH`]). A socket driven by an edge-triggered poll must be read until it is empty; with
//! one `recv_from` per datagram that costs an extra, failing call per wake-up, which at 50
//! packets/s per socket is one extra system call per packet. `recvmmsg` returning fewer than asked
//! says the socket is empty.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams read per call.
pub const BATCH: usize = 8;
/// Room for any RTP packet on a LAN, with margin.
pub const BUFFER: usize = 2048;

/// Buffers for one batch, reused for every read.
pub struct Batch {
    pub bufs: [[u8; BUFFER]; BATCH],
    pub lens: [usize; BATCH],
    pub from: [Option<SocketAddr>; BATCH],
}

impl Batch {
    pub fn new() -> Box<Batch> {
        Box::new(Batch {
            bufs: [[0; BUFFER]; BATCH],
            lens: [0; BATCH],
            from: [None; BATCH],
        })
    }

    /// Reads what is waiting on `socket` (never blocks); returns how many datagrams.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        // SAFETY: every pointer handed to recvmmsg points into `self` or this stack frame, which
        // outlive the call; lengths are the buffers' real sizes; the kernel writes at most that.
        unsafe {
            let mut addrs: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
            let mut iovecs: [libc::iovec; BATCH] = std::mem::zeroed();
            let mut headers: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            for i in 0..BATCH {
                iovecs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
                iovecs[i].iov_len = BUFFER;
                headers[i].msg_hdr.msg_iov = &mut iovecs[i];
                headers[i].msg_hdr.msg_iovlen = 1;
                headers[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                headers[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
            let n = libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            for i in 0..n {
                self.lens[i] = headers[i].msg_len as usize;
                self.from[i] = socket_addr(&addrs[i]);
            }
            Ok(n)
        }
    }
}

/// The address the kernel wrote (IPv4 or IPv6).
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_waiting_datagram_with_its_source() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = Batch::new();
        let empty = batch.recv(&rx);
        assert_eq!(empty.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        for i in 0..3u8 {
            tx.send_to(&[i; 5], rx.local_addr().unwrap()).unwrap();
        }
        // Loopback delivery is synchronous: all three are queued now.
        let n = batch.recv(&rx).unwrap();
        assert_eq!(n, 3);
        for i in 0..3 {
            assert_eq!(&batch.bufs[i][..batch.lens[i]], &[i as u8; 5]);
            assert_eq!(batch.from[i], Some(tx.local_addr().unwrap()));
        }
    }
}
