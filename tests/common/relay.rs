//! A fake relay node for tests: it links to two real daemons (plain TCP, speaking the
//! wire protocol itself), advertises itself as their common neighbour (signed with its
//! own certificate when the mesh checks signed origins) so that it is the path between them, and forwards every advertisement and routed frame, after handing
//! each routed frame to a `Tamper` hook that may record, change or drop it.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use receptord::mesh::origin::CertSigner;
use receptord::wire::{Frame, Lsa, Routed, caps};

use super::hostile::{FakePeer, node};

/// Sees every routed frame the relay forwards (not those addressed to it); returns false
/// to drop the frame.
pub type Tamper = Arc<dyn Fn(&mut Routed) -> bool + Send + Sync>;

/// Sees every routed frame the relay forwards; returns the frames to send in its place
/// (none: dropped; several: duplicated, injected or a held one released).
pub type Rewrite = Arc<dyn Fn(Routed) -> Vec<Routed> + Send + Sync>;

/// A running fake relay; stops (and its links close) on drop.
pub struct FakeRelay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    writers: Vec<Arc<Mutex<TcpStream>>>,
}

impl FakeRelay {
    /// Links to `a` (node `a_id`, plain-TCP listener `a_port`) and `b` as `id`, signing its
    /// advertisements with `signer` (a certificate for `id`) when given.
    pub fn start(
        id: &str,
        (a_id, a_port): (&str, u16),
        (b_id, b_port): (&str, u16),
        signer: Option<CertSigner>,
        tamper: Tamper,
    ) -> FakeRelay {
        let rewrite: Rewrite = Arc::new(move |mut r| if tamper(&mut r) { vec![r] } else { Vec::new() });
        FakeRelay::start_rewriting(id, (a_id, a_port), (b_id, b_port), signer, rewrite)
    }

    /// [`FakeRelay::start`] with a hook that may send any frames in place of each one.
    pub fn start_rewriting(
        id: &str,
        (a_id, a_port): (&str, u16),
        (b_id, b_port): (&str, u16),
        signer: Option<CertSigner>,
        tamper: Rewrite,
    ) -> FakeRelay {
        let stop = Arc::new(AtomicBool::new(false));
        let (ra, wa) = link(id, a_port);
        let (rb, wb) = link(id, b_port);
        let mut threads = Vec::new();
        for (reader, out) in [(ra, wb.clone()), (rb, wa.clone())] {
            let (stop, tamper, me) = (stop.clone(), tamper.clone(), id.to_owned());
            threads.push(std::thread::spawn(move || forward(reader, out, &me, &tamper, &stop)));
        }
        let (stop2, outs, me) = (stop.clone(), vec![wa.clone(), wb.clone()], id.to_owned());
        let neighbours = vec![(node(a_id), 1.0), (node(b_id), 1.0)];
        threads.push(std::thread::spawn(move || {
            let mut seq = 0;
            while !stop2.load(Ordering::Relaxed) {
                seq += 1;
                let mut lsa = Lsa {
                    origin: node(&me),
                    epoch: 1,
                    seq,
                    leaving: false,
                    ephemeral: false,
                    leaf: false,
                    neighbors: neighbours.clone(),
                    relay_marks: false,
                    work_types: Vec::new(),
                    sig: None,
                };
                if let Some(signer) = &signer {
                    lsa.sig = Some(signer.signature(&lsa).expect("sign"));
                }
                for out in &outs {
                    send(out, &Frame::Lsa(lsa.clone()));
                    send(out, &Frame::Keepalive);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }));
        FakeRelay { stop, threads, writers: vec![wa, wb] }
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.writers {
            if let Ok(s) = w.lock() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn link(id: &str, port: u16) -> (FakePeer, Arc<Mutex<TcpStream>>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("relay connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let writer = stream.try_clone().expect("clone");
    let peer = FakePeer::handshake_on(Box::new(stream), id, caps::STREAMS).expect("relay handshake");
    (peer, Arc::new(Mutex::new(writer)))
}

fn send(out: &Mutex<TcpStream>, frame: &Frame) {
    if let Ok(mut s) = out.lock() {
        let _ = s.write_all(&frame.encode());
    }
}

fn forward(mut from: FakePeer, to: Arc<Mutex<TcpStream>>, me: &str, tamper: &Rewrite, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Some(frame) = from.recv() else { return };
        match frame {
            Frame::Lsa(lsa) => send(&to, &Frame::Lsa(lsa)),
            Frame::Routed(r) if r.dst.as_str() == me => {}
            Frame::Routed(mut r) => {
                r.hops_left = r.hops_left.saturating_sub(1);
                for out in tamper(r) {
                    send(&to, &Frame::Routed(out));
                }
            }
            _ => {}
        }
    }
}
