//! A host whose clock is 15 minutes off the API's (docs/semantics.md#clock-skew): one refused request, then
//! polls as usual, with the baseline, the windows and the counts on the API's clock.

use crate::common::*;
use cdb_task_exporter::clock::Clock;
use cdb_task_exporter::config::Config;
use cdb_task_exporter::domain::TaskStatus::{Failed, Succeed};
use cdb_task_exporter::sim::{Scenario, SimTask};

const SKEW: &str = "tencentcloud_cdb_exporter_api_clock_skew_seconds";
const ERRORS: &str = "tencentcloud_cdb_exporter_api_errors_total";

async fn polls_normally_with_the_api_clock_off_by(offset: i64) {
    let tasks = vec![
        // Ended 30 s before the exporter started: the baseline, whichever clock is ahead.
        SimTask::simple(1, "reboot", &[A], -90, 60, Succeed),
        // Running at the start, fails 4 s later: counted, whichever clock is ahead.
        SimTask::simple(2, "import_data", &[A], -60, 64, Failed),
        // Starts after the exporter and ends: found by the recent window, counted.
        SimTask::simple(3, "modify_param", &[A], 3, 2, Failed),
    ];
    let (sim, clock) = start_sim(Scenario {
        tasks,
        ..Scenario::default()
    })
    .await;
    sim.sim.set_clock_offset(offset);
    let config =
        Config::from_toml(&config_text(&sim.url(), "", &region("ap-guangzhou", &[]))).unwrap();
    let exporter = Exporter::start(config, clock.clone()).await;
    let start = clock.now();
    let s = exporter
        .wait_for(|s| {
            s.get("tencentcloud_cdb_exporter_last_poll_success", &[]) == Some(1.0)
                && s.get(SKEW, &[]).is_some()
        })
        .await;
    let skew = s.get(SKEW, &[("product", "cdb")]).unwrap();
    assert!(
        (skew - offset as f64).abs() <= 1.0,
        "skew {skew}, offset {offset}"
    );
    // Six seconds later on the API's clock every task has ended, and the exporter has polled.
    clock.advance(6);
    exporter
        .wait_for(|s| s.finished(A, "modify_param", "failed") == Some(1.0))
        .await;
    let s = exporter.wait_poll_after(clock.now() + offset).await;
    assert_eq!(s.finished(A, "reboot", "succeed"), Some(0.0), "baseline");
    assert_eq!(
        s.finished(A, "import_data", "failed"),
        Some(1.0),
        "{}",
        s.text
    );
    assert_eq!(s.finished(A, "modify_param", "failed"), Some(1.0));
    assert_eq!(s.tasks(A, "reboot", "succeed"), 1.0);
    // The first request was refused for its time, and taught the clock: one error, no more.
    assert_eq!(
        s.sum(ERRORS, &[("code", "AuthFailure.SignatureExpire")]),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(s.sum(ERRORS, &[]), 1.0, "{}", s.text);
    assert!(clock.now() - start < 60, "polled in time");
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn the_host_15_minutes_behind_the_api() {
    polls_normally_with_the_api_clock_off_by(900).await;
}

#[tokio::test]
async fn the_host_15_minutes_ahead_of_the_api() {
    polls_normally_with_the_api_clock_off_by(-900).await;
}

#[tokio::test]
async fn a_clock_within_the_noise_is_no_skew() {
    let (sim, clock) = start_sim(Scenario::default()).await;
    let config =
        Config::from_toml(&config_text(&sim.url(), "", &region("ap-guangzhou", &[]))).unwrap();
    let exporter = Exporter::start(config, clock).await;
    let s = exporter.wait_for(|s| s.get(SKEW, &[]).is_some()).await;
    assert_eq!(s.get(SKEW, &[]), Some(0.0));
    assert_eq!(s.sum(ERRORS, &[]), 0.0);
    exporter.stop().await;
    sim.stop().await;
}
