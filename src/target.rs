//! One target (an account's region) and everything the exporter keeps about it, behind one
//! handle: its task store and covered window, its task series, its status row, its instance
//! inventory. The [`crate::registry`] owns the handles by target id; the poller, discovery,
//! the server and the state writer are each given a handle and reach nothing else, so a target
//! that is removed leaves nothing behind.

use crate::domain::{Instances, TargetId};
use crate::metrics::{SavedCounters, TargetSeries};
use crate::shard::Shard;
use crate::state::{Persistable, SharedTarget};
use std::sync::{Arc, Mutex, RwLock};

/// What the last polls of a target said, for `/` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetStatus {
    /// Start (unix time) of the last poll that ended.
    pub last_poll: Option<i64>,
    /// Start of the last successful poll.
    pub last_success: Option<i64>,
    /// The last poll's error (`code` label value and message), if it failed.
    pub last_error: Option<(String, String)>,
    /// How it queried (`region-wide` or `per-instance`).
    pub mode: &'static str,
}

impl TargetStatus {
    /// Ready once a poll has succeeded.
    pub fn ready(&self) -> bool {
        self.last_success.is_some()
    }
}

/// Everything about one target. Each part has its own lock, held briefly and never across an
/// `.await`: a scrape reads the series while a poll writes the store.
#[derive(Debug)]
pub struct TargetHandle {
    id: TargetId,
    /// The shard its counters are counted in.
    shard: Shard,
    /// The task store and the covered window; written to the state file.
    state: SharedTarget,
    /// Its task series and instance inventory, for `/metrics`.
    series: TargetSeries,
    /// What its polls said.
    status: Mutex<TargetStatus>,
    /// The instances `DescribeDBInstances` last listed (this shard's): names on the task pages,
    /// and in region-wide mode the instances monitored with zeros before their first task.
    instances: RwLock<Arc<Instances>>,
}

impl TargetHandle {
    /// A handle over a target's state and series (fresh, restored or carried over).
    pub fn new(id: TargetId, shard: Shard, state: SharedTarget, series: TargetSeries) -> Self {
        TargetHandle {
            id,
            shard,
            state,
            series,
            status: Mutex::default(),
            instances: RwLock::default(),
        }
    }

    /// Account and region.
    pub fn id(&self) -> &TargetId {
        &self.id
    }

    /// The shard its counters are counted in.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The task store and covered window.
    pub fn state(&self) -> &SharedTarget {
        &self.state
    }

    /// The task series.
    pub fn series(&self) -> &TargetSeries {
        &self.series
    }

    /// What its polls said so far.
    pub fn status(&self) -> TargetStatus {
        self.status.lock().expect("lock").clone()
    }

    /// A poll ended (started at `at`, querying in `mode`), with this error if it failed.
    pub fn record(&self, at: i64, mode: &'static str, error: Option<(String, String)>) {
        let mut s = self.status.lock().expect("lock");
        s.last_poll = Some(at);
        s.mode = mode;
        if error.is_none() {
            s.last_success = Some(at);
        }
        s.last_error = error;
    }

    /// The instances as last listed.
    pub fn instances(&self) -> Arc<Instances> {
        self.instances.read().expect("lock").clone()
    }

    /// A new listing: the task pages, the info family and the poller see it.
    pub fn set_instances(&self, tag_keys: &[String], instances: Arc<Instances>) {
        self.series
            .set_inventory(&self.id.region, tag_keys, instances.clone());
        *self.instances.write().expect("lock") = instances;
    }
}

impl Persistable for TargetHandle {
    fn id(&self) -> &TargetId {
        &self.id
    }

    fn state(&self) -> &SharedTarget {
        &self.state
    }

    fn counters(&self) -> SavedCounters {
        self.series.saved(self.shard)
    }
}
