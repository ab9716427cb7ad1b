//! Fuzz target: see `cdb_task_exporter::fuzz::request_target`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cdb_task_exporter::fuzz::request_target(data);
});
