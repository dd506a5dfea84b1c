//! The byte pipes a plugin reads its input from and writes its output to. They wrap mesh
//! streams so plugins never see frames, links or sockets.

use bytes::Bytes;

use tokio::sync::mpsc;

use crate::mesh::{Chunk, StreamReader};

/// A job's input (the requester's payload).
pub struct JobInput {
    reader: Option<StreamReader>,
}

/// Why reading or writing job data failed.
#[derive(Debug, thiserror::Error)]
#[error("requester stream failed: {0}")]
pub struct PipeError(pub String);

impl JobInput {
    pub fn new(reader: StreamReader) -> JobInput {
        JobInput { reader: Some(reader) }
    }

    /// The next chunk of input, or `None` at its end.
    pub async fn read(&mut self) -> Result<Option<Bytes>, PipeError> {
        let Some(reader) = self.reader.as_mut() else { return Ok(None) };
        match reader.recv().await {
            Ok(Chunk::Data(b)) => Ok(Some(b)),
            Ok(Chunk::End(_)) => {
                self.reader = None;
                Ok(None)
            }
            Err(e) => {
                self.reader = None;
                Err(PipeError(e.to_string()))
            }
        }
    }
}

/// A job's output, streamed back to the requester as it is produced. Writes wait while
/// the requester is slow (the queue behind it holds only a few chunks).
pub struct JobOutput {
    tx: mpsc::Sender<Bytes>,
}

impl JobOutput {
    /// Creates an output and the receiving end the job service pumps into the stream.
    pub fn channel() -> (JobOutput, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(4);
        (JobOutput { tx }, rx)
    }

    pub async fn write(&mut self, data: Bytes) -> Result<(), PipeError> {
        self.tx.send(data).await.map_err(|_| PipeError("requester stream closed".into()))
    }
}
