//! The state file (contract §5.5): every target's task store and covered time, written
//! atomically (temp file, fsync, rename) after each poll and at shutdown, so a restart counts
//! tasks that finished while the exporter was down exactly once and nothing twice.

use crate::tasks::TaskStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Format version of the file.
pub const FORMAT_VERSION: u32 = 2;

/// One target's saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedTarget {
    /// End of the time the last successful poll covered.
    pub covered_until: Option<i64>,
    /// The task store.
    pub store: TaskStore,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// [`FORMAT_VERSION`]
    pub version: u32,
    /// Targets by `account/region`.
    pub targets: BTreeMap<String, SavedTarget>,
}

/// How far in the future a saved `covered_until` may lie (clock adjustments) before the file
/// is taken as corrupt: a later one would keep the backlog from ever being read.
pub const MAX_FUTURE_SKEW_SECS: i64 = 300;

/// What reading the state file gave.
#[derive(Debug)]
pub enum Loaded {
    /// The saved state (empty for a missing, corrupt or other-version file; the last two were
    /// moved aside).
    State(Saved),
    /// The file exists but could not be read (permissions, I/O, a directory). It is left as it
    /// is, and must not be written over: it may hold the baseline of exactly-once counting.
    Unreadable(std::io::Error),
}

/// Reads the state file: a missing file is a fresh start; a corrupt one (or one of another
/// format version, or covering time in the future) is moved aside (`<file>.corrupt-<unix
/// time>`) with a warning, and the exporter starts fresh; an unreadable one is left alone.
pub fn load(path: &Path, now: i64) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Loaded::State(Saved::default());
        }
        Err(e) => return Loaded::Unreadable(e),
    };
    Loaded::State(parse(path, &bytes, now))
}

/// Why the bytes of a state file were not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Another format version.
    Version(u32),
    /// Not a state file of this version.
    Corrupt(String),
    /// A target's `covered_until` lies in the future (by more than [`MAX_FUTURE_SKEW_SECS`]).
    Future(i64),
}

/// Decodes the bytes of a state file, checked against `now`. Pure.
pub fn decode(bytes: &[u8], now: i64) -> Result<Saved, Rejected> {
    // The version first: an older format is set aside as such, not reported as corrupt.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    if let Ok(v) = serde_json::from_slice::<Version>(bytes)
        && v.version != FORMAT_VERSION
    {
        return Err(Rejected::Version(v.version));
    }
    let saved: Saved =
        serde_json::from_slice(bytes).map_err(|e| Rejected::Corrupt(e.to_string()))?;
    match saved
        .targets
        .values()
        .filter_map(|t| t.covered_until)
        .find(|c| *c > now.saturating_add(MAX_FUTURE_SKEW_SECS))
    {
        Some(c) => Err(Rejected::Future(c)),
        None => Ok(saved),
    }
}

/// [`decode`], moving a rejected file aside with a warning.
fn parse(path: &Path, bytes: &[u8], now: i64) -> Saved {
    let why = match decode(bytes, now) {
        Ok(saved) => return saved,
        Err(Rejected::Version(v)) => format!("another format version ({v})"),
        Err(Rejected::Corrupt(e)) => format!("corrupt ({e})"),
        Err(Rejected::Future(c)) => format!("covering time in the future ({c} > now {now})"),
    };
    let aside = move_aside(path, now);
    tracing::warn!(path = %path.display(), moved_to = %aside.display(), "state file is {why}; moved aside, starting fresh");
    Saved::default()
}

fn move_aside(path: &Path, now: i64) -> PathBuf {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{now}"));
    let aside = PathBuf::from(aside);
    if let Err(e) = std::fs::rename(path, &aside) {
        tracing::warn!(path = %path.display(), error = %e, "cannot move the corrupt state file aside");
    }
    aside
}

/// Writes `saved` to `path` atomically: a temp file beside it, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, saved: &Saved) -> std::io::Result<()> {
    write_atomic_with(path, |w| Ok(serde_json::to_writer(w, saved)?))
}

/// Writes a file atomically from what `fill` writes into it (buffered, never whole in memory).
fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::create(&tmp)?);
        fill(&mut w)?;
        w.write_all(b"\n")?;
        let f = w
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One target's state, shared by its poller and the state writer.
pub type SharedTarget = Arc<Mutex<SavedTarget>>;

/// Serializes a shared target under its lock.
struct Locked<'a>(&'a Mutex<SavedTarget>);

impl Serialize for Locked<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.lock().expect("lock").serialize(s)
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    targets: BTreeMap<&'a str, Locked<'a>>,
}

/// Writes the running targets' states to the file.
///
/// It holds the targets' shared states, not copies: a write serializes each target in turn,
/// under that target's lock, straight into the temp file. A poll of that target waits for the
/// write at its next store access (about 0.1 s per 100k tasks); the other targets do not wait,
/// and no poll copies its store.
#[derive(Debug)]
pub struct StateWriter {
    path: PathBuf,
    targets: Mutex<BTreeMap<String, SharedTarget>>,
    failing: Mutex<bool>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl StateWriter {
    /// A writer for `path`; failed writes are counted in `metrics` when given.
    pub fn new(path: PathBuf, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        StateWriter {
            path,
            targets: Mutex::new(BTreeMap::new()),
            failing: Mutex::new(false),
            metrics,
        }
    }

    /// Writes this target's state from now on (replacing an earlier one of the same key).
    pub fn register(&self, key: &str, target: SharedTarget) {
        self.targets
            .lock()
            .expect("lock")
            .insert(key.to_string(), target);
    }

    /// Forgets targets that are no longer configured.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.targets.lock().expect("lock").retain(|k, _| keep(k));
    }

    /// Writes the file; a failure is logged once per change, never fatal.
    pub fn write(&self) {
        let targets: Vec<(String, SharedTarget)> = self
            .targets
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let out = FileOut {
            version: FORMAT_VERSION,
            targets: targets
                .iter()
                .map(|(k, v)| (k.as_str(), Locked(v)))
                .collect(),
        };
        let result = write_atomic_with(&self.path, |w| Ok(serde_json::to_writer(w, &out)?));
        if let (Err(_), Some(m)) = (&result, &self.metrics) {
            m.state_file_error("write");
        }
        let mut failing = self.failing.lock().expect("lock");
        match result {
            Err(e) if !*failing => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the state file");
                *failing = true;
            }
            Ok(()) if *failing => {
                tracing::info!(path = %self.path.display(), "state file written again");
                *failing = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Scope;

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
            SavedTarget {
                covered_until: Some(42),
                store: TaskStore::new(Scope::Region, 100, 7),
            },
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
            SavedTarget {
                covered_until: Some(10_000),
                store: TaskStore::new(Scope::Region, 100, 7),
            },
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
        let writer = StateWriter::new(path.clone(), None);
        let shared: SharedTarget = Arc::new(Mutex::new(SavedTarget {
            covered_until: Some(5),
            store: TaskStore::new(Scope::Region, 100, 7),
        }));
        writer.register("a/ap-guangzhou", shared.clone());
        writer.register("b/ap-beijing", shared.clone());
        writer.retain(|k| k.starts_with("a/"));
        // A change after registration is what gets written: no snapshot was taken.
        shared.lock().unwrap().covered_until = Some(9);
        writer.write();
        let loaded = state_of(load(&path, 1));
        assert_eq!(loaded.version, FORMAT_VERSION);
        assert_eq!(
            loaded.targets.keys().collect::<Vec<_>>(),
            ["a/ap-guangzhou"]
        );
        assert_eq!(loaded.targets["a/ap-guangzhou"].covered_until, Some(9));
    }
}
