//! Driving a remote unit: submitting it (or settling an interrupted submission), then
//! handing over to the mirror; retries with backoff, and tampering judged by
//! `work::integrity`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::mirror::mirror;
use super::*;

/// Starts mirroring `unit` (submitting it first if that has not happened yet).
pub(in crate::work) fn spawn_driver(units: Units, unit: Arc<Unit>) {
    let tracker = units.inner.tracker.clone();
    tracker.spawn(async move {
        let stop = unit.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = drive(&units, &unit) => {}
        }
    });
}

async fn drive(units: &Units, unit: &Arc<Unit>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut integrity = IntegrityBudget::new(units.config().integrity_attempts);
    loop {
        let Some(r) = remote_of(unit) else { return };
        if unit.status().state.is_final() {
            return;
        }
        // A unit submitted with `tlsclient` whose streams cannot be authenticated fails:
        // refusing beats pretending.
        let remote = match reach(units, &r) {
            Ok(remote) => remote,
            Err(e) if r.remote_started => return fail(unit, e.to_string()),
            Err(e) => return fail(unit, format!("Error starting worker: {e}")),
        };
        integrity.begin(units.inner.remote.as_ref());
        let step = if r.remote_started {
            mirror(units, &remote, unit, &r).await
        } else {
            submit(units, &remote, unit, &r).await
        };
        match step {
            Step::Done => return,
            Step::Progress => {
                integrity.progressed();
                backoff.reset();
            }
            Step::Broken { error, progressed } => {
                match integrity.judge(units.inner.remote.as_ref(), &r.node, error, progressed).await {
                    Judgement::Final(why) => {
                        tracing::warn!(unit = %unit.id, %why, "remote work unit: failed for tampering");
                        fail_tampered(units, unit, &r, why).await;
                        return;
                    }
                    Judgement::Retry(why) => {
                        tracing::warn!(unit = %unit.id, %why, "remote work unit: stream integrity failure");
                    }
                    Judgement::Other(e) => {
                        tracing::info!(unit = %unit.id, why = %e, "remote work unit: retrying")
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Step::Retry(why) => {
                let delay = backoff.next_delay();
                tracing::info!(unit = %unit.id, %why, ?delay, "remote work unit: retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

pub(super) enum Step {
    Done,
    Progress,
    Retry(String),
    /// A stream failed its integrity check, or failed otherwise after output arrived
    /// (`work::integrity` judges it); `progressed`: output arrived before it did.
    Broken {
        error: RemoteError,
        progressed: bool,
    },
}

/// Fails `unit` for tampering, and cancels and releases the remote unit (best effort,
/// bounded: what is left undone its lease does), so nothing keeps running for a run that
/// has ended.
async fn fail_tampered(units: &Units, unit: &Arc<Unit>, r: &RemoteUnit, why: String) {
    fail(unit, why);
    if r.remote_unit_id.is_empty() {
        return;
    }
    let remote = match reach(units, r) {
        Ok(remote) => remote,
        Err(e) => {
            return tracing::info!(unit = %unit.id, %e, "cannot release the remote unit; its lease will");
        }
    };
    let signature = sign(units, r, Op::Release, Some(&r.remote_unit_id), None).unwrap_or(None);
    let released = remote.operate(&r.node, &r.remote_unit_id, RemoteOp::ForceRelease, signature);
    match tokio::time::timeout(Duration::from_secs(10), released).await {
        Ok(Ok(())) => tracing::info!(unit = %unit.id, node = %r.node, "remote unit released"),
        Ok(Err(e)) => {
            tracing::info!(unit = %unit.id, %e, "could not release the remote unit; its lease will")
        }
        Err(_) => tracing::info!(unit = %unit.id, "no answer releasing the remote unit; its lease will"),
    }
}

/// An earlier submission created unit `r.remote_unit_id` on the remote node but was cut
/// off before it was confirmed. If the payload arrived whole the unit runs there: adopt it.
/// If not (still waiting for input, or failed reading it), release it so the job does not
/// run twice. `None`: submit again.
async fn settle_earlier_attempt(
    units: &Units,
    remote: &Arc<dyn RemoteControl>,
    unit: &Arc<Unit>,
    r: &RemoteUnit,
) -> Option<Step> {
    let rid = r.remote_unit_id.as_str();
    match remote.status(&r.node, rid).await {
        Ok(st) => {
            // Never started there: waiting for input, failed reading it, or caught by a
            // restart of that node before it started.
            let incomplete = (st.state == State::Pending && st.detail == "Waiting for Input Data")
                || (st.state == State::Failed
                    && (st.detail.starts_with("Error reading input data")
                        || st.detail == "Pending at restart"));
            if incomplete {
                let signature = sign(units, r, Op::Release, Some(rid), None).unwrap_or(None);
                if let Err(RemoteError::Unreachable(why)) =
                    remote.operate(&r.node, rid, RemoteOp::ForceRelease, signature).await
                {
                    return Some(Step::Retry(why));
                }
                tracing::info!(unit = %unit.id, remote_unit = %rid, "discarded an incomplete remote submission");
                return None;
            }
            tracing::info!(unit = %unit.id, remote_unit = %rid, "an interrupted submission did start; adopting it");
            match update_remote(unit, |r| r.remote_started = true) {
                Ok(extra) => {
                    let _ = unit.update_status(|st| st.extra = extra);
                    Some(Step::Progress)
                }
                Err(e) => {
                    fail(unit, format!("cannot record the remote unit: {e}"));
                    Some(Step::Done)
                }
            }
        }
        Err(RemoteError::UnknownUnit(_)) => None,
        Err(RemoteError::Refused(msg)) | Err(RemoteError::Unreachable(msg)) => Some(Step::Retry(msg)),
        Err(error @ (RemoteError::Integrity(_) | RemoteError::Sequence(_))) => {
            Some(Step::Broken { error, progressed: false })
        }
    }
}

async fn submit(units: &Units, remote: &Arc<dyn RemoteControl>, unit: &Arc<Unit>, r: &RemoteUnit) -> Step {
    if let Some(exp) = r.expiration {
        if SystemTime::now() >= exp {
            let when = humantime::format_rfc3339_seconds(exp);
            fail(unit, format!("Work unit expired on {when}"));
            return Step::Done;
        }
    }
    if !remote.reachable(&r.node) {
        return Step::Retry(format!("node {} is not reachable", r.node));
    }
    let digest = match r.sign_work {
        true => match payload_digest(unit.stdin_path()).await {
            Ok(d) => Some(d),
            Err(e) => {
                fail(unit, format!("cannot sign work: {e}"));
                return Step::Done;
            }
        },
        false => None,
    };
    let signature = match sign(units, r, Op::Submit, None, digest) {
        Ok(s) => s,
        Err(e) => {
            fail(unit, e);
            return Step::Done;
        }
    };
    // An earlier attempt got as far as creating a unit there: find out what became of it.
    if !r.remote_unit_id.is_empty() {
        // `None`: gone or discarded, so submit afresh.
        if let Some(step) = settle_earlier_attempt(units, remote, unit, r).await {
            return step;
        }
    }
    let req = RemoteSubmit {
        work_type: r.work_type.clone(),
        params: r.params.clone(),
        stdin: unit.stdin_path(),
        arrival: unit.arrival(),
        signature,
        lease: r.lease.map(|l| l.max(crate::work::lease::MIN_FORWARDED_LEASE)),
    };
    let record = |rid: &str| {
        let _ = update_remote(unit, |r| r.remote_unit_id = rid.to_owned());
    };
    match remote.submit(&r.node, req, &record).await {
        Ok(rid) => {
            tracing::info!(unit = %unit.id, node = %r.node, remote_unit = %rid, "remote work unit submitted");
            let extra = match update_remote(unit, |r| {
                r.remote_unit_id = rid.clone();
                r.remote_started = true;
            }) {
                Ok(extra) => extra,
                Err(e) => {
                    fail(unit, format!("cannot record the remote unit: {e}"));
                    return Step::Done;
                }
            };
            let _ = unit.update_status(|st| {
                st.detail = format!("Submitted to {} as {rid}", r.node);
                st.extra = extra;
            });
            Step::Progress
        }
        Err(RemoteError::Unreachable(why)) => Step::Retry(why),
        Err(error @ (RemoteError::Integrity(_) | RemoteError::Sequence(_))) => {
            Step::Broken { error, progressed: false }
        }
        Err(RemoteError::Refused(why) | RemoteError::UnknownUnit(why)) => {
            fail(unit, format!("Error starting worker: {why}"));
            Step::Done
        }
    }
}
