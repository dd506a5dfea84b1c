//! receptord: a mesh overlay network that carries Ansible jobs to the hosts that must run them.
//!
//! Module boundaries (see ARCHITECTURE.md): [`wire`] encodes frames without I/O; [`mesh`]
//! routes and multiplexes; [`transport`] carries links; [`work`] runs jobs (and is the only
//! module that spawns processes); [`client`] is the library API; the binaries sit at the edge.

pub mod alloc;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod jsonfmt;
pub mod limits;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod netceptor;
pub mod report;
pub mod runner;
pub mod status;
pub mod systemd;
pub mod transport;
pub mod wire;
pub mod work;
