//! Shared harness of the whole-program tests: a simulator and `run()` sharing one clock over
//! loopback, scrapes parsed into series.
#![allow(dead_code)]

use cdb_task_exporter::app::{RunOptions, run};
use cdb_task_exporter::clock::{Clock, SystemClock};
use cdb_task_exporter::config::Config;
use cdb_task_exporter::sim::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Scenario, SimServer, Simulator,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const A: &str = "cdb-aaaa1111";
pub const B: &str = "cdb-bbbb2222";
pub const C: &str = "cdb-cccc3333";

/// How long a test waits for a condition before failing (a liveness bound, not a timing claim).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A config for the simulator at `endpoint`; `extra_poll` and `region_block` tweak it.
pub fn config_text(endpoint: &str, extra_poll: &str, region_block: &str) -> String {
    format!(
        r#"
[server]
listen_address = "127.0.0.1:0"
[poll]
interval = "1s"
request_timeout = "900ms"
{extra_poll}
[[accounts]]
name = "test"
secret_id = "{DEFAULT_SECRET_ID}"
secret_key = "{DEFAULT_SECRET_KEY}"
endpoint = "{endpoint}"
{region_block}
"#
    )
}

/// The region block of one region, optionally with listed instances.
pub fn region(name: &str, instances: &[&str]) -> String {
    if instances.is_empty() {
        format!("[[accounts.regions]]\nregion = \"{name}\"\n")
    } else {
        let list: Vec<String> = instances.iter().map(|i| format!("\"{i}\"")).collect();
        format!(
            "[[accounts.regions]]\nregion = \"{name}\"\ninstances = [{}]\n",
            list.join(", ")
        )
    }
}

pub struct Exporter {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Exporter {
    pub async fn start(config: Config, clock: Arc<SystemClock>) -> Exporter {
        Self::start_with_reloads(config, clock, None).await
    }

    /// Like [`Exporter::start`], applying configs sent on `reloads` as SIGHUP would.
    pub async fn start_with_reloads(
        config: Config,
        clock: Arc<SystemClock>,
        reloads: Option<tokio::sync::mpsc::Receiver<cdb_task_exporter::app::Reload>>,
    ) -> Exporter {
        Self::start_with(config, clock, reloads, Arc::new(|_: &str| None::<String>)).await
    }

    /// Like [`Exporter::start`], with this process environment for credentials.
    pub async fn start_with(
        config: Config,
        clock: Arc<SystemClock>,
        reloads: Option<tokio::sync::mpsc::Receiver<cdb_task_exporter::app::Reload>>,
        env: Arc<dyn cdb_task_exporter::tencent::credentials::Environment + Send + Sync>,
    ) -> Exporter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let options = RunOptions {
            clock,
            env,
            reloads,
        };
        let handle = tokio::spawn(run(config, listener, shutdown.clone(), options));
        Exporter {
            addr,
            shutdown,
            handle,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    pub async fn scrape(&self) -> String {
        get(&format!("http://{}/metrics", self.addr)).await.1
    }

    pub async fn series(&self) -> Series {
        Series::parse(&self.scrape().await)
    }

    /// Waits until a successful poll started at or after `t` (exporter clock) is reflected, of
    /// every target.
    pub async fn wait_poll_after(&self, t: i64) -> Series {
        self.wait_for(|s| {
            let mut times = s
                .matching(
                    "tencentcloud_cdb_exporter_last_successful_poll_timestamp_seconds",
                    &[],
                )
                .map(|(_, v)| v as i64)
                .peekable();
            times.peek().is_some() && times.all(|v| v >= t)
        })
        .await
    }

    /// Waits until `cond` holds on a scrape; panics after [`PATIENCE`] with the last scrape.
    /// Waits until `n` targets have had a successful poll.
    pub async fn wait_targets_polled(&self, n: usize) -> Series {
        self.wait_for(|s| {
            s.count(
                "tencentcloud_cdb_exporter_last_successful_poll_timestamp_seconds",
                &[],
            ) == n
        })
        .await
    }

    pub async fn wait_for(&self, cond: impl Fn(&Series) -> bool) -> Series {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let s = self.series().await;
            if cond(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() <= deadline,
                "condition not met; last scrape:\n{}",
                s.text
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn get(url: &str) -> (u16, String) {
    cdb_task_exporter::install_crypto_provider();
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// A simulator with the default keys on a free loopback port, and its (movable) clock.
pub async fn start_sim(scenario: Scenario) -> (SimServer, Arc<SystemClock>) {
    cdb_task_exporter::install_crypto_provider();
    let clock = SystemClock::shared();
    let sim = Simulator::with_default_keys(scenario, clock.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (sim, clock)
}

/// A simulator and exporter pair sharing one clock.
pub struct Pair {
    pub sim: SimServer,
    pub exporter: Exporter,
    pub clock: Arc<SystemClock>,
}

impl Pair {
    pub async fn start(scenario: Scenario, extra_poll: &str, regions: &str) -> Pair {
        let (sim, clock) = start_sim(scenario).await;
        let config = Config::from_toml(&config_text(&sim.url(), extra_poll, regions)).unwrap();
        let exporter = Exporter::start(config, clock.clone()).await;
        Pair {
            sim,
            exporter,
            clock,
        }
    }

    /// Moves both clocks forward and waits for a poll that saw the new time.
    pub async fn advance(&self, seconds: i64) -> Series {
        self.clock.advance(seconds);
        self.exporter.wait_poll_after(self.clock.now()).await
    }

    pub async fn stop(self) {
        self.exporter.stop().await;
        self.sim.stop().await;
    }
}

/// Parsed samples: `name{sorted labels}` -> value.
#[derive(Debug, Clone)]
pub struct Series {
    pub text: String,
    pub samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Series {
    pub fn parse(text: &str) -> Series {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (name_labels.to_string(), vec![]),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            samples.insert((name, labels), value);
        }
        Series {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of the one sample of `name` whose labels include all of `labels`; `None` if
    /// there is none; panics if several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matches: Vec<f64> = self.matching(name, labels).map(|(_, v)| v).collect();
        assert!(
            matches.len() <= 1,
            "{name} {labels:?} matches {} samples",
            matches.len()
        );
        matches.first().copied()
    }

    /// Sum of every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, v)| v).sum()
    }

    /// How many samples of `name` include `labels`.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels).count()
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a Vec<(String, String)>, f64)> + 'a {
        self.samples.iter().filter_map(move |((n, ls), v)| {
            (n == name
                && labels
                    .iter()
                    .all(|(k, val)| ls.iter().any(|(lk, lv)| lk == k && lv == val)))
            .then_some((ls, *v))
        })
    }

    /// The task gauge of one instance, type and status (0 when absent).
    pub fn tasks(&self, instance: &str, task_type: &str, status: &str) -> f64 {
        self.get(
            "tencentcloud_cdb_tasks",
            &[
                ("instance_id", instance),
                ("task_type", task_type),
                ("status", status),
            ],
        )
        .unwrap_or(0.0)
    }

    /// The finished counter of one instance, type and status (`None` when absent).
    pub fn finished(&self, instance: &str, task_type: &str, status: &str) -> Option<f64> {
        self.get(
            "tencentcloud_cdb_tasks_finished_total",
            &[
                ("instance_id", instance),
                ("task_type", task_type),
                ("status", status),
            ],
        )
    }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((k.trim_start_matches(',').to_string(), value));
        rest = after[end..].trim_start_matches(',');
    }
    out.sort();
    out
}

/// A free loopback port (bound and released; another process could take it, which is unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A file of the repository, by path relative to its root.
/// A file of the repository, by its path from the root.
pub fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The PromQL of every panel of a Grafana dashboard.
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// Serves `handler` on a free loopback port until the returned token is cancelled.
pub async fn serve_on_loopback<H, F>(handler: H) -> (SocketAddr, CancellationToken)
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = cdb_task_exporter::http::HttpResponse> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(cdb_task_exporter::http::serve(
        listener,
        handler,
        stop.clone(),
        cdb_task_exporter::http::ServeOptions::new(Duration::from_secs(1)),
    ));
    (addr, stop)
}

/// A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, as PEM
/// files in `dir`.
pub struct Pki {
    pub ca: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: String,
    pub client_key: String,
    pub ca_pem: String,
}

pub fn pki(dir: &std::path::Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        vec!["prometheus".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert,
        client_key,
        ca_pem: ca.pem(),
    }
}

/// A bcrypt hash of `password` at the lowest cost (tests only).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// A reboot of instance A that started ten minutes ago and succeeded after a minute.
pub fn reboot_on_a() -> cdb_task_exporter::sim::SimTask {
    cdb_task_exporter::sim::SimTask::simple(
        1,
        "reboot",
        &[A],
        -600,
        60,
        cdb_task_exporter::domain::TaskStatus::Succeed,
    )
}

/// The address an exporter logs with `serving metrics` (JSON logs on `stderr`); the rest of
/// its log is drained in the background so that it never blocks on a full pipe.
pub fn bound_address(stderr: std::process::ChildStderr) -> String {
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "serving metrics" {
            std::thread::spawn(move || lines.for_each(drop));
            return v["fields"]["address"].as_str().unwrap().to_string();
        }
    }
    panic!("no 'serving metrics' line");
}

/// The lines a child writes on stderr, read on a thread of their own (so the pipe never fills).
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
