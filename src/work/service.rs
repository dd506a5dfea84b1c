//! The `work` mesh service: accepts work streams, finds the work type, runs the job and
//! sends its result back as the stream trailer. Cancels the job when the requester resets
//! the stream or disappears, and when the node stops after its grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Job, JobInput, JobOutput, JobResult, Registry, SubmitError, WORK_SERVICE, WorkRequest};
use crate::mesh::{Incoming, Node, StreamWriter};

/// Accepts and runs work for one node.
#[derive(Clone)]
pub struct WorkService {
    node: Node,
    registry: Arc<std::sync::RwLock<Registry>>,
    authz: Arc<std::sync::RwLock<super::authz::Authorization>>,
    data_dir: std::path::PathBuf,
    draining: Arc<AtomicBool>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Cancelled to kill every running job.
    kill: CancellationToken,
    jobs: TaskTracker,
}

impl WorkService {
    pub fn new(node: Node, registry: Registry, data_dir: std::path::PathBuf) -> WorkService {
        WorkService {
            node,
            registry: Arc::new(std::sync::RwLock::new(registry)),
            authz: Arc::default(),
            data_dir,
            draining: Arc::new(AtomicBool::new(false)),
            slots: Arc::new(tokio::sync::Semaphore::new(64)),
            kill: CancellationToken::new(),
            jobs: TaskTracker::new(),
        }
    }

    /// Replaces the registry (reload) and re-advertises it.
    pub async fn set_registry(&self, registry: Registry) {
        let ads = registry.ads();
        if let Ok(mut r) = self.registry.write() {
            *r = registry;
        }
        self.node.set_work_types(ads).await;
    }

    /// Limits how many jobs run at once (call before [`WorkService::start`]).
    pub fn with_max_jobs(mut self, max: usize) -> WorkService {
        self.slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
        self
    }

    /// Replaces the authorization rules.
    pub fn set_authorization(&self, authz: super::authz::Authorization) {
        if let Ok(mut a) = self.authz.write() {
            *a = authz;
        }
    }

    /// The registry and authorization rules, shared with the work-unit store.
    pub fn shared(
        &self,
    ) -> (Arc<std::sync::RwLock<Registry>>, Arc<std::sync::RwLock<super::authz::Authorization>>) {
        (self.registry.clone(), self.authz.clone())
    }

    /// The job slots (`work.max_jobs`), shared with the work-unit store.
    pub fn slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.slots.clone()
    }

    pub fn registry(&self) -> Registry {
        self.registry.read().map(|r| r.clone()).unwrap_or_default()
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
        self.draining.store(true, Ordering::SeqCst);
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
        let peer = peer.id().clone();
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            let reason = format!("node {} is busy: all job slots are in use", self.node.id());
            tracing::warn!(submitter = %peer, "{reason}");
            writer.reset(&reason).await;
            return;
        };
        let (req, wt) = match self.lookup(&peer, &header) {
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
        };
        let result = run_and_pump(wt.run(job), out_rx, writer, cancel.clone()).await;
        crate::metrics::job_finished(&result, cancel.is_cancelled(), started.elapsed());
        tracing::info!(exit_code = ?result.exit_code, signal = ?result.signal, error = ?result.error, "job finished");
    }

    fn lookup(
        &self,
        submitter: &crate::wire::NodeId,
        header: &Bytes,
    ) -> Result<(WorkRequest, Arc<dyn super::WorkType>), SubmitError> {
        let node = self.node.id().clone();
        if self.draining.load(Ordering::SeqCst) {
            return Err(SubmitError::Draining(node));
        }
        let req: WorkRequest =
            serde_json::from_slice(header).map_err(|e| SubmitError::BadRequest(e.to_string()))?;
        let allowed = self.authz.read().map(|a| a.allows(submitter, &req.work_type)).unwrap_or(false);
        if !allowed {
            let submitter = submitter.clone();
            tracing::warn!(%submitter, work_type = %req.work_type, "work refused by authorization rules");
            return Err(SubmitError::NotAllowed { node, submitter, work_type: req.work_type });
        }
        let reg = self.registry();
        if let Some(wt) = reg.get(&req.work_type) {
            return Ok((req, wt));
        }
        if let Some(why) = reg.absent_reason(&req.work_type) {
            let why = why.to_owned();
            return Err(SubmitError::NoWorker { node, work_type: req.work_type, why });
        }
        let offers = match reg.names() {
            n if n.is_empty() => "no work types".to_owned(),
            n => n.join(", "),
        };
        Err(SubmitError::Unknown { node, work_type: req.work_type, offers })
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
