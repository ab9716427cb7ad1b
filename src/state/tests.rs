//! The state file: round trips, crash windows, counters, planted files.

use super::*;
use crate::domain::{Task, TaskStatus};
use crate::target::TargetHandle;
use crate::tasks::{Observation, Scope};

fn id(account: &str, region: &str) -> TargetId {
    TargetId {
        account: account.into(),
        region: region.into(),
        product: "cdb",
    }
}

fn state_of(l: Loaded) -> Saved {
    match l {
        Loaded::State(s) => s,
        Loaded::Unreadable(e) => panic!("unreadable: {e}"),
    }
}

#[test]
fn round_trip_missing_and_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    assert_eq!(state_of(load(&path, 1)), Saved::default());
    let mut saved = Saved {
        version: FORMAT_VERSION,
        ..Default::default()
    };
    saved.targets.insert(
        "a/ap-guangzhou".into(),
        SavedTarget::new(Some(42), TaskStore::new(Scope::Region, 100, 7)),
    );
    write_atomic(&path, &saved).unwrap();
    assert_eq!(state_of(load(&path, 2)), saved);
    std::fs::write(&path, b"{\"version\": 1, \"targets\": {\"x\": ").unwrap();
    assert_eq!(state_of(load(&path, 3)), Saved::default());
    assert!(!path.exists());
    assert!(dir.path().join("state.json.corrupt-3").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
    // A valid file of another format version is moved aside as such.
    std::fs::write(&path, b"{\"version\": 1, \"targets\": {}}").unwrap();
    assert_eq!(state_of(load(&path, 4)), Saved::default());
    assert!(dir.path().join("state.json.corrupt-4").exists());
    // Time covered in the future would keep the backlog from ever being read: corrupt.
    let mut future = Saved {
        version: FORMAT_VERSION,
        ..Default::default()
    };
    future.targets.insert(
        "a/ap-guangzhou".into(),
        SavedTarget::new(Some(10_000), TaskStore::new(Scope::Region, 100, 7)),
    );
    write_atomic(&path, &future).unwrap();
    assert_eq!(state_of(load(&path, 10_000 - MAX_FUTURE_SKEW_SECS)), future);
    assert_eq!(state_of(load(&path, 5_000)), Saved::default());
    assert!(dir.path().join("state.json.corrupt-5000").exists());
    // A file that exists but cannot be read is reported, and left where it is.
    let unreadable = dir.path().join("a-directory");
    std::fs::create_dir(&unreadable).unwrap();
    assert!(matches!(load(&unreadable, 6), Loaded::Unreadable(_)));
    assert!(unreadable.is_dir());
}

#[test]
fn the_writer_streams_the_shared_states() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let shared: SharedTarget = Arc::new(Mutex::new(SavedTarget::new(
        Some(5),
        TaskStore::new(Scope::Region, 100, 7),
    )));
    let source = Fixed::of(vec![handle(id("a", "ap-guangzhou"), shared.clone())]);
    let writer = StateWriter::new(path.clone(), source, None);
    // A change after the writer was made is what gets written: no snapshot was taken.
    shared.lock().unwrap().covered_until = Some(9);
    writer.write().unwrap();
    let loaded = state_of(load(&path, 1));
    assert_eq!(loaded.version, FORMAT_VERSION);
    assert_eq!(
        loaded.targets.keys().collect::<Vec<_>>(),
        ["a/ap-guangzhou"]
    );
    assert_eq!(loaded.targets["a/ap-guangzhou"].covered_until, Some(9));
}

/// The targets a test's writer saves.
#[derive(Debug)]
struct Fixed(Vec<Arc<TargetHandle>>);

impl Fixed {
    fn of(handles: Vec<Arc<TargetHandle>>) -> Arc<dyn Source> {
        Arc::new(Fixed(handles))
    }
}

impl Source for Fixed {
    fn targets(&self) -> Vec<Arc<dyn Persistable>> {
        self.0
            .iter()
            .map(|h| h.clone() as Arc<dyn Persistable>)
            .collect()
    }
}

fn handle(id: TargetId, state: SharedTarget) -> Arc<TargetHandle> {
    Arc::new(TargetHandle::new(
        id,
        Shard::ALL,
        state,
        TargetSeries::default(),
    ))
}

/// One target's poll as the poller runs it: observe the task, count it if it just finished.
fn poll_once(target: &TargetHandle, metrics: &Metrics, status: TaskStatus, now: i64) {
    let t = id("a", "ap-guangzhou");
    let mut st = target.state().lock().unwrap();
    let task = Task {
        job_id: 7,
        task_type: "import_data".into(),
        status,
        start_time: 1_000,
        end_time: status.is_terminal().then_some(1_030),
        progress: 0,
        instance_ids: vec!["cdb-aaaa1111".into()],
        async_request_id: String::new(),
        code: None,
        message: String::new(),
    };
    let obs = Observation {
        task,
        via_instance: None,
    };
    if let Some(f) = st.store.observe(obs) {
        target.series().task_finished(&f);
    }
    st.covered_until = Some(now);
    drop(st);
    metrics.publish(
        &t,
        target.series(),
        ["cdb-aaaa1111"],
        &target.state().lock().unwrap().store.aggregates(),
        [],
    );
}

/// A process: its metrics and its target, fresh or restored from `path` as `run` does it.
fn start(path: &Path, now: i64) -> (Arc<Metrics>, Arc<TargetHandle>, StateWriter) {
    let metrics = Arc::new(Metrics::new(false, "t", "t"));
    let t = id("a", "ap-guangzhou");
    let saved = state_of(load(path, now)).targets.remove("a/ap-guangzhou");
    let (target, series) = match saved {
        Some(s) => s.resume(
            crate::product::default_product(),
            Shard::ALL,
            &|_| true,
            now,
        ),
        None => (
            SavedTarget::new(None, TaskStore::new(Scope::Region, 86_400, 900)),
            TargetSeries::default(),
        ),
    };
    let target = Arc::new(TargetHandle::new(
        t,
        Shard::ALL,
        Arc::new(Mutex::new(target)),
        series,
    ));
    let writer = StateWriter::new(
        path.to_path_buf(),
        Fixed::of(vec![target.clone()]),
        Some(metrics.clone()),
    );
    (metrics, target, writer)
}

fn failed_imports(metrics: &Metrics, target: &TargetSeries) -> Option<f64> {
    let text = String::from_utf8(metrics.render([target])).unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("tencentcloud_cdb_tasks_finished_total{")
                && l.contains("task_type=\"import_data\"")
                && l.contains("status=\"failed\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The crash windows of the module doc, each reached deterministically: the process dies
/// (its memory is dropped) before the write, during it (the writer fails half-way), or
/// after it; in every case the next process shows the failure counted exactly once.
#[test]
fn every_crash_window_counts_a_failure_exactly_once() {
    for window in ["before the write", "during the write", "after the write"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // A first process sees the import running, and writes that.
        let (metrics, target, writer) = start(&path, 1_010);
        poll_once(&target, &metrics, TaskStatus::Running, 1_010);
        writer.write().unwrap();
        // Its next poll sees the import failed, and counts it in memory.
        poll_once(&target, &metrics, TaskStatus::Failed, 1_040);
        assert_eq!(
            failed_imports(&metrics, target.series()),
            Some(1.0),
            "{window}"
        );
        let before = std::fs::read(&path).unwrap();
        match window {
            "before the write" => {}
            "during the write" => {
                let out = FileOut {
                    version: FORMAT_VERSION,
                    targets: BTreeMap::new(),
                };
                let torn = write_atomic_with(&path, |w| {
                    w.write_all(&serde_json::to_vec(&out).unwrap()[..10])?;
                    Err(std::io::Error::other("killed mid-write"))
                });
                assert!(torn.is_err());
                assert_eq!(std::fs::read(&path).unwrap(), before, "the file is whole");
            }
            _ => writer.write().unwrap(),
        }
        drop((metrics, target, writer));
        // The next process polls again and sees the import failed.
        let (metrics, target, _writer) = start(&path, 1_100);
        poll_once(&target, &metrics, TaskStatus::Failed, 1_100);
        assert_eq!(
            failed_imports(&metrics, target.series()),
            Some(1.0),
            "{window}"
        );
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0, "{window}");
    }
}

#[test]
fn a_version_2_file_loads_with_counters_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let v2 = r#"{"version":2,"targets":{"a/ap-guangzhou":{"covered_until":1000,
        "store":{"lookback":86400,"baseline_cutoff":900,"tasks":[],"last_finished":[]}}}}"#;
    std::fs::write(&path, v2).unwrap();
    let saved = state_of(load(&path, 1_000));
    assert_eq!(saved.version, FORMAT_VERSION);
    let target = &saved.targets["a/ap-guangzhou"];
    assert_eq!(target.covered_until, Some(1_000));
    assert!(target.counters.is_empty());
    assert!(path.exists(), "a version 2 file is read, not moved aside");
}

#[test]
fn counters_are_written_and_restored_for_the_instances_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let t = id("a", "ap-guangzhou");
    let (metrics, target, writer) = start(&path, 1_010);
    poll_once(&target, &metrics, TaskStatus::Failed, 1_040);
    writer.write().unwrap();
    let saved = state_of(load(&path, 1_100))
        .targets
        .remove("a/ap-guangzhou");
    let counters = saved.unwrap().counters;
    assert_eq!(counters.finished.len(), 1);
    assert_eq!(counters.finished[0].value, 1);
    assert_eq!(counters.durations[0].count, 1);
    assert!((counters.durations[0].sum - 30.0).abs() < f64::EPSILON);
    // Restored into a process that no longer watches the instance: its counter is gone,
    // the histogram (no instance label) stays.
    let fresh = Metrics::new(false, "t", "t");
    let series = TargetSeries::restored(
        crate::product::default_product(),
        &counters,
        Shard::ALL,
        &|i| i != "cdb-aaaa1111",
    );
    fresh.publish(
        &t,
        &series,
        ["cdb-bbbb2222"],
        &TaskStore::new(Scope::Region, 1, 1).aggregates(),
        [],
    );
    assert_eq!(failed_imports(&fresh, &series), Some(0.0));
    let text = String::from_utf8(fresh.render([&series])).unwrap();
    assert!(text.contains("tencentcloud_cdb_task_duration_seconds_count{region=\"ap-guangzhou\",status=\"failed\",task_type=\"import_data\"} 1"), "{text}");
    // Counted in another sharding, the histogram is not restored.
    let other = Metrics::new(false, "t", "t");
    let series = TargetSeries::restored(
        crate::product::default_product(),
        &counters,
        Shard { index: 0, total: 2 },
        &|_| true,
    );
    other.publish(
        &t,
        &series,
        ["cdb-aaaa1111"],
        &TaskStore::new(Scope::Region, 1, 1).aggregates(),
        [],
    );
    let text = String::from_utf8(other.render([&series])).unwrap();
    assert!(
        !text.contains("tencentcloud_cdb_task_duration_seconds_count{"),
        "{text}"
    );
    assert_eq!(failed_imports(&other, &series), Some(1.0));
}

#[test]
fn a_planted_fifo_neither_blocks_the_start_nor_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let fifo = |p: &Path| {
        let ok = std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // At the old, predictable temp name: the writer never opens it.
    fifo(
        &dir.path()
            .join(format!("state.json.tmp-{}", std::process::id())),
    );
    write_atomic(&path, &Saved::default()).unwrap();
    // In place of the state file: reported unreadable (and left alone), not read.
    std::fs::remove_file(&path).unwrap();
    fifo(&path);
    assert!(matches!(load(&path, 1), Loaded::Unreadable(_)));
    assert!(path.exists());
}

#[test]
fn a_planted_symlink_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // Every name the old writer used, planted as a symlink to the victim.
    let planted = dir
        .path()
        .join(format!("state.json.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    write_atomic(&path, &Saved::default()).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(path.exists());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "readable by the owner only");
}
