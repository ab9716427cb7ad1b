//! Fuzz target: see `cdb_task_exporter::fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cdb_task_exporter::fuzz::config(data);
});
