//! A phone's media port in a test: a socket read by a thread as packets come (a call's worth of
//! audio would overflow a socket's buffer), so what the party received on the wire can be
//! asserted, and the test can speak for the party.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::rtp::AUDIO_PT;

/// What a phone's socket has received, filled by its reader thread.
#[derive(Default)]
pub struct Heard {
    packets: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
    arrived: Condvar,
}

/// A party's media port: a socket of the test, read as packets come (a call's worth of audio
/// would overflow a socket's buffer).
pub struct Phone {
    pub socket: UdpSocket,
    heard: Arc<Heard>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Phone {
    pub fn new() -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (heard, stop) = (Arc::new(Heard::default()), Arc::new(AtomicBool::new(false)));
        let reader = {
            let (socket, heard, stop) = (
                socket.try_clone().unwrap(),
                Arc::clone(&heard),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        heard
                            .packets
                            .lock()
                            .unwrap()
                            .push((from, buf[..n].to_vec()));
                        heard.arrived.notify_all();
                    }
                }
            })
        };
        Phone {
            socket,
            heard,
            stop,
            reader: Some(reader),
        }
    }

    pub fn port(&self) -> String {
        self.socket.local_addr().unwrap().port().to_string()
    }

    /// Everything received so far: (from, packet). Packets still on their way are waited for:
    /// it returns once nothing has arrived for 200 ms (or after 5 s of steady arrivals).
    pub fn drain(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut packets = self.heard.packets.lock().unwrap();
        loop {
            let before = packets.len();
            let (guard, waited) = self
                .heard
                .arrived
                .wait_timeout(packets, Duration::from_millis(200))
                .unwrap();
            packets = guard;
            if (waited.timed_out() && packets.len() == before) || Instant::now() > deadline {
                return std::mem::take(&mut *packets);
            }
        }
    }

    /// Waits (at most `timeout`) until a received packet satisfies `want`; returns where it
    /// came from.
    pub fn wait_for(&self, timeout: Duration, want: impl Fn(&[u8]) -> bool) -> Option<SocketAddr> {
        let deadline = Instant::now() + timeout;
        let mut packets = self.heard.packets.lock().unwrap();
        loop {
            if let Some((from, _)) = packets.iter().find(|(_, p)| want(p)) {
                return Some(*from);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            packets = self.heard.arrived.wait_timeout(packets, left).unwrap().0;
        }
    }

    /// Sends µ-law RTP with `fill` as the payload to `to` until the other phone has heard it
    /// unchanged.
    pub fn speak_until_heard(&self, to: SocketAddr, fill: u8, listener: &Phone) {
        let filled = |p: &[u8]| p.len() == 172 && p[12..].iter().all(|&b| b == fill);
        if !self.speak_until(to, AUDIO_PT, fill, listener, filled) {
            panic!("the other party never heard {fill:#x}");
        }
    }

    /// Sends RTP of payload type `pt` with `fill` as the 160-byte payload to `to` until
    /// `listener` received a packet that satisfies `heard` (at most 20 s); whether it did.
    pub fn speak_until(
        &self,
        to: SocketAddr,
        pt: u8,
        fill: u8,
        listener: &Phone,
        heard: impl Fn(&[u8]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seq = 0u16;
        while Instant::now() < deadline {
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
            p.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
            p.extend_from_slice(&[fill; 160]);
            self.socket.send_to(&p, to).unwrap();
            seq = seq.wrapping_add(1);
            if listener
                .wait_for(Duration::from_millis(100), &heard)
                .is_some()
            {
                return true;
            }
        }
        false
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
