//! The one admission path for work. Every submission — a `work` service stream
//! (`MeshClient::submit`, `receptor run` through its own node), a work unit created
//! through any control listener (`receptor run --via-receptor`, receptorctl, AWX, remote
//! units) — and every operation on a unit (cancel, release, results) is decided here:
//! the node is accepting work, the work type exists, `[[work.allow]]` lets the
//! authenticated origin run it, its signature (when the work type or the unit demands
//! one) verifies and is bound to this request and used once, the origin's unit quota
//! (`limits.units_per_node`), and the job slots (`work.max_jobs`).
//!
//! It only ever sees an [`Origin`] produced by authentication, never a name from a frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::authz::Authorization;
use super::signing::{Grant, Op, SignatureError, Verifier};
use super::{Registry, SubmitError, WorkType};
use crate::identity::Origin;
use crate::wire::NodeId;

/// The reloadable part of the admission policy.
#[derive(Clone, Default)]
pub struct Policy {
    /// `[work.verification]`'s key.
    pub verifier: Option<Verifier>,
    /// `[work.verification] accept_replayable_go_tokens`: submissions may carry Go
    /// Receptor tokens (no `jti`, replayable until they expire).
    pub accept_replayable_go_tokens: bool,
    /// `limits.units_per_node`.
    pub units_per_node: usize,
    /// `limits.signed_tokens`: most unexpired token IDs remembered against replay.
    pub signed_tokens: usize,
}

/// What is asked, by whom.
pub struct Ask<'a> {
    pub origin: &'a Origin,
    pub op: Op,
    pub work_type: &'a str,
    /// [`super::signing::params_digest`] of the parameters (submit).
    pub params: Option<String>,
    /// The unit operated on (cancel, release, results).
    pub unit: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// The unit was forwarded with `signwork` (a remote unit): a signature is required
    /// whatever its work type.
    pub signed_unit: bool,
}

/// A submission that may proceed.
pub struct Admitted {
    pub work_type: Arc<dyn WorkType>,
    /// The payload digest its token demands: the payload must match before it runs.
    pub payload_sha256: Option<String>,
}

/// The admission state of one node, shared by the `work` service and the unit store.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    registry: RwLock<Registry>,
    authz: RwLock<Authorization>,
    policy: RwLock<Policy>,
    /// Token IDs used, until they expire. Survives reloads; with a journal, restarts.
    seen: Mutex<super::replay::Replay>,
    slots: Arc<Semaphore>,
    draining: AtomicBool,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl Admission {
    pub fn new(node: NodeId, registry: Registry, max_jobs: usize) -> Admission {
        Admission {
            inner: Arc::new(Inner {
                node,
                registry: RwLock::new(registry),
                authz: RwLock::default(),
                policy: RwLock::new(Policy {
                    units_per_node: crate::limits::Limits::default().units_per_node,
                    signed_tokens: crate::limits::Limits::default().signed_tokens,
                    ..Policy::default()
                }),
                seen: Mutex::default(),
                slots: Arc::new(Semaphore::new(max_jobs.max(1))),
                draining: AtomicBool::new(false),
            }),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    pub fn registry(&self) -> Registry {
        self.inner.registry.read().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn set_registry(&self, registry: Registry) {
        if let Ok(mut r) = self.inner.registry.write() {
            *r = registry;
        }
    }

    pub fn set_authorization(&self, authz: Authorization) {
        if let Ok(mut a) = self.inner.authz.write() {
            *a = authz;
        }
    }

    pub fn set_policy(&self, policy: Policy) {
        if let Ok(mut p) = self.inner.policy.write() {
            *p = policy;
        }
    }

    /// Keeps the record of used tokens in `path` too (`<data_dir>/tokens.journal`), loading
    /// what it holds: tokens used before a restart stay used (all unexpired ones, even past
    /// a lowered `signed_tokens`, which is why to call it after [`Self::set_policy`]: it
    /// warns then). Returns how many are live.
    pub fn open_token_journal(&self, path: &std::path::Path) -> Result<usize, super::replay::ReplayError> {
        let max = self.policy().signed_tokens;
        let mut seen = self.inner.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.open(path, now_secs(), max)
    }

    fn policy(&self) -> Policy {
        self.inner.policy.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Stops admitting submissions (shutdown).
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Whether `name` requires signed submissions.
    pub fn is_secure(&self, name: &str) -> bool {
        self.inner.registry.read().map(|r| r.secure(name)).unwrap_or(false)
    }

    /// A job slot (`work.max_jobs`), if one is free.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.slots.clone().try_acquire_owned().ok()
    }

    /// A job slot, or why there is none.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, SubmitError> {
        self.try_slot().ok_or_else(|| SubmitError::Busy(self.inner.node.clone()))
    }

    /// Decides a submission of `ask.work_type` by `ask.origin`, who already holds `held`
    /// units here (`None`: a job stream, which holds no unit).
    pub fn submit(&self, ask: &Ask<'_>, held: Option<usize>) -> Result<Admitted, SubmitError> {
        let node = self.inner.node.clone();
        if self.inner.draining.load(Ordering::SeqCst) {
            return Err(SubmitError::Draining(node));
        }
        let payload_sha256 = self.check_signature(ask)?;
        let work_type = self.find(ask.work_type)?;
        self.authorize(ask.origin, ask.work_type)?;
        if let (Some(held), Some(requester)) = (held, ask.origin.node()) {
            let max = self.policy().units_per_node;
            if *requester != node && held >= max {
                return Err(SubmitError::Quota { node, requester: requester.clone(), held });
            }
        }
        Ok(Admitted { work_type, payload_sha256 })
    }

    /// Decides an operation (cancel, release, results) on a unit of `ask.work_type`.
    pub fn operate(&self, ask: &Ask<'_>) -> Result<(), SubmitError> {
        self.check_signature(ask)?;
        self.authorize(ask.origin, ask.work_type)
    }

    /// The work type, or why this node does not offer it.
    fn find(&self, name: &str) -> Result<Arc<dyn WorkType>, SubmitError> {
        let node = self.inner.node.clone();
        let reg =
            self.inner.registry.read().map_err(|_| SubmitError::BadRequest("registry poisoned".into()))?;
        if let Some(wt) = reg.get(name) {
            return Ok(wt);
        }
        if let Some(why) = reg.absent_reason(name) {
            return Err(SubmitError::NoWorker { node, work_type: name.to_owned(), why: why.to_owned() });
        }
        let offers = match reg.names() {
            n if n.is_empty() => "no work types".to_owned(),
            n => n.join(", "),
        };
        Err(SubmitError::Unknown { node, work_type: name.to_owned(), offers })
    }

    /// `[[work.allow]]` for `origin`. The Unix socket is trusted; a network client
    /// without a certificate only passes rules that name `*` as a submitter.
    fn authorize(&self, origin: &Origin, work_type: &str) -> Result<(), SubmitError> {
        let authz = self.inner.authz.read().map_err(|_| SubmitError::BadRequest("rules poisoned".into()))?;
        let ok = match origin {
            Origin::Socket => true,
            Origin::Network(None) => authz.allows_anonymous(work_type),
            other => other.node().is_some_and(|id| authz.allows(id, work_type)),
        };
        if ok {
            return Ok(());
        }
        let submitter =
            origin.node().map_or_else(|| "a client without a certificate".to_owned(), |n| n.to_string());
        tracing::warn!(%submitter, %work_type, "work refused by authorization rules");
        Err(SubmitError::NotAllowed {
            node: self.inner.node.clone(),
            submitter,
            work_type: work_type.to_owned(),
        })
    }

    /// Go Receptor's `processSignature`, with bound, one-use tokens: a signature is
    /// required (and checked) for secure work types and signed units unless the request
    /// came through the local socket, and refused when not expected. Returns the payload
    /// digest the token demands.
    fn check_signature(&self, ask: &Ask<'_>) -> Result<Option<String>, SubmitError> {
        let should = ask.signed_unit || self.is_secure(ask.work_type);
        let signature = ask.signature.filter(|s| !s.is_empty());
        if !should {
            return match signature {
                Some(_) => Err(SubmitError::Signature(SignatureError::Unexpected)),
                None => Ok(None),
            };
        }
        if *ask.origin == Origin::Socket {
            return Ok(None);
        }
        let Some(token) = signature else {
            return Err(SubmitError::Signature(SignatureError::Missing {
                work_type: ask.work_type.to_owned(),
            }));
        };
        let policy = self.policy();
        let Some(verifier) = policy.verifier.as_ref() else {
            return Err(SubmitError::Signature(SignatureError::NoKey));
        };
        let want = Grant {
            node: self.inner.node.to_string(),
            requester: ask.origin.node().map(ToString::to_string),
            op: ask.op,
            work_type: ask.work_type.to_owned(),
            params: ask.params.clone(),
            payload: None,
            unit: ask.unit.map(str::to_owned),
        };
        let verified = verifier.verify(token, &want).map_err(SubmitError::Signature)?;
        let Some(jti) = verified.jti else {
            // A Go Receptor token: nothing binds it to this request or stops its replay.
            // On an existing unit the authenticated origin must own the unit anyway;
            // a submission needs the operator's explicit consent.
            if ask.op == Op::Submit && !policy.accept_replayable_go_tokens {
                return Err(SubmitError::Signature(SignatureError::Legacy));
            }
            return Ok(None);
        };
        self.remember(jti, verified.exp, policy.signed_tokens)?;
        Ok(verified.payload)
    }

    /// Records a token ID for its lifetime (journal first, when there is one); a second
    /// use is a replay, and a full or unwritable record refuses the token.
    fn remember(&self, jti: String, exp: u64, max: usize) -> Result<(), SubmitError> {
        use super::replay::ReplayError;
        let mut seen = self.inner.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remember(&jti, exp, max, now_secs()).map_err(|e| {
            let refused = match e {
                ReplayError::Replayed => {
                    tracing::warn!(%jti, "replayed work token refused");
                    SignatureError::Replayed
                }
                ReplayError::Full => {
                    tracing::warn!(
                        max,
                        "work token refused: limits.signed_tokens unexpired tokens remembered"
                    );
                    SignatureError::CacheFull
                }
                e @ ReplayError::Journal { .. } => {
                    tracing::warn!(%jti, error = %e, "work token refused: it could not be recorded");
                    SignatureError::NotRecorded(e.to_string())
                }
            };
            SubmitError::Signature(refused)
        })
    }

    /// Checks a payload's SHA-256 (hex) against the digest its token demanded.
    pub fn check_payload(&self, expected: Option<&str>, actual: &str) -> Result<(), SubmitError> {
        match expected {
            Some(e) if e != actual => {
                Err(SubmitError::Signature(SignatureError::Mismatch { claim: "payload" }))
            }
            _ => Ok(()),
        }
    }
}
