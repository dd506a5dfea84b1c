//! Blocking wrappers over the async client, for callers without a tokio runtime.

use std::time::Duration;

use super::{ClientError, ClientOptions, MeshClient};
use crate::wire::NodeId;

/// Builds the runtime the blocking API drives its work on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| ClientError::Io { context: "starting the client runtime".into(), source })
}

/// Pings `dst` through a fresh short-lived node.
pub fn ping(opts: &ClientOptions, dst: &NodeId, timeout: Duration) -> Result<Duration, ClientError> {
    runtime()?.block_on(async {
        let client = MeshClient::connect(opts).await?;
        let r = client.ping(dst, timeout).await;
        client.close().await;
        r
    })
}

/// Runs a playbook as [`super::run::run`] does, blocking until it ends.
pub fn run(
    req: &super::run::RunRequest,
    callbacks: super::run::Callbacks,
) -> Result<super::run::RunOutcome, super::run::RunError> {
    let rt = runtime().map_err(super::run::RunError::Client)?;
    rt.block_on(super::run::run(req, callbacks))
}

/// Submits a run without following it, as [`super::durable::submit`] does.
pub fn submit(req: &super::run::RunRequest) -> Result<super::durable::UnitRef, super::run::RunError> {
    let rt = runtime().map_err(super::run::RunError::Client)?;
    rt.block_on(super::durable::submit(req))
}

/// Follows a submitted run to its end, as [`super::durable::attach`] does.
pub fn attach(
    req: &super::run::RunRequest,
    at: &super::durable::UnitRef,
    callbacks: super::run::Callbacks,
) -> Result<super::run::RunOutcome, super::run::RunError> {
    let rt = runtime().map_err(super::run::RunError::Client)?;
    rt.block_on(super::durable::attach(req, at, callbacks))
}
