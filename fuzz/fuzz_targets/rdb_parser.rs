//! libFuzzer entry for `lockstep_fuzz::rdb_parser` (see fuzz/src/rdb_parser.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_fuzz::rdb_parser::run(data));
