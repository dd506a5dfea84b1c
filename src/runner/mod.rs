//! ansible-runner 2.x stream formats (transmit / worker / process), byte for byte.
//!
//! receptord carries ansible-runner jobs: the client packs a private data directory into a
//! transmit stream, the remote node feeds it to `ansible-runner worker`, and the worker's output
//! stream comes back to be turned into artifacts. This module is the pure-format and
//! local-filesystem part of that (no sockets, no child processes). The reference is
//! `/work/shared/reference/runner-streaming.md` (ansible-runner 2.4.3).
//!
//! - [`pyjson`]: Python `json.dumps` output, so our lines match a Python peer's bytes.
//! - [`decode`]: incremental decoder for both streams (JSON lines + base64 zip sections).
//! - [`pack`]: `transmit` equivalent — zip a directory like `stream_dir`, write the stream.
//! - [`extract`]: hostile-input-safe zip extraction with `unstream_dir` semantics.
//! - [`process`]: `process` equivalent — job event files and artifact extraction.
//! - [`output`]: what `ansible-runner run` prints, rebuilt from the events.

pub mod decode;
pub mod dostime;
pub mod extract;
mod guard;
pub mod output;
pub mod pack;
pub mod process;
pub mod pyjson;

pub use decode::{DecodeError, DecodeLimits, Item, LineKind, StreamDecoder};
pub use extract::{ExtractError, ExtractLimits, ExtractStats, extract_zip, extract_zip_path};
pub use output::RunPrinter;
pub use pack::{EOF_LINE, PackError, transmit_dir, write_transmit, write_zip_section, zip_dir};
pub use process::{ArtifactWriter, ProcessError};
