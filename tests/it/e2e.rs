//! End to end with the real programs: the exporter against the simulator, Debian's Prometheus
//! scraping it with the shipped scrape config and rules, Debian's Alertmanager routing the alerts
//! with the shipped routing to a webhook inside this test. Everything listens on loopback and is
//! stopped by process id at the end.

use crate::common::*;
use cdb_task_exporter::config::Config;
use cdb_task_exporter::http::{read_body, respond};
use cdb_task_exporter::sim::{Scenario, SimInstance, SimTask};
use cdb_task_exporter::tencent::model::TaskStatus;
use hyper::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

/// A child process killed (by pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(bin: &'static str, args: &[String], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} is installed by scripts/install-test-tools: {e}"));
    Proc(child)
}

/// The address a Prometheus program started with `--web.listen-address=127.0.0.1:0` bound, as its
/// log says (`msg="Listening on" address=127.0.0.1:35697`). Port 0 rather than a port picked
/// here: a port picked and released could be taken by a test running beside this one.
fn listening_on(log: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .lines()
            .filter(|l| l.contains("msg=\"Listening on\""))
            .find_map(|l| l.split(" address=").nth(1))
            .map(|a| a.split_whitespace().next().unwrap_or(a).to_string());
        if let Some(address) = found {
            return address;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said where it listens:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped file no longer contains {from:?}"
    );
    text.replace(from, to)
}

async fn query(prom: &str, expr: &str) -> Value {
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{prom}/api/v1/query"))
        .form(&[("query", expr)])
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// The newest exemplar Prometheus stored for `selector` (over all time), once there is one.
async fn query_exemplars(prom: &str, selector: &str) -> Value {
    let newest = Mutex::new(Value::Null);
    let newest_ref = &newest;
    wait_until("an exemplar in Prometheus", || async move {
        let resp = reqwest::Client::new()
            .post(format!("{prom}/api/v1/query_exemplars"))
            .form(&[("query", selector)])
            .send()
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        let last = body["data"][0]["exemplars"]
            .as_array()
            .and_then(|e| e.last().cloned());
        last.map(|e| *newest_ref.lock().unwrap() = e).is_some()
    })
    .await;
    newest.into_inner().unwrap()
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The firing `CdbTaskFailed` of `product` the webhook received, if any.
fn find_failed(received: &Mutex<Vec<(String, Value)>>, product: &str) -> Option<Value> {
    received.lock().unwrap().iter().find_map(|(path, body)| {
        (path == "/cdb-tasks")
            .then(|| body["alerts"].as_array().cloned().unwrap_or_default())
            .into_iter()
            .flatten()
            .find(|a| {
                a["labels"]["alertname"] == "CdbTaskFailed"
                    && a["labels"]["product"] == product
                    && a["status"] == "firing"
            })
    })
}

const CYNOS_CLUSTER: &str = "cynosdbmysql-e2e00001";
const CYNOS_UNIT: &str = "cynosdbmysql-e2e00001/cynosdbmysql-ins-e2e00001";
const PG: &str = "postgres-e2e00001";

fn scalar(v: &Value) -> Option<f64> {
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_alertmanager_see_the_failed_import_with_its_task_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // The exporter against the simulator: an import that fails once the test moves the clock, an
    // upgrade that has been running for seven hours.
    let tasks = vec![
        SimTask::simple(1, "import_data", &[A], 10, 20, TaskStatus::Failed),
        SimTask::simple(2, "upgrade_master", &[B], -7 * 3600, 0, TaskStatus::Running),
        SimTask::simple(3, "reboot", &[A], -600, 30, TaskStatus::Succeed),
        // TDSQL-C: a parameter change on a cluster's instance, running since before the
        // exporter (its zero counters exist), failing once the clock moves.
        SimTask::simple(
            4,
            "task_modify_instance_param",
            &[CYNOS_UNIT],
            -60,
            90,
            TaskStatus::Failed,
        )
        .of_product("cynosdb"),
        // PostgreSQL: a restore of a type never seen before, first seen already failed.
        SimTask::simple(5, "restore_database", &[PG], 10, 20, TaskStatus::Failed)
            .of_product("postgres"),
    ];
    // Served over TLS with basic auth, as README "Securing the endpoint" sets it up: Prometheus
    // scrapes with the shipped config's https, CA and password lines.
    let pki = pki(dir.path());
    let password = "scrape-password-for-the-e2e-test";
    std::fs::write(dir.path().join("scrape.password"), password).unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {:?}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            bcrypt_hash(password)
        ),
    )
    .unwrap();
    let (sim, clock) = start_sim(Scenario {
        tasks,
        instances: vec![SimInstance::new(A, "orders")],
        ..Default::default()
    })
    .await;
    let regions = format!(
        "{}{}",
        region("ap-guangzhou", &[]),
        "[[accounts.regions]]\nregion = \"ap-guangzhou\"\nproduct = \"cynosdb\"\n\
         [[accounts.regions]]\nregion = \"ap-guangzhou\"\nproduct = \"postgres\"\n"
    );
    let mut config = Config::from_toml(&config_text(&sim.url(), "", &regions)).unwrap();
    config.server.web_config_file = Some(web);
    let exporter = Exporter::start(config, clock.clone()).await;
    let pair = Pair {
        sim,
        exporter,
        clock,
    };

    // A webhook receiver for Alertmanager.
    let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = received.clone();
    let (hook_addr, hook_stop) =
        serve_on_loopback(move |req: hyper::Request<hyper::body::Incoming>| {
            let sink = sink.clone();
            async move {
                let path = req.uri().path().to_string();
                if let Some(body) = read_body(req.into_body(), 1 << 20).await
                    && let Ok(v) = serde_json::from_slice::<Value>(&body)
                {
                    sink.lock().unwrap().push((path, v));
                }
                respond(StatusCode::OK, "text/plain", "ok")
            }
        })
        .await;
    let hook_port = hook_addr.port();

    // Alertmanager with the shipped routing, delivering to the webhook, grouping fast.
    let am_config = repo_file("deploy/alertmanager/alertmanager.yml");
    let am_config = replace(
        &am_config,
        "http://127.0.0.1:5001",
        &format!("http://127.0.0.1:{hook_port}"),
    );
    let am_config = replace(&am_config, "group_wait: 30s", "group_wait: 1s");
    let am_config = replace(&am_config, "group_interval: 5m", "group_interval: 1s");
    std::fs::write(dir.path().join("alertmanager.yml"), am_config).unwrap();
    let _am = start(
        "/usr/bin/prometheus-alertmanager",
        &[
            format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            "--web.listen-address=127.0.0.1:0".into(),
            "--cluster.listen-address=".into(),
        ],
        &dir.path().join("alertmanager.log"),
    );
    let am_address = listening_on(&dir.path().join("alertmanager.log"));

    // Prometheus with the shipped scrape config and rules, scraping and evaluating every second.
    let prom_config = repo_file("deploy/prometheus/prometheus.yml");
    let prom_config = replace(&prom_config, "scrape_interval: 30s", "scrape_interval: 1s");
    let prom_config = replace(
        &prom_config,
        "evaluation_interval: 30s",
        "evaluation_interval: 1s",
    );
    let prom_config = replace(&prom_config, "scrape_timeout: 10s", "scrape_timeout: 1s");
    let prom_config = replace(
        &prom_config,
        "localhost:39236",
        &pair.exporter.addr.to_string(),
    );
    let mut prom_config = prom_config;
    for line in [
        "scheme: https",
        "tls_config:",
        "  ca_file: /etc/prometheus/cdb-task-exporter-ca.pem",
        "basic_auth:",
        "  username: prometheus",
        "  password_file: /etc/prometheus/cdb-task-exporter.password",
    ] {
        prom_config = replace(&prom_config, &format!("# {line}"), line);
    }
    let prom_config = replace(
        &prom_config,
        "/etc/prometheus/cdb-task-exporter-ca.pem",
        pki.ca.to_str().unwrap(),
    );
    let prom_config = replace(
        &prom_config,
        "/etc/prometheus/cdb-task-exporter.password",
        dir.path().join("scrape.password").to_str().unwrap(),
    );
    let prom_config = replace(&prom_config, "localhost:9093", &am_address);
    std::fs::write(dir.path().join("prometheus.yml"), prom_config).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::copy(
        root.join("deploy/prometheus/rules/cdb-task-exporter.rules.yml"),
        dir.path().join("rules/cdb-task-exporter.rules.yml"),
    )
    .unwrap();
    let _prom = start(
        "/usr/bin/prometheus",
        &[
            format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ),
            format!(
                "--storage.tsdb.path={}",
                dir.path().join("prom-data").display()
            ),
            "--web.listen-address=127.0.0.1:0".into(),
            // Exemplars are kept only with this; they arrive only in OpenMetrics, which
            // Prometheus asks for first by default.
            "--enable-feature=exemplar-storage".into(),
        ],
        &dir.path().join("prometheus.log"),
    );
    let prom = format!(
        "http://{}",
        listening_on(&dir.path().join("prometheus.log"))
    );
    cdb_task_exporter::install_crypto_provider();

    // Prometheus has scraped the zero counter of the import before it fails.
    let failed_imports = r#"tencentcloud_cdb_tasks_finished_total{job="cdb-task-exporter", instance_id="cdb-aaaa1111", task_type="import_data", status="failed"}"#;
    wait_until("the zero counter in Prometheus", || async {
        reqwest::get(format!("{prom}/-/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
            && scalar(&query(&prom, failed_imports).await) == Some(0.0)
    })
    .await;
    // A few zero samples stored, so that increase() sees the step from 0 to 1.
    let zeros = format!("count_over_time({failed_imports}[1m])");
    wait_until("three zero samples in Prometheus", || async {
        scalar(&query(&prom, &zeros).await).is_some_and(|n| n >= 3.0)
    })
    .await;

    // The import fails.
    pair.clock.advance(40);
    wait_until("the failure in Prometheus", || async {
        scalar(&query(&prom, failed_imports).await) == Some(1.0)
    })
    .await;

    // The failed counter's exemplar is stored (so OpenMetrics was negotiated): the failed job's
    // id, with value 1, at the task's end time.
    let exemplar = query_exemplars(&prom, failed_imports).await;
    assert_eq!(exemplar["labels"]["job_id"], "1", "{exemplar}");
    assert_eq!(exemplar["value"], "1", "{exemplar}");
    let job_id = exemplar["labels"]["job_id"].as_str().unwrap().to_string();

    // The series are queryable with the expected values.
    let running = query(&prom, r#"tencentcloud_cdb_tasks{job="cdb-task-exporter", task_type="upgrade_master", status="running"}"#).await;
    assert_eq!(scalar(&running), Some(1.0), "{running}");
    assert_eq!(running["data"]["result"][0]["metric"]["instance_id"], B);
    let oldest = query(
        &prom,
        r#"tencentcloud_cdb_task_oldest_unfinished_start_timestamp_seconds{job="cdb-task-exporter", task_type="upgrade_master"}"#,
    )
    .await;
    assert_eq!(
        scalar(&oldest),
        Some((pair.sim.sim.started() - 7 * 3600) as f64),
        "{oldest}"
    );
    let succeeded = query(
        &prom,
        r#"tencentcloud_cdb_tasks{job="cdb-task-exporter", task_type="reboot", status="succeed"}"#,
    )
    .await;
    assert_eq!(scalar(&succeeded), Some(1.0));
    assert_eq!(
        scalar(&query(&prom, r#"up{job="cdb-task-exporter"}"#).await),
        Some(1.0)
    );

    // Alertmanager delivers the failed import to the task receiver, with the instance name, the
    // link to the exporter's task page and the runbook section. (CdbTaskRunningTooLong waits
    // 10 minutes with `for`; the promtool tests cover it.)
    let find = |name: &str| -> Option<Value> {
        received.lock().unwrap().iter().find_map(|(path, body)| {
            (path == "/cdb-tasks")
                .then(|| body["alerts"].as_array().cloned().unwrap_or_default())
                .into_iter()
                .flatten()
                .find(|a| a["labels"]["alertname"] == name && a["status"] == "firing")
        })
    };
    wait_until("the failed import at the webhook", || {
        let ok = find("CdbTaskFailed").is_some();
        async move { ok }
    })
    .await;
    wait_until("the failed CDB import at the webhook", || {
        let ok = find_failed(&received, "cdb").is_some();
        async move { ok }
    })
    .await;
    let failed = find_failed(&received, "cdb").unwrap();
    assert_eq!(failed["labels"]["severity"], "warning");
    assert_eq!(failed["labels"]["instance_id"], A);
    assert_eq!(failed["labels"]["task_type"], "import_data");
    assert_eq!(failed["labels"]["region"], "ap-guangzhou");
    assert_eq!(failed["labels"]["product"], "cdb");
    assert_eq!(
        failed["annotations"]["summary"],
        "cdb import_data failed on cdb-aaaa1111 (orders)"
    );
    let link = failed["annotations"]["tasks"].as_str().unwrap();
    let addr = pair.exporter.addr;
    assert_eq!(
        link,
        format!(
            "http://{addr}/tasks?product=cdb&instance_id={A}&status=failed&task_type=import_data"
        )
    );
    // The TDSQL-C and PostgreSQL failures page someone too, the PostgreSQL one although its
    // type had never been seen before it failed.
    let of_product = |product: &str| find_failed(&received, product);
    wait_until("the TDSQL-C and PostgreSQL failures at the webhook", || {
        let ok = of_product("cynosdb").is_some() && of_product("postgres").is_some();
        async move { ok }
    })
    .await;
    let cynos = of_product("cynosdb").unwrap();
    assert_eq!(cynos["labels"]["cluster_id"], CYNOS_CLUSTER);
    assert_eq!(cynos["labels"]["instance_id"], "cynosdbmysql-ins-e2e00001");
    assert_eq!(cynos["labels"]["task_type"], "task_modify_instance_param");
    let pg = of_product("postgres").unwrap();
    assert_eq!(pg["labels"]["instance_id"], PG);
    assert_eq!(pg["labels"]["task_type"], "restore_database");
    assert_eq!(
        pg["annotations"]["summary"],
        "postgres restore_database failed on postgres-e2e00001"
    );
    // The link opens the failed job on the task page. The endpoint being secured, its http://
    // lands on a redirect to the same URL over https (a browser follows it and asks for the
    // password).
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(link)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 308);
    let secure = link.replacen("http://", "https://", 1);
    assert_eq!(plain.headers()["location"], secure.as_str());
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let page = https
        .get(&secure)
        .basic_auth("prometheus", Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("<tr><td>1<br>"), "job 1 on the page: {page}");
    assert!(page.contains("task failed (simulated)"));
    assert!(
        !page.contains("<tr><td>3<br>"),
        "the succeeded reboot is filtered out"
    );
    // The exemplar's job id opens that task, and only it, on the task page (the dashboard's
    // exemplar link).
    let by_job = https
        .get(format!("https://{addr}/tasks?job_id={job_id}"))
        .basic_auth("prometheus", Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(by_job.status(), 200);
    let by_job = by_job.text().await.unwrap();
    assert!(by_job.contains("<tr><td>1<br>"), "{by_job}");
    assert!(by_job.contains("task failed (simulated)"));
    assert_eq!(by_job.matches("<tr><td>").count(), 1, "{by_job}");
    // The runbook URL names an existing section of docs/runbook.md.
    let runbook = failed["annotations"]["runbook_url"].as_str().unwrap();
    let anchor = runbook.split_once("docs/runbook.md#").unwrap().1;
    assert!(
        repo_file("docs/runbook.md").lines().any(|l| l
            .strip_prefix("## ")
            .is_some_and(|h| h.to_lowercase() == anchor)),
        "{runbook}"
    );
    // Nothing about the exporter's health: it is fine.
    let health_alerts = received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, b)| b["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| {
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or_default()
                .starts_with("CdbTaskExporter")
        })
        .count();
    assert_eq!(health_alerts, 0);

    // Every PromQL expression of the dashboard evaluates without error.
    let dashboard: Value =
        serde_json::from_str(&repo_file("deploy/grafana/cdb-task-exporter.json")).unwrap();
    let mut exprs: Vec<String> = dashboard_exprs(&dashboard);
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(selector, label): the selector must be valid PromQL.
            let inner = q
                .trim_start_matches("label_values(")
                .rsplit_once(',')
                .unwrap()
                .0;
            exprs.push(inner.to_string());
        }
    }
    assert!(exprs.len() > 20);
    let mut nonempty = 0;
    for e in &exprs {
        let concrete = e
            .replace("$job", "cdb-task-exporter")
            .replace("$region", ".*")
            .replace("$instance", ".*")
            .replace("$task_type", ".*")
            .replace("$product", "cdb|cynosdb|postgres")
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h");
        let v = query(&prom, &concrete).await;
        assert_eq!(v["status"], "success", "{concrete}: {v}");
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            nonempty += 1;
        }
    }
    assert!(
        nonempty * 2 > exprs.len(),
        "most panels have data: {nonempty} of {}",
        exprs.len()
    );

    hook_stop.cancel();
    pair.stop().await;
}
