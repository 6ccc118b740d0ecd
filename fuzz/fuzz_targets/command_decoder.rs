//! libFuzzer entry for `lockstep_fuzz::command_decoder` (see fuzz/src/command_decoder.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_fuzz::command_decoder::run(data));
