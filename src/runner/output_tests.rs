//! The printer against hand-traced runs of ansible-runner's `OutputEventFilter`;
//! tests/output_filter.rs checks it against the real one.

use super::*;
use serde_json::json;

/// A `verbose` event for `stdout` spanning `lines` lines.
fn verbose(stdout: &str, lines: i64) -> Value {
    json!({"event": "verbose", "uuid": "u", "counter": 1, "stdout": stdout, "start_line": 3, "end_line": 3 + lines})
}

fn event(stdout: &str) -> Value {
    json!({"event": "runner_on_ok", "uuid": "e", "counter": 2, "stdout": stdout, "start_line": 0, "end_line": 1})
}

fn print(json_mode: bool, lines: &[Value]) -> String {
    let mut p = RunPrinter::new(json_mode);
    let mut out = String::new();
    for v in lines {
        p.line(v.to_string().as_bytes(), v, &mut out);
    }
    out
}

#[test]
fn complete_lines_print_with_the_terminals_line_end_even_when_blank() {
    let out = print(false, &[verbose("warning: x", 1), verbose("", 1), event("ok")]);
    assert_eq!(out, "warning: x\r\n\r\nok\n");
}

#[test]
fn a_fragment_cut_by_the_next_token_prints_with_lf() {
    assert_eq!(print(false, &[verbose("no newline", 0), event("ok")]), "no newline\nok\n");
}

#[test]
fn a_fragment_left_at_the_end_prints_nothing() {
    let status = json!({"status": "successful", "runner_ident": "x"});
    assert_eq!(print(false, &[event("ok"), verbose("bye", 0), status]), "ok\n");
}

#[test]
fn carriage_return_fragments_of_a_complete_line_print_as_written() {
    // "a\rb\r\n" read at once: splitlines gives "a\r" and "b\r\n", both printed raw.
    assert_eq!(print(false, &[verbose("a", 0), verbose("b", 1)]), "a\rb\r\n");
    // A separator that rstrip('\n\r') keeps stays in stdout and is not doubled.
    assert_eq!(print(false, &[verbose("a\x0c", 0), verbose("b", 1)]), "a\x0cb\r\n");
}

#[test]
fn only_the_last_fragment_before_a_token_prints() {
    // "50%\r100%" then a token: one buffer, emitted as two verbose events, the last printed.
    assert_eq!(print(false, &[verbose("50%", 0), verbose("100%", 0), event("ok")]), "100%\nok\n");
}

#[test]
fn events_without_stdout_print_nothing_in_text_mode() {
    assert_eq!(print(false, &[event(""), event("x")]), "x\n");
}

#[test]
fn json_mode_prints_events_as_json_and_complete_lines_as_text() {
    let (v, e) = (verbose("tail", 0), event(""));
    let out = print(true, &[verbose("warn", 1), v.clone(), e.clone()]);
    assert_eq!(out, format!("warn\r\n{v}\n{e}\n"));
}

#[test]
fn non_event_lines_print_nothing() {
    let lines =
        [json!({"status": "running"}), json!({"event": "keepalive"}), json!({"stdout": "no counter"})];
    assert_eq!(print(false, &lines), "");
}

#[test]
fn held_fragments_are_bounded() {
    let mut lines: Vec<Value> = (0..MAX_HELD + 5).map(|i| verbose(&i.to_string(), 0)).collect();
    lines.push(event("done"));
    let out = print(false, &lines);
    // The oldest five gave way (printed as written); the last held one printed before the event.
    assert!(out.starts_with("0\r1\r2\r3\r4\r"), "{out:?}");
    assert!(out.ends_with(&format!("{}\ndone\n", MAX_HELD + 4)), "{out:?}");
}
