//! Remote work units (`work submit --node X`): this node submits the unit to X, then
//! mirrors X's state and output into a local unit of type `remote`. The mirror resumes
//! from the last byte it holds after any link loss or restart, so the local `stdout` ends
//! byte-identical to X's, with no duplicates and no gaps.
//!
//! How X is reached is behind [`RemoteControl`] (the control protocol over a mesh stream,
//! in `control::client`): this module only sees typed requests and bytes.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::integrity::{IntegrityBudget, Judgement};
use super::signing::{Grant, Op, payload_digest, string_params_digest};
use super::units::{Outcome, State, Unit, UnitError, UnitKind, UnitStatus, Units, file_len};
use crate::mesh::backoff::Backoff;
use crate::wire::NodeId;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a remote unit remembers (part of `unit.json`, rewritten as it progresses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteUnit {
    pub node: NodeId,
    pub work_type: String,
    /// Every work parameter, secrets included (they are sent to the remote node).
    pub params: BTreeMap<String, String>,
    pub sign_work: bool,
    pub expiration: Option<SystemTime>,
    pub remote_unit_id: String,
    pub remote_started: bool,
    pub local_cancelled: bool,
    pub local_released: bool,
    /// Released (here and there) once no client has been attached for this long; forwarded
    /// to the remote node, where this node's mirror is the attached client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Duration>,
}

impl RemoteUnit {
    /// `ExtraData` as Go Receptor shows it (struct order, secrets removed).
    pub fn extra_data(&self) -> Value {
        let params: serde_json::Map<String, Value> = self
            .params
            .iter()
            .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("secret_"))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "RemoteNode": self.node.as_str(),
            "RemoteWorkType": self.work_type,
            "RemoteParams": params,
            "RemoteUnitID": self.remote_unit_id,
            "RemoteStarted": self.remote_started,
            "LocalCancelled": self.local_cancelled,
            "LocalReleased": self.local_released,
            "SignWork": self.sign_work,
            "TLSClient": "",
            "Expiration": self.expiration.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
        })
    }
}

/// RFC 3339 with trailing fractional zeros trimmed (Go's `RFC3339Nano`).
fn rfc3339(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_nanos(t).to_string();
    match s.split_once('.') {
        Some((head, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() { format!("{head}Z") } else { format!("{head}.{digits}Z") }
        }
        None => s,
    }
}

/// Why talking to a remote node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// Not reachable now (no route, link lost, stream reset): try again later.
    #[error("{0}")]
    Unreachable(String),
    /// The remote node answered with an error.
    #[error("{0}")]
    Refused(String),
    /// The remote node does not have (or no longer has) the unit.
    #[error("{0}")]
    UnknownUnit(String),
    /// Proof that a relay on the path tampered with a stream to the remote node (a record
    /// failed authentication, a frame arrived twice). Retried, but only
    /// `limits.integrity_attempts` times in a row (`work::integrity`).
    #[error("{0}")]
    Integrity(String),
    /// A protected stream's frames arrived with a gap, out of order or cut short:
    /// tampering, or a reroute; `work::integrity` tells them apart.
    #[error("{0}")]
    Sequence(String),
}

impl RemoteError {
    /// An error line from the remote control service. The protocol has no error codes;
    /// "unknown work unit …" (Go Receptor's and receptord's wording) is the one answer
    /// that means the unit is gone, so it is recognised here, once.
    pub fn from_reply(msg: String) -> RemoteError {
        if msg.trim_start().starts_with("unknown work unit") {
            RemoteError::UnknownUnit(msg)
        } else {
            RemoteError::Refused(msg)
        }
    }
}

/// A submission to forward.
pub struct RemoteSubmit {
    pub work_type: String,
    pub params: BTreeMap<String, String>,
    /// The local unit's `stdin`, sent as the payload.
    pub stdin: PathBuf,
    pub signature: Option<String>,
    /// The unit's lease, if it has one (a submit field other nodes ignore if unknown).
    pub lease: Option<Duration>,
}

/// What to ask of a remote unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOp {
    Cancel,
    Release,
    ForceRelease,
}

/// A remote unit's output, from some offset.
pub trait RemoteBytes: Send {
    /// The next bytes; `None` when the remote unit is complete and all was sent.
    fn next(&mut self) -> BoxFut<'_, Result<Option<Bytes>, RemoteError>>;
}

/// How this node reaches other nodes' work units.
pub trait RemoteControl: Send + Sync {
    fn reachable(&self, node: &NodeId) -> bool;
    /// The path to `node` as far as it can be told, for error messages (empty if not).
    /// No defaults for this and the next two: each way of reaching units says what it
    /// knows, so a new one cannot silently stop tampering from being counted.
    fn path<'a>(&'a self, node: &'a NodeId) -> BoxFut<'a, String>;
    /// Now, in this node's history of route changes (`None`: not known here).
    fn route_mark(&self) -> Option<crate::mesh::reroute::RouteMark>;
    /// Whether the route to `node` changed, or a link of this node went down, since
    /// `mark` (unknown: yes).
    fn rerouted_since(&self, node: &NodeId, mark: Option<crate::mesh::reroute::RouteMark>) -> bool;
    /// Whether the mesh links are TLS (secrets may be sent).
    fn links_are_tls(&self) -> bool;
    /// Creates the unit on `node` and sends its payload; returns the remote unit ID.
    /// `on_created` is told the remote unit's ID as soon as it exists, before the payload
    /// is sent, so an interrupted submission can be found again.
    fn submit<'a>(
        &'a self,
        node: &'a NodeId,
        req: RemoteSubmit,
        on_created: &'a (dyn Fn(&str) + Send + Sync),
    ) -> BoxFut<'a, Result<String, RemoteError>>;
    fn status<'a>(&'a self, node: &'a NodeId, unit: &'a str) -> BoxFut<'a, Result<UnitStatus, RemoteError>>;
    fn results<'a>(
        &'a self,
        node: &'a NodeId,
        unit: &'a str,
        from: u64,
        signature: Option<String>,
    ) -> BoxFut<'a, Result<Box<dyn RemoteBytes>, RemoteError>>;
    fn operate<'a>(
        &'a self,
        node: &'a NodeId,
        unit: &'a str,
        op: RemoteOp,
        signature: Option<String>,
    ) -> BoxFut<'a, Result<(), RemoteError>>;
}

fn remote_of(unit: &Unit) -> Option<RemoteUnit> {
    match unit.kind() {
        UnitKind::Remote(r) => Some(r),
        UnitKind::Local(_) => None,
    }
}

impl RemoteOp {
    /// The operation a token for this request authorizes.
    pub fn signed_op(self) -> Op {
        match self {
            RemoteOp::Cancel => Op::Cancel,
            RemoteOp::Release | RemoteOp::ForceRelease => Op::Release,
        }
    }
}

/// A one-use token for `op` on the remote node (on its unit `rid`, or, for a submission,
/// bound to the parameters and the payload's digest), when the unit is signed.
fn sign(
    units: &Units,
    r: &RemoteUnit,
    op: Op,
    rid: Option<&str>,
    payload: Option<String>,
) -> Result<Option<String>, String> {
    if !r.sign_work {
        return Ok(None);
    }
    let Some(signer) = units.config().signer else {
        return Err("cannot sign work: signing key is empty".into());
    };
    let grant = Grant {
        node: r.node.to_string(),
        requester: Some(units.inner.node.to_string()),
        op,
        work_type: r.work_type.clone(),
        params: (op == Op::Submit).then(|| string_params_digest(&r.params)),
        payload,
        unit: rid.map(str::to_owned),
    };
    signer.token(&grant).map(Some)
}

fn update_remote(unit: &Unit, f: impl FnOnce(&mut RemoteUnit)) -> Result<Value, UnitError> {
    let mut extra = Value::Null;
    unit.update_kind(|k| {
        if let UnitKind::Remote(r) = k {
            f(r);
            extra = r.extra_data();
        }
    })?;
    Ok(extra)
}

fn fail(unit: &Unit, detail: String) {
    tracing::warn!(unit = %unit.id, %detail, "remote work unit failed");
    // The size is what the mirror holds on disk, so followers end there.
    let size = file_len(&unit.stdout_path());
    let _ = unit.update_status(|st| {
        st.state = State::Failed;
        st.detail = detail;
        st.stdout_size = size;
    });
}

/// Starts mirroring `unit` (submitting it first if that has not happened yet).
pub(super) fn spawn_driver(units: Units, unit: Arc<Unit>) {
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
        integrity.begin(units.inner.remote.as_ref());
        let step =
            if r.remote_started { mirror(units, unit, &r).await } else { submit(units, unit, &r).await };
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

enum Step {
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
    let remote = units.inner.remote.clone();
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
async fn settle_earlier_attempt(units: &Units, unit: &Arc<Unit>, r: &RemoteUnit) -> Option<Step> {
    let remote = units.inner.remote.clone();
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

async fn submit(units: &Units, unit: &Arc<Unit>, r: &RemoteUnit) -> Step {
    if let Some(exp) = r.expiration {
        if SystemTime::now() >= exp {
            let when = humantime::format_rfc3339_seconds(exp);
            fail(unit, format!("Work unit expired on {when}"));
            return Step::Done;
        }
    }
    let remote = units.inner.remote.clone();
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
        if let Some(step) = settle_earlier_attempt(units, unit, r).await {
            return step;
        }
    }
    let req = RemoteSubmit {
        work_type: r.work_type.clone(),
        params: r.params.clone(),
        stdin: unit.stdin_path(),
        signature,
        lease: r.lease.map(|l| l.max(super::lease::MIN_FORWARDED_LEASE)),
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

/// Downloads output from where the local copy ends, mirroring state as it goes; finishes
/// the unit once the remote one is complete and every byte is here.
async fn mirror(units: &Units, unit: &Arc<Unit>, r: &RemoteUnit) -> Step {
    let remote = units.inner.remote.clone();
    let rid = r.remote_unit_id.as_str();
    let path = unit.stdout_path();
    let mut have = file_len(&path);
    let signature = sign(units, r, Op::Results, Some(rid), None).unwrap_or(None);
    let mut stream = match remote.results(&r.node, rid, have, signature).await {
        Ok(s) => s,
        Err(e) => return gone_or_retry(unit, e),
    };
    let mut file = match tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await {
        Ok(f) => f,
        Err(e) => {
            fail(unit, format!("cannot write {}: {e}", path.display()));
            return Step::Done;
        }
    };
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut progressed = false;
    let ended = loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Ok(Some(data)) => {
                    if let Err(e) = file.write_all(&data).await {
                        fail(unit, format!("cannot write {}: {e}", path.display()));
                        return Step::Done;
                    }
                    have += data.len() as u64;
                    progressed = true;
                    unit.status_in_memory(|st| st.stdout_size = have);
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
                    if !st.state.is_final() {
                        let _ = unit.update_status(|local| {
                            local.state = st.state;
                            local.detail = st.detail.clone();
                            local.stdout_size = have;
                        });
                    }
                }
            }
        }
    };
    let _ = file.flush().await;
    let _ = file.sync_data().await;
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

fn gone_or_retry(unit: &Unit, e: RemoteError) -> Step {
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

/// Cancels or releases a remote unit: locally at once, remotely now or (when the node
/// cannot be reached) in the background.
pub(super) async fn cancel(
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
    if !r.remote_started {
        unit.stop.cancel();
        // Read again: the stopped submission may have just recorded a remote unit.
        let r = remote_of(unit).unwrap_or(r);
        if !r.remote_unit_id.is_empty() {
            // A submission was under way: do not leave its unit behind on the remote node.
            let signature = sign(units, &r, Op::Release, Some(&r.remote_unit_id), None).unwrap_or(None);
            let remote = units.inner.remote.clone();
            let attempt = remote.operate(&r.node, &r.remote_unit_id, RemoteOp::ForceRelease, signature).await;
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
    let remote = units.inner.remote.clone();
    let attempt = remote.operate(&r.node, &r.remote_unit_id, op, signature.clone()).await;
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
pub(super) fn spawn_retry(units: Units, unit: Arc<Unit>) {
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
            match units.inner.remote.operate(&r.node, &r.remote_unit_id, op, signature).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_data_hides_secrets_and_keeps_go_order() {
        let r = RemoteUnit {
            node: NodeId::new("bar").expect("id"),
            work_type: "echo".into(),
            params: BTreeMap::from([("params".into(), "-x".into()), ("Secret_key".into(), "s".into())]),
            sign_work: false,
            expiration: None,
            remote_unit_id: "AbC".into(),
            remote_started: true,
            local_cancelled: false,
            local_released: false,
            lease: None,
        };
        let text = serde_json::to_string(&r.extra_data()).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"RemoteNode":"bar","RemoteWorkType":"echo","RemoteParams":{"params":"-x"},"RemoteUnitID":"AbC","RemoteStarted":true,"LocalCancelled":false,"LocalReleased":false,"SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn times_trim_zeros() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:01.5Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
