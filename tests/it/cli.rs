//! The real binary: exit codes, --check-config, signals, the simulator command, secrets in
//! output, and a scrape linted by promtool.

use crate::common::*;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cdb-task-exporter");
const SECRET_KEY: &str = "s3cr3t-KEY-value-that-must-never-show";
const TOKEN: &str = "t0ken-value-that-must-never-show";

fn exporter(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("CDB_TASK_EXPORTER_CONFIG")
        .env_remove("TENCENTCLOUD_SECRET_ID")
        .env_remove("TENCENTCLOUD_SECRET_KEY")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    exporter(args).output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const GOOD: &str = r#"
[poll]
interval = "30s"
[[accounts]]
name = "prod"
secret_id = "AKIDprodEXAMPLE000000000000"
secret_key = "s3cr3t-KEY-value-that-must-never-show"
token = "t0ken-value-that-must-never-show"
[[accounts.regions]]
region = "ap-shanghai-fsi"
instances = ["cdb-c1nl9rpv"]
"#;

#[test]
fn check_config_prints_a_summary_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "good.toml", GOOD);
    let out = run(&["--config", &path, "--check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("account \"prod\": credentials from config"),
        "{stdout}"
    );
    assert!(
        stdout.contains("https://cdb.ap-shanghai-fsi.tencentcloudapi.com/"),
        "{stdout}"
    );
    assert!(stdout.contains("cdb-c1nl9rpv"));
    assert!(stdout.contains("[redacted]"));
    for secret in [SECRET_KEY, TOKEN, "AKIDprodEXAMPLE000000000000"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
    }
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = exporter(&["--config", path, "--check-config"])
        .env("TENCENTCLOUD_SECRET_ID", "AKIDfromENV0000000000")
        .env("TENCENTCLOUD_SECRET_KEY", "fromenv")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("environment"));
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            GOOD.replace("interval = \"30s\"", "interval = \"30s\"\nbogus_key = 1"),
            "poll.bogus_key",
        ),
        (GOOD.replace("\"30s\"", "\"thirty\""), "poll.interval"),
        (
            GOOD.replace("cdb-c1nl9rpv", "mysql-1"),
            "accounts[0].regions[0].instances[0]",
        ),
        (
            GOOD.replace("ap-shanghai-fsi", "Shanghai"),
            "accounts[0].regions[0].region",
        ),
        // A state file in a directory that does not exist, or that is a directory itself.
        (
            GOOD.replace(
                "interval = \"30s\"",
                &format!(
                    "interval = \"30s\"\nstate_file = {:?}",
                    dir.path().join("no-such-dir/state.json")
                ),
            ),
            "poll.state_file",
        ),
        (
            GOOD.replace(
                "interval = \"30s\"",
                &format!("interval = \"30s\"\nstate_file = {:?}", dir.path()),
            ),
            "poll.state_file",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("bad{i}.toml"), text);
        let out = run(&["--config", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{key}: {stderr}");
        assert!(stderr.contains(&path), "the file is named: {stderr}");
        assert!(!stderr.contains(SECRET_KEY));
    }
    let missing = dir.path().join("missing.toml");
    let out = run(&["--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "no config given");
    // Environment overrides are validated too.
    let path = write(dir.path(), "env.toml", GOOD);
    let out = exporter(&["--config", &path, "--check-config"])
        .env("CDB_TASK_EXPORTER__POLL__LOOKBACK", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`poll.lookback`"));
    // A list key cannot be overridden: the error names the variable, never its value.
    let out = exporter(&["--config", &path, "--check-config"])
        .env(
            "CDB_TASK_EXPORTER__ACCOUNTS__0__SECRET_KEY",
            "env-secret-never-shown",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CDB_TASK_EXPORTER__ACCOUNTS__0__SECRET_KEY"),
        "{stderr}"
    );
    assert!(stderr.contains("`accounts`"), "{stderr}");
    assert!(!stderr.contains("env-secret-never-shown"));
    let out = exporter(&["--config", &path, "--check-config"])
        .env("CDB_TASK_EXPORTER__POLL__INTERVAL", "45s")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("interval 45s"));
}

#[test]
fn version_names_the_revision() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("revision"),
        "{text}"
    );
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_ready(url: &str) {
    cdb_task_exporter::install_crypto_provider();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(resp) = reqwest::get(url).await
            && resp.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The simulator binary and the exporter binary together, SIGHUP, SIGTERM, secrets, promtool.
#[tokio::test]
async fn binaries_serve_reload_lint_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write(
        dir.path(),
        "scenario.toml",
        r#"
[[tasks]]
type = "IMPORT DATA"
instances = ["cdb-aaaa1111"]
start = "-10m"
status = "FAILED"
duration = "30s"
[[tasks]]
type = "UPGRADE MASTER"
instances = ["cdb-aaaa1111", "cdb-bbbb2222"]
start = "-5m"
status = "RUNNING"
"#,
    );
    let mut sim = Running(
        exporter(&[
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            &scenario,
            "--secret-id",
            "AKIDbinarytest000000000",
            "--secret-key",
            SECRET_KEY,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    // Port 0 for both: the simulator prints its address, the exporter logs its own (a port
    // picked here and bound later could be taken by a test running beside this one).
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sim.0.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let sim_url = first
        .trim()
        .strip_prefix("simulated CDB API listening on ")
        .unwrap_or_else(|| panic!("the simulator's first line: {first:?}"))
        .to_string();
    let config_text = |instances: &str| {
        format!(
            r#"
[server]
listen_address = "127.0.0.1:0"
[poll]
interval = "1s"
request_timeout = "900ms"
[[accounts]]
name = "bin"
secret_id = "AKIDbinarytest000000000"
secret_key_file = "{}"
token = "{TOKEN}"
endpoint = "{sim_url}"
[[accounts.regions]]
region = "ap-guangzhou"
{instances}
"#,
            dir.path().join("key").display()
        )
    };
    std::fs::write(dir.path().join("key"), format!("{SECRET_KEY}\n")).unwrap();
    let config = write(dir.path(), "config.toml", &config_text(""));
    let mut child = exporter(&["--config", &config, "--log-format", "json"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Logs are read as they come (a full pipe would block the exporter), into a shared buffer.
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + PATIENCE;
    let address = loop {
        let found = logs.lock().unwrap().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "serving metrics")
                .then(|| v["fields"]["address"].as_str().map(str::to_string))
                .flatten()
        });
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "no 'serving metrics' line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !address.ends_with(":0"),
        "the bound address is logged: {address}"
    );
    let base = format!("http://{address}");
    wait_ready(&format!("{base}/readyz")).await;
    let metrics = get(&format!("{base}/metrics")).await.1;
    let s = Series::parse(&metrics);
    assert_eq!(s.tasks(A, "import_data", "failed"), 1.0);
    assert_eq!(s.tasks(B, "upgrade_master", "running"), 1.0);

    // promtool finds nothing to complain about in a real scrape.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/install-test-tools (Debian package prometheus)");
    std::io::Write::write_all(lint.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(
        lint.status.success() && findings.trim().is_empty(),
        "promtool: {findings}"
    );

    // SIGHUP with an invalid config is ignored, logged and shown in the reload metric; with a
    // valid one, the instance list changes.
    const RELOADED: &str = "tencentcloud_cdb_exporter_config_last_reload_successful";
    const RELOADED_AT: &str =
        "tencentcloud_cdb_exporter_config_last_reload_success_timestamp_seconds";
    let s = Series::parse(&get(&format!("{base}/metrics")).await.1);
    assert_eq!(s.get(RELOADED, &[]), Some(1.0));
    let started_at = s.get(RELOADED_AT, &[]).unwrap();
    assert!(started_at > 1.7e9, "{started_at}");
    std::fs::write(&config, "not = [valid").unwrap();
    signal(&child, "-HUP");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = Series::parse(&get(&format!("{base}/metrics")).await.1);
        if logs.lock().unwrap().contains("reload ignored") && s.get(RELOADED, &[]) == Some(0.0) {
            assert_eq!(s.get(RELOADED_AT, &[]), Some(started_at));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the invalid reload was not reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new config also moves a key read only at start-up: the rest applies, the log says
    // that one waits for a restart.
    let reloaded = config_text("instances = [\"cdb-aaaa1111\"]")
        .replace("[server]\n", "[server]\nmax_connections = 7\n");
    std::fs::write(&config, reloaded).unwrap();
    signal(&child, "-HUP");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = Series::parse(&get(&format!("{base}/metrics")).await.1);
        if s.count("tencentcloud_cdb_tasks", &[("instance_id", B)]) == 0
            && s.tasks(A, "upgrade_master", "running") == 1.0
            && s.get(RELOADED, &[]) == Some(1.0)
        {
            assert!(s.get(RELOADED_AT, &[]).unwrap() >= started_at);
            assert_eq!(
                s.count(
                    "tencentcloud_cdb_tasks_finished_total",
                    &[("instance_id", B)]
                ),
                0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload did not drop cdb-bbbb2222:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);

    signal(&child, "-TERM");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    reader.join().unwrap();
    let stderr = logs.lock().unwrap().clone();
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(
        stderr.contains(r#""needs_restart":"server.max_connections""#),
        "{stderr}"
    );
    for secret in [SECRET_KEY, TOKEN] {
        assert!(!stderr.contains(secret), "secret in logs");
        assert!(!stdout.contains(secret), "secret on stdout");
        assert!(!metrics.contains(secret), "secret in metrics");
    }
    // Logs are JSON lines.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

#[tokio::test]
async fn sigint_exits_0_and_a_taken_port_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = format!(
        "[server]\nlisten_address = \"127.0.0.1:{port}\"\n[[accounts]]\nname = \"x\"\nsecret_id = \"AKIDx0000000000\"\nsecret_key = \"k\"\nendpoint = \"http://127.0.0.1:9\"\n[[accounts.regions]]\nregion = \"ap-guangzhou\"\n"
    );
    let path = write(dir.path(), "c.toml", &text);
    let out = run(&["--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    drop(taken);
    // The same config on a port of its own (port 0: the port just freed could be taken by a
    // test running beside this one before the exporter binds it).
    let text = text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    let path = write(dir.path(), "c0.toml", &text);
    let mut child = exporter(&["--config", &path, "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = bound_address(child.stderr.take().unwrap());
    wait_ready(&format!("http://{address}/healthz")).await;
    // The API endpoint is unreachable: the exporter keeps serving and is not ready.
    assert_eq!(get(&format!("http://{address}/readyz")).await.0, 503);
    signal(&child, "-INT");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

/// `simulate --clock-offset` puts the simulated API's clock off this machine's: its `Date`
/// header says so (the exporter learns the skew from it).
#[test]
fn the_simulator_clock_offset_shows_in_its_date_header() {
    use std::io::{BufRead, Write};
    let mut sim = Running(
        exporter(&[
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--clock-offset",
            "-900",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let mut first = String::new();
    std::io::BufReader::new(sim.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("simulated CDB API listening on http://")
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let date = answer
        .lines()
        .find_map(|l| {
            l.strip_prefix("date: ")
                .or_else(|| l.strip_prefix("Date: "))
        })
        .unwrap_or_else(|| panic!("no Date header: {answer}"));
    let api = chrono::DateTime::parse_from_rfc2822(date)
        .unwrap()
        .timestamp();
    let skew = api - chrono::Utc::now().timestamp();
    assert!((-905..=-895).contains(&skew), "{skew}");
}

/// glibc's mmap threshold (src/malloc.rs): the binary runs itself again with the threshold
/// fixed in `GLIBC_TUNABLES`, beside what was set there, and keeps a threshold already set.
#[tokio::test]
async fn the_binary_runs_with_glibc_s_mmap_threshold_fixed() {
    use cdb_task_exporter::malloc::MARK;
    let cases = [
        (None, "glibc.malloc.mmap_threshold=131072", true),
        (
            Some("glibc.malloc.arena_max=4"),
            "glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=131072",
            true,
        ),
        (
            Some("glibc.malloc.mmap_threshold=65536"),
            "glibc.malloc.mmap_threshold=65536",
            false,
        ),
    ];
    for (given, expected, executed_again) in cases {
        let port = free_port();
        let mut command = exporter(&["simulate", "--listen", &format!("127.0.0.1:{port}")]);
        command.env_remove("GLIBC_TUNABLES").env_remove(MARK);
        if let Some(given) = given {
            command.env("GLIBC_TUNABLES", given);
        }
        let child = Running(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_ready(&format!("http://127.0.0.1:{port}/_sim/stats")).await;
        // The same process (exec keeps the pid), now with this environment. (glibc cuts the
        // tunables it has read apart with NULs in place: they are joined back with ':'.)
        let environ = std::fs::read(format!("/proc/{}/environ", child.0.id())).unwrap();
        let environ = format!(":{}", String::from_utf8_lossy(&environ).replace('\0', ":"));
        assert!(
            environ.contains(&format!(":GLIBC_TUNABLES={expected}:")),
            "{given:?}"
        );
        assert_eq!(
            environ.contains(&format!(":{MARK}=1:")),
            executed_again,
            "{given:?}"
        );
    }
}
