//! The task store of one target (account + region): every task of the lookback window, and every
//! unfinished task whatever its age, keyed by `JobId` with its latest known state; and the
//! exactly-once accounting of finished tasks.
//!
//! Pure: no clock (`now` is a parameter) and no I/O, so its rules are tested exhaustively.
//!
//! The rules (docs/semantics.md#exactly-once):
//! - A task is counted as finished exactly once, when the store first sees it terminal after
//!   having seen it unfinished, or when it is first seen already terminal with an `EndTime` after
//!   the *baseline cutoff* (the process start, or with a state file the end of the time the
//!   previous run had covered). Tasks first seen terminal before the cutoff are the baseline: in
//!   the gauge, not in the counter.
//! - A terminal task never goes back to an unfinished status (a stale page cannot undo an end).
//! - Finished tasks that started before `now - lookback` (the *horizon*) are evicted; unfinished
//!   ones stay until they end. The horizon only moves forward, and a task that is not tracked and
//!   started before it is ignored: it was evicted, or it ended before the exporter could see it
//!   run, so a late re-report (a final-state look-up returns neighbours of the task it looks for)
//!   cannot count it twice. This replaces a per-job tombstone list, which at 100k tasks a day
//!   cost as much memory as the tasks themselves.
//!
//! # Memory
//!
//! A tracked task is one 48-byte [`Slot`] in a hash map keyed by `JobId`: times as integers, type
//! and status as small codes, and the strings (instance list, task type, message, a request id
//! that is not a UUID) as handles into a reference-counted [`Symbols`] table, so a thousand
//! tasks of one instance share one copy of its id. A UUID request id is kept as its 16 bytes.

use crate::domain::{Task, TaskStatus};
use crate::intern::{Sym, Symbols};
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Which instances a target monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every instance in the region (no `instances` listed).
    Region,
    /// Only these instances.
    Listed(BTreeSet<String>),
}

/// One observation of a task: what a page said, and which instance was polled (per-instance
/// queries) if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The task as the page showed it.
    pub task: Task,
    /// The `InstanceId` filter of the query that returned it.
    pub via_instance: Option<String>,
}

/// A task that just finished and must be counted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// `JobId`
    pub job_id: i64,
    /// `instance_id` label values.
    pub instances: Vec<String>,
    /// `task_type` label value.
    pub task_type: String,
    /// Terminal status.
    pub status: TaskStatus,
    /// `EndTime - StartTime`, when the end is known and this shard observes it.
    pub duration: Option<i64>,
}

/// A tracked unfinished task that started before some time (see
/// [`TaskStore::unfinished_before`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// `JobId`
    pub job_id: i64,
    /// `StartTime`
    pub start: i64,
    /// The `instance_id` label values it counts under.
    pub instances: Vec<String>,
}

/// Key of the task gauge: instance, type, status.
pub type TaskKey = (String, String, TaskStatus);

/// The aggregates of the task gauges with owned strings: a convenience for tests and tools; the
/// exporter itself uses the borrowed [`Aggregates`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tracked tasks by instance, type and latest status.
    pub tasks: BTreeMap<TaskKey, u64>,
    /// Oldest start of unfinished tasks by instance and type.
    pub oldest_unfinished: BTreeMap<(String, String), i64>,
    /// Progress of unfinished tasks: key, job id, progress.
    pub progress: Vec<(TaskKey, i64, i64)>,
}

/// A gauge key whose strings are borrowed from the store: instance, type, status.
pub type KeyRef<'a> = (&'a str, &'a str, TaskStatus);

/// The aggregates the task gauges are set from, borrowed from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregates<'a> {
    /// Tracked tasks by instance, type and latest status.
    pub tasks: HashMap<KeyRef<'a>, u64>,
    /// Oldest start of unfinished tasks by instance and type.
    pub oldest_unfinished: HashMap<(&'a str, &'a str), i64>,
    /// Unfinished tasks: key, job id, progress (0-100).
    pub progress: Vec<(KeyRef<'a>, i64, i64)>,
}

/// How many consecutive look-ups may miss a tracked unfinished task before it is dropped.
pub const MAX_MISSES: u8 = 3;

/// `Slot::duration` of a task with no known end.
const NO_END: u32 = u32::MAX;
/// `Slot::progress` when the API sent none.
const NO_PROGRESS: u8 = u8::MAX;
/// Flag: counted in `tasks_finished_total`.
const COUNTED: u8 = 1;
/// Flag: `code` holds the API's `Code`.
const HAS_CODE: u8 = 2;
/// Flag: the request id is not a 128-bit id; `request[0]` is its [`Sym`].
const REQUEST_SYM: u8 = 4;
/// Flag: the 128-bit request id is written as a UUID (else as the API's four groups).
const REQUEST_UUID: u8 = 8;

/// One tracked task, compact (48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    start: i64,
    /// `EndTime - StartTime` (clamped at 0), or [`NO_END`].
    duration: u32,
    /// A 128-bit request id, or (with [`REQUEST_SYM`]) a symbol in word 0.
    request: [u32; 4],
    /// The `instance_id` label values it counts under, joined by `,` (ids never hold one).
    instances: Sym,
    task_type: Sym,
    message: Sym,
    code: i32,
    status: TaskStatus,
    progress: u8,
    flags: u8,
    /// Consecutive final-state look-ups that did not find it.
    missed: u8,
}

impl Slot {
    fn end(&self) -> Option<i64> {
        (self.duration != NO_END).then(|| self.start + i64::from(self.duration))
    }

    fn counted(&self) -> bool {
        self.flags & COUNTED != 0
    }
}

/// A tracked task, borrowed from its store.
#[derive(Debug, Clone, Copy)]
pub struct TaskView<'a> {
    store: &'a TaskStore,
    job_id: i64,
    slot: &'a Slot,
}

impl<'a> TaskView<'a> {
    /// `JobId`
    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// Start, unix seconds.
    pub fn start(&self) -> i64 {
        self.slot.start
    }

    /// End, unix seconds; `None` while unfinished.
    pub fn end(&self) -> Option<i64> {
        self.slot.end()
    }

    /// Status.
    pub fn status(&self) -> TaskStatus {
        self.slot.status
    }

    /// Task type label value.
    pub fn task_type(&self) -> &'a str {
        self.store.symbols.get(self.slot.task_type)
    }

    /// The instances it is attributed to (no `""`).
    pub fn instance_ids(&self) -> impl Iterator<Item = &'a str> + 'a {
        split(self.store.symbols.get(self.slot.instances)).filter(|i| !i.is_empty())
    }

    /// Progress 0-100, when the API sent one.
    pub fn progress(&self) -> Option<u8> {
        (self.slot.progress != NO_PROGRESS).then_some(self.slot.progress)
    }

    /// The whole task.
    pub fn task(&self) -> Task {
        self.store.task_of(self.job_id, self.slot)
    }
}

/// Splits a joined instance list.
fn split(list: &str) -> impl Iterator<Item = &str> {
    // `""` is one instance: the region-wide bucket of tasks without an instance id.
    list.split(',')
}

/// How a 128-bit request id was written: the API's four groups of 8 hex digits
/// (`a6040589-3b098df5-b551d9e5-81c6bfdc`), or a UUID (`8-4-4-4-12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdLayout {
    Groups,
    Uuid,
}

impl IdLayout {
    fn dashes(self) -> &'static [usize] {
        match self {
            IdLayout::Groups => &[8, 17, 26],
            IdLayout::Uuid => &[8, 13, 18, 23],
        }
    }
}

/// Parses a lower-case 128-bit hex request id in either layout into four words; `None` for
/// anything that would not be written back the same.
fn parse_id(s: &str) -> Option<([u32; 4], IdLayout)> {
    let b = s.as_bytes();
    let layout = match b.len() {
        35 => IdLayout::Groups,
        36 => IdLayout::Uuid,
        _ => return None,
    };
    let dashes = layout.dashes();
    let mut hex = [0u8; 32];
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if dashes.contains(&i) {
            if c != b'-' {
                return None;
            }
        } else if c.is_ascii_digit() || (b'a'..=b'f').contains(&c) {
            hex[n] = c;
            n += 1;
        } else {
            return None;
        }
    }
    let hex = std::str::from_utf8(&hex).ok()?;
    let mut words = [0u32; 4];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
    }
    Some((words, layout))
}

fn format_id(w: [u32; 4], layout: IdLayout) -> String {
    let hex = format!("{:08x}{:08x}{:08x}{:08x}", w[0], w[1], w[2], w[3]);
    let mut out = String::with_capacity(36);
    let mut h = hex.chars();
    for i in 0..32 + layout.dashes().len() {
        if layout.dashes().contains(&i) {
            out.push('-');
        } else {
            out.extend(h.next());
        }
    }
    out
}

/// The tracked tasks by `JobId`: the slots in one dense vector and a hash index of 4-byte
/// positions into it. A `HashMap<i64, Slot>` keeps up to twice its length in buckets of the whole
/// entry (120 MB for a million tasks, after its last doubling); here the buckets are 4 bytes and
/// only the index doubles (66 MB for a million).
#[derive(Debug, Clone, Default)]
struct JobTable {
    slots: Vec<(i64, Slot)>,
    index: hashbrown::HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

fn hash_with(hasher: &std::collections::hash_map::RandomState, job_id: i64) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one(job_id)
}

impl JobTable {
    fn hash(&self, job_id: i64) -> u64 {
        hash_with(&self.hasher, job_id)
    }

    fn position(&self, job_id: i64) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(self.hash(job_id), |&i| slots[i as usize].0 == job_id)
            .map(|&i| i as usize)
    }

    fn get(&self, job_id: i64) -> Option<&Slot> {
        self.position(job_id).map(|i| &self.slots[i].1)
    }

    fn get_mut(&mut self, job_id: i64) -> Option<&mut Slot> {
        self.position(job_id).map(|i| &mut self.slots[i].1)
    }

    /// Inserts or replaces.
    fn insert(&mut self, job_id: i64, slot: Slot) {
        if let Some(i) = self.position(job_id) {
            self.slots[i].1 = slot;
            return;
        }
        let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 tasks");
        self.slots.push((job_id, slot));
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash_with(hasher, job_id), at, |&i| {
                hash_with(hasher, slots[i as usize].0)
            });
    }

    fn remove(&mut self, job_id: i64) -> Option<Slot> {
        let hash = self.hash(job_id);
        let slots = &self.slots;
        let at = self
            .index
            .find_entry(hash, |&i| slots[i as usize].0 == job_id)
            .ok()?
            .remove()
            .0 as usize;
        let (_, slot) = self.slots.swap_remove(at);
        if at < self.slots.len() {
            // The last slot moved into the hole: point its index entry at its new place.
            let moved = self.slots[at].0;
            let old = self.slots.len() as u32;
            let hash = self.hash(moved);
            if let Some(e) = self.index.find_mut(hash, |&i| i == old) {
                *e = at as u32;
            }
        }
        Some(slot)
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &Slot)> + '_ {
        self.slots.iter().map(|(id, s)| (*id, s))
    }

    fn values(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots.iter().map(|(_, s)| s)
    }

    fn keys(&self) -> impl Iterator<Item = i64> + '_ {
        self.slots.iter().map(|(id, _)| *id)
    }

    fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .reserve(additional, |&i| hash_with(hasher, slots[i as usize].0));
    }

    fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .shrink_to_fit(|&i| hash_with(hasher, slots[i as usize].0));
    }
}

/// The store of one target.
#[derive(Debug, Clone)]
pub struct TaskStore {
    lookback: i64,
    baseline_cutoff: i64,
    /// Untracked tasks that started before it are ignored (see the module docs).
    horizon: i64,
    tasks: JobTable,
    /// End of the newest finished task by (instance, type, status).
    last_finished: HashMap<(Sym, Sym, TaskStatus), i64>,
    symbols: Symbols,
    scope: Scope,
    /// Instances of other shards are not this store's (docs/configuration.md#sharding).
    shard: Shard,
}

impl PartialEq for TaskStore {
    /// Equal when they hold the same tasks and accounting (symbol numbering aside).
    fn eq(&self, other: &Self) -> bool {
        let tasks = |s: &TaskStore| -> BTreeMap<i64, (Task, Vec<String>, bool, u8)> {
            s.tasks
                .iter()
                .map(|(id, slot)| {
                    let instances = split(s.symbols.get(slot.instances))
                        .map(str::to_string)
                        .collect();
                    (
                        id,
                        (s.task_of(id, slot), instances, slot.counted(), slot.missed),
                    )
                })
                .collect()
        };
        let lf = |s: &TaskStore| -> BTreeMap<(String, String, TaskStatus), i64> {
            s.last_finished()
                .map(|((i, t, st), v)| ((i.to_string(), t.to_string(), st), v))
                .collect()
        };
        self.lookback == other.lookback
            && self.baseline_cutoff == other.baseline_cutoff
            && self.horizon == other.horizon
            && tasks(self) == tasks(other)
            && lf(self) == lf(other)
    }
}

impl Eq for TaskStore {}

impl TaskStore {
    /// An empty store. `baseline_cutoff`: tasks first seen terminal with an end at or before it
    /// are baseline.
    pub fn new(scope: Scope, lookback_secs: i64, baseline_cutoff: i64) -> Self {
        TaskStore {
            lookback: lookback_secs,
            baseline_cutoff,
            horizon: i64::MIN,
            tasks: JobTable::default(),
            last_finished: HashMap::new(),
            symbols: Symbols::default(),
            scope,
            shard: Shard::ALL,
        }
    }

    /// Keeps only this shard's instances from now on, and drops what belongs to other shards.
    pub fn set_shard(&mut self, shard: Shard) {
        self.shard = shard;
        self.retain_instances(|i| shard.owns(i));
    }

    /// Re-scopes a store restored from a state file or kept over a reload; tasks that no longer
    /// belong to a monitored instance are dropped.
    pub fn set_scope(&mut self, scope: Scope, lookback_secs: i64) {
        self.lookback = lookback_secs;
        if let Scope::Listed(list) = &scope {
            self.retain_instances(|i| list.contains(i));
        }
        self.scope = scope;
    }

    /// Removes the instances `keep` rejects from every task (dropping tasks left with none) and
    /// from the last-finished entries.
    fn retain_instances(&mut self, keep: impl Fn(&str) -> bool) {
        let ids: Vec<i64> = self.tasks.keys().collect();
        for id in ids {
            let slot = *self.tasks.get(id).expect("present");
            let old = self.symbols.get(slot.instances);
            if split(old).all(&keep) {
                continue;
            }
            let kept: Vec<&str> = split(old).filter(|i| keep(i)).collect();
            if kept.is_empty() {
                self.drop_task(id);
            } else {
                let joined = kept.join(",");
                let sym = self.symbols.intern(&joined);
                self.symbols.release(slot.instances);
                self.tasks.get_mut(id).expect("present").instances = sym;
            }
        }
        let symbols = &mut self.symbols;
        self.last_finished.retain(|(i, t, _), _| {
            let kept = keep(symbols.get(*i));
            if !kept {
                symbols.release(*i);
                symbols.release(*t);
            }
            kept
        });
    }

    /// The baseline cutoff.
    pub fn baseline_cutoff(&self) -> i64 {
        self.baseline_cutoff
    }

    /// Moves the baseline cutoff (a restored state's cutoff is where the last run left off).
    pub fn set_baseline_cutoff(&mut self, cutoff: i64) {
        self.baseline_cutoff = cutoff;
    }

    /// Makes room for `additional` more tasks at once (the first poll knows how many are
    /// coming from its first page), instead of growing the map step by step.
    pub fn reserve(&mut self, additional: usize) {
        self.tasks.reserve(additional);
    }

    /// Number of tracked tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Number of distinct strings held for the tasks (instance lists, types, messages, odd
    /// request ids).
    pub fn strings(&self) -> usize {
        self.symbols.len()
    }

    /// A tracked task as last seen, with the instances it counts under in `instance_ids`.
    pub fn get(&self, job_id: i64) -> Option<Task> {
        self.tasks.get(job_id).map(|s| self.task_of(job_id, s))
    }

    /// A tracked task's status.
    pub fn status_of(&self, job_id: i64) -> Option<TaskStatus> {
        self.tasks.get(job_id).map(|s| s.status)
    }

    /// Every tracked task, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Task> + '_ {
        self.views().map(|v| v.task())
    }

    /// Every tracked task as a borrowed view: filtering and ordering read the slot in place,
    /// and only the tasks kept are made into a [`Task`].
    pub fn views(&self) -> impl Iterator<Item = TaskView<'_>> + '_ {
        self.tasks.iter().map(|(job_id, slot)| TaskView {
            store: self,
            job_id,
            slot,
        })
    }

    fn task_of(&self, job_id: i64, s: &Slot) -> Task {
        let instances = self.symbols.get(s.instances);
        Task {
            job_id,
            task_type: self.symbols.get(s.task_type).to_string(),
            status: s.status,
            start_time: s.start,
            end_time: s.end(),
            progress: if s.progress == NO_PROGRESS {
                0
            } else {
                i64::from(s.progress)
            },
            instance_ids: split(instances)
                .filter(|i| !i.is_empty())
                .map(str::to_string)
                .collect(),
            async_request_id: if s.flags & REQUEST_SYM != 0 {
                self.symbols.get(Sym::from_raw(s.request[0])).to_string()
            } else if s.flags & REQUEST_UUID != 0 {
                format_id(s.request, IdLayout::Uuid)
            } else {
                format_id(s.request, IdLayout::Groups)
            },
            code: (s.flags & HAS_CODE != 0).then_some(i64::from(s.code)),
            message: self.symbols.get(s.message).to_string(),
        }
    }

    /// The `instance_id` label values an observation counts under; empty when it cannot be
    /// attributed to a monitored instance.
    fn attribute<'o>(&self, obs: &'o Observation) -> Vec<&'o str> {
        let ids = &obs.task.instance_ids;
        let mut out: Vec<&str> = match &self.scope {
            Scope::Region if ids.is_empty() => vec![""],
            Scope::Region => ids.iter().map(String::as_str).collect(),
            Scope::Listed(list) => ids
                .iter()
                .filter(|i| list.contains(*i))
                .map(String::as_str)
                .collect(),
        };
        out.retain(|i| self.shard.owns(i));
        if out.is_empty()
            && let Some(via) = &obs.via_instance
        {
            out.push(via);
        }
        out
    }

    /// Writes the task's fields (not its accounting) into a slot, interning its strings and
    /// releasing the ones they replace.
    fn fill(&mut self, slot: &mut Slot, task: &Task, fresh: bool) {
        let task_type = self.symbols.intern(&task.task_type);
        let message = self.symbols.intern(&task.message);
        let (request, request_flags) = match parse_id(&task.async_request_id) {
            Some((words, IdLayout::Groups)) => (words, 0),
            Some((words, IdLayout::Uuid)) => (words, REQUEST_UUID),
            None => (
                [self.symbols.intern(&task.async_request_id).raw(), 0, 0, 0],
                REQUEST_SYM,
            ),
        };
        if !fresh {
            self.symbols.release(slot.task_type);
            self.symbols.release(slot.message);
            if slot.flags & REQUEST_SYM != 0 {
                self.symbols.release(Sym::from_raw(slot.request[0]));
            }
        }
        slot.task_type = task_type;
        slot.message = message;
        slot.request = request;
        slot.flags &= !(REQUEST_SYM | REQUEST_UUID | HAS_CODE);
        slot.flags |= request_flags;
        slot.code = task.code.map_or(0, |c| {
            c.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
        });
        if task.code.is_some() {
            slot.flags |= HAS_CODE;
        }
        slot.start = task.start_time;
        slot.duration = task.end_time.map_or(NO_END, |e| {
            (e - task.start_time).clamp(0, i64::from(NO_END - 1)) as u32
        });
        slot.status = task.status;
        slot.progress = u8::try_from(task.progress.clamp(0, 100)).unwrap_or(0);
    }

    /// Applies one observation; returns the task if it just finished and must be counted.
    /// An observation that cannot be attributed to a monitored instance is ignored.
    pub fn observe(&mut self, obs: Observation) -> Option<Finished> {
        let job_id = obs.task.job_id;
        let tracked = self.tasks.get(job_id).copied();
        if tracked.is_none() && obs.task.start_time < self.horizon {
            return None; // evicted, or ended before it could be seen running
        }
        let instances = self.attribute(&obs);
        if instances.is_empty() {
            return None;
        }
        let task = &obs.task;
        if task.status.is_terminal()
            && let Some(end) = task.end_time
        {
            for i in &instances {
                self.record_last_finished(i, &task.task_type, task.status, end);
            }
        }
        match tracked {
            None => {
                let counted = task.status.is_terminal()
                    && task.end_time.unwrap_or(task.start_time) > self.baseline_cutoff;
                let mut slot = Slot {
                    start: 0,
                    duration: NO_END,
                    request: [0; 4],
                    instances: self.symbols.intern(&instances.join(",")),
                    task_type: Sym::EMPTY,
                    message: Sym::EMPTY,
                    code: 0,
                    status: task.status,
                    progress: NO_PROGRESS,
                    flags: if counted { COUNTED } else { 0 },
                    missed: 0,
                };
                self.fill(&mut slot, task, true);
                self.tasks.insert(job_id, slot);
                let instances = instances
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect();
                counted.then(|| self.finished(task, instances))
            }
            Some(mut slot) => {
                slot.missed = 0;
                let was_terminal = slot.status.is_terminal();
                if was_terminal && !task.status.is_terminal() {
                    self.tasks.insert(job_id, slot);
                    return None; // a stale page; an end is final
                }
                let current = self.symbols.get(slot.instances);
                let added: Vec<&str> = instances
                    .iter()
                    .copied()
                    .filter(|i| !split(current).any(|c| c == *i))
                    .collect();
                if !added.is_empty() {
                    let joined = format!("{current},{}", added.join(","));
                    let sym = self.symbols.intern(&joined);
                    self.symbols.release(slot.instances);
                    slot.instances = sym;
                }
                self.fill(&mut slot, task, false);
                let now_counted = !was_terminal && task.status.is_terminal() && !slot.counted();
                if now_counted {
                    slot.flags |= COUNTED;
                }
                self.tasks.insert(job_id, slot);
                now_counted.then(|| {
                    let all = split(self.symbols.get(slot.instances))
                        .map(str::to_string)
                        .collect();
                    self.finished(task, all)
                })
            }
        }
    }

    fn record_last_finished(&mut self, instance: &str, task_type: &str, st: TaskStatus, end: i64) {
        let (Some(i), Some(t)) = (self.symbols.find(instance), self.symbols.find(task_type)) else {
            let i = self.symbols.intern(instance);
            let t = self.symbols.intern(task_type);
            self.last_finished.insert((i, t, st), end);
            return;
        };
        if let Some(v) = self.last_finished.get_mut(&(i, t, st)) {
            *v = (*v).max(end);
        } else {
            self.symbols.retain(i);
            self.symbols.retain(t);
            self.last_finished.insert((i, t, st), end);
        }
    }

    /// Removes a task and releases its strings.
    fn drop_task(&mut self, job_id: i64) {
        if let Some(s) = self.tasks.remove(job_id) {
            self.symbols.release(s.instances);
            self.symbols.release(s.task_type);
            self.symbols.release(s.message);
            if s.flags & REQUEST_SYM != 0 {
                self.symbols.release(Sym::from_raw(s.request[0]));
            }
        }
    }

    /// In one pass: how many tracked tasks started in `[begin, end]` (unbounded below without
    /// `begin`), and how many of those that started at or before `unfinished_until` are
    /// unfinished.
    pub fn count_started_between(
        &self,
        begin: Option<i64>,
        end: i64,
        unfinished_until: i64,
    ) -> (usize, usize) {
        let begin = begin.unwrap_or(i64::MIN);
        self.tasks
            .values()
            .filter(|t| t.start >= begin && t.start <= end)
            .fold((0, 0), |(n, u), t| {
                let open = !t.status.is_terminal() && t.start <= unfinished_until;
                (n + 1, u + usize::from(open))
            })
    }

    /// Unfinished tasks that started before `before`, oldest first.
    pub fn unfinished_before(&self, before: i64) -> Vec<Unfinished> {
        let mut v: Vec<_> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.status.is_terminal() && t.start < before)
            .map(|(id, t)| Unfinished {
                job_id: id,
                start: t.start,
                instances: split(self.symbols.get(t.instances))
                    .map(str::to_string)
                    .collect(),
            })
            .collect();
        v.sort_by_key(|u| (u.start, u.job_id));
        v
    }

    /// Records that a final-state look-up did not find these tracked tasks; after
    /// [`MAX_MISSES`] in a row a task is dropped (it vanished from the API). Returns how many
    /// were dropped.
    pub fn missed(&mut self, job_ids: &[i64]) -> usize {
        let mut dropped = 0;
        for id in job_ids {
            if let Some(t) = self.tasks.get_mut(*id) {
                t.missed += 1;
                if t.missed >= MAX_MISSES {
                    self.drop_task(*id);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Evicts finished tasks that started before `now - lookback`, and moves the horizon there.
    /// Returns how many tasks were evicted.
    pub fn evict(&mut self, now: i64) -> usize {
        let horizon = now - self.lookback;
        self.horizon = self.horizon.max(horizon);
        let gone: Vec<i64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.status.is_terminal() && t.start < horizon)
            .map(|(id, _)| id)
            .collect();
        for id in &gone {
            self.drop_task(*id);
        }
        if gone.len() > self.tasks.len() {
            // After a large eviction, give the memory back instead of keeping the peak.
            self.tasks.shrink_to_fit();
        }
        gone.len()
    }

    /// The aggregates of the task gauges, borrowing the label strings from the store. Cost: one
    /// pass over the tasks, hashing small integer keys; instance lists are split once per
    /// distinct key, not once per task.
    pub fn aggregates(&self) -> Aggregates<'_> {
        let mut by_sym: HashMap<(Sym, Sym, TaskStatus), u64> = HashMap::new();
        let mut oldest_sym: HashMap<(Sym, Sym), i64> = HashMap::new();
        let mut progress_sym = Vec::new();
        for (id, t) in self.tasks.iter() {
            *by_sym
                .entry((t.instances, t.task_type, t.status))
                .or_default() += 1;
            if !t.status.is_terminal() {
                let slot = oldest_sym
                    .entry((t.instances, t.task_type))
                    .or_insert(t.start);
                *slot = (*slot).min(t.start);
                let p = if t.progress == NO_PROGRESS {
                    0
                } else {
                    i64::from(t.progress)
                };
                progress_sym.push((t.instances, t.task_type, t.status, id, p));
            }
        }
        let s = &self.symbols;
        let mut a = Aggregates::default();
        for ((list, ty, st), n) in by_sym {
            for i in split(s.get(list)) {
                *a.tasks.entry((i, s.get(ty), st)).or_default() += n;
            }
        }
        for ((list, ty), start) in oldest_sym {
            for i in split(s.get(list)) {
                let slot = a.oldest_unfinished.entry((i, s.get(ty))).or_insert(start);
                *slot = (*slot).min(start);
            }
        }
        for (list, ty, st, id, p) in progress_sym {
            for i in split(s.get(list)) {
                a.progress.push(((i, s.get(ty), st), id, p));
            }
        }
        a
    }

    /// The aggregates of the task gauges with owned strings.
    pub fn summary(&self) -> Summary {
        let a = self.aggregates();
        let key = |(i, t, st): KeyRef<'_>| (i.to_string(), t.to_string(), st);
        let mut progress: Vec<_> = a
            .progress
            .iter()
            .map(|(k, id, p)| (key(*k), *id, *p))
            .collect();
        progress.sort();
        Summary {
            tasks: a.tasks.iter().map(|(k, n)| (key(*k), *n)).collect(),
            oldest_unfinished: a
                .oldest_unfinished
                .iter()
                .map(|((i, t), v)| ((i.to_string(), t.to_string()), *v))
                .collect(),
            progress,
        }
    }

    /// End time of the newest finished task seen, by instance, type and status.
    pub fn last_finished(&self) -> impl Iterator<Item = (KeyRef<'_>, i64)> + '_ {
        self.last_finished
            .iter()
            .map(|((i, t, st), v)| ((self.symbols.get(*i), self.symbols.get(*t), *st), *v))
    }
}

impl TaskStore {
    /// What [`TaskStore::observe`] reports for a task that just finished. When sharded, the
    /// duration is observed only by the shard that owns the task's smallest instance id, so
    /// that the shards' histograms (which carry no instance label) add up to one process's.
    fn finished(&self, task: &Task, instances: Vec<String>) -> Finished {
        let owner = task.instance_ids.iter().min().map_or("", String::as_str);
        let observes = self.shard.total <= 1 || self.shard.owns(owner);
        Finished {
            job_id: task.job_id,
            instances,
            task_type: task.task_type.clone(),
            status: task.status,
            duration: task
                .end_time
                .filter(|_| observes)
                .map(|e| (e - task.start_time).max(0)),
        }
    }
}

// The state file form: plain records with strings, independent of symbol numbering.

/// One task in the state file.
#[derive(Debug, Serialize, Deserialize)]
struct TaskRecord {
    task: Task,
    /// The `instance_id` label values it counts under.
    instances: Vec<String>,
    counted: bool,
    #[serde(default)]
    missed: u8,
}

/// One last-finished entry in the state file.
#[derive(Debug, Serialize, Deserialize)]
struct LastFinishedRecord {
    instance: String,
    task_type: String,
    status: TaskStatus,
    end: i64,
}

#[derive(Serialize)]
struct StoreOut<'a> {
    lookback: i64,
    baseline_cutoff: i64,
    horizon: i64,
    tasks: TasksOut<'a>,
    last_finished: Vec<LastFinishedRecord>,
}

/// Serializes the tasks one by one, without building the list first.
struct TasksOut<'a>(&'a TaskStore);

impl Serialize for TasksOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let store = self.0;
        s.collect_seq(store.tasks.iter().map(|(id, slot)| {
            TaskRecord {
                task: store.task_of(id, slot),
                instances: split(store.symbols.get(slot.instances))
                    .map(str::to_string)
                    .collect(),
                counted: slot.counted(),
                missed: slot.missed,
            }
        }))
    }
}

#[derive(Deserialize)]
struct StoreIn {
    lookback: i64,
    baseline_cutoff: i64,
    #[serde(default = "min_horizon")]
    horizon: i64,
    tasks: Vec<TaskRecord>,
    last_finished: Vec<LastFinishedRecord>,
}

fn min_horizon() -> i64 {
    i64::MIN
}

impl Serialize for TaskStore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoreOut {
            lookback: self.lookback,
            baseline_cutoff: self.baseline_cutoff,
            horizon: self.horizon,
            tasks: TasksOut(self),
            last_finished: self
                .last_finished()
                .map(|((i, t, st), end)| LastFinishedRecord {
                    instance: i.to_string(),
                    task_type: t.to_string(),
                    status: st,
                    end,
                })
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskStore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = StoreIn::deserialize(d)?;
        let mut store = TaskStore::new(Scope::Region, raw.lookback, raw.baseline_cutoff);
        store.horizon = raw.horizon;
        for r in raw.tasks {
            let joined = r.instances.join(",");
            let mut slot = Slot {
                start: 0,
                duration: NO_END,
                request: [0; 4],
                instances: store.symbols.intern(&joined),
                task_type: Sym::EMPTY,
                message: Sym::EMPTY,
                code: 0,
                status: r.task.status,
                progress: NO_PROGRESS,
                flags: if r.counted { COUNTED } else { 0 },
                missed: r.missed,
            };
            store.fill(&mut slot, &r.task, true);
            // A duplicate job (a hand-edited file): the later record wins.
            store.drop_task(r.task.job_id);
            store.tasks.insert(r.task.job_id, slot);
        }
        for lf in raw.last_finished {
            store.record_last_finished(&lf.instance, &lf.task_type, lf.status, lf.end);
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    fn task(id: i64, status: TaskStatus, start: i64, end: Option<i64>, inst: &[&str]) -> Task {
        Task {
            job_id: id,
            task_type: "import_data".into(),
            status,
            start_time: start,
            end_time: end,
            progress: 0,
            instance_ids: inst.iter().map(std::string::ToString::to_string).collect(),
            async_request_id: String::new(),
            code: None,
            message: String::new(),
        }
    }

    fn obs(t: Task) -> Observation {
        Observation {
            task: t,
            via_instance: None,
        }
    }

    #[test]
    fn a_slot_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }

    #[test]
    fn the_job_table_agrees_with_a_hash_map() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut table = JobTable::default();
        let mut model: HashMap<i64, i64> = HashMap::new();
        let slot = |start: i64| Slot {
            start,
            duration: NO_END,
            request: [0; 4],
            instances: Sym::EMPTY,
            task_type: Sym::EMPTY,
            message: Sym::EMPTY,
            code: 0,
            status: Running,
            progress: 0,
            flags: 0,
            missed: 0,
        };
        for step in 0..20_000 {
            let id = rng.i64(0..500);
            match rng.u8(0..3) {
                0 | 1 => {
                    table.insert(id, slot(step));
                    model.insert(id, step);
                }
                _ => assert_eq!(table.remove(id).map(|s| s.start), model.remove(&id)),
            }
            if step % 1000 == 0 {
                table.shrink_to_fit();
            }
        }
        assert_eq!(table.len(), model.len());
        for (id, start) in &model {
            assert_eq!(table.get(*id).map(|s| s.start), Some(*start));
        }
        let mut keys: Vec<i64> = table.keys().collect();
        keys.sort_unstable();
        let mut want: Vec<i64> = model.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn baseline_is_in_the_gauge_not_the_counter() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 1_000);
        assert!(
            s.observe(obs(task(1, Failed, 100, Some(900), &["cdb-a"])))
                .is_none()
        );
        // Ended after the process started: counted even though first seen terminal.
        let f = s
            .observe(obs(task(2, Failed, 100, Some(1_100), &["cdb-a"])))
            .unwrap();
        assert_eq!((f.job_id, f.duration), (2, Some(1_000)));
        let sum = s.summary();
        assert_eq!(
            sum.tasks[&("cdb-a".into(), "import_data".into(), Failed)],
            2
        );
    }

    #[test]
    fn a_transition_counts_once_and_never_regresses() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 1_000);
        assert!(
            s.observe(obs(task(1, Running, 500, None, &["cdb-a"])))
                .is_none()
        );
        assert!(
            s.observe(obs(task(1, Failed, 500, Some(600), &["cdb-a"])))
                .is_some()
        );
        assert!(
            s.observe(obs(task(1, Failed, 500, Some(600), &["cdb-a"])))
                .is_none()
        );
        assert!(
            s.observe(obs(task(1, Running, 500, None, &["cdb-a"])))
                .is_none()
        );
        assert_eq!(s.get(1).unwrap().status, Failed);
        assert!(
            s.observe(obs(task(1, Removed, 500, Some(600), &["cdb-a"])))
                .is_none()
        );
    }

    #[test]
    fn long_tasks_stay_until_they_end_then_age_out() {
        let mut s = TaskStore::new(Scope::Region, 100, 0);
        s.observe(obs(task(1, Running, 10, None, &["cdb-a"])));
        assert_eq!(s.evict(10_000), 0);
        assert_eq!(s.unfinished_before(11).len(), 1);
        assert!(
            s.observe(obs(task(1, Succeed, 10, Some(9_000), &["cdb-a"])))
                .is_some()
        );
        assert_eq!(s.evict(10_000), 1);
        assert!(s.is_empty());
        assert_eq!(s.strings(), 2, "the last-finished entry keeps its labels");
        // A late re-report of an evicted task is ignored.
        assert!(
            s.observe(obs(task(1, Succeed, 10, Some(9_000), &["cdb-a"])))
                .is_none()
        );
        assert!(s.is_empty());
        // So is an unknown task that started before the horizon and ended while watched: it
        // could be an evicted one.
        assert!(
            s.observe(obs(task(2, Failed, 9_800, Some(9_950), &["cdb-a"])))
                .is_none()
        );
        assert!(
            s.observe(obs(task(3, Failed, 9_950, Some(9_990), &["cdb-a"])))
                .is_some()
        );
    }

    #[test]
    fn attribution_follows_the_scope() {
        let listed = Scope::Listed(["cdb-a".to_string()].into());
        let mut s = TaskStore::new(listed, 86_400, 0);
        let f = s
            .observe(obs(task(1, Failed, 5, Some(6), &["cdb-a", "cdb-b"])))
            .unwrap();
        assert_eq!(f.instances, ["cdb-a"]);
        assert!(
            s.observe(obs(task(2, Failed, 5, Some(6), &["cdb-b"])))
                .is_none()
        );
        assert!(s.observe(obs(task(3, Failed, 5, Some(6), &[]))).is_none());
        let via = Observation {
            task: task(4, Failed, 5, Some(6), &[]),
            via_instance: Some("cdb-a".into()),
        };
        assert_eq!(s.observe(via).unwrap().instances, ["cdb-a"]);

        let mut r = TaskStore::new(Scope::Region, 86_400, 0);
        let f = r.observe(obs(task(1, Failed, 5, Some(6), &[]))).unwrap();
        assert_eq!(f.instances, [""]);
        let f = r
            .observe(obs(task(2, Failed, 5, Some(6), &["cdb-a", "cdb-b"])))
            .unwrap();
        assert_eq!(f.instances, ["cdb-a", "cdb-b"]);
        let sum = r.summary();
        assert_eq!(
            sum.tasks[&("cdb-b".into(), "import_data".into(), Failed)],
            1
        );
        assert_eq!(sum.tasks[&(String::new(), "import_data".into(), Failed)], 1);
    }

    #[test]
    fn vanished_tasks_are_dropped_after_repeated_misses() {
        let mut s = TaskStore::new(Scope::Region, 100, 0);
        s.observe(obs(task(1, Waiting, 10, None, &["cdb-a"])));
        assert_eq!(s.missed(&[1]), 0);
        assert_eq!(s.missed(&[1]), 0);
        s.observe(obs(task(1, Waiting, 10, None, &["cdb-a"])));
        assert_eq!(s.missed(&[1]), 0);
        assert_eq!(s.missed(&[1]), 0);
        assert_eq!(s.missed(&[1]), 1);
        assert!(s.is_empty());
        assert_eq!(s.strings(), 0);
    }

    #[test]
    fn fields_round_trip_through_the_compact_slot() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 0);
        let mut t = task(7, Failed, 50, Some(80), &["cdb-a", "cdb-b"]);
        t.async_request_id = "5e4d0000-0000-4000-8000-00000000002a".into();
        let strings = s.strings();
        let mut g = task(9, Succeed, 40, Some(45), &["cdb-a"]);
        g.async_request_id = "a6040589-3b098df5-b551d9e5-81c6bfdc".into();
        s.observe(obs(g.clone()));
        assert_eq!(s.get(9).unwrap(), g);
        assert_eq!(
            s.strings(),
            strings + 2,
            "instance and type; the id is kept as 16 bytes"
        );
        t.code = Some(-1);
        t.message = "import failed: <bad file>\nline 2".into();
        t.progress = 42;
        s.observe(obs(t.clone()));
        assert_eq!(s.get(7).unwrap(), t);
        // Not a UUID (upper case would not round-trip): kept as a string.
        let mut u = task(8, Running, 60, None, &["cdb-a"]);
        u.async_request_id = "5E4D0000-0000-4000-8000-00000000002A".into();
        s.observe(obs(u.clone()));
        assert_eq!(s.get(8).unwrap(), u);
        // A new message replaces the old one, and the old string is freed.
        let before = s.strings();
        u.message = "done".into();
        u.status = Succeed;
        u.end_time = Some(70);
        s.observe(obs(u.clone()));
        assert_eq!(s.get(8).unwrap(), u);
        assert_eq!(s.strings(), before + 1, "one message added, none freed yet");
        s.evict(1_000_000);
        assert_eq!(s.len(), 0);
        assert_eq!(
            s.strings(),
            3,
            "only the last-finished labels stay: cdb-a, cdb-b, import_data"
        );
    }

    #[test]
    fn summary_and_last_finished() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 0);
        s.observe(obs(task(1, Running, 50, None, &["cdb-a"])));
        s.observe(obs(task(2, Running, 40, None, &["cdb-a"])));
        s.observe(obs(task(3, Succeed, 10, Some(20), &["cdb-a"])));
        s.observe(obs(task(4, Succeed, 10, Some(30), &["cdb-a"])));
        let sum = s.summary();
        assert_eq!(
            sum.oldest_unfinished[&("cdb-a".into(), "import_data".into())],
            40
        );
        assert_eq!(sum.progress.len(), 2);
        let lf: Vec<_> = s.last_finished().collect();
        assert_eq!(lf, [(("cdb-a", "import_data", Succeed), 30)]);
        let json = serde_json::to_string(&s).unwrap();
        let mut back: TaskStore = serde_json::from_str(&json).unwrap();
        back.set_scope(Scope::Region, 86_400);
        assert_eq!(back, s);
    }

    #[test]
    fn rescoping_drops_and_trims() {
        let mut s = TaskStore::new(Scope::Region, 86_400, 0);
        s.observe(obs(task(1, Running, 50, None, &["cdb-a", "cdb-b"])));
        s.observe(obs(task(2, Succeed, 10, Some(20), &["cdb-b"])));
        s.set_scope(Scope::Listed(["cdb-a".to_string()].into()), 86_400);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(1).unwrap().instance_ids, ["cdb-a"]);
        assert_eq!(s.last_finished().count(), 0);
    }
}
