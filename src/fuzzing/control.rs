//! Target on the control protocol: line splitting and request parsing.

use std::collections::VecDeque;
use std::io;

use bytes::Bytes;

use crate::control::io::{ByteRead, Line, LineReader};
use crate::control::{connect_target, parse, work};

/// Hands out the input in chunks (as sockets do).
struct Chunks(VecDeque<Bytes>);

impl ByteRead for Chunks {
    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.0.pop_front())
    }
}

const MAX: usize = 4096;

/// The real `LineReader` splits the input (after one byte choosing the chunk size) into
/// request lines, which go through the request parser and the parameter parsers of
/// `connect` and `work`. Lines must be non-empty, within the limit and free of CR/LF.
pub fn control_line(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let chunks = input.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let mut rd = LineReader::new(Chunks(chunks));
    super::runtime().block_on(async {
        // Each line consumes at least one byte, so this ends.
        loop {
            match rd.line(MAX).await.expect("in-memory reads do not fail") {
                Line::Eof | Line::TooLong => break,
                Line::Text(line) => {
                    assert!(!line.is_empty() && line.len() <= MAX * 3, "line out of bounds");
                    assert!(!line.contains(['\r', '\n']), "line keeps CR or LF");
                    request(&line);
                }
            }
        }
    });
}

fn request(line: &str) {
    let Ok((cmd, req)) = parse(line) else { return };
    match cmd.as_str() {
        "connect" => {
            let _ = connect_target(&req);
        }
        "work" => work::parse_request(&req),
        _ => {}
    }
}
