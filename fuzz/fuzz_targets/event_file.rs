#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| labmesh_tests::fuzz::event_file(data));
