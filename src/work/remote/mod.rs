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

use super::integrity::{IntegrityBudget, Judgement};
use super::signing::{Grant, Op, payload_digest, string_params_digest};
use super::units::{Outcome, State, Unit, UnitError, UnitKind, UnitStatus, Units, file_len};
use crate::mesh::backoff::Backoff;
use crate::wire::NodeId;

mod cancel;
mod drive;
mod mirror;

pub(super) use cancel::{cancel, spawn_retry};
pub(super) use drive::spawn_driver;

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
    /// `work submit tlsclient=`, as given (empty: none). Any name means every stream of
    /// this unit is authenticated with this node's `[tls]` identity ([`RemoteControl::user_tls`]);
    /// kept here so that holds after a restart too.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls_client: String,
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
            "TLSClient": self.tls_client,
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
    /// How far `stdin` has arrived, while it still arrives (`None`: it is complete).
    pub arrival: Option<super::payload::ArrivalWatch>,
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
    /// The same way of reaching units, with every stream to `node` authenticated end to
    /// end with this node's `[tls]` identity, whichever plane carries it (a unit submitted
    /// with `tlsclient`); or why that cannot be promised, as far as can be told now. The
    /// view refuses, per request, any stream it could not authenticate. No default: a way
    /// of reaching units that cannot promise it must say so.
    fn user_tls(self: Arc<Self>, node: &NodeId) -> Result<Arc<dyn RemoteControl>, RemoteError>;
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

/// How `r`'s streams go: the node's way of reaching units, authenticated with `[tls]`
/// when the unit was submitted with `tlsclient`.
fn reach(units: &Units, r: &RemoteUnit) -> Result<Arc<dyn RemoteControl>, RemoteError> {
    let remote = units.inner.remote.clone();
    if r.tls_client.is_empty() { Ok(remote) } else { remote.user_tls(&r.node) }
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
            tls_client: String::new(),
        };
        let text = serde_json::to_string(&r.extra_data()).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"RemoteNode":"bar","RemoteWorkType":"echo","RemoteParams":{"params":"-x"},"RemoteUnitID":"AbC","RemoteStarted":true,"LocalCancelled":false,"LocalReleased":false,"SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"}"#
        );
        let r = RemoteUnit { tls_client: "tlsclient".into(), ..r };
        assert_eq!(r.extra_data()["TLSClient"], "tlsclient", "the name given, as Go shows it");
        let stored = serde_json::to_string(&r).unwrap_or_default();
        let back: RemoteUnit = serde_json::from_str(&stored).expect("unit.json");
        assert_eq!(back.tls_client, "tlsclient", "the requirement outlives a restart");
    }

    #[test]
    fn times_trim_zeros() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:01.5Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
