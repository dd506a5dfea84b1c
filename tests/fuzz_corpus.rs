//! Replays the saved fuzz corpus on the stable toolchain, without libFuzzer: every input
//! in `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` runs through the same
//! target body the fuzzer ran (`receptord::fuzzing`), so a fixed crash stays fixed. Each
//! target also runs its built-in seeds (`receptord::fuzzing::seeds`).

use std::path::Path;

/// Inputs of one target: the saved corpus and the crash regressions, sorted by path.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("readable corpus file");
                out.push((path.display().to_string(), data));
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str) {
    let (_, run) =
        receptord::fuzzing::TARGETS.iter().find(|(name, _)| *name == target).expect("known target");
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no saved corpus for {target} under fuzz/corpus/{target}");
    for (path, data) in &inputs {
        // A panic names the input that caused it.
        let ok = std::panic::catch_unwind(|| run(data));
        assert!(ok.is_ok(), "fuzz target {target} fails on {path}");
    }
    for seed in receptord::fuzzing::seeds(target) {
        run(&seed);
    }
    for odd in [&b""[..], b"\0", b"\xff\xff\xff\xff", &[0x41; 300]] {
        run(odd);
    }
}

#[test]
fn fuzz_corpus_frame() {
    replay("frame");
}

#[test]
fn fuzz_corpus_handshake() {
    replay("handshake");
}

#[test]
fn fuzz_corpus_transmit_stream() {
    replay("transmit_stream");
}

#[test]
fn fuzz_corpus_extract() {
    replay("extract");
}

#[test]
fn fuzz_corpus_control_line() {
    replay("control_line");
}

#[test]
fn fuzz_corpus_mesh_events() {
    replay("mesh_events");
}

#[test]
fn fuzz_corpus_stream_records() {
    replay("stream_records");
}

/// Every target has a corpus directory and a libFuzzer entry of the same name.
#[test]
fn fuzz_corpus_netceptor_packet() {
    replay("netceptor_packet");
}

#[test]
fn fuzz_corpus_netceptor_events() {
    replay("netceptor_events");
}

#[test]
fn fuzz_targets_are_wired() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in receptord::fuzzing::TARGETS {
        assert!(root.join("fuzz_targets").join(format!("{name}.rs")).is_file(), "no fuzz_targets/{name}.rs");
        assert!(root.join("corpus").join(name).is_dir(), "no corpus/{name}");
    }
}

/// `make fuzz` runs this (ignored) test to give an empty corpus directory the seeds.
/// (The replay above runs the seeds anyway, so a minimised corpus may drop them.)
#[test]
#[ignore = "writes fuzz/corpus; run by make fuzz"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus");
    for (name, _) in receptord::fuzzing::TARGETS {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        if std::fs::read_dir(&dir).expect("corpus dir").next().is_some() {
            continue;
        }
        for (i, seed) in receptord::fuzzing::seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
        }
    }
}
