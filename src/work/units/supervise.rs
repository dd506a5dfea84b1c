//! Running local units: starting a detached supervisor, watching it, and stopping it
//! (cancel, or a supervisor that outlived a failed cancel).

use super::*;

impl Units {
    /// Starts forwarding a remote unit's payload while it arrives (see `work::payload`):
    /// its driver submits it at once and sends the payload as `arrival` reports it.
    pub fn forward_while_arriving(&self, unit: &Arc<Unit>, arrival: crate::work::payload::ArrivalWatch) {
        *unit.arrival.lock().unwrap_or_else(|p| p.into_inner()) = Some(arrival);
        crate::work::remote::spawn_driver(self.clone(), unit.clone());
    }

    /// Starts a unit whose `stdin` is complete.
    pub fn start(&self, unit: &Arc<Unit>) -> Result<Started, UnitError> {
        if let (UnitKind::Remote(r), Some(_)) = (unit.kind(), unit.arrival()) {
            // Its driver runs already: the answer is as for a unit started now (what
            // becomes of it the unit's status says, as for any remote unit).
            let _ = unit.update_status(|st| {
                if st.state == State::Pending && st.detail == "Waiting for Input Data" {
                    st.detail = "Starting Worker".into();
                }
            });
            let reachable = self.inner.remote.reachable(&r.node);
            return Ok(if reachable { Started::Started } else { Started::Submitted });
        }
        if unit.status().state != State::Pending {
            return Err(UnitError::Refused(format!(
                "work unit {} is {}, not waiting to start",
                unit.id,
                unit.status().state.name()
            )));
        }
        match unit.kind() {
            UnitKind::Remote(r) => {
                unit.update_status(|st| st.detail = "Starting Worker".into())?;
                let reachable = self.inner.remote.reachable(&r.node);
                crate::work::remote::spawn_driver(self.clone(), unit.clone());
                Ok(if reachable { Started::Started } else { Started::Submitted })
            }
            UnitKind::Local(_) => {
                // Units and mesh jobs share `work.max_jobs` (one budget of processes).
                let Some(slot) = self.inner.admission.try_slot() else {
                    let why =
                        format!("node {} is running work.max_jobs jobs; try again later", self.inner.node);
                    let _ = unit.update_status(|st| {
                        st.state = State::Failed;
                        st.detail = why.clone();
                    });
                    return Err(UnitError::Refused(why));
                };
                unit.update_status(|st| st.detail = "Starting Worker".into())?;
                match self.spawn_supervisor(unit) {
                    Ok(child) => {
                        crate::metrics::global().work_started(crate::metrics::WorkKind::Unit);
                        self.spawn_monitor(unit.clone(), Some(child), Some(slot))
                    }
                    Err(e) => {
                        let _ = unit.update_status(|st| {
                            st.state = State::Failed;
                            st.detail = format!("Error starting worker: {e}");
                        });
                        return Err(UnitError::Io(e));
                    }
                }
                Ok(Started::Started)
            }
        }
    }

    pub(super) fn spawn_supervisor(&self, unit: &Unit) -> Result<tokio::process::Child, String> {
        let exe = self.config().supervisor_exe;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(unit.dir.join("supervisor.log"))
            .map_err(|e| format!("supervisor log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match &self.config().scope_runner {
            // systemd-run creates the scope around itself, then executes the supervisor:
            // through this daemon's own `/proc/PID/exe`, which names this binary even after
            // an upgrade replaced it (`/proc/self/exe` would name systemd-run by then).
            Some(runner) => {
                let mut c = tokio::process::Command::new(runner);
                c.args(crate::systemd::scope_args(&format!("receptord-unit-{}", unit.id)))
                    .arg(format!("/proc/{}/exe", std::process::id()));
                c
            }
            None => {
                let mut c = tokio::process::Command::new(&exe);
                c.arg0("receptord");
                c
            }
        };
        cmd.arg("--supervise-unit")
            .arg(&unit.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: the daemon's signals and shutdown leave it alone.
            .process_group(0);
        // Marked first: a cancel from now on goes through the supervisor (and its marker).
        unit.supervised.store(true, Ordering::SeqCst);
        let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        tracing::debug!(unit = %unit.id, pid = ?child.id(), "supervisor started");
        Ok(child)
    }

    /// Watches a supervised unit until it is final. With `child` (a supervisor this daemon
    /// started) its exit is seen directly; a reattached one is watched through its lock.
    /// A supervisor gone without a result fails the unit (or cancels it, if asked to).
    pub(super) fn spawn_monitor(
        &self,
        unit: Arc<Unit>,
        mut child: Option<tokio::process::Child>,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let stop = unit.stop.clone();
        let since = child.as_ref().map(|_| std::time::Instant::now());
        self.inner.tracker.spawn(async move {
            // The job slot is held while the supervisor lives.
            let _slot = slot;
            // Output bytes are counted as `stdout` grows while this daemon watches.
            let mut counted = if since.is_some() { 0 } else { file_len(&unit.stdout_path()) };
            let mut count_output = || {
                let now = file_len(&unit.stdout_path());
                crate::metrics::global().unit_output(now.saturating_sub(counted));
                counted = counted.max(now);
            };
            let exited = loop {
                let wait_child = async {
                    match child.as_mut() {
                        Some(c) => c.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    // Not killed when the daemon stops: init reaps it then.
                    _ = stop.cancelled() => return,
                    status = wait_child => break status,
                    _ = tokio::time::sleep(MONITOR_TICK) => {}
                }
                count_output();
                let Some(st) = unit.refresh() else { continue };
                if st.state.is_final() {
                    break String::new();
                }
                if child.is_none() && !supervisor_alive(&unit.dir) {
                    break "gone".to_owned();
                }
            };
            count_output();
            if unit.is_releasing() {
                // Released meanwhile (a release cancels first): its directory is going.
                unit_finished(State::Canceled, since);
                return;
            }
            // It may have written its result just before exiting.
            if let Some(st) = unit.refresh().filter(|s| s.state.is_final()) {
                tracing::info!(unit = %unit.id, state = st.state.name(), detail = %st.detail, "work unit finished");
                unit_finished(st.state, since);
                if let Some(mut c) = child {
                    let _ = c.wait().await;
                }
                return;
            }
            let size = file_len(&unit.stdout_path());
            let cancelled = unit.dir.join("cancel").exists();
            tracing::warn!(unit = %unit.id, supervisor = %exited, "work unit supervisor exited without a result");
            let end = if cancelled { State::Canceled } else { State::Failed };
            unit_finished(end, since);
            let _ = unit.update_status(|st| {
                if cancelled {
                    st.state = State::Canceled;
                    st.detail = "Canceled".into();
                } else {
                    st.state = State::Failed;
                    st.detail = format!("the unit's supervisor process died without recording a result ({exited})");
                }
                st.stdout_size = size;
                st.extra = Value::Null;
            });
        });
    }

    /// Cancels a unit: its processes are stopped and it ends Canceled. A finished unit
    /// stays as it is.
    pub async fn cancel(
        &self,
        origin: &Origin,
        id: &str,
        signature: Option<&str>,
    ) -> Result<Outcome, UnitError> {
        let unit = self.get(id)?;
        self.check_unit_access(origin, &unit, Op::Cancel, signature)?;
        self.cancel_unit(&unit).await
    }

    pub(super) async fn cancel_unit(&self, unit: &Arc<Unit>) -> Result<Outcome, UnitError> {
        if let UnitKind::Remote(_) = unit.kind() {
            return crate::work::remote::cancel(self, unit, false, false).await;
        }
        if unit.supervised.load(Ordering::SeqCst) {
            unit.refresh();
        }
        if unit.status().state.is_final() {
            return Ok(Outcome::Done);
        }
        // The marker covers a supervisor still starting (or about to be started): it
        // checks for it before running the job, and its monitor records Canceled if it
        // exits without a result.
        std::fs::write(unit.dir.join("cancel"), b"").map_err(io_err("writing", &unit.dir.join("cancel")))?;
        if !unit.supervised.load(Ordering::SeqCst) {
            unit.update_status(|st| {
                st.state = State::Canceled;
                st.detail = "Canceled".into();
                st.extra = Value::Null;
            })?;
            return Ok(Outcome::Done);
        }
        let mut rx = unit.watch();
        let deadline = self.config().cancel_wait + Duration::from_secs(5);
        let mut signalled = false;
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let st = rx.borrow_and_update().clone();
                if st.state.is_final() {
                    return;
                }
                let pid = supervisor_pid(&unit.dir, &st);
                if let Some(pid) = pid.filter(|_| !signalled && st.state == State::Running) {
                    if supervisor_alive(&unit.dir) {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
                        signalled = true;
                    }
                }
                let _ = tokio::time::timeout(MONITOR_TICK / 5, rx.changed()).await;
                unit.refresh();
            }
        })
        .await;
        if waited.is_err() {
            return Err(UnitError::Io(format!("work unit {} did not stop within {deadline:?}", unit.id)));
        }
        Ok(Outcome::Done)
    }

    /// Stops a supervisor that outlived a failed cancel, before its directory goes: SIGTERM
    /// (it stops the job's whole tree), then SIGKILL for the supervisor's process group.
    pub(super) async fn stop_supervisor(&self, unit: &Unit) {
        let Some(pid) = supervisor_pid(&unit.dir, &unit.status()) else { return };
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + self.config().cancel_wait;
        while supervisor_alive(&unit.dir) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(MONITOR_TICK).await;
        }
        if supervisor_alive(&unit.dir) {
            tracing::warn!(unit = %unit.id, "supervisor ignored SIGTERM; killing its process group");
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Counts a local work unit that reached final state `state`; `since` is when this daemon
/// started it.
fn unit_finished(state: State, since: Option<std::time::Instant>) {
    use crate::metrics::{Outcome, WorkKind, global};
    let outcome = match state {
        State::Succeeded => Outcome::Succeeded,
        State::Canceled => Outcome::Canceled,
        _ => Outcome::Failed,
    };
    global().work_finished(WorkKind::Unit, outcome, since.map(|t| t.elapsed()));
}
