//! The record layer of end-to-end protected streams (`mesh::e2e` runs the handshake that
//! keys it). A stream's bytes in each direction are a sequence of records
//! `u32 length ‖ AES-256-GCM(kind ‖ payload)`: the length is the associated data, the
//! nonce is the direction's IV XOR its record counter. So a relay that flips, inserts,
//! drops, reorders or replays bytes makes the next record fail its check, and a stream cut
//! short lacks its authenticated `End` record: either way the reader gets an integrity
//! error, never different bytes. Pure: no I/O, no clocks.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Key bytes per direction.
pub(crate) const KEY_LEN: usize = 32;
/// IV bytes per direction.
pub(crate) const IV_LEN: usize = NONCE_LEN;
const TAG_LEN: usize = 16;
/// Largest record on the wire (length prefix excluded): one mesh data frame's worth.
const MAX_RECORD: usize = crate::wire::MAX_DATA_CHUNK;
/// Largest payload of one record, so that a record with its prefix fits one data frame.
pub(crate) const MAX_PAYLOAD: usize = MAX_RECORD - 4 - 1 - TAG_LEN;
/// Plaintext bytes one key may protect: far inside AES-GCM's confidentiality bound
/// (RFC 8446 §5.5 allows about 2^38 bytes in full-size records). A stream that gets
/// there fails loudly; no job's output comes near it.
const MAX_BYTES_PER_KEY: u64 = 1 << 37;

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Stream bytes.
    Data = 0,
    /// The end of this direction; the payload is the stream's trailer.
    End = 1,
    /// The opener's stream header (the first record it sends), or its last part.
    Header = 2,
    /// A part of the opener's stream header, more follows.
    HeaderMore = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Data),
            1 => Some(Kind::End),
            2 => Some(Kind::Header),
            3 => Some(Kind::HeaderMore),
            _ => None,
        }
    }
}

/// Why a record was refused: the stream's bytes are not what the other end sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error(
        "a record failed its authentication check (bytes changed, inserted, dropped or reordered in transit)"
    )]
    BadRecord,
    #[error("a record announced {0} bytes, more than a record may hold")]
    TooLong(usize),
    #[error("the stream ended without its authenticated end record (truncated in transit)")]
    Truncated,
    #[error("data after the authenticated end of the stream")]
    AfterEnd,
    #[error("the stream's key usage limit was reached")]
    KeyExhausted,
}

struct Key {
    key: LessSafeKey,
    iv: [u8; IV_LEN],
    seq: u64,
    bytes: u64,
}

impl Key {
    fn new(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Key {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("UNWRAP: a 32-byte key fits AES-256-GCM");
        Key { key: LessSafeKey::new(unbound), iv: *iv, seq: 0, bytes: 0 }
    }

    /// The nonce of the next record, counting it (and its size) against the key's limit.
    fn next_nonce(&mut self, len: usize) -> Result<Nonce, IntegrityError> {
        self.bytes = self.bytes.saturating_add(len as u64);
        if self.bytes > MAX_BYTES_PER_KEY || self.seq == u64::MAX {
            return Err(IntegrityError::KeyExhausted);
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[IV_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// Seals one direction's records.
pub(crate) struct Sealer(Key);

impl Sealer {
    pub(crate) fn new(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Sealer {
        Sealer(Key::new(key, iv))
    }

    /// One record holding `payload` (at most [`MAX_PAYLOAD`] bytes), prefix included.
    pub(crate) fn seal(&mut self, kind: Kind, payload: &[u8]) -> Result<Bytes, IntegrityError> {
        debug_assert!(payload.len() <= MAX_PAYLOAD);
        let len = 1 + payload.len() + TAG_LEN;
        let nonce = self.0.next_nonce(payload.len())?;
        let mut out = BytesMut::with_capacity(4 + len);
        out.put_u32(len as u32);
        out.put_u8(kind as u8);
        out.extend_from_slice(payload);
        let prefix = (len as u32).to_be_bytes();
        let mut body = out.split_off(4);
        let tag = self
            .0
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(prefix), &mut body[..])
            .map_err(|_| IntegrityError::KeyExhausted)?;
        body.extend_from_slice(tag.as_ref());
        out.unsplit(body);
        Ok(out.freeze())
    }
}

/// Opens one direction's records from the stream's bytes, in order.
pub(crate) struct Unsealer {
    key: Key,
    buf: BytesMut,
    ended: bool,
}

impl Unsealer {
    pub(crate) fn new(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Unsealer {
        Unsealer { key: Key::new(key, iv), buf: BytesMut::new(), ended: false }
    }

    /// Adds bytes received on the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete record, if one is buffered. After an error the stream is
    /// unusable.
    pub(crate) fn next(&mut self) -> Result<Option<(Kind, Bytes)>, IntegrityError> {
        if self.ended && !self.buf.is_empty() {
            return Err(IntegrityError::AfterEnd);
        }
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let prefix = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_RECORD {
            return Err(IntegrityError::TooLong(len));
        }
        if len < 1 + TAG_LEN {
            return Err(IntegrityError::BadRecord);
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        self.buf.advance(4);
        let mut body = self.buf.split_to(len);
        let nonce = self.key.next_nonce(len - 1 - TAG_LEN)?;
        let plain = self
            .key
            .key
            .open_in_place(nonce, Aad::from(prefix), &mut body[..])
            .map_err(|_| IntegrityError::BadRecord)?;
        let plain_len = plain.len();
        body.truncate(plain_len);
        let kind = Kind::from_u8(body[0]).ok_or(IntegrityError::BadRecord)?;
        body.advance(1);
        if kind == Kind::End {
            self.ended = true;
        }
        Ok(Some((kind, body.freeze())))
    }

    /// Called when the underlying stream ends: an error unless the end record was seen.
    pub(crate) fn finish(&self) -> Result<(), IntegrityError> {
        if self.ended { Ok(()) } else { Err(IntegrityError::Truncated) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Unsealer) {
        let (k, iv) = ([7u8; KEY_LEN], [9u8; IV_LEN]);
        (Sealer::new(&k, &iv), Unsealer::new(&k, &iv))
    }

    #[test]
    fn records_round_trip_across_any_split() {
        let (mut s, mut u) = pair();
        let mut wire = Vec::new();
        wire.extend_from_slice(&s.seal(Kind::Header, b"hdr").expect("seal"));
        wire.extend_from_slice(&s.seal(Kind::Data, &vec![5u8; MAX_PAYLOAD]).expect("seal"));
        wire.extend_from_slice(&s.seal(Kind::End, b"trailer").expect("seal"));
        let mut got = Vec::new();
        for piece in wire.chunks(1000) {
            u.push(piece);
            while let Some((kind, payload)) = u.next().expect("intact") {
                got.push((kind, payload.len()));
            }
        }
        assert_eq!(got, vec![(Kind::Header, 3), (Kind::Data, MAX_PAYLOAD), (Kind::End, 7)]);
        assert_eq!(u.finish(), Ok(()));
    }

    #[test]
    fn any_flipped_bit_fails_the_record() {
        let (mut s, _) = pair();
        let rec = s.seal(Kind::Data, b"hello world").expect("seal");
        for i in 0..rec.len() {
            let mut bad = rec.to_vec();
            bad[i] ^= 0x10;
            let (_, mut u) = pair();
            u.push(&bad);
            assert!(matches!(u.next(), Err(_) | Ok(None)), "byte {i}");
            assert!(u.finish().is_err());
        }
    }

    #[test]
    fn reordered_dropped_or_replayed_records_fail() {
        let (mut s, _) = pair();
        let a = s.seal(Kind::Data, b"a").expect("seal");
        let b = s.seal(Kind::Data, b"b").expect("seal");
        for order in [vec![&b, &a], vec![&b], vec![&a, &a]] {
            let (_, mut u) = pair();
            let mut results = Vec::new();
            for rec in order {
                u.push(rec);
                results.push(u.next());
            }
            assert!(results.iter().any(|r| r == &Err(IntegrityError::BadRecord)), "{results:?}");
        }
    }

    #[test]
    fn a_stream_without_its_end_record_is_truncated() {
        let (mut s, mut u) = pair();
        u.push(&s.seal(Kind::Data, b"partial").expect("seal"));
        assert!(matches!(u.next(), Ok(Some((Kind::Data, _)))));
        assert_eq!(u.finish(), Err(IntegrityError::Truncated));
    }

    proptest::proptest! {
        /// Hostile bytes in any split never panic the reader, and never yield a record:
        /// without the key nothing opens.
        #[test]
        fn hostile_bytes_never_open(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..20)) {
            let (_, mut u) = pair();
            for c in &chunks {
                u.push(c);
                match u.next() {
                    Ok(None) => {}
                    Ok(Some(r)) => proptest::prop_assert!(false, "forged record opened: {:?}", r),
                    Err(_) => break,
                }
            }
        }

        /// Sealed records survive any re-chunking in transit, in order.
        #[test]
        fn records_survive_any_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000), 1..8),
            cut in 1usize..5000,
        ) {
            let (mut s, mut u) = pair();
            let mut wire = Vec::new();
            for p in &payloads {
                wire.extend_from_slice(&s.seal(Kind::Data, p).expect("seal"));
            }
            let mut got = Vec::new();
            for piece in wire.chunks(cut) {
                u.push(piece);
                while let Some((_, payload)) = u.next().expect("intact") {
                    got.push(payload.to_vec());
                }
            }
            proptest::prop_assert_eq!(got, payloads);
        }
    }

    #[test]
    fn even_one_byte_after_the_end_record_is_an_error() {
        let (mut s, mut u) = pair();
        u.push(&s.seal(Kind::End, b"").expect("seal"));
        u.push(b"x");
        assert!(matches!(u.next(), Ok(Some((Kind::End, _)))));
        assert_eq!(u.next(), Err(IntegrityError::AfterEnd));
    }

    #[test]
    fn an_oversized_length_is_refused_before_buffering() {
        let (_, mut u) = pair();
        u.push(&u32::MAX.to_be_bytes());
        assert_eq!(u.next(), Err(IntegrityError::TooLong(u32::MAX as usize)));
    }
}
