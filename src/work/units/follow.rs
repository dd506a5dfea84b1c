//! `work results`: a unit's output from any byte offset, following it while it runs.

use std::io::Seek;

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
    file: Option<std::fs::File>,
    pos: u64,
    idle: Duration,
    /// A follower keeps the unit's lease.
    _attached: crate::work::lease::Attached,
}

impl Follow {
    /// The next bytes, or `None` once the unit is complete and everything was read (or
    /// the unit was released).
    pub async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            if self.unit.is_releasing() {
                return Ok(None);
            }
            if let Some(block) = self.read().await? {
                self.idle = Duration::ZERO;
                return Ok(Some(block));
            }
            let st = self.rx.borrow_and_update().clone();
            if st.state.is_final() && (self.pos >= st.stdout_size || self.file.is_none()) {
                // One last look: the final status is written after the last byte.
                return self.read().await;
            }
            // Back off while nothing arrives (1 ms up to 64 ms); a status change wakes us.
            self.idle = (self.idle * 2).clamp(Duration::from_millis(1), Duration::from_millis(64));
            let _ = tokio::time::timeout(self.idle, self.rx.changed()).await;
        }
    }

    /// What the file holds past `pos` (up to [`FOLLOW_CHUNK`]), opening it at `pos` first
    /// if it exists by now; `None` if nothing is there yet. One hop to the blocking pool,
    /// reading straight into the block handed on (a `tokio::fs::File` reads into a buffer
    /// of its own and copies from it).
    async fn read(&mut self) -> std::io::Result<Option<Bytes>> {
        let (file, path, pos) = (self.file.take(), self.unit.stdout_path(), self.pos);
        let (file, block) = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => match std::fs::File::open(path) {
                    Ok(mut f) => {
                        f.seek(std::io::SeekFrom::Start(pos))?;
                        f
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Bytes::new())),
                    Err(e) => return Err(e),
                },
            };
            let block = crate::work::payload::read_up_to(&mut file, FOLLOW_CHUNK)?;
            Ok((Some(file), block))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.file = file;
        if block.is_empty() {
            return Ok(None);
        }
        self.pos += block.len() as u64;
        Ok(Some(block))
    }
}
