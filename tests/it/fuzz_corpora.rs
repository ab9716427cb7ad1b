//! Replays every committed fuzz corpus (fuzz/corpus/<target>/) through the fuzz targets' entry
//! points on stable: each input the fuzzers kept, and each crash they once found, is run on
//! every CI run and must not panic.

use cdb_task_exporter::fuzz;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panics", path.display());
        inputs += 1;
    }
    assert!(inputs >= 3, "{target}: only {inputs} inputs in the corpus");
}

#[test]
fn describe_tasks_corpus() {
    replay("describe_tasks", fuzz::describe_tasks_response);
}

#[test]
fn config_corpus() {
    replay("config", fuzz::config);
}

#[test]
fn state_file_corpus() {
    replay("state_file", fuzz::state_file);
}

#[test]
fn request_target_corpus() {
    replay("request_target", fuzz::request_target);
}
