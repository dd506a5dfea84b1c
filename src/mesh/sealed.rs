//! The sealed side of [`StreamWriter`] and [`StreamReader`]: once a stream's end-to-end
//! handshake (`mesh::e2e`) has keyed them, writes become sealed records and reads open
//! them (`mesh::seal`); a record that fails its check resets the stream both ways.

use bytes::Bytes;

use super::seal::{IntegrityError, Kind, Sealer, Unsealer};
use super::stream::{Chunk, StreamError, StreamReader, StreamWriter};
use crate::wire::Body;

impl StreamWriter {
    /// From now on, everything written is sealed with `sealer`.
    pub(crate) fn protect(&mut self, sealer: Sealer) {
        self.seal = Some(Box::new(sealer));
    }

    /// Whether the stream is protected end to end.
    pub fn protected(&self) -> bool {
        self.seal.is_some()
    }

    pub(super) fn sealed(&mut self, kind: Kind, payload: &[u8]) -> Result<Bytes, StreamError> {
        match self.seal.as_mut().map(|s| s.seal(kind, payload)) {
            Some(Ok(record)) => Ok(record),
            Some(Err(e)) => Err(StreamError::Integrity(e.to_string())),
            None => Ok(Bytes::copy_from_slice(payload)),
        }
    }

    /// Sends the opener's real stream header as the first sealed records.
    pub(crate) async fn send_header(&mut self, header: Bytes) -> Result<(), StreamError> {
        for (kind, part) in super::e2e::header_records(&header) {
            let record = self.sealed(kind, part)?;
            self.write_raw(record).await?;
        }
        Ok(())
    }
}

impl StreamReader {
    /// From now on, everything received must be records sealed for `unsealer`.
    pub(crate) fn protect(&mut self, unsealer: Unsealer) {
        self.unseal = Some(Box::new(unsealer));
    }

    /// The opener's stream header: the first sealed records (acceptor side).
    pub(crate) async fn recv_header(&mut self) -> Result<Bytes, super::e2e::HandshakeError> {
        use super::e2e::HandshakeError;
        let mut header = Vec::new();
        loop {
            let (kind, part) = self.next_record().await.map_err(|e| match e {
                StreamError::Integrity(_) => HandshakeError::Integrity(IntegrityError::BadRecord),
                StreamError::Reset(why) | StreamError::Sequence(why) => HandshakeError::Stream(why),
            })?;
            if header.len() + part.len() > crate::wire::MAX_META {
                return Err(HandshakeError::HeaderTooLarge(header.len() + part.len()));
            }
            header.extend_from_slice(&part);
            match kind {
                Kind::Header => return Ok(header.into()),
                Kind::HeaderMore => {}
                Kind::Data | Kind::End => return Err(HandshakeError::NoHeader),
            }
        }
    }

    pub(super) async fn next_record(&mut self) -> Result<(Kind, Bytes), StreamError> {
        loop {
            let next = match self.unseal.as_mut() {
                Some(u) => u.next(),
                None => return Err(StreamError::Reset("stream is not protected".into())),
            };
            match next {
                Ok(Some(record)) => return Ok(record),
                Ok(None) => {}
                Err(e) => return Err(self.integrity_failed(e).await),
            }
            match self.recv_raw().await? {
                Chunk::Data(data) => {
                    if let Some(u) = self.unseal.as_mut() {
                        u.push(&data);
                    }
                }
                Chunk::End(trailer) => {
                    let why = match self.unseal.as_ref().map(|u| u.finish()) {
                        _ if !trailer.is_empty() => IntegrityError::BadRecord,
                        Some(Err(e)) => e,
                        _ => IntegrityError::AfterEnd,
                    };
                    return Err(self.integrity_failed(why).await);
                }
            }
        }
    }

    /// The stream's bytes are not what the other end sent: reset it both ways, loudly.
    /// An early end (no authenticated end record) is a [`StreamError::Sequence`] failure:
    /// a reroute can cut a stream short too; anything else is proof of tampering.
    pub(super) async fn integrity_failed(&mut self, e: IntegrityError) -> StreamError {
        self.ended = true;
        let proof = !matches!(e, IntegrityError::Truncated);
        crate::metrics::global().stream_auth_failed(if proof { "integrity" } else { "sequence" });
        let reason = format!("integrity check failed: {e}");
        static FAILED: crate::logging::Throttle =
            crate::logging::Throttle::new(std::time::Duration::from_secs(10), 5);
        if let Some(suppressed) = FAILED.allow() {
            tracing::warn!(peer = %self.key.peer, stream = self.key.id, suppressed,
                "end-to-end protected stream: {reason}");
        }
        let body = Body::Reset { stream: self.key.id, from: self.key.local, reason: reason.as_str().into() };
        self.router.originate(&self.key.peer, body).await;
        self.router.streams.reset_one(&self.key, &reason);
        if proof { StreamError::Integrity(e.to_string()) } else { StreamError::Sequence(e.to_string()) }
    }
}
