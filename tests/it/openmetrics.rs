//! OpenMetrics with exemplars (docs/http.md#openmetrics), whole program: `/metrics` negotiated
//! on `Accept`, parsed by an OpenMetrics parser that is not ours (the `prometheus_client`
//! package, installed by scripts/install-test-tools).

use crate::common::*;
use cdb_task_exporter::sim::{Scenario, SimTask};
use cdb_task_exporter::tencent::model::TaskStatus;
use std::io::Write;
use std::process::{Command, Stdio};

/// What Prometheus 3 sends by default.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Parses `page` with prometheus_client's OpenMetrics parser and prints, per sample with an
/// exemplar, `name labels-json exemplar-labels-json exemplar-value exemplar-timestamp`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
print("families", len(families))
for f in families:
    for s in f.samples:
        if s.exemplar is not None:
            print(s.name, json.dumps(s.labels, sort_keys=True), json.dumps(s.exemplar.labels), s.exemplar.value, s.exemplar.timestamp)
"#;

#[tokio::test]
async fn openmetrics_is_negotiated_and_its_exemplars_name_the_failed_task() {
    let pair = Pair::start(
        Scenario {
            tasks: vec![SimTask::simple(
                4711,
                "import_data",
                &[A],
                -5,
                15,
                TaskStatus::Failed,
            )],
            ..Scenario::default()
        },
        "",
        &region("ap-guangzhou", &[]),
    )
    .await;
    pair.exporter.wait_targets_polled(1).await;
    pair.advance(30).await;
    let url = format!("http://{}/metrics", pair.exporter.addr);
    let client = reqwest::Client::new();
    let resp = client
        .get(&url)
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let open = resp.text().await.unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    // Gzip too: the same page.
    let gz = client
        .get(&url)
        .header("accept", PROMETHEUS_ACCEPT)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let bytes = gz.bytes().await.unwrap();
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut unzipped)
        .unwrap();
    assert!(unzipped.ends_with("# EOF\n"));
    assert!(unzipped.contains("# {job_id=\"4711\"}"));
    // Without the header: the text format, with no exemplar and no EOF.
    let (status, text) = get(&url).await;
    assert_eq!(status, 200);
    assert!(!text.contains("# EOF") && !text.contains("job_id=\"4711\""));
    let end = pair.sim.sim.started() + 10;
    pair.stop().await;

    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/install-test-tools installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(open.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the parser refused the page: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("families "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(families > 15, "{stdout}");
    let counter = stdout
        .lines()
        .find(|l| {
            l.starts_with("tencentcloud_cdb_tasks_finished_total ")
                && l.contains("\"status\": \"failed\"")
                && l.contains("\"task_type\": \"import_data\"")
        })
        .unwrap_or_else(|| panic!("no exemplar on the failed counter: {stdout}"));
    // The exemplar: the job, 1, and the task's end (started 5 s before the simulator, ran 15 s).
    let ex = |line: &str| -> (String, f64, f64) {
        let (_, rest) = line.split_once("{\"job_id\": ").unwrap();
        let mut f = rest.split_whitespace();
        let job = f.next().unwrap().trim_end_matches('}').to_string();
        (
            job,
            f.next().unwrap().parse().unwrap(),
            f.next().unwrap().parse().unwrap(),
        )
    };
    assert_eq!(
        ex(counter),
        ("\"4711\"".into(), 1.0, (end) as f64),
        "{counter}"
    );
    let bucket = stdout
        .lines()
        .find(|l| {
            l.starts_with("tencentcloud_cdb_task_duration_seconds_bucket ")
                && l.contains("\"le\": \"+Inf\"")
        })
        .unwrap_or_else(|| panic!("no exemplar on the +Inf bucket: {stdout}"));
    assert_eq!(
        ex(bucket),
        ("\"4711\"".into(), 15.0, end as f64),
        "{bucket}"
    );
}
