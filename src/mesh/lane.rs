//! The advertisement lane of one link: link-state advertisements waiting to be written,
//! at most one per origin.
//!
//! A flood of advertisements must not grow a queue per link: when a newer advertisement
//! of an origin arrives while an older one still waits, the newer takes the older's place
//! (only the newest matters). The lane therefore holds at most one frame per known node,
//! and the frames are shared (`Bytes`) with every other link's lane. The end-of-sync
//! marker travels in the same lane so it never overtakes the database it closes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::wire::NodeId;

/// What waits in the lane: an origin's advertisement, or the end-of-sync marker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LaneKey {
    Origin(NodeId),
    SyncDone,
}

#[derive(Default)]
struct Pending {
    order: VecDeque<LaneKey>,
    frames: HashMap<LaneKey, Bytes>,
    bytes: usize,
}

/// See the module documentation. One writer task consumes; the driver produces.
#[derive(Default)]
pub(crate) struct AdvertLane {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl AdvertLane {
    /// Queues `frame` for `key`, replacing a frame of the same key that is still waiting.
    pub(crate) fn push(&self, key: LaneKey, frame: Bytes) {
        let Ok(mut p) = self.pending.lock() else { return };
        p.bytes += frame.len();
        match p.frames.insert(key.clone(), frame) {
            Some(old) => p.bytes -= old.len(),
            None => p.order.push_back(key),
        }
        drop(p);
        self.notify.notify_one();
    }

    /// Takes the oldest waiting frame.
    pub(crate) fn pop(&self) -> Option<Bytes> {
        let mut p = self.pending.lock().ok()?;
        let key = p.order.pop_front()?;
        let frame = p.frames.remove(&key)?;
        p.bytes -= frame.len();
        Some(frame)
    }

    /// Waits for a frame.
    pub(crate) async fn next(&self) -> Bytes {
        loop {
            if let Some(frame) = self.pop() {
                return frame;
            }
            self.notify.notified().await;
        }
    }

    /// Bytes waiting.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.pending.lock().map(|p| p.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> LaneKey {
        LaneKey::Origin(NodeId::new(s).expect("valid"))
    }

    #[test]
    fn a_newer_advertisement_replaces_a_waiting_one_in_place() {
        let lane = AdvertLane::default();
        lane.push(origin("a"), Bytes::from_static(b"a1"));
        lane.push(origin("b"), Bytes::from_static(b"b1"));
        lane.push(LaneKey::SyncDone, Bytes::from_static(b"done"));
        lane.push(origin("a"), Bytes::from_static(b"a2-newer"));
        assert_eq!(lane.queued_bytes(), 2 + 8 + 4);
        let order: Vec<Bytes> = std::iter::from_fn(|| lane.pop()).collect();
        assert_eq!(order, vec![&b"a2-newer"[..], &b"b1"[..], &b"done"[..]]);
        assert_eq!(lane.queued_bytes(), 0);
    }

    #[test]
    fn a_flood_of_one_origin_holds_one_frame() {
        let lane = AdvertLane::default();
        for i in 0..10_000u32 {
            lane.push(origin("flooder"), Bytes::from(i.to_be_bytes().to_vec()));
        }
        assert_eq!(lane.queued_bytes(), 4);
        assert_eq!(lane.pop(), Some(Bytes::from(9_999u32.to_be_bytes().to_vec())));
        assert_eq!(lane.pop(), None);
    }
}
