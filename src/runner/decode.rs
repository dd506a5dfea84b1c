//! Sans-IO incremental decoder for ansible-runner streams: the transmit stream a worker reads
//! and the worker output stream `process` reads (spec §0.2, §1.1, §2.2).
//!
//! Both streams are LF-terminated py-json lines, except that a `{"zipfile": N}` line is followed
//! by exactly `4*ceil(N/3)` base64 characters with no terminator; the next JSON line starts on
//! the byte right after the last base64 character. ASCII whitespace inside the base64 text is
//! skipped (Python's `Base64IO` does the same). The decoder accepts input split at any byte
//! boundary and never buffers more than one line (bounded by [`DecodeLimits::max_line`]) plus
//! one base64 chunk; decoded zip bytes are handed out in chunks for the caller to spool.

use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use bytes::{Buf, Bytes, BytesMut};
use serde_json::Value;

/// Size caps applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest accepted JSON line in bytes, without its LF. Events can be large.
    pub max_line: usize,
    /// Largest accepted zip section (the decoded size `N` announced by `{"zipfile": N}`).
    pub max_zip: u64,
    /// Zip sections accepted per stream: ansible-runner 2.x sends one (the private data
    /// dir in a transmit stream, the artifacts in a worker stream), so more is hostile.
    pub max_zips: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_line: 64 << 20, max_zip: 1 << 30, max_zips: 1 }
    }
}

/// One decoded unit of a runner stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An ordinary JSON line (kwargs, status, event, keepalive, ...).
    Line {
        /// The exact bytes of the line, without its LF.
        raw: Bytes,
        /// The parsed value.
        value: Value,
    },
    /// A `{"zipfile": N}` line: `size` decoded bytes follow as [`Item::ZipData`].
    ZipStart { size: u64 },
    /// A chunk of decoded zip bytes.
    ZipData(Bytes),
    /// All `size` bytes of the current zip section were delivered.
    ZipEnd,
    /// A `{"eof": ...}` line. Input after it is ignored.
    Eof,
}

/// What a JSON line is, following the dispatch order of ansible-runner's readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// `{"kwargs": {...}}` (transmit stream).
    Kwargs,
    /// `{"status": ...}` (worker stream).
    Status,
    /// `{"event": "keepalive", ...}`.
    Keepalive,
    /// An event with truthy `counter` and `uuid`.
    Event,
    /// Anything else; ansible-runner ignores these.
    Other,
}

/// Why a stream could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("runner stream line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("empty line in runner stream")]
    EmptyLine,
    #[error("invalid JSON line in runner stream ({error}): {excerpt}")]
    Json { error: String, excerpt: String },
    #[error("invalid zipfile header: {reason}")]
    ZipHeader { reason: &'static str },
    #[error("zip section of {size} bytes exceeds the limit of {limit} bytes")]
    ZipTooLarge { size: u64, limit: u64 },
    #[error("more than {0} zip section(s) in one stream")]
    TooManyZips(u32),
    #[error("invalid base64 in zip section: {reason}")]
    Base64 { reason: String },
    #[error("zip section decoded to {got} bytes, header announced {expected}")]
    ZipLength { expected: u64, got: u64 },
    #[error("runner stream ended {what}")]
    Truncated { what: &'static str },
}

/// Base64 characters decoded per [`Item::ZipData`] chunk (a multiple of 4).
const B64_CHUNK: usize = 64 * 1024;
/// Bytes of a bad line quoted in [`DecodeError::Json`].
const EXCERPT: usize = 200;

/// Python's `b64decode` accepts non-zero trailing bits; padding is still required.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

#[derive(Debug)]
enum State {
    Lines,
    Zip(ZipState),
    Done,
}

#[derive(Debug)]
struct ZipState {
    expected: u64,
    chars_left: u64,
    decoded: u64,
    pending: Vec<u8>,
}

/// Incremental decoder; see the module docs.
#[derive(Debug)]
pub struct StreamDecoder {
    limits: DecodeLimits,
    buf: BytesMut,
    /// Bytes of `buf` already known to contain no LF.
    scanned: usize,
    state: State,
    /// Zip sections started so far.
    zips: u32,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new(limits: DecodeLimits) -> Self {
        StreamDecoder { limits, buf: BytesMut::new(), scanned: 0, state: State::Lines, zips: 0 }
    }

    /// Appends input. Input after the eof line is dropped.
    pub fn feed(&mut self, input: &[u8]) {
        if !matches!(self.state, State::Done) {
            self.buf.extend_from_slice(input);
        }
    }

    /// Alias of [`StreamDecoder::feed`].
    pub fn push(&mut self, input: &[u8]) {
        self.feed(input);
    }

    /// True once the eof line was decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next complete item, or `None` when more input is needed (or the stream is done).
    pub fn next_item(&mut self) -> Result<Option<Item>, DecodeError> {
        match &mut self.state {
            State::Done => Ok(None),
            State::Lines => self.next_line(),
            State::Zip(_) => self.next_zip(),
        }
    }

    /// Signals end of input. Call after `next_item` returned `None`; fails unless the eof line
    /// was seen.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        match &self.state {
            State::Done => Ok(()),
            State::Zip(_) => Err(DecodeError::Truncated { what: "inside a zip section" }),
            State::Lines if !self.buf.is_empty() => {
                Err(DecodeError::Truncated { what: "in the middle of a line" })
            }
            State::Lines => Err(DecodeError::Truncated { what: "before the eof line" }),
        }
    }

    fn next_line(&mut self) -> Result<Option<Item>, DecodeError> {
        let found = self.buf[self.scanned..].iter().position(|b| *b == b'\n');
        let Some(off) = found else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.limits.max_line {
                return Err(DecodeError::LineTooLong { limit: self.limits.max_line });
            }
            return Ok(None);
        };
        let end = self.scanned + off;
        self.scanned = 0;
        if end > self.limits.max_line {
            return Err(DecodeError::LineTooLong { limit: self.limits.max_line });
        }
        let raw = self.buf.split_to(end).freeze();
        self.buf.advance(1);
        let value = parse_line(&raw)?;
        self.classify(raw, value).map(Some)
    }

    fn classify(&mut self, raw: Bytes, value: Value) -> Result<Item, DecodeError> {
        let Some(obj) = value.as_object() else {
            return Ok(Item::Line { raw, value });
        };
        if obj.contains_key("kwargs") || obj.contains_key("status") {
            return Ok(Item::Line { raw, value });
        }
        if let Some(size) = obj.get("zipfile") {
            let size = size
                .as_u64()
                .ok_or(DecodeError::ZipHeader { reason: "size is not a non-negative integer" })?;
            if size > self.limits.max_zip {
                return Err(DecodeError::ZipTooLarge { size, limit: self.limits.max_zip });
            }
            if self.zips >= self.limits.max_zips {
                return Err(DecodeError::TooManyZips(self.limits.max_zips));
            }
            self.zips += 1;
            self.state = State::Zip(ZipState {
                expected: size,
                chars_left: size.div_ceil(3) * 4,
                decoded: 0,
                pending: Vec::new(),
            });
            return Ok(Item::ZipStart { size });
        }
        if obj.contains_key("eof") {
            self.state = State::Done;
            self.buf.clear();
            return Ok(Item::Eof);
        }
        Ok(Item::Line { raw, value })
    }

    fn next_zip(&mut self) -> Result<Option<Item>, DecodeError> {
        let State::Zip(z) = &mut self.state else {
            return Ok(None);
        };
        let consumed = gather_b64(&self.buf, z)?;
        self.buf.advance(consumed);
        let usable = if z.chars_left == 0 { z.pending.len() } else { z.pending.len() & !3 };
        if usable == 0 {
            if z.chars_left > 0 {
                return Ok(None);
            }
            if z.decoded != z.expected {
                return Err(DecodeError::ZipLength { expected: z.expected, got: z.decoded });
            }
            self.state = State::Lines;
            return Ok(Some(Item::ZipEnd));
        }
        let out =
            B64.decode(&z.pending[..usable]).map_err(|e| DecodeError::Base64 { reason: e.to_string() })?;
        z.pending.drain(..usable);
        z.decoded += out.len() as u64;
        if z.decoded > z.expected {
            return Err(DecodeError::ZipLength { expected: z.expected, got: z.decoded });
        }
        Ok(Some(Item::ZipData(Bytes::from(out))))
    }
}

/// Moves base64 characters from `buf` into `z.pending` (skipping ASCII whitespace) until the
/// section is complete or a chunk is full. Returns how many bytes of `buf` were consumed.
fn gather_b64(buf: &[u8], z: &mut ZipState) -> Result<usize, DecodeError> {
    let mut consumed = 0;
    for &b in buf {
        if z.chars_left == 0 || z.pending.len() >= B64_CHUNK {
            break;
        }
        consumed += 1;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {}
            // Padding belongs to the last group only. Chunks are decoded separately, so a
            // `=` earlier would otherwise pass or fail depending on how the input was split.
            b'=' if z.chars_left > 2 => {
                return Err(DecodeError::Base64 { reason: "padding before the end of the section".into() });
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {
                z.pending.push(b);
                z.chars_left -= 1;
            }
            other => {
                return Err(DecodeError::Base64 { reason: format!("unexpected byte 0x{other:02x}") });
            }
        }
    }
    Ok(consumed)
}

fn parse_line(raw: &[u8]) -> Result<Value, DecodeError> {
    if raw.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
        return Err(DecodeError::EmptyLine);
    }
    serde_json::from_slice(raw).map_err(|e| DecodeError::Json { error: e.to_string(), excerpt: excerpt(raw) })
}

fn excerpt(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(EXCERPT)];
    let text = format!("{:?}", String::from_utf8_lossy(cut));
    if raw.len() > EXCERPT { format!("{text}...") } else { text }
}

/// Python truthiness of a JSON value (`0`, `""`, `[]`, `{}`, `false`, `null` are falsy).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Classifies a JSON line the way ansible-runner's readers dispatch it.
pub fn kind(value: &Value) -> LineKind {
    let Some(obj) = value.as_object() else {
        return LineKind::Other;
    };
    if obj.contains_key("kwargs") {
        LineKind::Kwargs
    } else if obj.contains_key("status") {
        LineKind::Status
    } else if obj.get("event").and_then(Value::as_str) == Some("keepalive") {
        LineKind::Keepalive
    } else if obj.get("counter").is_some_and(truthy) && obj.get("uuid").is_some_and(truthy) {
        LineKind::Event
    } else {
        LineKind::Other
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
