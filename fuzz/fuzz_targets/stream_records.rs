//! libFuzzer entry for `receptord::fuzzing::stream_records` (the body is shared with the corpus replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptord::fuzzing::stream_records(data));
