//! The byte pipes a plugin reads its input from and writes its output to. They wrap mesh
//! streams or a work unit's files, so plugins never see frames, links or sockets.

use bytes::Bytes;

use tokio::sync::mpsc;

use crate::mesh::{Chunk, StreamReader};

/// Block size of reads from a work unit's `stdin` file.
const STDIN_READ: usize = 1 << 20;

/// A job's input (the requester's payload).
pub struct JobInput {
    source: Source,
}

enum Source {
    Stream(StreamReader),
    File(tokio::fs::File),
    Done,
}

/// Why reading or writing job data failed.
#[derive(Debug, thiserror::Error)]
#[error("requester stream failed: {0}")]
pub struct PipeError(pub String);

impl JobInput {
    pub fn new(reader: StreamReader) -> JobInput {
        JobInput { source: Source::Stream(reader) }
    }

    /// Input read from a file (a work unit's `stdin`).
    pub fn file(file: tokio::fs::File) -> JobInput {
        JobInput { source: Source::File(file) }
    }

    /// The file this input reads from, from where it stands, for a child to read itself
    /// (a work unit's `stdin`, complete before its job starts); a stream gives itself back.
    pub async fn into_file(self) -> Result<std::fs::File, JobInput> {
        match self.source {
            Source::File(file) => Ok(file.into_std().await),
            source => Err(JobInput { source }),
        }
    }

    /// The next chunk of input, or `None` at its end.
    pub async fn read(&mut self) -> Result<Option<Bytes>, PipeError> {
        let result = match &mut self.source {
            Source::Done => return Ok(None),
            Source::Stream(reader) => match reader.recv().await {
                Ok(Chunk::Data(b)) => return Ok(Some(b)),
                Ok(Chunk::End(_)) => Ok(None),
                Err(e) => Err(PipeError(e.to_string())),
            },
            Source::File(file) => {
                use tokio::io::AsyncReadExt;
                // Large reads: each is a hop to the blocking pool (issue 26).
                let mut buf = bytes::BytesMut::with_capacity(STDIN_READ);
                match file.read_buf(&mut buf).await {
                    Ok(0) => Ok(None),
                    Ok(_) => return Ok(Some(buf.freeze())),
                    Err(e) => Err(PipeError(format!("reading the unit's stdin: {e}"))),
                }
            }
        };
        self.source = Source::Done;
        result
    }
}

/// A job's output, streamed back to the requester as it is produced. Writes wait while
/// the requester is slow (the queue behind it holds only a few chunks).
#[derive(Clone)]
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
