//! Cancelling and releasing remote units: at once where the remote node answers, else by
//! a background task that keeps trying.

use super::*;

/// Cancels or releases a remote unit: locally at once, remotely now or (when the node
/// cannot be reached) in the background.
pub(in crate::work) async fn cancel(
    units: &Units,
    unit: &Arc<Unit>,
    release: bool,
    force: bool,
) -> Result<Outcome, UnitError> {
    let Some(r) = remote_of(unit) else { return Err(UnitError::Unknown(unit.id.clone())) };
    let extra = update_remote(unit, |r| {
        r.local_cancelled = true;
        r.local_released |= release;
    })?;
    let _ = unit.update_status(|st| st.extra = extra);
    // The unit's streams, as it was submitted (`tlsclient`): a cancel or release never
    // goes where its submission would not have.
    let remote = reach(units, &r);
    if !r.remote_started {
        unit.stop.cancel();
        // Read again: the stopped submission may have just recorded a remote unit.
        let r = remote_of(unit).unwrap_or(r);
        if !r.remote_unit_id.is_empty() {
            // A submission was under way: do not leave its unit behind on the remote node.
            let signature = sign(units, &r, Op::Release, Some(&r.remote_unit_id), None).unwrap_or(None);
            let attempt = match &remote {
                Ok(remote) => {
                    remote.operate(&r.node, &r.remote_unit_id, RemoteOp::ForceRelease, signature).await
                }
                Err(e) if !force => return Err(UnitError::Refused(e.to_string())),
                Err(e) => Err(e.clone()),
            };
            if let Err(RemoteError::Unreachable(why)) = attempt {
                tracing::info!(unit = %unit.id, %why, "remote node unreachable; will retry the release there");
                if !release && !unit.status().state.is_final() {
                    fail(unit, "Locally Cancelled".into());
                }
                spawn_retry(units.clone(), unit.clone());
                return Ok(Outcome::Pending);
            }
        }
        if release {
            units.forget(unit, force)?;
        } else if !unit.status().state.is_final() {
            fail(unit, "Locally Cancelled".into());
        }
        return Ok(Outcome::Done);
    }
    let op = match (release, force) {
        (false, _) => RemoteOp::Cancel,
        (true, false) => RemoteOp::Release,
        (true, true) => RemoteOp::ForceRelease,
    };
    let signature =
        sign(units, &r, op.signed_op(), Some(&r.remote_unit_id), None).map_err(UnitError::Signature)?;
    let attempt = match &remote {
        Ok(remote) => remote.operate(&r.node, &r.remote_unit_id, op, signature.clone()).await,
        Err(e) => Err(e.clone()),
    };
    match attempt {
        Ok(()) => {}
        Err(RemoteError::UnknownUnit(_)) if release => {}
        Err(_) if force => {}
        Err(RemoteError::Refused(msg) | RemoteError::UnknownUnit(msg)) => {
            return Err(UnitError::Refused(msg));
        }
        Err(RemoteError::Unreachable(why) | RemoteError::Integrity(why) | RemoteError::Sequence(why)) => {
            tracing::info!(unit = %unit.id, %why, "remote node unreachable; will retry {op:?}");
            spawn_retry(units.clone(), unit.clone());
            return Ok(Outcome::Pending);
        }
    }
    if release {
        units.forget(unit, force)?;
    }
    Ok(Outcome::Done)
}

/// Keeps trying to cancel or release the remote unit (whichever the unit's latest
/// request is) until the remote node answers. One such task per unit.
pub(in crate::work) fn spawn_retry(units: Units, unit: Arc<Unit>) {
    if unit.retrying.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let tracker = units.inner.tracker.clone();
    let cancel = units.inner.cancel.clone();
    tracker.spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
            let Some(r) = remote_of(&unit) else { break };
            let op = match (r.remote_started, r.local_released) {
                // Never confirmed as started: whatever is there goes.
                (false, _) => RemoteOp::ForceRelease,
                (true, true) => RemoteOp::Release,
                (true, false) => RemoteOp::Cancel,
            };
            let signature = sign(&units, &r, op.signed_op(), Some(&r.remote_unit_id), None).unwrap_or(None);
            let attempt = match reach(&units, &r) {
                Ok(remote) => remote.operate(&r.node, &r.remote_unit_id, op, signature).await,
                Err(e) => Err(e),
            };
            match attempt {
                Err(RemoteError::Unreachable(_)) => continue,
                Err(RemoteError::Refused(msg)) => {
                    tracing::warn!(unit = %unit.id, "remote {op:?} refused: {msg}");
                }
                _ => {}
            }
            // A release asked for meanwhile still needs its turn.
            if op == RemoteOp::Cancel && remote_of(&unit).is_some_and(|r| r.local_released) {
                continue;
            }
            if op != RemoteOp::Cancel && r.local_released {
                let _ = units.forget(&unit, true);
            }
            break;
        }
        unit.retrying.store(false, std::sync::atomic::Ordering::SeqCst);
        // A release asked for just as this task was ending gets its own turn.
        if remote_of(&unit).is_some_and(|r| r.local_released) && !unit.is_releasing() {
            spawn_retry(units, unit);
        }
    });
}
