//! libFuzzer entry for `lockstep_fuzz::config_file` (see fuzz/src/config_file.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_fuzz::config_file::run(data));
