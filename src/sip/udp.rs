//! The SIP UDP socket handed to rsipstack: a plain tokio socket whose receive side checks and
//! repairs each datagram before rsipstack's parser sees it (sans-IO: `conformance.rs` answers
//! what RFC 3261 says to answer — 400, 416, 420, 505, 513 — on this socket, `repair.rs` mends
//! what rsipstack would misread). Sending is untouched.
//!
//! Those answers go out without a transaction, to whatever address the datagram claims to come
//! from: a sender with a forged address could have them reflected at someone. Each address gets
//! at most [`ANSWER_RATE`] per second (bursts of twice that); beyond, datagrams that would be
//! answered here are dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use crate::backoff::source_of;
use crate::rate::TokenBucket;

use rsipstack::platform::net::UdpSocket as StackUdpSocket;
use tracing::debug;

use super::conformance::{Check, check_request, too_large};
use super::repair::{forget_claimed_source, repair_datagram};

/// The largest datagram read whole (the IP limit); rsipstack's buffer is smaller (8 KiB), and a
/// larger request is answered 513 rather than cut.
const MAX_DATAGRAM: usize = 65_536;
/// Answers sent by the socket itself, per address and second.
pub const ANSWER_RATE: f64 = 20.0;
/// Addresses whose answers are counted at most (the table starts again beyond).
const MAX_ANSWERED: usize = 65_536;

pub struct RepairingUdpSocket {
    socket: tokio::net::UdpSocket,
    /// Where each datagram is read whole (only ever locked without waiting in between).
    scratch: Mutex<Vec<u8>>,
    /// Answers sent here, per address (see the module's comment).
    answered: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl RepairingUdpSocket {
    /// Binds `addr` (no address or port reuse: a taken port is an error).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<RepairingUdpSocket> {
        Ok(RepairingUdpSocket {
            socket: tokio::net::UdpSocket::bind(addr).await?,
            scratch: Mutex::new(vec![0; MAX_DATAGRAM]),
            answered: Mutex::new(HashMap::new()),
        })
    }

    /// Whether an answer may go to `ip` now.
    fn may_answer(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        if answered.len() >= MAX_ANSWERED && !answered.contains_key(&source_of(ip)) {
            answered.clear();
        }
        answered
            .entry(source_of(ip))
            .or_insert_with(|| TokenBucket::full(2.0 * ANSWER_RATE, now))
            .take(ANSWER_RATE, 2.0 * ANSWER_RATE, now)
            .is_ok()
    }

    /// Reads one datagram into `buf` as rsipstack should see it; `None` when it was answered
    /// or dropped here (or nothing was there after all).
    fn take(&self, buf: &mut [u8]) -> std::io::Result<Option<(usize, SocketAddr)>> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let (len, from) = match self.socket.try_recv_from(&mut scratch[..]) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let packet = &scratch[..len];
        let check = if len > buf.len() {
            too_large(packet, len, buf.len())
        } else {
            check_request(packet, true)
        };
        let len = match check {
            Check::Pass => len,
            Check::Truncate(to) => to,
            Check::Answer { response, why, .. } => {
                if self.may_answer(from.ip()) {
                    debug!("SIP from {from} answered here: {why}");
                    let _ = self.socket.try_send_to(&response, from);
                } else {
                    debug!("SIP from {from} dropped (answers to it over {ANSWER_RATE}/s): {why}");
                }
                return Ok(None);
            }
            Check::Drop(why) => {
                debug!("SIP from {from} dropped: {why}");
                return Ok(None);
            }
        };
        let packet = &scratch[..len];
        let honest = forget_claimed_source(packet);
        let repaired = repair_datagram(&honest);
        let out: &[u8] = if repaired.len() <= buf.len() {
            &repaired
        } else {
            // No room for the repair: as received (but for a claimed source).
            &honest
        };
        buf[..out.len()].copy_from_slice(out);
        Ok(Some((out.len(), from)))
    }
}

#[async_trait::async_trait]
impl StackUdpSocket for RepairingUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            self.socket.readable().await?;
            if let Some(got) = self.take(buf)? {
                return Ok(got);
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}
