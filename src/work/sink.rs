//! A unit's file written by one blocking thread fed over a channel (issue 26). A
//! `tokio::fs` write is a round trip to the blocking pool per call (a task spawned, a
//! thread woken, the caller woken again): profiled on the AWX path, those hand-offs cost
//! more than the writes. A [`FileSink`] keeps one thread for the whole transfer, which
//! writes whatever has queued in one go and says how far the file has got.

use std::fs::File;
use std::io::{self, Write};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches queued ahead of the writing thread (the channel's bound): with [`BATCH`], at
/// most 5 MiB of one transfer wait in memory (a payload on each of `control_sessions`).
const QUEUE: usize = 4;
/// Chunks a writer that says more is coming gathers (without copying) before handing
/// them over: one wake-up of the thread per this many bytes, not per 64 KiB chunk.
pub const BATCH: usize = 1 << 20;

/// Told the file's length after each write (bytes in the page cache, not yet synced).
pub type OnWritten = Box<dyn FnMut(u64) + Send>;

/// See the module documentation.
pub struct FileSink {
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    thread: JoinHandle<io::Result<(File, u64)>>,
    pending: Vec<Bytes>,
    pending_len: usize,
}

impl FileSink {
    /// Writes after the file's current end (the file is opened by the caller: append mode
    /// or positioned at its end). `on_written` is told the length after each write.
    pub fn new(file: File, mut on_written: OnWritten) -> FileSink {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(QUEUE);
        let thread = tokio::task::spawn_blocking(move || -> io::Result<(File, u64)> {
            let mut file = file;
            let mut len = file.metadata()?.len();
            while let Some(first) = rx.blocking_recv() {
                let mut batch = first;
                // Whatever queued meanwhile goes out before the length is told.
                loop {
                    for chunk in batch {
                        if let Err(e) = file.write_all(&chunk) {
                            // A write that failed part-way (a full disk) still left bytes
                            // in the file: the length told is the file's, never less.
                            on_written(file.metadata().map_or(len, |m| m.len()));
                            return Err(e);
                        }
                        len += chunk.len() as u64;
                    }
                    match rx.try_recv() {
                        Ok(more) => batch = more,
                        Err(_) => break,
                    }
                }
                on_written(len);
            }
            Ok((file, len))
        });
        FileSink { tx: Some(tx), thread, pending: Vec::new(), pending_len: 0 }
    }

    /// Queues `data` and hands it to the thread at once (a follower waits for it).
    pub async fn write(&mut self, data: Bytes) -> io::Result<()> {
        self.write_more(data, false).await
    }

    /// Queues `data`; when `more_coming`, gathers up to [`BATCH`] bytes before handing
    /// them over. Waits while the writing thread is behind. An error means the thread
    /// stopped (a failed write): [`FileSink::finish`] says why.
    pub async fn write_more(&mut self, data: Bytes, more_coming: bool) -> io::Result<()> {
        if !data.is_empty() {
            self.pending_len += data.len();
            self.pending.push(data);
        }
        if (more_coming && self.pending_len < BATCH) || self.pending.is_empty() {
            return Ok(());
        }
        self.hand_over().await
    }

    async fn hand_over(&mut self) -> io::Result<()> {
        let Some(tx) = self.tx.as_ref() else { return Err(io::Error::other("file sink closed")) };
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        tx.send(batch).await.map_err(|_| io::Error::other("file sink stopped"))
    }

    /// Writes what is queued, then syncs the file's data when `sync`; the file's length.
    pub async fn finish(mut self, sync: bool) -> io::Result<u64> {
        if !self.pending.is_empty() {
            // A failed hand-over means the thread stopped: its error is returned below.
            let _ = self.hand_over().await;
        }
        self.tx = None;
        let (file, len) = (&mut self.thread).await.map_err(io::Error::other)??;
        if sync {
            tokio::task::spawn_blocking(move || file.sync_data()).await.map_err(io::Error::other)??;
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn gathered_and_prompt_writes_all_land_in_order_and_are_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        std::fs::write(&path, b"0").expect("seed");
        let file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        let told = Arc::new(AtomicU64::new(0));
        let t = told.clone();
        let mut sink = FileSink::new(file, Box::new(move |len| t.store(len, Ordering::SeqCst)));
        sink.write(Bytes::from_static(b"1")).await.expect("write");
        // A prompt write reaches the file without finishing the sink.
        for _ in 0..1000 {
            if told.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(told.load(Ordering::SeqCst), 2);
        sink.write_more(Bytes::from_static(b"23"), true).await.expect("gather");
        sink.write_more(Bytes::from_static(b"4"), true).await.expect("gather");
        assert_eq!(sink.finish(true).await.expect("finish"), 5);
        assert_eq!(std::fs::read(&path).expect("read"), b"01234");
        assert_eq!(told.load(Ordering::SeqCst), 5);
    }
}
