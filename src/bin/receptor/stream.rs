//! `receptor run --events-stream`: the run as JSON Lines on stdout, the contract the
//! Python package (`packaging/python/receptord`) reads. One object per line, each with a
//! `type`; documented in docs/EVENTS-STREAM.md. Errors carry a `kind` chosen from the
//! client's error variants, so callers never parse message text.

use std::io::Write;
use std::sync::{Arc, Mutex};

use receptord::client::ClientError;
use receptord::client::run::{Callbacks, RunError, RunOutcome};
use receptord::mesh::OpenError;
use serde_json::{Value, json};

/// The run's printed output as `output` lines: what is written between two flushes (the
/// client flushes after each piece of output) becomes one line's `text`.
struct OutputLines {
    stream: Stream,
    text: Vec<u8>,
}

impl Write for OutputLines {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.text).into_owned();
        self.text.clear();
        for piece in pieces(&text, MAX_OUTPUT_TEXT) {
            self.stream.emit(&json!({"type": "output", "text": piece}));
        }
        Ok(())
    }
}

/// Bytes of text per `output` line at most (JSON-escaped, at most 6 times as many), so one
/// huge event never makes a line that a reader's line limit cuts in two.
const MAX_OUTPUT_TEXT: usize = 1 << 20;

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    out
}

/// Version of the stream's format, sent in the `start` line.
pub const STREAM_VERSION: u32 = 1;

/// Writes whole lines to stdout; shared by the callbacks (they run on the client's tasks).
#[derive(Clone)]
pub struct Stream(Arc<Mutex<std::io::Stdout>>);

impl Stream {
    pub fn new() -> Stream {
        Stream(Arc::new(Mutex::new(std::io::stdout())))
    }

    pub fn emit(&self, line: &Value) {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A closed stdout means the reader is gone: nothing left to tell.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    /// Callbacks that send statuses, events and notices down the stream.
    pub fn callbacks(&self) -> Callbacks {
        let (ev, st, no) = (self.clone(), self.clone(), self.clone());
        Callbacks {
            event_handler: Some(Box::new(move |e| ev.emit(&json!({"type": "event", "event": e})))),
            status_handler: Some(Box::new(move |s| st.emit(&json!({"type": "status", "status": s})))),
            notice_handler: Some(Box::new(move |m| no.emit(&json!({"type": "notice", "message": m})))),
            output: Some(Box::new(OutputLines { stream: self.clone(), text: Vec::new() })),
            progress: false,
        }
    }

    /// The last lines of a completed run: its artifacts, then its status and rc.
    pub fn finished(&self, o: &RunOutcome) {
        let dir = o.artifact_dir.display().to_string();
        self.emit(&json!({"type": "artifacts", "artifact_dir": dir}));
        self.emit(&json!({
            "type": "finished", "status": o.status, "rc": o.rc, "ident": o.ident, "artifact_dir": dir,
        }));
    }

    /// The last line of a run that could not complete.
    pub fn error(&self, e: &RunError) {
        let mut line = json!({"type": "error", "kind": kind(e), "message": e.to_string()});
        if let RunError::Client(ClientError::Open(OpenError::UnknownNode { known, .. })) = e {
            line["known_nodes"] = json!(known.iter().map(|n| n.as_str()).collect::<Vec<_>>());
        }
        self.emit(&line);
    }
}

/// The machine-readable kind of a run error (docs/EVENTS-STREAM.md lists them).
pub fn kind(e: &RunError) -> &'static str {
    match e {
        RunError::BadPdd { .. } | RunError::BadOptions(_) => "bad_options",
        RunError::Client(ClientError::Open(OpenError::UnknownNode { .. })) => "unknown_node",
        RunError::Client(ClientError::Join(_) | ClientError::Tls(_) | ClientError::Identity(_)) => {
            "unreachable_peer"
        }
        RunError::Client(_) => "connection",
        RunError::Worker { reason, .. } => worker_kind(reason),
        RunError::Remote(_) => "no_worker",
        RunError::Pack(_) => "pack",
        RunError::Stream { .. } | RunError::Artifacts(_) => "stream",
        RunError::Stopped(_) => "canceled",
        RunError::Integrity(_) => "integrity",
        RunError::Failed { .. } => "failed",
    }
}

/// A node's refusal arrives as the text of the control protocol (Go Receptor's wire
/// format has no error codes); the node's two refusal families are told apart here, in
/// this one place, by the prefixes the node's own error types print.
fn worker_kind(reason: &str) -> &'static str {
    if reason.starts_with("archive refused") {
        "refused_archive"
    } else if reason.contains("could not verify signature") {
        "refused_signature"
    } else {
        "refused"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_text_is_cut_at_character_boundaries() {
        let text = "é".repeat(5);
        assert_eq!(pieces(&text, 3), ["é", "é", "é", "é", "é"]);
        assert_eq!(pieces("abcde", 2), ["ab", "cd", "e"]);
        assert!(pieces("", 2).is_empty());
    }

    #[test]
    fn error_kinds_follow_the_variants() {
        let node: receptord::wire::NodeId = "node3".parse().expect("id");
        let worker = |reason: &str| RunError::Worker { node: node.clone(), reason: reason.into() };
        assert_eq!(
            kind(&worker("archive refused: refused zip entry \"x\": total size limit")),
            "refused_archive"
        );
        assert_eq!(kind(&worker("could not verify signature: signature is empty")), "refused_signature");
        assert_eq!(kind(&worker("something else")), "refused");
        let unknown = RunError::Client(ClientError::Open(OpenError::UnknownNode {
            node,
            known: vec![],
            only_leaves: vec![],
        }));
        assert_eq!(kind(&unknown), "unknown_node");
        assert_eq!(kind(&RunError::Stopped("interrupted".into())), "canceled");
        assert_eq!(kind(&RunError::BadOptions("x".into())), "bad_options");
    }
}
