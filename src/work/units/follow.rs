//! `work results`: a unit's output from any byte offset, following it while it runs.

use super::*;

impl Units {
    /// The unit's output from byte `from`, following it until the unit is complete.
    pub fn follow(
        &self,
        origin: &Origin,
        id: &str,
        from: u64,
        signature: Option<&str>,
    ) -> Result<Follow, UnitError> {
        let unit = self.get(id)?;
        self.check_unit_access(origin, &unit, Op::Results, signature)?;
        let attached = unit.attach();
        Ok(Follow {
            rx: unit.watch(),
            unit,
            file: None,
            pos: from,
            idle: Duration::ZERO,
            _attached: attached,
        })
    }
}

/// A reader of a unit's `stdout` that follows it while the unit runs.
pub struct Follow {
    unit: Arc<Unit>,
    rx: watch::Receiver<UnitStatus>,
    file: Option<tokio::fs::File>,
    pos: u64,
    idle: Duration,
    /// A follower keeps the unit's lease.
    _attached: crate::work::lease::Attached,
}

impl Follow {
    /// The next bytes, or `None` once the unit is complete and everything was read (or
    /// the unit was released).
    pub async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        loop {
            if self.unit.is_releasing() {
                return Ok(None);
            }
            if self.file.is_none() {
                match tokio::fs::File::open(self.unit.stdout_path()).await {
                    Ok(mut f) => {
                        f.seek(std::io::SeekFrom::Start(self.pos)).await?;
                        self.file = Some(f);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(f) = self.file.as_mut() {
                let mut buf = BytesMut::with_capacity(FOLLOW_CHUNK);
                let n = f.read_buf(&mut buf).await?;
                if n > 0 {
                    self.pos += n as u64;
                    self.idle = Duration::ZERO;
                    return Ok(Some(buf.freeze()));
                }
            }
            let st = self.rx.borrow_and_update().clone();
            if st.state.is_final() && (self.pos >= st.stdout_size || self.file.is_none()) {
                // One last look: the final status is written after the last byte.
                if let Some(f) = self.file.as_mut() {
                    let mut buf = BytesMut::with_capacity(FOLLOW_CHUNK);
                    if f.read_buf(&mut buf).await? > 0 {
                        self.pos += buf.len() as u64;
                        return Ok(Some(buf.freeze()));
                    }
                }
                return Ok(None);
            }
            // Back off while nothing arrives (1 ms up to 64 ms); a status change wakes us.
            self.idle = (self.idle * 2).clamp(Duration::from_millis(1), Duration::from_millis(64));
            let _ = tokio::time::timeout(self.idle, self.rx.changed()).await;
        }
    }
}
