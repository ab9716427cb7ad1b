//! One tracked task as the store keeps it: a 40-byte [`Slot`] whose strings are symbols of the
//! store's table, and the borrowed [`TaskView`] that reads it back as a task.

use super::TaskStore;
use crate::domain::{Task, TaskStatus};
use crate::intern::Sym;

/// How many consecutive look-ups may miss a tracked unfinished task before it is dropped.
pub const MAX_MISSES: u8 = 3;

/// `Slot::duration` of a task with no known end.
pub(super) const NO_END: u32 = u32::MAX;
/// `Slot::progress` when the API sent none.
pub(super) const NO_PROGRESS: u8 = u8::MAX;
/// Flag: counted in `tasks_finished_total`.
pub(super) const COUNTED: u8 = 1;
/// Flag: the task has the API's `Code`; its `message` symbol is then the code, a NUL, and the
/// message (a code is rare and its messages few, so the pair is interned once rather than
/// costing every slot four bytes).
pub(super) const HAS_CODE: u8 = 2;
/// Flag: the request id is not a 128-bit id; `request[0]` is its [`Sym`].
pub(super) const REQUEST_SYM: u8 = 4;
/// Flag: the 128-bit request id is written as a UUID (else as the API's four groups).
pub(super) const REQUEST_UUID: u8 = 8;
/// Flag: removed from the job table, a tombstone until its next merge (never read as a task).
pub(super) const GONE: u8 = 16;

/// Start times are kept as seconds after this, in 32 bits: from 12 days before 1970 until
/// 2106. The API's tasks start within the lookback of now; a start outside the range (a
/// malformed time) is clamped to it, as a duration past 32 bits is.
const START_BASE: i64 = -(1 << 20);

/// A start time as a slot keeps it.
pub(super) fn pack_start(start: i64) -> u32 {
    start
        .saturating_sub(START_BASE)
        .clamp(0, i64::from(u32::MAX)) as u32
}

/// One tracked task, compact (40 bytes; 48 with its job id in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// [`pack_start`]ed: read it with [`Slot::start`].
    pub(super) start: u32,
    /// `EndTime - StartTime` (clamped at 0), or [`NO_END`].
    pub(super) duration: u32,
    /// A 128-bit request id, or (with [`REQUEST_SYM`]) a symbol in word 0.
    pub(super) request: [u32; 4],
    /// The `instance_id` label values it counts under, joined by `,` (ids never hold one).
    pub(super) instances: Sym,
    pub(super) task_type: Sym,
    /// The message, or with [`HAS_CODE`] the code and the message.
    pub(super) message: Sym,
    /// [`TaskStatus::pack`]ed.
    pub(super) packed_status: u8,
    pub(super) progress: u8,
    pub(super) flags: u8,
    /// Consecutive final-state look-ups that did not find it.
    pub(super) missed: u8,
}

impl Slot {
    pub(super) fn start(&self) -> i64 {
        START_BASE + i64::from(self.start)
    }

    pub(super) fn end(&self) -> Option<i64> {
        (self.duration != NO_END).then(|| self.start() + i64::from(self.duration))
    }

    pub(super) fn status(&self) -> TaskStatus {
        TaskStatus::unpack(self.packed_status)
    }

    pub(super) fn counted(&self) -> bool {
        self.flags & COUNTED != 0
    }
}

/// A tracked task, borrowed from its store.
#[derive(Debug, Clone, Copy)]
pub struct TaskView<'a> {
    pub(super) store: &'a TaskStore,
    pub(super) job_id: i64,
    pub(super) slot: &'a Slot,
}

impl<'a> TaskView<'a> {
    /// `JobId`
    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// Start, unix seconds.
    pub fn start(&self) -> i64 {
        self.slot.start()
    }

    /// End, unix seconds; `None` while unfinished.
    pub fn end(&self) -> Option<i64> {
        self.slot.end()
    }

    /// Status.
    pub fn status(&self) -> TaskStatus {
        self.slot.status()
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
pub(super) fn split(list: &str) -> impl Iterator<Item = &str> {
    // `""` is one instance: the region-wide bucket of tasks without an instance id.
    list.split(',')
}

/// How a 128-bit request id was written: the API's four groups of 8 hex digits
/// (`a6040589-3b098df5-b551d9e5-81c6bfdc`), or a UUID (`8-4-4-4-12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdLayout {
    Groups,
    Uuid,
}

impl IdLayout {
    pub(super) fn dashes(self) -> &'static [usize] {
        match self {
            IdLayout::Groups => &[8, 17, 26],
            IdLayout::Uuid => &[8, 13, 18, 23],
        }
    }
}

/// Parses a lower-case 128-bit hex request id in either layout into four words; `None` for
/// anything that would not be written back the same.
pub(super) fn parse_id(s: &str) -> Option<([u32; 4], IdLayout)> {
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

pub(super) fn format_id(w: [u32; 4], layout: IdLayout) -> String {
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
