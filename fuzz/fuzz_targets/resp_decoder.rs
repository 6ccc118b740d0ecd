//! libFuzzer entry for `lockstep_fuzz::resp_decoder` (see fuzz/src/resp_decoder.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_fuzz::resp_decoder::run(data));
