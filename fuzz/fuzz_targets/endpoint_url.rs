//! libFuzzer entry for `lockstep_fuzz::endpoint_url` (see fuzz/src/endpoint_url.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep_fuzz::endpoint_url::run(data));
