//! The state file (contract §5.5): every target's task store and covered time, written
//! atomically (temp file, fsync, rename) after each poll and at shutdown, so a restart counts
//! tasks that finished while the exporter was down exactly once and nothing twice.

use crate::tasks::TaskStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Reads the state file: a missing file is a fresh start; an unreadable or corrupt one is moved
/// aside (`<file>.corrupt-<unix time>`) with a warning, and the exporter starts fresh.
pub fn load(path: &Path, now: i64) -> Saved {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the state file; starting fresh");
            return Saved::default();
        }
    };
    // The version first: an older format is moved aside as such, not reported as corrupt.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    match serde_json::from_slice::<Version>(&bytes) {
        Ok(v) if v.version != FORMAT_VERSION => {
            let aside = move_aside(path, now);
            tracing::warn!(path = %path.display(), version = v.version, moved_to = %aside.display(), "state file has another format version; moved aside, starting fresh");
            return Saved::default();
        }
        _ => {}
    }
    match serde_json::from_slice::<Saved>(&bytes) {
        Ok(s) => s,
        Err(e) => {
            let aside = move_aside(path, now);
            tracing::warn!(path = %path.display(), error = %e, moved_to = %aside.display(), "state file is corrupt; moved aside, starting fresh");
            Saved::default()
        }
    }
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
    write_bytes_atomic(path, &serde_json::to_vec(saved)?)
}

fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.write_all(b"\n")?;
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

/// Collects the targets' snapshots and writes the file.
#[derive(Debug)]
pub struct StateWriter {
    path: PathBuf,
    saved: Mutex<Saved>,
    failing: Mutex<bool>,
}

impl StateWriter {
    /// A writer for `path`, starting from what was loaded.
    pub fn new(path: PathBuf, loaded: Saved) -> Self {
        StateWriter {
            path,
            saved: Mutex::new(Saved {
                version: FORMAT_VERSION,
                targets: loaded.targets,
            }),
            failing: Mutex::new(false),
        }
    }

    /// Replaces one target's snapshot (without writing).
    pub fn update(&self, key: &str, target: SavedTarget) {
        self.saved
            .lock()
            .expect("lock")
            .targets
            .insert(key.to_string(), target);
    }

    /// Forgets targets that are no longer configured.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.saved
            .lock()
            .expect("lock")
            .targets
            .retain(|k, _| keep(k));
    }

    /// Writes the file; a failure is logged once per change, never fatal.
    pub fn write(&self) {
        // Serialized under the lock (no copy of every store), written outside it.
        let bytes = serde_json::to_vec(&*self.saved.lock().expect("lock"));
        let result = bytes
            .map_err(std::io::Error::from)
            .and_then(|b| write_bytes_atomic(&self.path, &b));
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

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path, 1), Saved::default());
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
        assert_eq!(load(&path, 2), saved);
        std::fs::write(&path, b"{\"version\": 1, \"targets\": {\"x\": ").unwrap();
        assert_eq!(load(&path, 3), Saved::default());
        assert!(!path.exists());
        assert!(dir.path().join("state.json.corrupt-3").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
