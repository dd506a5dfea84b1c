//! A payload forwarded while it still arrives (issue 26). A remote unit's payload is
//! stored in its `stdin` file as the client sends it; the remote driver reads the same
//! file behind the writer and forwards it at once, instead of waiting for the whole
//! payload. The remote node only ever sees the end of the payload once it is complete
//! and synced here (what the client is told was received is on disk); a payload that
//! fails to arrive makes the reader fail, and the forwarding stream is abandoned (reset),
//! never ended, so the remote node never runs a truncated payload.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;
use tokio::sync::watch;

/// Largest read of the payload file: each read is a hop to the blocking pool.
pub const READ_BLOCK: usize = 1 << 20;

/// Up to `max` bytes from the file's position (fewer at its current end), read straight
/// into a buffer that is never zeroed first (`read_to_end` fills spare capacity): a unit's
/// files are read in 1 MiB blocks, and zeroing each block before the read overwrites it
/// cost as much as a copy. Blocking: call it on the blocking pool.
pub(crate) fn read_up_to(file: &mut File, max: usize) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(max);
    file.take(max as u64).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// How far a payload has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// This many bytes are in the file so far; more may come.
    Arriving(u64),
    /// The payload is whole (and synced): this many bytes.
    Complete(u64),
    /// The payload will never be whole.
    Failed,
}

/// The writing side's announcements (held by whoever receives the payload).
pub type ArrivalSender = watch::Sender<Arrival>;
/// See [`ArrivalSender`].
pub type ArrivalWatch = watch::Receiver<Arrival>;

/// Announcements for a payload that has only begun to arrive.
pub fn arriving() -> (ArrivalSender, ArrivalWatch) {
    watch::channel(Arrival::Arriving(0))
}

/// Reads a payload file from its start, following it while it arrives.
pub struct PayloadReader {
    file: Option<File>,
    pos: u64,
    arrival: ArrivalWatch,
}

impl PayloadReader {
    /// Reads `path`; `arrival` says how far it has arrived (`None`: it is complete).
    pub async fn open(path: &Path, arrival: Option<ArrivalWatch>) -> io::Result<PayloadReader> {
        let path = path.to_owned();
        let file =
            tokio::task::spawn_blocking(move || File::open(path)).await.map_err(io::Error::other)??;
        let arrival = match arrival {
            Some(a) => a,
            None => {
                let len = file.metadata()?.len();
                watch::channel(Arrival::Complete(len)).1
            }
        };
        Ok(PayloadReader { file: Some(file), pos: 0, arrival })
    }

    /// The next block, `None` once the payload is whole and all was read; an error if it
    /// failed to arrive.
    pub async fn read(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let now = *self.arrival.borrow_and_update();
            let end = match now {
                Arrival::Failed => return Err(io::Error::other("the payload failed to arrive")),
                Arrival::Arriving(n) | Arrival::Complete(n) => n,
            };
            if self.pos < end {
                let want = (end - self.pos).min(READ_BLOCK as u64) as usize;
                let file = self.file.take().ok_or_else(|| io::Error::other("payload reader failed"))?;
                let pos = self.pos;
                // The file is read in order from its start: its own position is `pos`.
                let (file, block) = tokio::task::spawn_blocking(move || {
                    let mut file = file;
                    let r = read_up_to(&mut file, want).and_then(|b| {
                        if b.len() == want {
                            return Ok(b);
                        }
                        let why = format!("the payload file ends before byte {}", pos + want as u64);
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, why))
                    });
                    (file, r)
                })
                .await
                .map_err(io::Error::other)?;
                // A failed read leaves the file's position unknown: no later read may
                // go on from it (the reader fails from now on).
                let block = block?;
                self.file = Some(file);
                self.pos += block.len() as u64;
                return Ok(Some(block));
            }
            if matches!(now, Arrival::Complete(_)) {
                return Ok(None);
            }
            if self.arrival.changed().await.is_err() {
                // The receiving side went away without a verdict.
                return Err(io::Error::other("the payload failed to arrive"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follows_a_growing_file_and_ends_only_when_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdin");
        std::fs::write(&path, b"abc").expect("write");
        let (tx, rx) = arriving();
        tx.send_replace(Arrival::Arriving(3));
        let mut r = PayloadReader::open(&path, Some(rx)).await.expect("open");
        assert_eq!(r.read().await.expect("read").as_deref(), Some(&b"abc"[..]));
        let more = tokio::spawn(async move {
            let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
            std::io::Write::write_all(&mut f, b"de").expect("append");
            tx.send_replace(Arrival::Arriving(5));
            tx.send_replace(Arrival::Complete(5));
        });
        let mut rest = Vec::new();
        while let Some(b) = r.read().await.expect("read") {
            rest.extend_from_slice(&b);
        }
        more.await.expect("writer");
        assert_eq!(rest, b"de");
    }

    #[tokio::test]
    async fn a_file_shorter_than_announced_is_an_error_and_stays_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdin");
        std::fs::write(&path, b"abc").expect("write");
        let (tx, rx) = arriving();
        tx.send_replace(Arrival::Complete(5));
        let mut r = PayloadReader::open(&path, Some(rx)).await.expect("open");
        let e = r.read().await.expect_err("two bytes are missing");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::write(&path, b"abcde").expect("the rest, too late");
        assert!(r.read().await.is_err(), "no read goes on from an unknown position");
    }

    #[tokio::test]
    async fn a_failed_payload_is_an_error_not_an_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdin");
        std::fs::write(&path, b"ab").expect("write");
        let (tx, rx) = arriving();
        tx.send_replace(Arrival::Arriving(2));
        let mut r = PayloadReader::open(&path, Some(rx)).await.expect("open");
        assert!(r.read().await.expect("read").is_some());
        tx.send_replace(Arrival::Failed);
        assert!(r.read().await.is_err());
        let (tx, rx) = arriving();
        let mut r = PayloadReader::open(&path, Some(rx)).await.expect("open");
        drop(tx);
        assert!(r.read().await.is_err(), "a vanished writer is no end of input");
    }
}
