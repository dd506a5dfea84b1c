//! Go Receptor's wire protocol ("netceptor"), a second wire protocol plane beside the
//! native mesh (`mesh`, `wire`): receptord joins Go Receptor meshes as a netceptor node.
//!
//! Shaped like quinn: [`wire`], [`framing`] and [`names`] are pure codecs; [`proto`] is
//! the sans-IO routing and service-advertisement state machine fed `(now, event)`;
//! `driver`, [`link`] (stream backends) and [`udp`] (Go's UDP backend) are thin tokio
//! tasks around it; [`NetceptorNode`] is the handle the daemon holds. The two planes meet only at the service layer (the control service,
//! the work registry), never packet by packet. See docs/PROTOCOL.md ("Netceptor") and
//! ARCHITECTURE.md.

mod driver;
pub mod framing;
pub mod link;
pub mod names;
mod node;
mod probe;
pub mod proto;
pub mod quic;
pub mod status;
pub mod udp;
pub mod wire;

pub use driver::Datagram;
pub use link::Session;
pub use node::NetceptorNode;
pub use probe::PingError;
pub use status::{LinkStatus, NetStatus};
