#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| portier::fuzzing::request_head(data));
