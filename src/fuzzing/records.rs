//! Target on the record layer of end-to-end protected streams (`mesh::seal`): what an
//! on-path relay can do to a sealed stream's bytes. It never gets different bytes through.

use super::Cursor;
use crate::mesh::seal::{IV_LEN, KEY_LEN, Kind, MAX_PAYLOAD, Sealer, Unsealer};

const KEY: [u8; KEY_LEN] = [0x5a; KEY_LEN];
const IV: [u8; IV_LEN] = [0xa5; IV_LEN];
/// The other direction's key: what a relay reflecting a stream back would hold.
const OTHER_KEY: [u8; KEY_LEN] = [0x3c; KEY_LEN];
const KINDS: [Kind; 4] = [Kind::Data, Kind::End, Kind::Header, Kind::HeaderMore];

/// Feeds `wire` to an unsealer in pieces sized by the input; returns the records opened
/// and whether the stream ended cleanly (no error, authenticated end seen).
fn open_all(c: &mut Cursor<'_>, wire: &[u8], key: &[u8; KEY_LEN]) -> (Vec<(Kind, Vec<u8>)>, bool) {
    let mut u = Unsealer::new(key, &IV);
    let mut opened = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        // Pieces of 1 to 2,048 bytes while the input lasts, then the rest at once.
        let n = if c.is_empty() { rest.len() } else { (1 + usize::from(c.u16()) % 2048).min(rest.len()) };
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        u.push(piece);
        loop {
            match u.next() {
                Ok(Some((kind, payload))) => opened.push((kind, payload.to_vec())),
                Ok(None) => break,
                Err(_) => return (opened, false),
            }
        }
    }
    let clean = u.finish().is_ok();
    (opened, clean)
}

/// Hostile bytes through the record reader, in pieces: unkeyed bytes never open; a sealed
/// stream tampered with (bits flipped, bytes inserted, dropped, duplicated, cut) yields at
/// most a prefix of what was sealed, and ends cleanly only unchanged, with all of it and its end.
pub fn stream_records(data: &[u8]) {
    let mut c = Cursor::new(data);
    let mode = c.byte();
    if mode & 1 == 0 {
        // Raw bytes: without the key, nothing opens.
        let len = usize::from(c.u16());
        let raw = c.take(len).to_vec();
        let (opened, clean) = open_all(&mut c, &raw, &KEY);
        assert!(opened.is_empty() && !clean, "unkeyed bytes opened as {} records", opened.len());
        return;
    }
    // Records as the other end seals them.
    let mut sealer = Sealer::new(&KEY, &IV);
    let mut sent: Vec<(Kind, Vec<u8>)> = Vec::new();
    let mut wire = Vec::new();
    for _ in 0..c.byte() % 8 {
        let kind = KINDS[usize::from(c.byte()) % KINDS.len()];
        let len = match c.byte() {
            255 => MAX_PAYLOAD,
            b => usize::from(b) * 3,
        };
        let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ mode).collect();
        let record = sealer.seal(kind, &payload).expect("a fresh key seals a few records");
        wire.extend_from_slice(&record);
        sent.push((kind, payload));
        if kind == Kind::End {
            // A stream's writer seals nothing after its end.
            break;
        }
    }
    let original = wire.clone();
    // What the relay does to them.
    for _ in 0..c.byte() % 4 {
        let at = if wire.is_empty() { 0 } else { usize::from(c.u16()) % (wire.len() + 1) };
        let n = usize::from(c.byte());
        match c.byte() % 5 {
            0 if at < wire.len() => wire[at] ^= 1 << (n % 8),
            1 => {
                let bytes = c.take(n).to_vec();
                wire.splice(at..at, bytes);
            }
            2 => {
                wire.drain(at..(at + n).min(wire.len()));
            }
            3 => {
                let dup = wire[at..(at + n * 8).min(wire.len())].to_vec();
                wire.splice(at..at, dup);
            }
            _ => wire.truncate(at),
        }
    }
    // A reflected stream (the other direction's key) opens nothing.
    let key = if mode & 2 != 0 { &OTHER_KEY } else { &KEY };
    let (opened, clean) = open_all(&mut c, &wire, key);
    if key == &OTHER_KEY {
        assert!(opened.is_empty() && !clean, "a reflected stream opened {} records", opened.len());
        return;
    }
    assert!(
        opened.len() <= sent.len() && opened[..] == sent[..opened.len()],
        "opened records that were not sent, in this order: {:?}",
        opened.iter().map(|(k, p)| (k, p.len())).collect::<Vec<_>>()
    );
    if clean {
        let ends = opened.iter().filter(|(k, _)| *k == Kind::End).count();
        assert!(
            opened.len() == sent.len() && ends == 1 && opened.last().map(|r| r.0) == Some(Kind::End),
            "a clean end after {} of {} records ({ends} end records)",
            opened.len(),
            sent.len()
        );
        assert!(
            wire == original,
            "a changed stream ({} bytes, sent {}) ended cleanly",
            wire.len(),
            original.len()
        );
    }
}
