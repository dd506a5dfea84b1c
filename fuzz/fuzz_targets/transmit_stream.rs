//! libFuzzer entry for `receptord::fuzzing::transmit_stream` (the body is shared with the corpus replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptord::fuzzing::transmit_stream(data));
