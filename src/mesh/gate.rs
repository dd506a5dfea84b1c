//! Admission to a listener's handshakes: how many connections may be in their handshake
//! at once, in all and per source address, with a share held back for addresses that
//! completed a handshake before.
//!
//! A connection holds a slot from accept until its handshake ends (at most
//! `limits.handshake_timeout`). Strangers holding connections open cannot lock a known
//! peer out: one address gets `handshakes_per_source` slots, and the last
//! `handshakes_reserved` slots only go to addresses this listener has admitted before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::limits::Limits;

/// Most addresses remembered as having linked before.
const KNOWN_MAX: usize = 4096;

#[derive(Default)]
struct State {
    in_progress: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Addresses that completed a handshake, with when they last did.
    known: HashMap<IpAddr, Instant>,
}

/// Why a connection was turned away before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GateRefusal {
    #[error("too many handshakes from this address (limits.handshakes_per_source)")]
    PerSource,
    #[error("too many handshakes in progress (limits.handshakes)")]
    Total,
    #[error("the remaining handshake slots are reserved for known peers (limits.handshakes_reserved)")]
    Reserved,
}

impl GateRefusal {
    /// The `reason` label of the refusal in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            GateRefusal::PerSource => "per_source",
            GateRefusal::Total => "total",
            GateRefusal::Reserved => "reserved",
        }
    }
}

/// See the module documentation. Shared by one listener's accept loop and its handshakes.
pub(crate) struct HandshakeGate {
    total: usize,
    per_source: usize,
    reserved: usize,
    state: Mutex<State>,
}

/// A handshake slot; released on drop.
pub(crate) struct Slot {
    gate: Arc<HandshakeGate>,
    ip: IpAddr,
}

impl HandshakeGate {
    pub(crate) fn new(limits: &Limits) -> Arc<HandshakeGate> {
        Arc::new(HandshakeGate {
            total: limits.handshakes,
            per_source: limits.handshakes_per_source,
            reserved: limits.handshakes_reserved.min(limits.handshakes.saturating_sub(1)),
            state: Mutex::new(State::default()),
        })
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, GateRefusal> {
        let mut s = self.state.lock().map_err(|_| GateRefusal::Total)?;
        let from_ip = s.by_source.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.per_source {
            return Err(GateRefusal::PerSource);
        }
        if s.in_progress >= self.total {
            return Err(GateRefusal::Total);
        }
        if s.in_progress >= self.total - self.reserved && !s.known.contains_key(&ip) {
            return Err(GateRefusal::Reserved);
        }
        s.in_progress += 1;
        *s.by_source.entry(ip).or_default() += 1;
        Ok(Slot { gate: self.clone(), ip })
    }

    /// Remembers that `ip` completed a handshake (it may use the reserved slots).
    pub(crate) fn admitted(&self, ip: IpAddr, now: Instant) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.known.len() >= KNOWN_MAX && !s.known.contains_key(&ip) {
            let oldest = s.known.iter().min_by_key(|(_, t)| **t).map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                s.known.remove(&oldest);
            }
        }
        s.known.insert(ip, now);
    }

    fn leave(&self, ip: IpAddr) {
        let Ok(mut s) = self.state.lock() else { return };
        s.in_progress = s.in_progress.saturating_sub(1);
        if let Some(n) = s.by_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.by_source.remove(&ip);
            }
        }
    }
}

impl Slot {
    /// The handshake succeeded: release the slot and remember the address.
    pub(crate) fn admitted(self) {
        self.gate.admitted(self.ip, Instant::now());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.leave(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per_source: usize, reserved: usize) -> Arc<HandshakeGate> {
        let limits = Limits {
            handshakes: total,
            handshakes_per_source: per_source,
            handshakes_reserved: reserved,
            ..Limits::default()
        };
        HandshakeGate::new(&limits)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_gets_its_share_only() {
        let g = gate(10, 2, 0);
        let a = g.enter(ip(2)).expect("first");
        let _b = g.enter(ip(2)).expect("second");
        assert_eq!(g.enter(ip(2)).err(), Some(GateRefusal::PerSource));
        assert!(g.enter(ip(3)).is_ok());
        drop(a);
        assert!(g.enter(ip(2)).is_ok(), "a released slot is free again");
    }

    #[test]
    fn strangers_cannot_take_the_reserved_slots() {
        let g = gate(4, 4, 2);
        g.enter(ip(1)).expect("known peer's first handshake").admitted();
        let held: Vec<Slot> = (0..2).map(|_| g.enter(ip(9)).expect("stranger")).collect();
        assert_eq!(g.enter(ip(9)).err(), Some(GateRefusal::Reserved));
        assert_eq!(g.enter(ip(8)).err(), Some(GateRefusal::Reserved));
        let k1 = g.enter(ip(1)).expect("known peer uses a reserved slot");
        let _k2 = g.enter(ip(1)).expect("and the next");
        assert_eq!(g.enter(ip(1)).err(), Some(GateRefusal::Total));
        drop((held, k1));
        assert!(g.enter(ip(9)).is_ok());
    }
}
