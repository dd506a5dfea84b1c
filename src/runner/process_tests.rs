//! Unit tests for the `process` equivalent: a hand-made worker stream must produce the same
//! artifact tree `ansible-runner process PDD --ident ID` writes.

use super::*;
use crate::runner::decode::{DecodeLimits, StreamDecoder};
use crate::runner::pack;
use std::os::unix::fs::MetadataExt;

const EV1: &str = concat!(
    r#"{"uuid": "f07e4a56-7859-48e4-ae62-02a8b2a6ea60", "counter": 1, "stdout": "", "#,
    r#""start_line": 0, "end_line": 0, "runner_ident": "job42", "event": "playbook_on_start", "#,
    r#""pid": 6285, "created": "2026-11-28T16:49:11.768140+00:00", "event_data": {}}"#
);
const EV2: &str = concat!(
    r#"{"uuid": "02fc0000-0001-5c1b-78b0-000000000002", "counter": 2, "#,
    r#""stdout": "\r\nPLAY [Two task play] ***\u001b[0;32m h\u00e9\u001b[0m", "start_line": 0, "#,
    r#""end_line": 2, "runner_ident": "job42", "event": "playbook_on_play_start", "#,
    r#""event_data": {"duration": 0.018666}}"#
);

/// The worker-side artifact dir that goes into the zip section.
fn worker_artifacts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let files: [(&str, &str, u32); 5] = [
        ("command", "{\"command\": [\"ansible-playbook\"]}", 0o600),
        ("rc", "0", 0o600),
        ("status", "successful", 0o600),
        ("stdout", "\r\nPLAY [Two task play] ***", 0o600),
        ("stderr", "", 0o644),
    ];
    for (name, text, mode) in files {
        fs::write(p.join(name), text).expect("write");
        fs::set_permissions(p.join(name), fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::DirBuilder::new().mode(0o700).create(p.join("job_events")).expect("mkdir");
    fs::create_dir(p.join("fact_cache")).expect("mkdir");
    fs::write(p.join("fact_cache/localhost"), "{}").expect("write");
    dir
}

fn worker_stream() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"{\"event\": \"keepalive\", \"counter\": 0, \"uuid\": 0}\n");
    s.extend_from_slice(b"{\"status\": \"starting\", \"runner_ident\": \"job42\"}\n");
    s.extend_from_slice(b"{\"status\": \"running\", \"runner_ident\": \"job42\"}\n");
    for ev in [EV1, EV2] {
        s.extend_from_slice(ev.as_bytes());
        s.push(b'\n');
    }
    s.extend_from_slice(b"{\"uuid\": \"\", \"counter\": 3, \"stdout\": \"dropped\"}\n");
    s.extend_from_slice(b"{\"status\": \"successful\", \"runner_ident\": \"job42\"}\n");
    let src = worker_artifacts();
    let mut zip = tempfile::tempfile().expect("tmp");
    let size = pack::zip_dir(src.path(), &mut zip, &mut |_| {}).expect("zip");
    zip.seek(SeekFrom::Start(0)).expect("seek");
    pack::write_zip_section(&mut s, &mut zip, size).expect("section");
    s.extend_from_slice(pack::EOF_LINE);
    s
}

fn run_process(stream: &[u8], artifact_dir: PathBuf, step: usize) -> (ArtifactWriter, String) {
    let mut w = ArtifactWriter::new(artifact_dir).expect("writer");
    let mut dec = StreamDecoder::new(DecodeLimits::default());
    let mut printer = crate::runner::RunPrinter::new(false);
    let mut printed = String::new();
    for piece in stream.chunks(step) {
        dec.feed(piece);
        while let Some(item) = dec.next_item().expect("decode") {
            if let Item::Line { raw, value } = &item {
                printer.line(raw, value, &mut printed);
            }
            w.handle(&item).expect("handle");
        }
    }
    dec.finish().expect("complete stream");
    (w, printed)
}

#[test]
fn artifact_tree_matches_ansible_runner_process() {
    let pdd = tempfile::tempdir().expect("tempdir");
    let adir = pdd.path().join("artifacts/job42");
    let (w, printed) = run_process(&worker_stream(), adir.clone(), 7);
    assert_eq!(printed, "\r\nPLAY [Two task play] ***\u{1b}[0;32m h\u{e9}\u{1b}[0m\n");
    assert_eq!(w.last_status(), Some(&serde_json::json!({"status": "successful", "runner_ident": "job42"})));
    let mode = |p: &Path| fs::symlink_metadata(p).expect("stat").mode() & 0o7777;
    assert_eq!(mode(&adir.join("job_events")), 0o700);
    let mut events: Vec<String> = fs::read_dir(adir.join("job_events"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    events.sort();
    assert_eq!(
        events,
        ["1-f07e4a56-7859-48e4-ae62-02a8b2a6ea60.json", "2-02fc0000-0001-5c1b-78b0-000000000002.json",]
    );
    let ev2 = adir.join("job_events").join(&events[1]);
    assert_eq!(fs::read(&ev2).expect("read"), EV2.as_bytes(), "wire line without LF");
    assert_eq!(mode(&ev2), 0o600);
    assert_eq!(fs::read(adir.join("rc")).expect("rc"), b"0");
    assert_eq!(fs::read(adir.join("status")).expect("status"), b"successful");
    assert_eq!(mode(&adir.join("stdout")), 0o600);
    assert_eq!(mode(&adir.join("stderr")), 0o644);
    assert_eq!(fs::read(adir.join("fact_cache/localhost")).expect("facts"), b"{}");
}

#[test]
fn hostile_event_names_are_not_used_as_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = ArtifactWriter::new(dir.path().join("a")).expect("writer");
    let v = serde_json::json!({"uuid": "../../escape", "counter": 1, "stdout": "x"});
    w.event(b"{}", &v).expect("event");
    let v = serde_json::json!({"uuid": "u", "counter": "1/../..", "stdout": "y"});
    w.event(b"{}", &v).expect("event");
    assert_eq!(fs::read_dir(dir.path().join("a/job_events")).expect("ls").count(), 0);
    assert!(!dir.path().join("escape.json").exists());
}

#[test]
fn keepalives_and_bad_zip_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = ArtifactWriter::new(dir.path().to_path_buf()).expect("writer");
    let ka = serde_json::json!({"event": "keepalive", "counter": 0, "uuid": 0});
    w.event(b"", &ka).expect("keepalive");
    assert_eq!(fs::read_dir(dir.path().join("job_events")).expect("ls").count(), 0);
    assert!(matches!(w.zip_data(b"x"), Err(ProcessError::NoZip)));
    w.zip_start(10).expect("start");
    w.zip_data(b"abc").expect("data");
    assert!(matches!(w.zip_end(), Err(ProcessError::ShortZip { expected: 10, got: 3 })));
    assert_eq!(trim_line(b" {\"a\": 1}\r"), b"{\"a\": 1}");
}
