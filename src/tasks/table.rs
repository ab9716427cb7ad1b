//! The index of tracked tasks by `JobId`.

use super::slot::Slot;

/// The tracked tasks by `JobId`: the slots in one dense vector and a hash index of 4-byte
/// positions into it. A `HashMap<i64, Slot>` keeps up to twice its length in buckets of the whole
/// entry (120 MB for a million tasks, after its last doubling); here the buckets are 4 bytes and
/// only the index doubles (66 MB for a million).
#[derive(Debug, Clone, Default)]
pub(super) struct JobTable {
    pub(super) slots: Vec<(i64, Slot)>,
    pub(super) index: hashbrown::HashTable<u32>,
    pub(super) hasher: std::collections::hash_map::RandomState,
}

pub(super) fn hash_with(hasher: &std::collections::hash_map::RandomState, job_id: i64) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one(job_id)
}

impl JobTable {
    pub(super) fn hash(&self, job_id: i64) -> u64 {
        hash_with(&self.hasher, job_id)
    }

    pub(super) fn position(&self, job_id: i64) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(self.hash(job_id), |&i| slots[i as usize].0 == job_id)
            .map(|&i| i as usize)
    }

    pub(super) fn get(&self, job_id: i64) -> Option<&Slot> {
        self.position(job_id).map(|i| &self.slots[i].1)
    }

    pub(super) fn get_mut(&mut self, job_id: i64) -> Option<&mut Slot> {
        self.position(job_id).map(|i| &mut self.slots[i].1)
    }

    /// Inserts or replaces.
    pub(super) fn insert(&mut self, job_id: i64, slot: Slot) {
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

    pub(super) fn remove(&mut self, job_id: i64) -> Option<Slot> {
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

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (i64, &Slot)> + '_ {
        self.slots.iter().map(|(id, s)| (*id, s))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots.iter().map(|(_, s)| s)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = i64> + '_ {
        self.slots.iter().map(|(id, _)| *id)
    }

    pub(super) fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .reserve(additional, |&i| hash_with(hasher, slots[i as usize].0));
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .shrink_to_fit(|&i| hash_with(hasher, slots[i as usize].0));
    }
}
