//! End-to-end streams over the mesh with credit-based flow control.
//!
//! A stream joins two nodes across any number of relays. Each direction carries byte
//! offsets (a gap is detected, never silently skipped) and is limited by credit the
//! receiver grants as its application consumes data, so no node buffers more than one
//! window per stream whatever the sizes involved. A stream protected end to end
//! (`mesh::e2e`) carries sealed records (`mesh::seal`) in those bytes; its writer seals
//! and its reader opens them, so the rest of the program sees the same API either way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::router::Router;
use super::seal::{IntegrityError, Kind, MAX_PAYLOAD, Sealer, Unsealer};
use crate::wire::{Body, MAX_DATA_CHUNK, NodeId, Side};

/// Identifies a stream at one end: the remote node, the opener's number, and our role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub peer: NodeId,
    pub id: u64,
    pub local: Side,
}

/// Why a stream ended abnormally.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("stream reset: {0}")]
    Reset(String),
    /// Proof that a relay tampered with an end-to-end protected stream: a record failed
    /// its authentication (bytes changed or injected), or a frame the other end sent once
    /// arrived twice (the mesh never retransmits). The stream is reset and nothing after
    /// the last good record is delivered.
    #[error("stream integrity error: {0}")]
    Integrity(String),
    /// An end-to-end protected stream's frames arrived with a gap, out of order, or it
    /// ended before its authenticated end record. Tampering can do this, but so can an
    /// honest reroute (frames in flight on a link that went down): only the caller, who
    /// knows whether the route changed meanwhile, can tell (`mesh::Node::rerouted_since`).
    #[error("stream integrity failure: {0}")]
    Sequence(String),
}

/// What a reader gets from a stream.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// The remote end finished; `trailer` is its end-of-stream metadata.
    End(Bytes),
}

#[derive(Debug)]
pub(crate) enum Inbound {
    Data(Bytes),
    Fin(Bytes),
    Reset(String),
    /// The frames broke the stream's rules (out of sequence, over the window, after the
    /// end). `replayed`: a frame the other end sent once arrived again, which no honest
    /// path does (on a protected stream, proof of tampering; otherwise a reset).
    Violation {
        reason: String,
        replayed: bool,
    },
}

/// Send-side credit shared between the writer and the frame dispatcher.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    avail: AtomicU64,
    closed: AtomicBool,
    /// Closed because the remote stopped reading (not an abort): finish politely.
    stopped: AtomicBool,
    reason: Mutex<Option<String>>,
    notify: Notify,
}

impl Credit {
    fn add(&self, n: u64) {
        self.avail.fetch_add(n, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    fn close(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert_with(|| reason.to_owned());
        }
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn closed_reason(&self) -> Option<String> {
        if !self.closed.load(Ordering::Acquire) {
            return None;
        }
        Some(self.reason.lock().ok().and_then(|r| r.clone()).unwrap_or_else(|| "stream closed".into()))
    }

    /// Waits until some credit is available and takes up to `want` bytes of it.
    async fn take(&self, want: u64) -> Result<u64, StreamError> {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.closed_reason() {
                return Err(StreamError::Reset(reason));
            }
            let cur = self.avail.load(Ordering::Acquire);
            if cur > 0 {
                let n = cur.min(want);
                if self.avail.compare_exchange(cur, cur - n, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Ok(n);
                }
                continue;
            }
            notified.await;
        }
    }
}

struct Slot {
    inbound: mpsc::UnboundedSender<Inbound>,
    credit: Arc<Credit>,
    /// Bytes the remote may still send before exceeding the credit we granted.
    recv_allowance: u64,
    recv_offset: u64,
    remote_done: bool,
    local_done: bool,
    /// Our reader is gone: inbound data is discarded.
    reader_gone: bool,
    /// Counts this stream end as open while it exists.
    _open: crate::metrics::OpenGuard,
}

/// All streams ending at this node.
#[derive(Default)]
pub(crate) struct StreamTable {
    slots: Mutex<HashMap<StreamKey, Slot>>,
}

impl StreamTable {
    /// A fresh stream number for a stream we open to `peer`: random and nonzero, so a node
    /// off the stream's path cannot guess it to forge `Reset`, `Data` or `Credit` frames
    /// (a counter would let it spray the next few numbers).
    pub(crate) fn new_id(&self, peer: &NodeId) -> u64 {
        loop {
            let id: u64 = rand::random();
            let key = StreamKey { peer: peer.clone(), id, local: Side::Opener };
            if id != 0 && self.slots.lock().is_ok_and(|s| !s.contains_key(&key)) {
                return id;
            }
        }
    }

    /// Registers a stream end; `send_credit` is what the remote granted us up front.
    pub(crate) fn register(
        &self,
        key: StreamKey,
        window: u32,
        send_credit: u32,
    ) -> (mpsc::UnboundedReceiver<Inbound>, Arc<Credit>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let credit = Arc::new(Credit::default());
        credit.add(u64::from(send_credit));
        let slot = Slot {
            inbound: tx,
            credit: credit.clone(),
            recv_allowance: u64::from(window),
            recv_offset: 0,
            remote_done: false,
            local_done: false,
            reader_gone: false,
            _open: crate::metrics::global().stream_opened(),
        };
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(key, slot);
        }
        (rx, credit)
    }

    /// Handles a stream frame addressed to us. Returns a reset to send back when the
    /// frame violates the protocol or names an unknown stream.
    pub(crate) fn deliver(&self, src: &NodeId, body: Body) -> Option<Body> {
        let (id, from) = body.stream()?;
        let key = StreamKey { peer: src.clone(), id, local: from.other() };
        let mut slots = self.slots.lock().ok()?;
        let Some(slot) = slots.get_mut(&key) else {
            return match body {
                Body::Reset { .. } | Body::Fin { .. } | Body::Credit { .. } => None,
                _ => Some(Body::Reset { stream: id, from: key.local, reason: "no such stream".into() }),
            };
        };
        let verdict = apply(slot, body);
        let finished = slot.remote_done && slot.local_done;
        match verdict {
            Ok(()) if finished => {
                slots.remove(&key);
                None
            }
            Ok(()) => None,
            Err((reason, replayed)) => {
                let _ = slot.inbound.send(Inbound::Violation { reason: reason.clone(), replayed });
                slot.credit.close(&reason);
                slots.remove(&key);
                Some(Body::Reset { stream: id, from: key.local, reason: reason.into() })
            }
        }
    }

    /// How many stream ends this node has open with `peer`.
    pub(crate) fn open_with(&self, peer: &NodeId) -> usize {
        self.slots.lock().map(|s| s.keys().filter(|k| k.peer == *peer).count()).unwrap_or(0)
    }

    /// Marks our sending direction finished (Fin or Reset sent).
    pub(crate) fn local_done(&self, key: &StreamKey, reset: bool) {
        let Ok(mut slots) = self.slots.lock() else { return };
        let remove = match slots.get_mut(key) {
            Some(slot) => {
                slot.local_done = true;
                reset || slot.remote_done
            }
            None => false,
        };
        if remove {
            slots.remove(key);
        }
    }

    /// Our reader went away: discard further inbound data for this stream.
    pub(crate) fn reader_gone(&self, key: &StreamKey) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.get_mut(key) {
                slot.reader_gone = true;
            }
        }
    }

    /// Records that the application consumed `n` bytes (credit is granted separately).
    pub(crate) fn granted(&self, key: &StreamKey, n: u64) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(slot) = slots.get_mut(key) {
                slot.recv_allowance += n;
            }
        }
    }

    /// Resets every stream whose peer satisfies `lost`, telling local readers why.
    pub(crate) fn reset_where(&self, lost: impl Fn(&NodeId) -> bool, reason: impl Fn(&NodeId) -> String) {
        let Ok(mut slots) = self.slots.lock() else { return };
        slots.retain(|key, slot| {
            if !lost(&key.peer) {
                return true;
            }
            let why = reason(&key.peer);
            let _ = slot.inbound.send(Inbound::Reset(why.clone()));
            slot.credit.close(&why);
            false
        });
    }

    /// Resets one stream locally (used when the network reports it unreachable).
    pub(crate) fn reset_one(&self, key: &StreamKey, reason: &str) {
        let Ok(mut slots) = self.slots.lock() else { return };
        if let Some(slot) = slots.remove(key) {
            let _ = slot.inbound.send(Inbound::Reset(reason.to_owned()));
            slot.credit.close(reason);
        }
    }
}

/// Applies one frame to its stream; `Err((why, replayed))` when it breaks the stream's
/// rules, `replayed` when the frame repeats one already received (never honest: frames
/// are sent once, and a reroute can lose or reorder them but not duplicate them).
fn apply(slot: &mut Slot, body: Body) -> Result<(), (String, bool)> {
    match body {
        Body::Data { offset, data, .. } => {
            if slot.remote_done {
                // A reroute can make the end overtake the last data.
                return Err((
                    "data after end of stream (frames reordered or injected in transit)".into(),
                    false,
                ));
            }
            if data.is_empty() {
                // Costs the receiver a queue entry and carries nothing: a protocol error.
                return Err(("empty data frame".into(), false));
            }
            if offset < slot.recv_offset {
                return Err((
                    format!(
                        "stream data repeated in transit (expected offset {}, got {offset} again)",
                        slot.recv_offset
                    ),
                    true,
                ));
            }
            if offset > slot.recv_offset {
                return Err((
                    format!(
                        "stream data missing or reordered in transit (expected offset {}, got {offset})",
                        slot.recv_offset
                    ),
                    false,
                ));
            }
            let len = data.len() as u64;
            if len > slot.recv_allowance && !slot.reader_gone {
                return Err(("peer exceeded the flow-control window".into(), false));
            }
            slot.recv_allowance = slot.recv_allowance.saturating_sub(len);
            slot.recv_offset += len;
            if !slot.reader_gone {
                let _ = slot.inbound.send(Inbound::Data(data));
            }
        }
        Body::Credit { n, .. } => slot.credit.add(u64::from(n)),
        Body::Fin { trailer, .. } => {
            if slot.remote_done {
                return Err(("end of stream after end of stream".into(), true));
            }
            slot.remote_done = true;
            let _ = slot.inbound.send(Inbound::Fin(trailer));
        }
        Body::Stop { .. } => {
            slot.credit.stopped.store(true, Ordering::Release);
            slot.credit.close("the remote end stopped reading");
        }
        Body::Reset { reason, .. } => {
            slot.remote_done = true;
            slot.local_done = true;
            let _ = slot.inbound.send(Inbound::Reset(reason.to_string()));
            slot.credit.close(&reason);
        }
        _ => {}
    }
    Ok(())
}

/// The sending half of a stream.
pub struct StreamWriter {
    pub(crate) key: StreamKey,
    pub(crate) router: Arc<Router>,
    pub(crate) credit: Arc<Credit>,
    pub(crate) offset: u64,
    pub(crate) done: bool,
    /// Seals what we send once the stream is protected end to end.
    pub(crate) seal: Option<Box<Sealer>>,
}

impl StreamWriter {
    /// Sends `data`, waiting for credit as needed (this is where a slow reader slows us).
    pub async fn write(&mut self, data: Bytes) -> Result<(), StreamError> {
        if self.seal.is_none() {
            return self.write_raw(data).await;
        }
        for chunk in data.chunks(MAX_PAYLOAD) {
            let record = self.sealed(Kind::Data, chunk)?;
            self.write_raw(record).await?;
        }
        Ok(())
    }

    pub(super) async fn write_raw(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let want = data.len().min(MAX_DATA_CHUNK) as u64;
            let n = self.credit.take(want).await? as usize;
            let chunk = data.split_to(n);
            let body =
                Body::Data { stream: self.key.id, from: self.key.local, offset: self.offset, data: chunk };
            self.offset += n as u64;
            self.router.originate(&self.key.peer, body).await;
        }
        Ok(())
    }

    /// Ends our direction with `trailer` as end-of-stream metadata.
    pub async fn finish(mut self, trailer: Bytes) {
        if self.seal.is_some() {
            // The end and its trailer travel sealed, so a relay can neither cut the
            // stream short unnoticed nor change the trailer.
            let sent = if trailer.len() > MAX_PAYLOAD {
                Err("stream trailer too large for a protected stream".to_owned())
            } else {
                match self.sealed(Kind::End, &trailer) {
                    Ok(record) => self.write_raw(record).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            };
            match sent {
                // The remote stopped reading (before or during the write), so nobody reads
                // the end record: a half-close, as on an unprotected stream. Resetting would
                // also end the direction still delivering to us, and would turn a stream
                // whose rest a relay withholds into an ordinary reset instead of a gap.
                Err(_) if self.credit.stopped.load(Ordering::Acquire) => {}
                Err(why) => return self.reset(&why).await,
                Ok(()) => {}
            }
            return self.finish_raw(Bytes::new()).await;
        }
        self.finish_raw(trailer).await
    }

    async fn finish_raw(mut self, trailer: Bytes) {
        self.done = true;
        let body = Body::Fin { stream: self.key.id, from: self.key.local, trailer };
        self.router.originate(&self.key.peer, body).await;
        self.router.streams.local_done(&self.key, false);
    }

    /// Aborts the stream in both directions.
    pub async fn reset(mut self, reason: &str) {
        self.done = true;
        let body = Body::Reset { stream: self.key.id, from: self.key.local, reason: reason.into() };
        self.router.originate(&self.key.peer, body).await;
        self.router.streams.reset_one(&self.key, reason);
    }

    pub fn peer(&self) -> &NodeId {
        &self.key.peer
    }

    /// A handle that resolves when the stream is reset or its path lost, usable while
    /// the writer itself is busy elsewhere.
    pub fn close_watch(&self) -> CloseWatch {
        CloseWatch { credit: self.credit.clone() }
    }
}

/// See [`StreamWriter::close_watch`].
pub struct CloseWatch {
    credit: Arc<Credit>,
}

impl CloseWatch {
    /// Resolves with the reason once the stream is reset.
    pub async fn closed(&self) -> String {
        loop {
            let notified = self.credit.notify.notified();
            if let Some(reason) = self.credit.closed_reason() {
                return reason;
            }
            notified.await;
        }
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.done && self.credit.stopped.load(Ordering::Acquire) {
            // The remote stopped reading and asked us to stop: end our side politely.
            let body = Body::Fin { stream: self.key.id, from: self.key.local, trailer: Bytes::new() };
            self.router.send_detached(self.key.peer.clone(), body);
            self.router.streams.local_done(&self.key, false);
        } else if !self.done {
            let body =
                Body::Reset { stream: self.key.id, from: self.key.local, reason: "stream abandoned".into() };
            self.router.send_detached(self.key.peer.clone(), body);
            self.router.streams.reset_one(&self.key, "stream abandoned");
        }
    }
}

/// The receiving half of a stream.
pub struct StreamReader {
    pub(crate) key: StreamKey,
    pub(crate) router: Arc<Router>,
    pub(crate) rx: mpsc::UnboundedReceiver<Inbound>,
    pub(crate) window: u32,
    pub(crate) unacked: u64,
    pub(crate) ended: bool,
    /// Opens what we receive once the stream is protected end to end.
    pub(crate) unseal: Option<Box<Unsealer>>,
}

impl StreamReader {
    /// The next chunk of data, or the end of the stream.
    pub async fn recv(&mut self) -> Result<Chunk, StreamError> {
        if self.unseal.is_none() {
            return self.recv_raw().await;
        }
        loop {
            match self.next_record().await? {
                (Kind::Data, data) if data.is_empty() => {}
                (Kind::Data, data) => return Ok(Chunk::Data(data)),
                (Kind::End, trailer) => {
                    self.ended = true;
                    return Ok(Chunk::End(trailer));
                }
                (Kind::Header | Kind::HeaderMore, _) => {
                    return Err(self.integrity_failed(IntegrityError::BadRecord).await);
                }
            }
        }
    }

    pub(super) async fn recv_raw(&mut self) -> Result<Chunk, StreamError> {
        if self.ended {
            return Err(StreamError::Reset("read past end of stream".into()));
        }
        let item = self.rx.recv().await;
        match item {
            Some(Inbound::Data(data)) => {
                self.consumed(data.len() as u64).await;
                Ok(Chunk::Data(data))
            }
            Some(Inbound::Fin(trailer)) => {
                self.ended = true;
                Ok(Chunk::End(trailer))
            }
            Some(Inbound::Reset(reason)) => {
                self.ended = true;
                Err(StreamError::Reset(reason))
            }
            // The Reset went to the other end already. A protected stream's frames are
            // the other end's own: a repeated one is a relay's doing; a gap, reordering
            // or early end may be a relay's or a reroute's (the caller tells them apart).
            Some(Inbound::Violation { reason, replayed }) if self.unseal.is_some() => {
                self.ended = true;
                if replayed {
                    crate::metrics::global().stream_auth_failed("integrity");
                    return Err(StreamError::Integrity(reason));
                }
                crate::metrics::global().stream_auth_failed("sequence");
                Err(StreamError::Sequence(reason))
            }
            Some(Inbound::Violation { reason, .. }) => {
                self.ended = true;
                Err(StreamError::Reset(reason))
            }
            None => {
                self.ended = true;
                Err(StreamError::Reset("stream closed".into()))
            }
        }
    }

    /// Grants credit back in batches of a quarter window.
    async fn consumed(&mut self, n: u64) {
        self.unacked += n;
        if self.unacked >= u64::from(self.window / 4).max(1) {
            let grant = self.unacked.min(u64::from(u32::MAX)) as u32;
            self.unacked -= u64::from(grant);
            self.router.streams.granted(&self.key, u64::from(grant));
            let body = Body::Credit { stream: self.key.id, from: self.key.local, n: grant };
            self.router.originate(&self.key.peer, body).await;
        }
    }

    pub fn peer(&self) -> &NodeId {
        &self.key.peer
    }

    /// A handle that probes this stream's path while the reader waits.
    pub fn prober(&self) -> Prober {
        Prober { key: self.key.clone(), router: self.router.clone() }
    }
}

/// How often a reader waiting on a silent stream probes its path ([`Prober`]).
pub const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Probes a stream's path: sends a frame that changes nothing at the other end (a grant of
/// zero credit). If the remote node or the path to it is gone, a relay answers Unreachable
/// (or there is no route here) and the stream is reset — which a reader of a silent stream
/// (a job printing nothing for minutes) would otherwise learn only when it next writes.
#[derive(Clone)]
pub struct Prober {
    key: StreamKey,
    router: Arc<Router>,
}

impl Prober {
    pub async fn probe(&self) {
        let body = Body::Credit { stream: self.key.id, from: self.key.local, n: 0 };
        self.router.originate(&self.key.peer, body).await;
    }

    /// Probes every [`PROBE_INTERVAL`], forever (run it beside a read, never instead of one).
    pub async fn run(&self) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            self.probe().await;
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        if !self.ended {
            // Half-close: the remote stops sending, our own direction carries on.
            self.router.streams.reader_gone(&self.key);
            let body = Body::Stop { stream: self.key.id, from: self.key.local };
            self.router.send_detached(self.key.peer.clone(), body);
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
