//! The `work` mesh service: accepts work streams, finds the work type, runs the job and
//! sends its result back as the stream trailer. Cancels the job when the requester resets
//! the stream or disappears, and when the node stops after its grace period.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::admit::{Admission, Ask};
use super::signing::{Op, params_digest};
use super::{Job, JobInput, JobOutput, JobResult, Registry, SubmitError, WORK_SERVICE, WorkRequest};
use crate::identity::Origin;
use crate::mesh::{Incoming, Node, StreamWriter};

/// Accepts and runs work for one node.
#[derive(Clone)]
pub struct WorkService {
    node: Node,
    admission: Admission,
    data_dir: std::path::PathBuf,
    /// Cancelled to kill every running job.
    kill: CancellationToken,
    jobs: TaskTracker,
}

impl WorkService {
    pub fn new(node: Node, registry: Registry, data_dir: std::path::PathBuf) -> WorkService {
        let admission = Admission::new(node.id().clone(), registry, 64);
        WorkService { node, admission, data_dir, kill: CancellationToken::new(), jobs: TaskTracker::new() }
    }

    /// Replaces the registry (reload) and re-advertises it.
    pub async fn set_registry(&self, registry: Registry) {
        let ads = registry.ads();
        self.admission.set_registry(registry);
        self.node.set_work_types(ads).await;
    }

    /// Limits how many jobs run at once (call before [`WorkService::start`]).
    pub fn with_max_jobs(mut self, max: usize) -> WorkService {
        self.admission = Admission::new(self.node.id().clone(), self.admission.registry(), max);
        self
    }

    /// Replaces the authorization rules.
    pub fn set_authorization(&self, authz: super::authz::Authorization) {
        self.admission.set_authorization(authz);
    }

    /// The admission path, shared with the work-unit store.
    pub fn admission(&self) -> Admission {
        self.admission.clone()
    }

    pub fn registry(&self) -> Registry {
        self.admission.registry()
    }

    /// Serves work streams until the node stops.
    pub fn start(&self) {
        let mut incoming = self.node.serve(WORK_SERVICE, 64);
        let svc = self.clone();
        let cancel = self.node.cancel_token();
        self.node.tracker().spawn(async move {
            let ads = svc.registry().ads();
            svc.node.set_work_types(ads).await;
            loop {
                let inc = tokio::select! {
                    _ = cancel.cancelled() => break,
                    i = incoming.recv() => match i { Some(i) => i, None => break },
                };
                let job_svc = svc.clone();
                svc.jobs.spawn(async move { job_svc.handle(inc).await });
            }
        });
    }

    pub fn running(&self) -> usize {
        self.jobs.len()
    }

    /// Stops accepting work, lets running jobs finish for `grace`, then kills them.
    pub async fn drain(&self, grace: std::time::Duration) {
        self.admission.drain();
        self.jobs.close();
        if tokio::time::timeout(grace, self.jobs.wait()).await.is_err() {
            tracing::warn!(jobs = self.jobs.len(), "grace period over; killing running jobs");
            self.kill.cancel();
            self.jobs.wait().await;
        }
    }

    async fn handle(&self, inc: Incoming) {
        let Incoming { peer, header, writer, reader } = inc;
        // The authenticated opener (its certificate on a protected stream).
        let origin = Origin::Mesh(peer.clone());
        let peer = peer.id().clone();
        let admitted = self.admission.slot().and_then(|slot| Ok((slot, self.admit(&origin, &header)?)));
        let (_slot, (req, wt)) = match admitted {
            Ok(found) => found,
            Err(e) => {
                tracing::info!(submitter = %peer, "work refused: {e}");
                writer.reset(&e.to_string()).await;
                return;
            }
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let span = tracing::info_span!("job", job.id = %id, work_type = %req.work_type, submitter = %peer);
        self.run_job(id, peer, req, wt, writer, reader).instrument(span).await;
    }

    async fn run_job(
        &self,
        id: String,
        peer: crate::wire::NodeId,
        req: WorkRequest,
        wt: Arc<dyn super::WorkType>,
        writer: StreamWriter,
        reader: crate::mesh::StreamReader,
    ) {
        tracing::info!("job started");
        let (started, metrics) = (std::time::Instant::now(), crate::metrics::global());
        metrics.work_started(crate::metrics::WorkKind::Job);
        let cancel = self.kill.child_token();
        let (output, out_rx) = JobOutput::channel();
        let job = Job {
            id: id.clone(),
            submitter: peer,
            node: self.node.id().clone(),
            params: req.params,
            input: JobInput::new(reader),
            output,
            cancel: cancel.clone(),
            job_dir: self.data_dir.join("jobs").join(&id),
            tmp_root: self.data_dir.join("tmp"),
        };
        let result = run_and_pump(wt.run(job), out_rx, writer, cancel.clone()).await;
        let outcome = match &result {
            _ if cancel.is_cancelled() => crate::metrics::Outcome::Canceled,
            r if r.error.is_none() && r.exit_code == Some(0) => crate::metrics::Outcome::Succeeded,
            _ => crate::metrics::Outcome::Failed,
        };
        crate::metrics::global().work_finished(
            crate::metrics::WorkKind::Job,
            outcome,
            Some(started.elapsed()),
        );
        tracing::info!(exit_code = ?result.exit_code, signal = ?result.signal, error = ?result.error, "job finished");
    }

    /// Parses a stream's header and puts it through the admission path. A job stream's
    /// payload is not known up front: a token demanding a payload digest is refused.
    fn admit(
        &self,
        origin: &Origin,
        header: &Bytes,
    ) -> Result<(WorkRequest, Arc<dyn super::WorkType>), SubmitError> {
        let req: WorkRequest =
            serde_json::from_slice(header).map_err(|e| SubmitError::BadRequest(e.to_string()))?;
        let ask = Ask {
            origin,
            op: Op::Submit,
            work_type: &req.work_type,
            params: Some(params_digest(&req.params)),
            unit: None,
            signature: req.signature.as_deref(),
            signed_unit: false,
        };
        let admitted = self.admission.submit(&ask, None)?;
        if admitted.payload_sha256.is_some() {
            return Err(SubmitError::BadRequest(
                "a job stream's payload cannot be checked against a payload digest; sign it without one"
                    .into(),
            ));
        }
        Ok((req, admitted.work_type))
    }
}

/// Runs the job while pumping its output into the stream; cancels it if the stream dies.
async fn run_and_pump(
    job: super::JobFuture,
    mut out_rx: mpsc::Receiver<Bytes>,
    mut writer: StreamWriter,
    cancel: CancellationToken,
) -> JobResult {
    let watch = writer.close_watch();
    let pump_cancel = cancel.clone();
    let pump = async move {
        while let Some(chunk) = out_rx.recv().await {
            crate::metrics::global().job_output(chunk.len());
            if writer.write(chunk).await.is_err() {
                pump_cancel.cancel();
                return None;
            }
        }
        Some(writer)
    };
    let watcher = async {
        let reason = watch.closed().await;
        tracing::info!(%reason, "requester stream closed; cancelling job");
        cancel.cancel();
    };
    let work = async { tokio::join!(job, pump) };
    tokio::pin!(work, watcher);
    let mut watching = true;
    let (result, writer) = loop {
        tokio::select! {
            r = &mut work => break r,
            () = &mut watcher, if watching => watching = false,
        }
    };
    if let Some(writer) = writer {
        let trailer = serde_json::to_vec(&result).unwrap_or_default();
        writer.finish(Bytes::from(trailer)).await;
    }
    result
}
