#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| obscura_fuzz::group(data));
