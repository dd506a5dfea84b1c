//! Fuzz target bodies, shared by the libFuzzer crate in `fuzz/` and the corpus replay test
//! (`tests/fuzz_corpus.rs`), so what CI replays on stable is exactly what was fuzzed.
//!
//! Each `fn(&[u8])` feeds hostile bytes to the library's real code and panics only when an
//! invariant is broken (a panic inside the library is a finding too). See docs/FUZZING.md.
//! Not part of the public API.

mod control;
mod mesh;
mod netceptor;
mod records;
mod runner;
mod seeds;
mod wire;

pub use control::control_line;
pub use mesh::mesh_events;
pub use netceptor::{netceptor_events, netceptor_packet};
pub use records::stream_records;
pub use runner::{extract, transmit_stream};
pub use seeds::seeds;
pub use wire::{frame, handshake};

/// A target body: runs one input, panics on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: [(&str, Target); 9] = [
    ("frame", frame),
    ("handshake", handshake),
    ("transmit_stream", transmit_stream),
    ("extract", extract),
    ("control_line", control_line),
    ("mesh_events", mesh_events),
    ("stream_records", stream_records),
    ("netceptor_packet", netceptor_packet),
    ("netceptor_events", netceptor_events),
];

/// One runtime for the async targets (built once; a runtime per input would cost more than
/// most inputs).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

/// Reads fuzz input as a sequence of small decisions; runs dry as zeros.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}
