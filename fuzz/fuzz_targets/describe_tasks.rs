//! Fuzz target: see `cdb_task_exporter::fuzz::describe_tasks_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cdb_task_exporter::fuzz::describe_tasks_response(data);
});
