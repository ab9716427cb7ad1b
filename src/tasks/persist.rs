//! The task store in the state file: plain records with strings, independent of the symbol
//! numbering of one process.

use super::{COUNTED, NO_END, NO_PROGRESS, Scope, Slot, Sym, Task, TaskStatus, TaskStore, split};
use serde::{Deserialize, Serialize};

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
                packed_status: r.task.status.pack(),
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
        store.tasks.settle();
        Ok(store)
    }
}
