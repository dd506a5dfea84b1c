//! A (re)started daemon reloads every unit directory; completed units are released after
//! the retention period.

use super::*;

impl Units {
    pub(super) fn recover(&self) -> Result<(), UnitError> {
        let dir = std::fs::read_dir(&self.inner.root).map_err(io_err("reading", &self.inner.root))?;
        for entry in dir.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if valid_id(&id).is_err() || !entry.path().is_dir() {
                continue;
            }
            match self.recover_one(&id, &entry.path()) {
                Ok(()) => {}
                Err(e) => tracing::warn!(unit = %id, "cannot recover work unit: {e}"),
            }
        }
        Ok(())
    }

    pub(super) fn recover_one(&self, id: &str, dir: &Path) -> Result<(), UnitError> {
        let kind: UnitKind = read_json(&dir.join("unit.json"))
            .ok_or_else(|| UnitError::Io("unit.json missing or unreadable".into()))?;
        let work_type = match &kind {
            UnitKind::Local(l) => l.work_type.clone(),
            UnitKind::Remote(_) => "remote".to_owned(),
        };
        let mut status = read_status(dir).unwrap_or_else(|| {
            let mut st = UnitStatus::new(&work_type, "", Value::Null);
            st.state = State::Failed;
            st.detail = "status file missing or unreadable at restart".into();
            st
        });
        let size = file_len(&dir.join("stdout"));
        let unit = self.insert(id, dir, kind.clone(), status.clone());
        crate::work::lease::spawn_watch(self.clone(), unit.clone());
        match kind {
            UnitKind::Remote(r) => {
                let has_remote = !r.remote_unit_id.is_empty();
                if status.state == State::Pending && status.detail == "Waiting for Input Data" {
                    // Its payload never finished arriving: never send a truncated one.
                    status.state = State::Failed;
                    status.detail = "Pending at restart".into();
                    unit.set_status(status)?;
                    return Ok(());
                }
                // A cancel or release that had not reached the remote node is retried.
                if r.local_released && !has_remote {
                    self.forget(&unit, true)?;
                    return Ok(());
                }
                let unsettled = r.local_released
                    || (r.local_cancelled && (!r.remote_started || !status.state.is_final()));
                if has_remote && unsettled {
                    crate::work::remote::spawn_retry(self.clone(), unit.clone());
                }
                if !status.state.is_final() && !r.local_released && (r.remote_started || !r.local_cancelled) {
                    tracing::info!(unit = %id, "resuming remote work unit");
                    crate::work::remote::spawn_driver(self.clone(), unit);
                }
            }
            UnitKind::Local(_) if status.state.is_final() => {}
            UnitKind::Local(_) if supervisor_alive(dir) => {
                tracing::info!(unit = %id, "reattached to a running work unit");
                unit.supervised.store(true, Ordering::SeqCst);
                // A reattached unit takes a job slot if one is free (it runs either way).
                let slot = self.inner.admission.try_slot();
                self.spawn_monitor(unit, None, slot);
            }
            UnitKind::Local(_) if dir.join("cancel").exists() => {
                status.state = State::Canceled;
                status.detail = "Canceled".into();
                status.stdout_size = size;
                status.extra = Value::Null;
                unit.set_status(status)?;
            }
            UnitKind::Local(_) => {
                status.detail = if status.state == State::Pending {
                    "Pending at restart".into()
                } else {
                    "receptord restarted and the unit's process was gone; output written before is kept"
                        .into()
                };
                status.state = State::Failed;
                status.stdout_size = size;
                status.extra = Value::Null;
                tracing::warn!(unit = %id, detail = %status.detail, "work unit failed at restart");
                unit.set_status(status)?;
            }
        }
        Ok(())
    }

    /// Releases completed units older than the retention period, now and then.
    pub(super) fn spawn_retention(&self) {
        let units = self.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            loop {
                let Some(retention) = units.config().retention else {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => continue,
                    }
                };
                let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let all: Vec<Arc<Unit>> = units.lock().values().cloned().collect();
                for unit in all {
                    let age = std::fs::metadata(unit.dir.join("status"))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if unit.status().state.is_final()
                        && age.is_some_and(|a| a >= retention)
                        && !unit.is_releasing()
                    {
                        tracing::info!(unit = %unit.id, ?retention, "releasing expired work unit");
                        if let Err(e) = units.release_unit(&unit, false).await {
                            tracing::warn!(unit = %unit.id, "retention release failed: {e}");
                        }
                    }
                }
            }
        });
    }
}
