//! Streams over netceptor: QUIC (quinn) on a netceptor service used as a UDP socket, as Go
//! Receptor does with quic-go. A stream is one QUIC connection with one bidirectional
//! stream whose first byte, sent by the dialer, is `0x00`.

pub mod config;
pub mod dial;
pub mod serve;
pub mod socket;
pub mod tls;

pub use serve::{Listener, NetStream};
