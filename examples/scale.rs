//! Scale benchmark: the real `cdb-task-exporter` binary against the simulated API over HTTP.
//!
//! It starts the simulator in this process with a generated account (N instances, M tasks over
//! the last 24 h, 2% long-running, new tasks arriving at the same rate), starts the release
//! binary with a config pointing at it, and reports: time and resident memory after the first
//! ingest, peak memory, `/metrics` size and series, scrape latency (p50, p99, and the scrapes
//! that were the first after a poll), and DescribeTasks requests per steady cycle with their
//! breakdown (recent window, unfinished re-list, final-state look-ups).
//!
//! Run (the binary must be built first):
//!
//! ```text
//! cargo build --release && cargo run --release --example scale -- 1000 100000
//! cargo build --release && cargo run --release --example scale -- 10000 1000000 --interval 10
//! ```
//!
//! Arguments: instances, tasks, then optionally `--interval SECS` (default 2),
//! `--rps N` (the exporter's `requests_per_second`, default 1000: far above the API's 100/s, so
//! that the first ingest is not throttled; the steady-state figures do not depend on it),
//! `--cycles N` (steady cycles to observe, default 10), `--bin PATH`, `--state` (with a state
//! file, written after every poll, as the shipped Kubernetes config does), `--hold SECS` (wait
//! after the first ingest, for other clients or a profiler; the address and pid are printed).

// A benchmark times itself in real time; clippy.toml's ban on reading the system time is
// for the crate's code.
#![allow(clippy::disallowed_methods)]

use cdb_task_exporter::clock::SystemClock;
use cdb_task_exporter::sim::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Scenario, SimInstance, SimTask, Simulator,
};
use cdb_task_exporter::tencent::apitime::ApiZone;
use cdb_task_exporter::tencent::model::{TASK_TYPES, TaskStatus};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400;

struct Args {
    instances: usize,
    tasks: usize,
    interval: u64,
    rps: u32,
    cycles: u64,
    bin: PathBuf,
    state: bool,
    /// With `--mix`: half the instances CDB, a quarter TDSQL-C clusters, a quarter PostgreSQL
    /// instances, the tasks shared the same way.
    mix: bool,
    /// With `--hold SECS`: after the first ingest, print the exporter's address and process id
    /// and wait, so that other clients and profilers can be pointed at it.
    hold: u64,
}

fn args() -> Args {
    let mut a = Args {
        instances: 1_000,
        tasks: 100_000,
        interval: 2,
        rps: 1_000,
        cycles: 10,
        state: false,
        mix: false,
        hold: 0,
        bin: std::env::current_exe()
            .expect("own path")
            .parent()
            .and_then(|p| p.parent())
            .expect("target/<profile>/examples")
            .join("cdb-task-exporter"),
    };
    let mut it = std::env::args().skip(1);
    let mut positional = 0;
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match arg.as_str() {
            "--interval" => a.interval = value().parse().expect("seconds"),
            "--rps" => a.rps = value().parse().expect("a number"),
            "--cycles" => a.cycles = value().parse().expect("a number"),
            "--bin" => a.bin = value().into(),
            "--state" => a.state = true,
            "--mix" => a.mix = true,
            "--hold" => a.hold = value().parse().expect("seconds"),
            n if positional == 0 => {
                a.instances = n.parse().expect("instances");
                positional += 1;
            }
            n => {
                a.tasks = n.parse().expect("tasks");
            }
        }
    }
    a
}

/// `tasks` tasks over the last day on `instances` instances, and the same rate for `ahead`
/// seconds more; 2% run for 2 to 30 hours, the rest for 10 s to 10 min, 5% of those fail.
/// The products of a run: (product, share of the instances and tasks).
fn shares(mix: bool) -> &'static [(&'static str, usize)] {
    if mix {
        &[("cdb", 2), ("cynosdb", 1), ("postgres", 1)]
    } else {
        &[("cdb", 1)]
    }
}

/// The scenario of every product of the run, each with its share.
fn scenario(instances: usize, tasks: usize, ahead: i64, mix: bool) -> Scenario {
    let parts = shares(mix);
    let whole: usize = parts.iter().map(|p| p.1).sum();
    let mut all = Scenario::default();
    for (product, share) in parts {
        let s = product_scenario(
            product,
            instances * share / whole,
            tasks * share / whole,
            ahead,
        );
        all.tasks.extend(s.tasks);
        all.instances.extend(s.instances);
    }
    all
}

/// Task types of the products without a documented table.
const OPEN_TYPES: [&str; 6] = [
    "task_auto_backup",
    "task_modify_instance_param",
    "restore_database",
    "restart_instance",
    "upgrade_kernel_version",
    "modify_parameters",
];

fn product_scenario(product: &str, instances: usize, tasks: usize, ahead: i64) -> Scenario {
    let mut rng = fastrand::Rng::with_seed(7);
    let prefix = match product {
        "cynosdb" => "cynosdbmysql-",
        "postgres" => "postgres-",
        _ => "cdb-",
    };
    let ids: Vec<String> = (0..instances).map(|i| format!("{prefix}{i:08x}")).collect();
    let unit = |id: &str, rng: &mut fastrand::Rng| match product {
        // TDSQL-C: half the tasks on the cluster, half on one of its two instances.
        "cynosdb" if rng.bool() => format!("{id}/"),
        "cynosdb" => format!(
            "{id}/{}-ins-{}",
            id.replace("cynosdbmysql-", "cynosdbmysql"),
            rng.u8(..2)
        ),
        _ => id.to_string(),
    };
    let total = tasks as i64 + tasks as i64 * ahead / DAY;
    let tasks = (0..total)
        .map(|k| {
            let start = -DAY + k * DAY / tasks as i64;
            let inst = unit(ids[rng.usize(..ids.len())].as_str(), &mut rng);
            let ty = if product == "cdb" {
                TASK_TYPES[rng.usize(..TASK_TYPES.len())].2
            } else {
                OPEN_TYPES[rng.usize(..OPEN_TYPES.len())]
            };
            let (duration, status) = if rng.f64() < 0.02 {
                (rng.i64(7_200..108_000), TaskStatus::Succeed)
            } else if rng.f64() < 0.05 {
                (rng.i64(10..600), TaskStatus::Failed)
            } else {
                (rng.i64(10..600), TaskStatus::Succeed)
            };
            SimTask::simple(1_000_000 + k, ty, &[inst.as_str()], start, duration, status)
                .of_product(product)
        })
        .collect();
    // Every instance is listed by DescribeDBInstances, with a name and tags (discovery is on
    // by default: its listing and what it leaves behind count in the figures).
    let instances = ids
        .iter()
        .enumerate()
        .map(|(n, id)| SimInstance {
            product: product.to_string(),
            ..SimInstance::new(id, &format!("orders-{n}"))
                .tag("team", ["shop", "billing", "search"][n % 3])
                .tag("cost-center", &format!("cc-{}", n % 17))
        })
        .collect();
    Scenario {
        tasks,
        instances,
        ..Default::default()
    }
}

fn status_value(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) the process has used, in milliseconds (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10.0
}

/// `n` sequential scrapes, `pause` apart, with or without `Accept-Encoding: gzip`: p50 and p99
/// to the last byte, the bytes sent, and the exporter's CPU time per scrape (polls included
/// when paused).
async fn scrapes(
    http: &reqwest::Client,
    base: &str,
    pid: u32,
    (n, pause): (usize, Duration),
    (gzip, openmetrics): (bool, bool),
) -> (f64, f64, usize, f64) {
    let cpu0 = cpu_ms(pid);
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let mut req = http.get(format!("{base}/metrics"));
        if gzip {
            req = req.header("accept-encoding", "gzip");
        }
        if openmetrics {
            // What Prometheus sends by default.
            req = req.header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            );
        }
        let body = req
            .send()
            .await
            .expect("scrape")
            .bytes()
            .await
            .expect("body");
        times.push(t.elapsed().as_secs_f64() * 1_000.0);
        bytes = body.len();
        tokio::time::sleep(pause).await;
    }
    let cpu = (cpu_ms(pid) - cpu0) / n as f64;
    times.sort_by(f64::total_cmp);
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        bytes,
        cpu,
    )
}

/// `n` sequential plain scrapes on one kept-alive connection by a minimal HTTP/1.1 client (a
/// blocking socket, one read buffer reused, `Content-Length` or chunked): what the page costs
/// the exporter and the socket, with little of a client library's own work in the figure.
/// p50 and p99 to the last byte.
fn raw_scrapes(base: &str, n: usize) -> (f64, f64) {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = base.trim_start_matches("http://");
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut body = Vec::with_capacity(1 << 20);
    let mut line = String::new();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        writer.write_all(request.as_bytes()).expect("send");
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            chunked |= header.starts_with("transfer-encoding:") && header.contains("chunked");
        }
        body.clear();
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line).expect("chunk size");
                let size = usize::from_str_radix(line.trim_end(), 16).expect("hex size");
                let start = body.len();
                body.resize(start + size + 2, 0);
                reader.read_exact(&mut body[start..]).expect("chunk");
                body.truncate(start + size);
                if size == 0 {
                    break;
                }
            }
        } else {
            body.resize(length.expect("a length or chunks"), 0);
            reader.read_exact(&mut body).expect("body");
        }
        times.push(t.elapsed().as_secs_f64() * 1_000.0);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Exporter {
    child: Child,
    base: String,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_exporter(a: &Args, sim_url: &str, dir: &std::path::Path) -> Exporter {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        r#"[server]
listen_address = "127.0.0.1:{port}"
[poll]
interval = "{interval}s"
lookback = "24h"
requests_per_second = {rps}
request_timeout = "{timeout_ms}ms"
{state}
[[accounts]]
name = "bench"
secret_id = "{DEFAULT_SECRET_ID}"
secret_key = "{DEFAULT_SECRET_KEY}"
endpoint = "{sim_url}"
[discovery]
tags = ["team"]
{regions}"#,
        interval = a.interval,
        rps = a.rps,
        // Below the interval, which releases before docs/configuration.md#keys also require.
        timeout_ms = a.interval * 750,
        regions = shares(a.mix)
            .iter()
            .map(|(p, _)| format!(
                "[[accounts.regions]]\nregion = \"ap-guangzhou\"\nproduct = \"{p}\"\n"
            ))
            .collect::<String>(),
        state = if a.state {
            format!("state_file = \"{}\"", dir.join("state.json").display())
        } else {
            String::new()
        },
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write the config");
    let child = Command::new(&a.bin)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (cargo build --release first)",
                a.bin.display()
            )
        });
    Exporter {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// The value of the first sample of `name` in a page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// The benchmark reads as one measurement from start to table.
#[allow(clippy::too_many_lines)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    cdb_task_exporter::install_crypto_provider();
    let a = args();
    let steady = a.cycles * a.interval;
    let clock = SystemClock::shared();
    let built = Instant::now();
    let scenario = scenario(a.instances, a.tasks, 3_600, a.mix);
    // Kept to compute each product's floor of requests after the steady cycles.
    let all_tasks = scenario.tasks.clone();
    let sim = Simulator::with_default_keys(scenario, clock)
        .serve("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("simulator");
    eprintln!(
        "simulator ready with {} instances, {} tasks in the last 24 h ({:.1} s)",
        a.instances,
        a.tasks,
        built.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let exporter = start_exporter(&a, &sim.url(), dir.path());
    let pid = exporter.child.id();
    let http = reqwest::Client::new();

    // 1. First ingest: until /readyz says every target completed a poll.
    let t0 = Instant::now();
    loop {
        let ready = http
            .get(format!("{}/readyz", exporter.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(1_800), "no first poll");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingest = t0.elapsed();
    let rss_ingest = status_value(pid, "VmRSS:");
    let anon_ingest = status_value(pid, "RssAnon:");
    let file_ingest = status_value(pid, "RssFile:");
    if a.hold > 0 {
        eprintln!(
            "holding for {} s: exporter at {} (pid {pid})",
            a.hold, exporter.base
        );
        tokio::time::sleep(Duration::from_secs(a.hold)).await;
    }

    // 2. Steady state: requests of `cycles` polls, classified by what they ask for.
    tokio::time::sleep(Duration::from_secs(a.interval)).await;
    sim.sim.clear_requests();
    tokio::time::sleep(Duration::from_secs(steady)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let zone = ApiZone::beijing();
    let requests = sim.sim.requests();
    let mut per_product = Vec::new();
    for (product, _) in shares(a.mix) {
        let (mut recent, mut unfinished, mut lookups, mut cycles) = (0u64, 0u64, 0u64, 0u64);
        for r in requests.iter().filter(|r| r.product == *product) {
            let Some(req) = &r.request else { continue };
            let end = req
                .start_time_end
                .as_deref()
                .and_then(|e| zone.parse(e))
                .unwrap_or(0);
            if req.task_status.is_some() {
                unfinished += 1;
            } else if end > now - 60 {
                // Only the recent window reaches into the future.
                recent += 1;
                cycles += u64::from(req.offset.unwrap_or(0) == 0);
            } else {
                lookups += 1;
            }
        }
        // The floor: one request for the new tasks (those that started since the last poll),
        // one per 100 older tasks still unfinished, wherever they started: those in the
        // recent window's overlap (two intervals, at least 5 minutes) must be re-read to see
        // them end as much as older ones. `in_overlap` says how many of them started there.
        let sim_now = now - sim.sim.started();
        let recent_begin = sim_now - (2 * a.interval as i64).max(300);
        let last_poll = sim_now - a.interval as i64;
        let old_unfinished: Vec<i64> = all_tasks
            .iter()
            .filter(|t| t.product == *product && t.start < last_poll)
            .filter(|t| t.state_at(sim_now).is_some_and(|s| !s.0.is_terminal()))
            .map(|t| t.start)
            .collect();
        let in_overlap = old_unfinished
            .iter()
            .filter(|&&s| s >= recent_begin)
            .count();
        let floor = 1.0 + (old_unfinished.len() as f64 / 100.0).ceil();
        let filterable = cdb_task_exporter::product::named(product)
            .is_some_and(|p| !p.filterable_unfinished().is_empty());
        // A list without a status filter (PostgreSQL) cannot ask for the unfinished tasks
        // alone: its floor is the fewest pages of 100 tasks in start order that hold every
        // old unfinished one (greedy cover), each looked up once per 30 polls (the exporter's
        // rule for tasks running for more than 300 intervals: see `due` in src/poller).
        let open_floor = (!filterable).then(|| {
            let mut starts: Vec<(i64, bool)> = all_tasks
                .iter()
                .filter(|t| t.product == *product && t.start >= sim_now - DAY)
                .map(|t| {
                    let open = t.start < recent_begin
                        && t.state_at(sim_now).is_some_and(|s| !s.0.is_terminal());
                    (t.start, open)
                })
                .collect();
            starts.sort_unstable();
            let (mut pages, mut covered_until) = (0usize, 0usize);
            for (i, (_, open)) in starts.iter().enumerate() {
                if *open && i >= covered_until {
                    pages += 1;
                    covered_until = i + 100;
                }
            }
            1.0 + pages as f64 / 30.0
        });
        per_product.push((
            *product,
            recent,
            unfinished,
            lookups,
            cycles,
            (floor, old_unfinished.len(), in_overlap),
            open_floor,
        ));
    }
    // 3. Scrapes: sequential, timed to the last byte; note the first one after each poll.
    let mut times = Vec::new();
    let mut first_after_poll = Vec::new();
    let mut last_poll = None;
    let mut size = 0;
    let mut series = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let body = http
            .get(format!("{}/metrics", exporter.base))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        let ms = t.elapsed().as_secs_f64() * 1_000.0;
        times.push(ms);
        let poll = sample(
            &body,
            "tencentcloud_cdb_exporter_last_successful_poll_timestamp_seconds",
        );
        if last_poll.is_some() && poll != last_poll {
            first_after_poll.push(ms);
        }
        last_poll = poll;
        size = body.len();
        series = body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
    }
    times.sort_by(f64::total_cmp);
    first_after_poll.sort_by(f64::total_cmp);
    let rss_end = status_value(pid, "VmRSS:");
    let peak = status_value(pid, "VmHWM:");
    let threads = status_value(pid, "Threads:");

    println!("| figure | {} instances, {} tasks |", a.instances, a.tasks);
    println!("|---|---:|");
    println!(
        "| first ingest (until /readyz) | {:.1} s |",
        ingest.as_secs_f64()
    );
    println!("| RSS after the first ingest | {} |", mib(rss_ingest));
    println!(
        "| of which anonymous / file-backed | {} / {} |",
        mib(anon_ingest),
        mib(file_ingest)
    );
    println!("| RSS after {} scrapes | {} |", times.len(), mib(rss_end));
    println!("| peak RSS (VmHWM) | {} |", mib(peak));
    println!("| threads | {threads} |");
    println!(
        "| /metrics | {series} series, {:.1} MiB |",
        size as f64 / 1_048_576.0
    );
    println!(
        "| scrape p50 / p99 / max ({} sequential) | {:.1} / {:.1} / {:.1} ms |",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| first scrape after a poll: n / max | {} / {:.1} ms |",
        first_after_poll.len(),
        first_after_poll.last().copied().unwrap_or(f64::NAN)
    );
    for (product, recent, unfinished, lookups, cycles, floor, open_floor) in &per_product {
        let (floor, old, in_overlap) = *floor;
        let per = |n: u64| n as f64 / (*cycles).max(1) as f64;
        let total = per(recent + unfinished + lookups);
        let without_filter = open_floor.map_or(String::new(), |f| {
            format!("; without a status filter {f:.2}, {:.2}x", total / f)
        });
        println!(
            "| {product} DescribeTasks per steady cycle ({cycles} cycles, {}s interval) | {:.2} = {:.2} recent + {:.2} unfinished + {:.2} look-ups; floor {floor:.0} (1 + {old} unfinished / 100, {in_overlap} of them in the overlap), {:.2}x{without_filter} |",
            a.interval,
            total,
            per(*recent),
            per(*unfinished),
            per(*lookups),
            total / floor
        );
    }
    // 4. Compression: the same page plain and gzipped (Prometheus always asks for gzip).
    let back_to_back = (200, Duration::ZERO);
    let (p50, p99, plain_bytes, plain_cpu) =
        scrapes(&http, &exporter.base, pid, back_to_back, (false, false)).await;
    let (gz50, gz99, gz_bytes, gz_cpu) =
        scrapes(&http, &exporter.base, pid, back_to_back, (true, false)).await;
    let (om50, om99, om_bytes, om_cpu) =
        scrapes(&http, &exporter.base, pid, back_to_back, (true, true)).await;
    let base = exporter.base.clone();
    let (raw50, raw99) = tokio::task::spawn_blocking(move || raw_scrapes(&base, 200))
        .await
        .expect("raw scrapes");
    // Prometheus' scrape spread over five poll intervals, so that it meets every target's
    // publications (whose families are deflated ahead of the next scrape, or by a scrape that
    // comes first).
    let paced = (200, Duration::from_millis(a.interval * 5_000 / 200));
    let (pm50, pm99, _, _) = scrapes(&http, &exporter.base, pid, paced, (true, true)).await;
    println!(
        "| plain scrape: p50 / p99, bytes, exporter CPU | {p50:.2} / {p99:.2} ms, {:.2} MiB, {plain_cpu:.2} ms |",
        plain_bytes as f64 / 1_048_576.0
    );
    println!("| plain scrape, minimal kept-alive client: p50 / p99 | {raw50:.2} / {raw99:.2} ms |");
    println!(
        "| gzip scrape: p50 / p99, bytes, exporter CPU | {gz50:.2} / {gz99:.2} ms, {:.2} MiB ({:.1}x smaller), {gz_cpu:.2} ms |",
        gz_bytes as f64 / 1_048_576.0,
        plain_bytes as f64 / gz_bytes.max(1) as f64
    );
    println!(
        "| OpenMetrics gzip scrape: p50 / p99, bytes, exporter CPU | {om50:.2} / {om99:.2} ms, {:.2} MiB, {om_cpu:.2} ms |",
        om_bytes as f64 / 1_048_576.0
    );
    println!(
        "| OpenMetrics gzip scrape over five poll intervals: p50 / p99 | {pm50:.2} / {pm99:.2} ms |"
    );
    // 5. Task queries under load: six clients repeat a 60 kB `/api/v1/tasks` query (one
    // instance id 2,400 times) while `/healthz` and `/metrics` are timed.
    let query = format!(
        "{}/api/v1/tasks?limit=1000&{}",
        exporter.base,
        vec!["instance_id=cdb-00000000"; 2_400].join("&")
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (http, query, stop) = (http.clone(), query.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    if let Ok(r) = http.get(&query).send().await {
                        let _ = r.bytes().await;
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut health, mut metrics) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        for (path, out) in [("healthz", &mut health), ("metrics", &mut metrics)] {
            let t = Instant::now();
            let r = http.get(format!("{}/{path}", exporter.base)).send().await;
            if let Ok(r) = r {
                let _ = r.bytes().await;
            }
            out.push(t.elapsed().as_secs_f64() * 1_000.0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let mut queries = 0;
    for c in clients {
        queries += c.await.unwrap_or(0);
    }
    for (name, times) in [("/healthz", &mut health), ("/metrics", &mut metrics)] {
        times.sort_by(f64::total_cmp);
        println!(
            "| {name} p50 / p99 / max while 6 clients repeat a 60 kB task query ({queries} answered) | {:.1} / {:.1} / {:.1} ms |",
            percentile(times, 0.5),
            percentile(times, 0.99),
            times.last().copied().unwrap_or(f64::NAN)
        );
    }
    drop(exporter);
    sim.stop().await;
}
