#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| coto_fuzz::adapter_files(data));
