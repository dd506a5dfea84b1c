//! libFuzzer entry for `receptord::fuzzing::netceptor_packet` (the body is shared with the corpus replay test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptord::fuzzing::netceptor_packet(data));
