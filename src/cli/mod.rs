//! Command-line definitions of both binaries (parsed by the binaries, rendered into man
//! pages and completions by `examples/gen-assets.rs`).

pub mod receptor;
pub mod receptord;
