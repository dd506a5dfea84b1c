//! The mesh: membership, link-state routing and flow-controlled streams.
//!
//! [`state`] and [`routing`] are pure (fed events and time); [`driver`] is the thin tokio
//! task around them; [`link`] runs connections, `router` forwards frames, [`stream`]
//! carries work end to end (`e2e` authenticates and protects it between its two
//! ends), and [`node`] is the handle the rest of the program uses.

pub mod backoff;
pub(crate) mod budget;
pub mod carry;
pub mod driver;
pub(crate) mod e2e;
#[doc(hidden)]
pub mod fleet_sim;
pub mod foreign;
mod gate;
mod lane;
pub mod link;
mod linkio;
pub mod node;
pub mod origin;
pub mod relay;
pub mod reroute;
pub(crate) mod router;
pub mod routing;
pub(crate) mod seal;
mod sealed;
pub mod state;
pub mod stream;

pub use carry::{CarriedLink, CarriedPorts, Carrier};
pub use driver::{MeshStatus, RouteInfo, Topology};
pub use e2e::HandshakeError;
pub use foreign::{Foreign, ForeignConn};
pub use node::{JoinError, LinkHandle, Node, NodeOptions, OpenError, PingError, PingReply};
pub use router::Incoming;
pub use seal::IntegrityError;
pub use state::MeshConfig;
pub use stream::{Chunk, CloseWatch, Prober, StreamError, StreamReader, StreamWriter};

#[cfg(test)]
mod sim_fleet_tests;
#[cfg(test)]
mod sim_tests;
