//! libFuzzer entry for `lockstep_fuzz::key_table` (see fuzz/src/key_table.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_fuzz::key_table::run(data));
