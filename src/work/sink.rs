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

/// Chunks queued ahead of the writing thread (the channel's bound; a transfer's chunks
/// are up to 64 KiB from the mesh or a socket, so a few MiB in flight at most).
const QUEUE: usize = 64;

/// Told the file's length after each write (bytes in the page cache, not yet synced).
pub type OnWritten = Box<dyn FnMut(u64) + Send>;

/// See the module documentation.
pub struct FileSink {
    tx: Option<mpsc::Sender<Bytes>>,
    thread: JoinHandle<io::Result<(File, u64)>>,
}

impl FileSink {
    /// Writes after the file's current end (the file is opened by the caller: append mode
    /// or positioned at its end). `on_written` is told the length after each write.
    pub fn new(file: File, mut on_written: OnWritten) -> FileSink {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let thread = tokio::task::spawn_blocking(move || -> io::Result<(File, u64)> {
            let mut file = file;
            let mut len = file.metadata()?.len();
            while let Some(first) = rx.blocking_recv() {
                file.write_all(&first)?;
                len += first.len() as u64;
                // Whatever queued meanwhile goes out before the length is told.
                while let Ok(more) = rx.try_recv() {
                    file.write_all(&more)?;
                    len += more.len() as u64;
                }
                on_written(len);
            }
            Ok((file, len))
        });
        FileSink { tx: Some(tx), thread }
    }

    /// Queues `data`; waits while the writing thread is behind. An error means the thread
    /// stopped (a failed write): [`FileSink::finish`] says why.
    pub async fn write(&mut self, data: Bytes) -> io::Result<()> {
        let Some(tx) = self.tx.as_ref() else { return Err(io::Error::other("file sink closed")) };
        if data.is_empty() {
            return Ok(());
        }
        tx.send(data).await.map_err(|_| io::Error::other("file sink stopped"))
    }

    /// Writes what is queued, then syncs the file's data when `sync`; the file's length.
    pub async fn finish(mut self, sync: bool) -> io::Result<u64> {
        self.tx = None;
        let (file, len) = (&mut self.thread).await.map_err(io::Error::other)??;
        if sync {
            tokio::task::spawn_blocking(move || file.sync_data()).await.map_err(io::Error::other)??;
        }
        Ok(len)
    }
}
