//! What `ansible-runner run` prints, rebuilt from the events of a worker stream.
//!
//! A local run prints through `OutputEventFilter` (ansible_runner/utils, 2.4.3), which reads
//! the job's terminal and writes the same bytes to the screen and to `artifacts/<ident>/stdout`:
//! - an event (text between the display callback's tokens): its `stdout` plus LF, when
//!   `stdout` is non-empty (with `json_mode`, the event as JSON plus LF);
//! - complete lines outside any event (warnings, `print()`s, anything on stderr): as the job
//!   wrote them through its terminal, `\r\n` included. Each also becomes a `verbose` event,
//!   whose `stdout` has the line end stripped;
//! - text without a line end when the next event's token arrives: split into `verbose`
//!   events (at `\r`, ...), of which only the last is printed, as `stdout` plus LF;
//! - text without a line end when the job exits: nothing (it is only a `verbose` event).
//!
//! The worker stream carries only the events, so [`RunPrinter`] rebuilds the bytes from their
//! order and line spans: a `verbose` event spanning a line (`end_line > start_line`) was a
//! complete line, printed with the terminal's line end (`\r\n`: ansible-runner runs jobs on a
//! pty); a run of `verbose` events spanning no line is held until the next event tells which
//! case it was (another `verbose` line: printed as written, ending in `\r`; a callback event:
//! only the last, plus LF; the end of the stream: nothing). Where the terminal's bytes are not
//! in the events at all, it cannot match: a job writing `\r` itself before its line end
//! (`\r\r\n` on the pty), or complete lines arriving in the same read as the next token (the
//! local run then prints only the last of them, depending on timing). docs/CLI.md says so.

use std::collections::VecDeque;

use serde_json::Value;

use crate::runner::decode::{LineKind, kind};

/// One `verbose` event spanning no line, waiting for the next event to tell how it printed.
#[derive(Debug)]
struct Held {
    stdout: String,
    raw: String,
}

/// Turns the events of one worker stream, fed in order, into the bytes a local
/// `ansible-runner run` of the same job prints.
#[derive(Debug, Default)]
pub struct RunPrinter {
    json_mode: bool,
    held: VecDeque<Held>,
}

/// How many `verbose` fragments are held at most before the oldest is printed as written: a
/// job printing `\r`-separated progress for hours without a line end must not grow memory.
const MAX_HELD: usize = 1024;

impl RunPrinter {
    /// A printer for a run in text mode, or JSON mode (`ansible-runner run -j`).
    pub fn new(json_mode: bool) -> RunPrinter {
        RunPrinter { json_mode, held: VecDeque::new() }
    }

    /// The next line of the stream (`raw`, without its LF, and its parsed `value`); appends
    /// to `out` whatever a local run would have printed by now. Lines that are not events
    /// print nothing.
    pub fn line(&mut self, raw: &[u8], value: &Value, out: &mut String) {
        if kind(value) != LineKind::Event {
            return;
        }
        let stdout = value.get("stdout").and_then(Value::as_str).unwrap_or("");
        if value.get("event").and_then(Value::as_str) != Some("verbose") {
            // The token of this event ended a buffer: of the fragments held, the last printed.
            if let Some(last) = self.held.pop_back() {
                self.print_flushed(&last.stdout, &last.raw, out);
            }
            self.held.clear();
            self.print_flushed(stdout, &String::from_utf8_lossy(raw), out);
            return;
        }
        let span = |k: &str| value.get(k).and_then(Value::as_i64).unwrap_or(0);
        if span("end_line") > span("start_line") {
            // A complete line; the fragments before it were complete too (`\r`-ended).
            self.print_held_as_written(out);
            out.push_str(stdout);
            out.push_str("\r\n");
        } else {
            if self.held.len() == MAX_HELD
                && let Some(first) = self.held.pop_front()
            {
                print_as_written(&first.stdout, out);
            }
            let raw = String::from_utf8_lossy(raw).into_owned();
            self.held.push_back(Held { stdout: stdout.to_owned(), raw });
        }
    }

    /// What `OutputEventFilter` prints for an event its token search returned.
    fn print_flushed(&self, stdout: &str, raw: &str, out: &mut String) {
        if self.json_mode {
            out.push_str(raw.trim());
            out.push('\n');
        } else if !stdout.is_empty() {
            out.push_str(stdout);
            out.push('\n');
        }
    }

    fn print_held_as_written(&mut self, out: &mut String) {
        for h in self.held.drain(..) {
            print_as_written(&h.stdout, out);
        }
    }
}

/// A fragment that `splitlines` cut at a separator other than LF: `\r` (stripped from its
/// `stdout`) unless the separator is one of those `rstrip('\n\r')` leaves in place.
fn print_as_written(stdout: &str, out: &mut String) {
    out.push_str(stdout);
    let kept = stdout.ends_with(['\x0b', '\x0c', '\x1c', '\x1d', '\x1e', '\u{85}', '\u{2028}', '\u{2029}']);
    if !kept {
        out.push('\r');
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
