//! The task page in a real browser: Debian's headless Chromium, driven over the DevTools
//! protocol by tests/browser/drive.py, loads /tasks from the running exporter against the
//! simulator. The failed task's row and message are in the rendered DOM; a message carrying
//! markup and script is shown as text and never runs; the filter form narrows the table.

use crate::common::*;
use cdb_task_exporter::sim::{Scenario, SimInstance, SimTask};
use cdb_task_exporter::tencent::model::TaskStatus;
use serde_json::Value;

const HOSTILE: &str = "<script>document.body.dataset.pwned='1';document.title='pwned'</script><img src=x onerror=\"document.body.dataset.pwned='2'\"> import failed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_page_renders_escapes_and_filters_in_chromium() {
    let scenario = Scenario {
        tasks: vec![
            SimTask::simple(101, "import_data", &[A], -3600, 600, TaskStatus::Failed)
                .with_message(HOSTILE),
            SimTask::simple(102, "modify_param", &[B], -1800, 60, TaskStatus::Succeed),
            SimTask::simple(103, "upgrade_master", &[A], -600, 0, TaskStatus::Running),
        ],
        instances: vec![SimInstance::new(A, "orders")],
        ..Scenario::default()
    };
    let pair = Pair::start(scenario, "", &region("ap-guangzhou", &[])).await;
    pair.exporter
        .wait_for(|s| s.count("tencentcloud_cdb_instance_info", &[]) == 1)
        .await;
    let dir = tempfile::tempdir().unwrap();
    // Kept out of the repository; CDB_TASK_EXPORTER_SCREENSHOT keeps a copy where asked.
    let shot = std::env::var("CDB_TASK_EXPORTER_SCREENSHOT")
        .unwrap_or_else(|_| dir.path().join("tasks.png").to_str().unwrap().to_string());
    let url = format!("http://{}/tasks", pair.exporter.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(repo_path("tests/browser/drive.py"))
            .args([&url, &shot])
            .output()
            .expect("python3 and chromium are installed by scripts/install-test-tools")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let before = &v["before"];
    assert_eq!(
        before["title"], "Database tasks",
        "the message's script ran: {v}"
    );
    assert!(before["pwned"].is_null(), "the message's markup ran: {v}");
    assert_eq!(before["scripts"], 0, "no script element in the page: {v}");
    assert_eq!(before["rows"], serde_json::json!(["103", "102", "101"]));
    assert_eq!(
        before["messages"][2], HOSTILE,
        "the message is shown as text, in full"
    );
    assert_eq!(before["statuses"][2], "failed");
    // After choosing "failed" and pressing Filter: only the failed import.
    let after = &v["after"];
    assert_eq!(after["rows"], serde_json::json!(["101"]), "{v}");
    assert!(after["url"].as_str().unwrap().contains("status=failed"));
    assert!(after["pwned"].is_null());
    assert!(std::fs::metadata(dir.path().join("tasks.png")).map_or(true, |m| m.len() > 1000));
    pair.stop().await;
}
