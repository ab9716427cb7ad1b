//! The tracked tasks by `JobId`.

use super::slot::{GONE, Slot};
use std::collections::hash_map::RandomState;

/// The tail is merged when it reaches this many tasks, or an eighth of the sorted part.
const MIN_TAIL: usize = 1_024;

/// The tracked tasks by `JobId`, with no hash index over all of them. Most sit in the sorted
/// part (their ids in one vector, found by binary search, their slots in another in the same
/// order); the tasks added since the last merge sit in a small unsorted tail with a hash index
/// of its own. The tail is merged in when it reaches an eighth of the sorted part, and after
/// every poll ([`JobTable::settle`]). A task removed from the sorted part stays there as a
/// tombstone (its slot flagged [`GONE`]) until the next merge, so that a removal never moves
/// the vectors.
///
/// A hash index of 4-byte positions over every task took 655 KB at 100,000 tasks (a table of
/// 131,072 buckets of 5 bytes), and 10.5 MB at a million (measured: 87.7 MiB against 77.9
/// after the first ingest at 10,000 instances). Merges move each task about nine times over a
/// first ingest that arrives newest first (each merge shifts the sorted part, which grows by
/// an eighth each time), and once a poll in steady state, where new tasks mostly carry the
/// largest ids and are appended.
#[derive(Debug, Clone, Default)]
pub(super) struct JobTable {
    /// The sorted part's job ids, ascending, each once (tombstones included). Apart from its
    /// slots, so that a binary search reads 8 bytes a step, not 48: its first steps stay in
    /// the cache.
    ids: Vec<i64>,
    /// The sorted part's slots, in the order of `ids`.
    sorted: Vec<Slot>,
    /// Slots of `sorted` flagged [`GONE`].
    tombstones: usize,
    /// Added since the last merge, in no order; never an id that `sorted` holds.
    tail: Vec<(i64, Slot)>,
    /// Positions in `tail`, by job id.
    tail_index: hashbrown::HashTable<u32>,
    hasher: RandomState,
}

/// Where a job id is in the table, or is not: valid until the table next changes. A task
/// read and then written back ([`JobTable::place`], [`JobTable::at`], [`JobTable::put`]) is
/// searched for once.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    /// In the sorted part: alive, or a tombstone (then not a task).
    Sorted(usize),
    Tail(usize),
    Absent,
}

fn hash_with(hasher: &RandomState, job_id: i64) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one(job_id)
}

fn gone(slot: &Slot) -> bool {
    slot.flags & GONE != 0
}

impl JobTable {
    pub(super) fn place(&self, job_id: i64) -> Place {
        if let Some(i) = self.tail_position(job_id) {
            return Place::Tail(i);
        }
        match self.ids.binary_search(&job_id) {
            Ok(i) => Place::Sorted(i),
            Err(_) => Place::Absent,
        }
    }

    fn tail_position(&self, job_id: i64) -> Option<usize> {
        if self.tail.is_empty() {
            return None;
        }
        let tail = &self.tail;
        self.tail_index
            .find(hash_with(&self.hasher, job_id), |&i| {
                tail[i as usize].0 == job_id
            })
            .map(|&i| i as usize)
    }

    /// The task at `place`, if there is one.
    pub(super) fn at(&self, place: Place) -> Option<&Slot> {
        match place {
            Place::Sorted(i) => Some(&self.sorted[i]).filter(|s| !gone(s)),
            Place::Tail(i) => Some(&self.tail[i].1),
            Place::Absent => None,
        }
    }

    pub(super) fn get(&self, job_id: i64) -> Option<&Slot> {
        self.at(self.place(job_id))
    }

    pub(super) fn get_mut(&mut self, job_id: i64) -> Option<&mut Slot> {
        match self.place(job_id) {
            Place::Sorted(i) => Some(&mut self.sorted[i]).filter(|s| !gone(s)),
            Place::Tail(i) => Some(&mut self.tail[i].1),
            Place::Absent => None,
        }
    }

    /// Inserts or replaces.
    pub(super) fn insert(&mut self, job_id: i64, slot: Slot) {
        self.put(self.place(job_id), job_id, slot);
    }

    /// Inserts or replaces `job_id` at its `place`, as [`JobTable::place`] found it with no
    /// change to the table since.
    pub(super) fn put(&mut self, place: Place, job_id: i64, slot: Slot) {
        debug_assert!(!gone(&slot), "a new slot is never a tombstone");
        match place {
            Place::Tail(i) => {
                self.tail[i].1 = slot;
                return;
            }
            Place::Sorted(i) => {
                // Alive, or a tombstone that comes back.
                if gone(&self.sorted[i]) {
                    self.tombstones -= 1;
                }
                self.sorted[i] = slot;
                return;
            }
            Place::Absent => {}
        }
        let at = u32::try_from(self.tail.len()).expect("fewer than 2^32 tasks");
        self.tail.push((job_id, slot));
        let (tail, hasher) = (&self.tail, &self.hasher);
        self.tail_index
            .insert_unique(hash_with(hasher, job_id), at, |&i| {
                hash_with(hasher, tail[i as usize].0)
            });
        if self.tail.len() >= MIN_TAIL.max(self.sorted.len() / 8) {
            self.merge();
        }
    }

    pub(super) fn remove(&mut self, job_id: i64) -> Option<Slot> {
        match self.place(job_id) {
            Place::Absent => None,
            Place::Sorted(i) if gone(&self.sorted[i]) => None,
            Place::Sorted(i) => {
                let slot = self.sorted[i];
                self.sorted[i].flags |= GONE;
                self.tombstones += 1;
                Some(slot)
            }
            Place::Tail(at) => {
                let hash = hash_with(&self.hasher, job_id);
                if let Ok(entry) = self.tail_index.find_entry(hash, |&i| i as usize == at) {
                    entry.remove();
                }
                let (_, slot) = self.tail.swap_remove(at);
                if at < self.tail.len() {
                    // The last slot moved into the hole: point its index entry at its new place.
                    let (moved, old) = (self.tail[at].0, self.tail.len() as u32);
                    let hash = hash_with(&self.hasher, moved);
                    if let Some(e) = self.tail_index.find_mut(hash, |&i| i == old) {
                        *e = at as u32;
                    }
                }
                Some(slot)
            }
        }
    }

    /// Drops the tombstones and merges the tail into the sorted part, in place: the tail is
    /// sorted, then both are merged from the back, so that only the sorted tasks with larger
    /// ids than the tail's smallest move.
    fn merge(&mut self) {
        if self.tombstones > 0 {
            let mut keep = self.sorted.iter().map(|s| !gone(s));
            self.ids.retain(|_| keep.next().unwrap_or(false));
            self.sorted.retain(|s| !gone(s));
            self.tombstones = 0;
        }
        if self.tail.is_empty() {
            return;
        }
        self.tail.sort_unstable_by_key(|e| e.0);
        let (old_len, added) = (self.ids.len(), self.tail.len());
        self.ids.resize(old_len + added, 0);
        self.sorted.resize(old_len + added, self.tail[0].1);
        // `ids[..left]` and `tail[..right]` are still to place; the next goes at
        // `left + right - 1`.
        let (mut left, mut right) = (old_len, added);
        while right > 0 {
            let to = left + right - 1;
            if left > 0 && self.ids[left - 1] > self.tail[right - 1].0 {
                self.ids[to] = self.ids[left - 1];
                self.sorted[to] = self.sorted[left - 1];
                left -= 1;
            } else {
                (self.ids[to], self.sorted[to]) = self.tail[right - 1];
                right -= 1;
            }
        }
        self.tail.clear();
        self.tail_index.clear();
    }

    /// After a poll: everything merged, and the tail's room given back (a poll adds few tasks;
    /// the first ingest's tail grew to an eighth of the store).
    pub(super) fn settle(&mut self) {
        self.merge();
        self.tail = Vec::new();
        self.tail_index = hashbrown::HashTable::new();
    }

    pub(super) fn len(&self) -> usize {
        self.sorted.len() - self.tombstones + self.tail.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, &Slot)> + '_ {
        self.ids
            .iter()
            .zip(&self.sorted)
            .filter(|(_, s)| !gone(s))
            .chain(self.tail.iter().map(|(id, s)| (id, s)))
            .map(|(id, s)| (*id, s))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.iter().map(|(_, s)| s)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = i64> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// Room for `additional` more tasks in the sorted part, where they all end up.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.ids.reserve(additional);
        self.sorted.reserve(additional);
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.settle();
        self.ids.shrink_to_fit();
        self.sorted.shrink_to_fit();
    }
}
