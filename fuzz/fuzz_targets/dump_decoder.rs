//! libFuzzer entry for `lockstep_fuzz::dump_decoder` (see fuzz/src/dump_decoder.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_fuzz::dump_decoder::run(data));
