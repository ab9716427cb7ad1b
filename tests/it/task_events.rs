//! Task events in the log (docs/semantics.md#task-events), whole program: the binary with `--log-format json`
//! logs a first sighting and a status change, and nothing for the baseline.

use crate::common::*;
use cdb_task_exporter::sim::{Scenario, SimTask};
use cdb_task_exporter::tencent::model::TaskStatus;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cdb-task-exporter");

/// The binary with task events on, against `sim_url`, logging in `format`; its log lines
/// arrive on the receiver (read on a thread of their own, so the pipe never fills).
fn spawn_with_events(
    dir: &std::path::Path,
    sim_url: &str,
    format: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let config = dir.join("config.toml");
    let text = config_text(sim_url, "", &region("ap-guangzhou", &[]))
        .replace("[[accounts]]", "[log]\ntask_events = true\n[[accounts]]");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "--log-format", format])
        .env_remove("CDB_TASK_EXPORTER_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut child);
    (child, rx)
}

// The simulator serves on the runtime while this test blocks reading the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_logged_as_json_lines() {
    let scenario = Scenario {
        tasks: vec![
            // Seen running at the first poll, failed a few seconds later.
            SimTask::simple(201, "import_data", &[A], -10, 14, TaskStatus::Failed)
                .with_message("line one\nforged line"),
            // Finished an hour before the exporter started: baseline, no event.
            SimTask::simple(202, "rollback", &[B], -7200, 60, TaskStatus::Succeed),
        ],
        ..Scenario::default()
    };
    let (sim, _clock) = start_sim(scenario).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = spawn_with_events(dir.path(), &sim.url(), "json");
    let deadline = Instant::now() + PATIENCE;
    let mut events: Vec<Value> = Vec::new();
    let mut lines = Vec::new();
    while !events.iter().any(|e| e["fields"]["to"] == "failed") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no failed event; log:\n{}",
            lines.join("\n")
        );
        let Ok(line) = rx.recv_timeout(left) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["target"] == "task_events" {
            events.push(v);
        }
        lines.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    sim.stop().await;

    let f = |e: &Value| e["fields"].clone();
    assert!(
        events.iter().all(|e| e["fields"]["job_id"] == 201),
        "only task 201 changes: {events:?}"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    let first = f(&events[0]);
    assert_eq!(first["to"], "running");
    assert!(
        first.get("from").is_none(),
        "a first sighting has no from: {first}"
    );
    assert_eq!(first["account"], "test");
    assert_eq!(first["region"], "ap-guangzhou");
    assert_eq!(first["instance_ids"], A);
    assert_eq!(first["task_type"], "import_data");
    assert_eq!(events[0]["level"], "INFO");
    let second = f(&events[1]);
    assert_eq!(second["from"], "running");
    assert_eq!(second["to"], "failed");
    assert_eq!(second["code"], -1);
    assert_eq!(second["message"], "line one\\nforged line");
}

/// In the text format a message cannot pass for fields: it is quoted and escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_cannot_forge_fields_in_text_logs() {
    let scenario = Scenario {
        tasks: vec![
            SimTask::simple(301, "import_data", &[A], -10, 13, TaskStatus::Failed)
                .with_message(r#"disk full job_id=999 to="succeed""#),
        ],
        ..Scenario::default()
    };
    let (sim, _clock) = start_sim(scenario).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, rx) = spawn_with_events(dir.path(), &sim.url(), "text");
    let event = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + PATIENCE;
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains("task_events") && line.contains("to=failed") {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    sim.stop().await;
    let line = event.expect("a task event line");
    assert!(
        line.contains(r#""disk full job_id=999 to=\"succeed\"""#),
        "{line}"
    );
    assert!(line.contains(" to=failed"), "{line}");
    assert!(!line.contains(r#" to="succeed""#), "{line}");
}
