//! The mirror of a remote unit: its output downloaded from where the local copy ends into
//! the local `stdout`, its state copied into the local status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::drive::Step;
use super::*;
use crate::work::sink::FileSink;

/// Status polls (one a second) in a row finding the remote unit complete, bytes missing
/// here and none arriving, before the results stream is given up as stalled.
const STALLED_POLLS: u32 = 5;

/// Downloads output from where the local copy ends, mirroring state as it goes; finishes
/// the unit once the remote one is complete and every byte is here.
pub(super) async fn mirror(
    units: &Units,
    remote: &Arc<dyn RemoteControl>,
    unit: &Arc<Unit>,
    r: &RemoteUnit,
) -> Step {
    let rid = r.remote_unit_id.as_str();
    let path = unit.stdout_path();
    let mut have = file_len(&path);
    let signature = sign(units, r, Op::Results, Some(rid), None).unwrap_or(None);
    let mut stream = match remote.results(&r.node, rid, have, signature).await {
        Ok(s) => s,
        Err(e) => return gone_or_retry(unit, e),
    };
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().create(true).append(true).open(path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            fail(unit, format!("cannot write {}: {e}", path.display()));
            return Step::Done;
        }
    };
    // One thread writes the output as it comes (`work::sink`); followers are told the
    // size once the bytes are in the file.
    let (sized, written) = (unit.clone(), Arc::new(AtomicU64::new(have)));
    let told = written.clone();
    let mut file = FileSink::new(
        file,
        Box::new(move |len| {
            told.store(len, Ordering::Release);
            sized.status_in_memory(|st| st.stdout_size = len);
        }),
    );
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut progressed = false;
    // Polls in a row that found the remote unit complete with bytes still missing here
    // and none arriving: frames (its end among them) lost in a relay that froze before
    // the links around it were declared down leave a stream that never ends by itself.
    let (mut stalled, mut had) = (0u32, have);
    let ended = loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Ok(Some(data)) => {
                    let n = data.len() as u64;
                    if file.write(data).await.is_err() {
                        let e = file.finish(false).await.err().unwrap_or_else(|| std::io::Error::other("stopped"));
                        fail(unit, format!("cannot write {}: {e}", path.display()));
                        return Step::Done;
                    }
                    have += n;
                    progressed = true;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            _ = poll.tick() => {
                if let Ok(st) = remote.status(&r.node, rid).await {
                    if st.state.is_final() && have >= st.stdout_size {
                        // Complete, every byte here; a Go node never ends the results
                        // stream of a cancelled unit, so do not wait for it.
                        break Ok(());
                    }
                    stalled = if st.state.is_final() && have == had { stalled + 1 } else { 0 };
                    had = have;
                    if stalled >= STALLED_POLLS {
                        // Judged as a gap (`work::integrity`): a retry from what is here
                        // after a reroute, tampering on a path that did not change.
                        break Err(RemoteError::Sequence(format!(
                            "the results stream stalled: the remote unit is complete with {} bytes, {have} arrived",
                            st.stdout_size
                        )));
                    }
                    if !st.state.is_final() {
                        let _ = unit.update_status(|local| {
                            local.state = st.state;
                            local.detail = st.detail.clone();
                            local.stdout_size = written.load(Ordering::Acquire);
                        });
                    }
                }
            }
        }
    };
    // Every byte counted in `have` is in the file once the writer has finished.
    if let Err(e) = file.finish(true).await {
        fail(unit, format!("cannot write {}: {e}", path.display()));
        return Step::Done;
    }
    if let Err(e) = ended {
        let _ = unit.update_status(|st| st.stdout_size = have);
        let judged = match e {
            RemoteError::Integrity(_) | RemoteError::Sequence(_) => true,
            RemoteError::Unreachable(_) | RemoteError::Refused(_) => progressed,
            RemoteError::UnknownUnit(_) => false,
        };
        if judged {
            return Step::Broken { error: e, progressed };
        }
        return gone_or_retry(unit, e);
    }
    // The results stream ended: the remote unit should be complete.
    match remote.status(&r.node, rid).await {
        Ok(st) if st.state.is_final() && have >= st.stdout_size => {
            let _ = unit.update_status(|local| {
                local.state = st.state;
                local.detail = st.detail.clone();
                local.stdout_size = have;
            });
            tracing::info!(unit = %unit.id, state = st.state.name(), bytes = have, "remote work unit finished");
            Step::Done
        }
        Ok(_) if progressed => Step::Progress,
        Ok(st) => Step::Retry(format!(
            "remote unit is {} with {} bytes; have {have}",
            st.state.name(),
            st.stdout_size
        )),
        Err(e) => gone_or_retry(unit, e),
    }
}

pub(super) fn gone_or_retry(unit: &Unit, e: RemoteError) -> Step {
    match e {
        RemoteError::UnknownUnit(_) => {
            if !unit.is_releasing() {
                fail(unit, "Remote work unit is gone".into());
            }
            Step::Done
        }
        RemoteError::Refused(msg) => Step::Retry(msg),
        RemoteError::Unreachable(msg) => Step::Retry(msg),
        error @ (RemoteError::Integrity(_) | RemoteError::Sequence(_)) => {
            Step::Broken { error, progressed: false }
        }
    }
}
