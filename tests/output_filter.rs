//! `RunPrinter` against the real thing: ansible-runner's own `OutputEventFilter` (from the
//! project venv) is fed generated terminal output — event tokens as ansible-runner's
//! display callback writes them, warnings, `\r` progress, text without a line end, form
//! feeds, non-ASCII — one write per piece, in text and JSON mode. What it printed must be
//! exactly what `RunPrinter` prints from the events it emitted. The generated runs stay
//! within what the events can tell (docs/CLI.md): no `\r` written before a line end, and
//! no complete line in the same read as a token.

mod common;

use common::venv_bin;
use receptord::runner::RunPrinter;
use serde_json::Value;
use std::process::Command;

const DRIVER: &str = r#"
import base64, io, json, random, sys
from ansible_runner.utils import OutputEventFilter

def token(data):
    b = base64.b64encode(json.dumps(data).encode()).decode()
    return "\x1b[K" + "".join(f"{b[i:i + 78]}\x1b[{len(b[i:i + 78])}D" for i in range(0, len(b), 78)) + "\x1b[K"

WORDS = ["warning: x", "", "\t tab", "caf\u00e9 \u2603", "\x1b[0;32mok\x1b[0m", "w" * 300, "form\x0cfeed", "a:b"]

def piece(rng, n):
    k = rng.randrange(5)
    word = rng.choice(WORDS)
    if k == 0:  # an event: begin token, display text, end token
        text = "\r\n".join(rng.choice(WORDS) for _ in range(rng.randrange(3)))
        if rng.random() < 0.5:
            text = "\r\n" + text
        return token({"uuid": f"ev-{n}", "event": "runner_on_ok"}) + text + token({})
    if k == 1:  # complete lines, as the pty shows them
        return "".join(rng.choice(WORDS) + "\r\n" for _ in range(1 + rng.randrange(3)))
    if k == 2:  # \r progress that ends its line
        return "".join(f"{i}%\r" for i in range(rng.randrange(4))) + word + "\r\n"
    if k == 3:  # text without a line end (maybe \r progress)
        return "".join(f"{i}%\r" for i in range(rng.randrange(3))) + (word or "p")
    return word + "\x0c" + "\r\n"

def run(pieces, json_mode):
    events = []
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        f = OutputEventFilter(None, lambda e: events.append(json.dumps(e)), output_json=json_mode)
        for p in pieces:
            f.write(p)
        f.close()
    finally:
        sys.stdout = real
    return [e for e in events if json.loads(e).get("event") != "EOF"], out.getvalue()

cases = []
for seed in range(int(sys.argv[1])):
    rng = random.Random(seed)
    pieces = [piece(rng, n) for n in range(1 + rng.randrange(12))]
    for json_mode in (False, True):
        events, printed = run(pieces, json_mode)
        cases.append({"seed": seed, "json": json_mode, "events": events, "printed": printed})
print(json.dumps(cases))
"#;

#[test]
fn prints_what_ansible_runners_output_event_filter_prints() {
    let out =
        Command::new(venv_bin().join("python3")).arg("-c").arg(DRIVER).arg("400").output().expect("python");
    assert!(out.status.success(), "driver failed: {}", String::from_utf8_lossy(&out.stderr));
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).expect("cases");
    assert_eq!(cases.len(), 800);
    let mut with_verbose = 0;
    for case in &cases {
        let mut printer = RunPrinter::new(case["json"].as_bool().expect("json"));
        let mut printed = String::new();
        for e in case["events"].as_array().expect("events") {
            let raw = e.as_str().expect("event line");
            let value: Value = serde_json::from_str(raw).expect("event");
            with_verbose += usize::from(value["event"] == "verbose");
            printer.line(raw.as_bytes(), &value, &mut printed);
        }
        assert_eq!(
            printed,
            case["printed"].as_str().expect("printed"),
            "seed {} json {}",
            case["seed"],
            case["json"]
        );
    }
    assert!(with_verbose > 1000, "the generated runs exercise verbose output ({with_verbose} events)");
}
