//! The real binary killed with SIGKILL again and again, some kills aimed at state file writes,
//! while tasks finish: what Prometheus would have scraped never goes down, every task that
//! finished after the first start is counted exactly once, the baseline never, and the state
//! file was always readable (docs/semantics.md#counters-survive-restarts).

use crate::common::*;
use cdb_task_exporter::clock::Clock;
use cdb_task_exporter::domain::TaskStatus;
use cdb_task_exporter::sim::{Scenario, SimTask};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cdb-task-exporter");
/// Tasks that finish while the exporter is being killed.
const FINISHING: i64 = 80;
/// Old finished tasks: the baseline, and the bulk that makes each state write take a while.
const BASELINE: i64 = 6_000;
/// Seconds after the simulator's start by which every task has ended.
const LAST_END: i64 = 24;
/// Kills, at the least.
const KILLS: usize = 40;

type Key = (String, String, String);

fn scenario(rng: &mut fastrand::Rng) -> (Scenario, BTreeMap<Key, u64>) {
    let types = ["import_data", "reboot", "modify_param", "upgrade_master"];
    let statuses = [TaskStatus::Failed, TaskStatus::Succeed, TaskStatus::Killed];
    let mut tasks = Vec::new();
    let mut expected: BTreeMap<Key, u64> = BTreeMap::new();
    for job in 0..FINISHING {
        let instance = format!("cdb-crsh{:04}", job % 8);
        let ty = types[rng.usize(..types.len())];
        let status = statuses[rng.usize(..statuses.len())];
        let end = rng.i64(3..=LAST_END);
        let start = end - rng.i64(1..60);
        tasks.push(SimTask::simple(
            1_000 + job,
            ty,
            &[&instance],
            start,
            end - start,
            status,
        ));
        *expected
            .entry((instance, ty.to_string(), status.as_str().to_string()))
            .or_default() += 1;
    }
    for job in 0..BASELINE {
        let start = -80_000 + job * 10;
        tasks.push(
            SimTask::simple(
                100_000 + job,
                "rollback",
                &["cdb-base0001"],
                start,
                5,
                TaskStatus::Failed,
            )
            .with_message("an old failure, long before the exporter started"),
        );
    }
    let s = Scenario {
        tasks,
        ..Scenario::default()
    };
    (s, expected)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path) -> (Killed, String) {
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env("HOME", "/nonexistent")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = bound_address(child.stderr.take().unwrap());
    (Killed(child), address)
}

/// The finished counters of a scrape, by label values.
fn finished(text: &str) -> BTreeMap<Key, u64> {
    Series::parse(text)
        .matching("tencentcloud_cdb_tasks_finished_total", &[])
        .map(|(labels, v)| {
            let l = |k: &str| {
                labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            ((l("instance_id"), l("task_type"), l("status")), v as u64)
        })
        .collect()
}

/// `GET /metrics` over HTTP/1.0 (the body ends where the connection does), from a plain
/// thread: `None` when the process is gone or the answer is not a 200.
fn scrape(address: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(address).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: exporter\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_loses_and_doubles_nothing() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let (scenario, expected) = scenario(&mut rng);
    let (sim, clock) = start_sim(scenario).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let text = config_text(
        &sim.url(),
        &format!(
            "requests_per_second = 1000\nstate_file = \"{}\"",
            state.display()
        ),
        &region("ap-guangzhou", &[]),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let sim_start = sim.sim.started();

    let dir_path = dir.path().to_path_buf();
    let state_path = state.clone();
    let report = tokio::task::spawn_blocking(move || {
        // Every value a scrape saw, per series: it may never go down.
        let mut seen: BTreeMap<Key, u64> = BTreeMap::new();
        let mut kills = 0;
        let mut during_write = 0;
        let mut scrapes = 0;
        while kills < KILLS || clock.now() - sim_start <= LAST_END + 1 {
            let (child, address) = spawn(&config);
            // Half the kills wait, after a random time, for a state write to be under way; the
            // others come at that random moment, before the first poll as well as after.
            let until = Instant::now() + Duration::from_millis(rng.u64(50..900));
            while Instant::now() < until {
                if rng.u8(..10) == 0
                    && let Some(text) = scrape(&address)
                {
                    scrapes += 1;
                    for (key, v) in finished(&text) {
                        let before = seen.entry(key.clone()).or_default();
                        assert!(v >= *before, "{key:?} went from {before} down to {v}");
                        *before = v;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if kills % 2 == 0 {
                let give_up = Instant::now() + Duration::from_secs(3);
                while temp_files(&dir_path) == 0 && Instant::now() < give_up {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            drop(child); // SIGKILL
            kills += 1;
            if temp_files(&dir_path) > 0 {
                during_write += 1;
            }
            if state_path.exists() {
                let bytes = std::fs::read(&state_path).unwrap();
                if let Err(e) = cdb_task_exporter::state::decode(&bytes, clock.now()) {
                    panic!("the state file was unreadable after kill {kills}: {e:?}");
                }
            }
        }
        // A last run, left to poll past the last end, then stopped cleanly.
        let (mut child, address) = spawn(&config);
        let target = clock.now();
        let deadline = Instant::now() + PATIENCE;
        let last = loop {
            let text = scrape(&address).unwrap_or_default();
            let s = Series::parse(&text);
            let polled = s
                .get(
                    "tencentcloud_cdb_exporter_last_successful_poll_timestamp_seconds",
                    &[],
                )
                .is_some_and(|v| v as i64 > target);
            if polled {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "no poll after the kills:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status();
        let status = child.0.wait().unwrap();
        assert!(status.success(), "{status}");
        (finished(&last), kills, during_write, scrapes)
    })
    .await
    .unwrap();
    let (last, kills, during_write, scrapes) = report;

    let counted: BTreeMap<Key, u64> = last.into_iter().filter(|(_, v)| *v > 0).collect();
    assert_eq!(
        counted, expected,
        "each task counted exactly once, the baseline never"
    );
    assert!(kills >= KILLS);
    assert!(during_write > 0, "no kill landed during a state write");
    assert!(scrapes > 0);
    let aside = std::fs::read_dir(dir.path()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".corrupt-")
    });
    assert!(!aside, "a state file was moved aside as corrupt");
    assert_eq!(
        temp_files(dir.path()),
        0,
        "the temp files of killed writers are cleaned up"
    );
    eprintln!("{kills} kills, {during_write} during a state write, {scrapes} scrapes");
    sim.stop().await;
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        // Mounting needs root; CI runs as root, as the package test needs too.
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0")),
            "this test mounts a tmpfs: run it as root (CI does)"
        );
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` until it refuses more.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).and_then(|()| f.sync_all()).is_ok() {}
}

#[tokio::test]
async fn a_full_disk_keeps_the_last_file_and_writing_resumes() {
    let tasks = (0..1_000)
        .map(|i| {
            SimTask::simple(
                i,
                "rollback",
                &["cdb-base0001"],
                -80_000 + i * 10,
                5,
                TaskStatus::Failed,
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "1m");
    let state = disk.0.join("state.json");
    let pair = Pair::start(
        Scenario {
            tasks,
            ..Scenario::default()
        },
        &format!("state_file = \"{}\"", state.display()),
        &region("ap-guangzhou", &[]),
    )
    .await;
    pair.advance(1).await;
    assert!(state.exists());
    let errors = |s: &Series| {
        s.get(
            "tencentcloud_cdb_exporter_state_file_errors_total",
            &[("operation", "write")],
        )
        .unwrap_or(0.0)
    };

    fill(&disk.0.join("filler"));
    let s = pair.exporter.wait_for(|s| errors(s) >= 1.0).await;
    let kept = std::fs::read(&state).unwrap();
    let n = errors(&s);
    pair.exporter.wait_for(|s| errors(s) >= n + 2.0).await;
    assert_eq!(
        std::fs::read(&state).unwrap(),
        kept,
        "the last good file is intact"
    );
    cdb_task_exporter::state::decode(&kept, pair.clock.now()).expect("and readable");
    assert_eq!(temp_files(&disk.0), 0, "no temp file is left behind");
    // Polls go on meanwhile.
    let s = pair.advance(1).await;
    assert_eq!(
        s.get("tencentcloud_cdb_exporter_last_poll_success", &[]),
        Some(1.0)
    );

    std::fs::remove_file(disk.0.join("filler")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while std::fs::read(&state).unwrap() == kept {
        assert!(Instant::now() < deadline, "no write after space returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = errors(&pair.exporter.series().await);
    pair.advance(2).await;
    assert_eq!(
        errors(&pair.exporter.series().await),
        after,
        "writes succeed again"
    );
    let saved = cdb_task_exporter::state::decode(&std::fs::read(&state).unwrap(), pair.clock.now())
        .expect("readable");
    assert_eq!(saved.targets.values().next().unwrap().store.len(), 1_000);
    pair.stop().await;
    drop(disk);
}
