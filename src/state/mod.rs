//! The state file (docs/semantics.md#state-file): every target's task store, covered time and counter
//! values, written atomically (temp file, fsync, rename) after each poll and at shutdown, so a
//! restart counts tasks that finished while the exporter was down exactly once, nothing twice,
//! and is not a counter reset.
//!
//! # Crash windows
//!
//! A poll changes a target in memory (tasks marked counted, counters incremented, both under the
//! target's lock), then waits for a write of the file that started after the change
//! ([`Persister::durable`]), and only then publishes the new values to `/metrics`. So whatever a
//! scrape can see is already on disk, and:
//!
//! - dying before the write starts, or during it (the temp file is not renamed; the previous
//!   file stays whole): no scrape saw the new counts; the next run restores the previous store,
//!   in which those tasks are not yet counted, and counts them again, once, from the previous
//!   counter values;
//! - dying after the rename, before or after a scrape: the file holds the tasks marked counted
//!   together with the counter values that include them; the next run starts from those values
//!   and does not count the tasks again.
//!
//! A write that fails (a full disk) does not hold the values back: they are published, the
//! error counted, and a crash before the next good write loses what only memory held, as a
//! restart without a state file would.

use crate::domain::TargetId;
use crate::metrics::{Metrics, SavedCounters, TargetSeries};
use crate::shard::Shard;
use crate::tasks::TaskStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Format version of the file this release writes.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest format version still read: version 2 has no counter values, which then start at 0.
pub const OLDEST_READ_VERSION: u32 = 2;

/// One target's state: in memory, shared by its poller, the task pages and the state writer;
/// on disk, with its counter values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTarget {
    /// End of the time the last successful poll covered.
    pub covered_until: Option<i64>,
    /// The task store.
    pub store: TaskStore,
    /// Counter values as read from the file (empty in a version 2 file). In memory the values
    /// live in the target's series: they are taken from here when the target starts, and
    /// written from there.
    #[serde(default, skip_serializing_if = "SavedCounters::is_empty")]
    pub counters: SavedCounters,
}

impl SavedTarget {
    /// A target's state with no counter values read.
    pub fn new(covered_until: Option<i64>, store: TaskStore) -> Self {
        SavedTarget {
            covered_until,
            store,
            counters: SavedCounters::default(),
        }
    }

    /// A target's state as read from the file, made ready to run: its series start from its
    /// counter values (those of the instances `keep` accepts, counted in `shard`), its
    /// baseline is cut where the previous run left off (the end of the time it covered, or its
    /// start if it never polled), so that tasks that ended while it was down count once.
    pub fn resume(
        mut self,
        product: &'static dyn crate::product::Product,
        shard: Shard,
        keep: &dyn Fn(&str) -> bool,
        process_start: i64,
    ) -> (Self, TargetSeries) {
        let counters = std::mem::take(&mut self.counters);
        let series = TargetSeries::restored(product, &counters, shard, keep);
        // Before its first poll a run has covered nothing, and its own baseline cut-off (its
        // start) still holds: tasks that ended after it count.
        let cutoff = self
            .covered_until
            .unwrap_or_else(|| self.store.baseline_cutoff().min(process_start));
        self.store.set_baseline_cutoff(cutoff);
        (self, series)
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    remove_orphans(path);
    // Only a regular file is read: a FIFO planted there would block the start for ever.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Loaded::Unreadable(std::io::Error::other("not a regular file"));
        }
        _ => {}
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Loaded::State(Saved::default());
        }
        Err(e) => return Loaded::Unreadable(e),
    };
    Loaded::State(parse(path, &bytes, now))
}

/// Removes the temp files a killed writer left beside `path` (a process killed mid-write
/// leaves one, under a name never used again).
fn remove_orphans(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_owned();
    prefix.push(".tmp-");
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
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
        && !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&v.version)
    {
        return Err(Rejected::Version(v.version));
    }
    let mut saved: Saved =
        serde_json::from_slice(bytes).map_err(|e| Rejected::Corrupt(e.to_string()))?;
    saved.version = FORMAT_VERSION;
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

/// Creates the temp file beside `path`: a name no other process can guess, created only if
/// nothing is there (so a planted symlink or FIFO is never followed or opened), readable by
/// the owner only.
fn create_temp(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut rng = fastrand::Rng::new();
    loop {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(format!(".tmp-{}-{:016x}", std::process::id(), rng.u64(..)));
        let tmp = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes a file atomically from what `fill` writes into it (buffered, never whole in memory).
/// On any failure the temp file is removed and the previous file is left as it was.
fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tmp, file) = create_temp(dir, path)?;
    let result = (|| {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, file);
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

/// Locks a target's state from async code. Others hold the lock on blocking threads for a
/// while (a task query scanning the store, the state writer serializing it): waiting for it
/// must not take an async worker away from the server, so on a multi-threaded runtime the wait
/// hands this worker's other tasks to another thread first.
pub fn lock_in_async(state: &Mutex<SavedTarget>) -> std::sync::MutexGuard<'_, SavedTarget> {
    if let Ok(guard) = state.try_lock() {
        return guard;
    }
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(|| state.lock().expect("lock"))
    } else {
        state.lock().expect("lock")
    }
}

/// A target the writer saves: its state, and its counter values, read while the state's lock
/// is held (every increment holds it too, so the values and the store's "counted" marks agree).
pub trait Persistable: Send + Sync + std::fmt::Debug {
    /// The target.
    fn id(&self) -> &TargetId;
    /// Its task store and covered time.
    fn state(&self) -> &SharedTarget;
    /// Its counter values.
    fn counters(&self) -> SavedCounters;
}

/// Where the writer finds the targets of the moment, at each write.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Every target to save.
    fn targets(&self) -> Vec<Arc<dyn Persistable>>;
}

/// Serializes one target under its lock: the store, the covered time and the counters.
struct Locked<'a>(&'a dyn Persistable);

#[derive(Serialize)]
struct TargetOut<'a> {
    covered_until: Option<i64>,
    store: &'a TaskStore,
    counters: SavedCounters,
}

impl Serialize for Locked<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.0.state().lock().expect("lock");
        TargetOut {
            covered_until: st.covered_until,
            store: &st.store,
            counters: self.0.counters(),
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    targets: BTreeMap<String, Locked<'a>>,
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
    source: Arc<dyn Source>,
    failing: Mutex<bool>,
    metrics: Option<Arc<Metrics>>,
}

impl StateWriter {
    /// A writer of the targets `source` names to `path`; failed writes are counted in
    /// `metrics`.
    pub fn new(path: PathBuf, source: Arc<dyn Source>, metrics: Option<Arc<Metrics>>) -> Self {
        StateWriter {
            path,
            source,
            failing: Mutex::new(false),
            metrics,
        }
    }

    /// Writes the file; a failure is logged once per change and counted, never fatal.
    pub fn write(&self) -> std::io::Result<()> {
        let targets = self.source.targets();
        let out = FileOut {
            version: FORMAT_VERSION,
            targets: targets
                .iter()
                .map(|t| (t.id().to_string(), Locked(t.as_ref())))
                .collect(),
        };
        let result = write_atomic_with(&self.path, |w| Ok(serde_json::to_writer(w, &out)?));
        if let (Err(_), Some(m)) = (&result, &self.metrics) {
            m.state_file_error("write");
        }
        let mut failing = self.failing.lock().expect("lock");
        match &result {
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
        result
    }
}

/// How long a poll waits for its state to reach the disk before it publishes anyway (a hung
/// file system must not stop the metrics).
pub const DURABLE_WAIT: Duration = Duration::from_secs(30);

/// Orders writes of the state file and lets a poll wait until its changes are on disk.
///
/// A poll asks for a write with [`Persister::durable`] and waits for a write that *started*
/// after its request: that write serializes the poll's changes. Requests that arrive during a
/// write are served together by the next one.
#[derive(Debug)]
pub struct Persister {
    writer: Arc<StateWriter>,
    /// Requests so far.
    requested: std::sync::atomic::AtomicU64,
    wake: tokio::sync::Notify,
    /// The last request number a finished write covered.
    done: tokio::sync::watch::Sender<u64>,
}

impl Persister {
    /// A persister writing through `writer`; [`Persister::run`] must be running.
    pub fn new(writer: Arc<StateWriter>) -> Arc<Self> {
        Arc::new(Persister {
            writer,
            requested: std::sync::atomic::AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            done: tokio::sync::watch::channel(0).0,
        })
    }

    /// The writer.
    pub fn writer(&self) -> &Arc<StateWriter> {
        &self.writer
    }

    /// Asks for a write and waits until one that includes every change made before the call
    /// has ended (written or failed, which the writer counts and logs), at most
    /// [`DURABLE_WAIT`].
    pub async fn durable(&self) {
        let mut done = self.done.subscribe();
        let ticket = self
            .requested
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.wake.notify_one();
        let waited = tokio::time::timeout(DURABLE_WAIT, done.wait_for(|d| *d >= ticket)).await;
        if waited.is_err() {
            tracing::warn!(path = %self.writer.path.display(), "the state file write takes too long; going on without waiting for it");
        }
    }

    /// Writes the file each time a write is asked for, until `stop`.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
            }
            // Every request up to here was made after its changes: this write covers them.
            let covers = self.requested.load(std::sync::atomic::Ordering::SeqCst);
            let w = self.writer.clone();
            let _ = tokio::task::spawn_blocking(move || w.write()).await;
            self.done.send_replace(covers);
        }
    }
}

#[cfg(test)]
mod tests;
