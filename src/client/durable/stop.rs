//! What ends a durable run from outside: Ctrl-C, SIGTERM or the run's `timeout`. The
//! run then cancels and releases its unit; these say why, as the `RunError` it returns.

use std::time::Duration;

use crate::client::run::RunError;

/// Why a run was stopped from this side.
pub(super) enum Stop {
    Interrupted,
    Terminated,
    TimedOut(Duration),
}

/// Resolves when the run must stop: SIGINT, SIGTERM, or its timeout.
pub(super) async fn stop_signal(timeout: Option<Duration>) -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    let timer = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = int.recv() => Stop::Interrupted,
        _ = term.recv() => Stop::Terminated,
        () = timer => Stop::TimedOut(timeout.unwrap_or_default()),
    }
}

pub(super) fn stop_error(stop: Stop) -> RunError {
    match stop {
        Stop::Interrupted => RunError::Stopped("interrupted".into()),
        Stop::Terminated => RunError::Stopped("terminated".into()),
        Stop::TimedOut(t) => RunError::Stopped(format!("timed out after {t:?}")),
    }
}
