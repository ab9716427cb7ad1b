//! The store's rules, tested with plain values.

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
fn a_slot_is_40_bytes_and_48_with_its_job_id() {
    assert_eq!(std::mem::size_of::<Slot>(), 40);
    assert_eq!(std::mem::size_of::<(i64, Slot)>(), 48);
}

fn table_slot(start: i64) -> Slot {
    Slot {
        start: pack_start(start),
        duration: NO_END,
        request: [0; 4],
        instances: Sym::EMPTY,
        task_type: Sym::EMPTY,
        message: Sym::EMPTY,
        packed_status: Running.pack(),
        progress: 0,
        flags: 0,
        missed: 0,
    }
}

#[test]
fn the_job_table_agrees_with_a_hash_map() {
    // Few ids: removals and returns of the same ids, tombstones revived. Many ids: the tail
    // reaches its merge size between settles.
    for (ids, seed) in [(500, 3), (20_000, 4)] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut table = JobTable::default();
        let mut model: HashMap<i64, i64> = HashMap::new();
        for step in 0..60_000 {
            let id = rng.i64(0..ids);
            match rng.u8(0..4) {
                0 | 1 => {
                    table.insert(id, table_slot(step));
                    model.insert(id, step);
                }
                2 => assert_eq!(table.remove(id).map(|s| s.start()), model.remove(&id)),
                _ => assert_eq!(
                    table.get(id).map(Slot::start),
                    model.get(&id).copied(),
                    "id {id} at step {step}"
                ),
            }
            if step % 7_000 == 0 {
                table.settle();
            }
            if step % 20_000 == 0 {
                table.shrink_to_fit();
            }
            if step % 5_000 == 0 {
                assert_eq!(table.len(), model.len(), "at step {step}");
            }
        }
        assert_eq!(table.len(), model.len());
        for (id, start) in &model {
            assert_eq!(table.get(*id).map(Slot::start), Some(*start));
        }
        let mut keys: Vec<i64> = table.keys().collect();
        keys.sort_unstable();
        let mut want: Vec<i64> = model.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(keys, want, "every id once");
    }
}

#[test]
fn a_first_ingest_newest_first_is_found_and_settles_in_id_order() {
    // Pages arrive newest first: every merge puts the tail before the whole sorted part.
    let mut table = JobTable::default();
    for id in (0..10_000i64).rev() {
        table.insert(id * 3, table_slot(id));
        if id % 997 == 0 {
            assert_eq!(table.get(id * 3).map(Slot::start), Some(id));
            assert!(table.get(id * 3 + 1).is_none());
        }
    }
    table.settle();
    let keys: Vec<i64> = table.keys().collect();
    assert_eq!(keys, (0..10_000).map(|i| i * 3).collect::<Vec<_>>());
    assert!((0..10_000).all(|i| table.get(i * 3).map(Slot::start) == Some(i)));
    // A removed task is gone at once, and stays gone after the merge drops its tombstone.
    assert_eq!(table.remove(300).map(|s| s.start()), Some(100));
    assert!(table.get(300).is_none());
    assert_eq!(table.len(), 9_999);
    table.settle();
    assert!(table.get(300).is_none());
    assert_eq!(table.keys().filter(|&k| k == 300).count(), 0);
    assert_eq!(table.len(), 9_999);
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

/// Starts are kept in 32 bits after a base 12 days before 1970: exact from there until 2106
/// (negative ones included), clamped outside; a code is kept with its message, exactly.
#[test]
fn starts_and_codes_read_back_as_observed() {
    let mut s = TaskStore::new(Scope::Region, 1 << 40, i64::MIN);
    let year_2106 = i64::from(u32::MAX) - (1 << 20);
    let cases = [
        (1, -3_000, -3_000),
        (2, 1_700_000_000, 1_700_000_000),
        (3, year_2106, year_2106),
        (4, year_2106 + 1, year_2106),
        (5, -(1 << 20) - 1, -(1 << 20)),
    ];
    for (id, start, _) in cases {
        s.observe(obs(task(id, Running, start, None, &["cdb-1"])));
    }
    for (id, _, kept) in cases {
        assert_eq!(s.get(id).map(|t| t.start_time), Some(kept), "job {id}");
    }
    let coded = [
        (Some(-7_i64), "import failed"),
        (Some(i64::MAX), ""),
        (None, "no code"),
        (Some(0), "a\0NUL inside"),
        (None, "1\0looks coded"),
    ];
    for (n, (code, message)) in coded.iter().enumerate() {
        let mut t = task(100 + n as i64, Failed, 10, Some(20), &["cdb-1"]);
        t.code = *code;
        t.message = (*message).to_string();
        s.observe(obs(t));
    }
    for (n, (code, message)) in coded.iter().enumerate() {
        let t = s.get(100 + n as i64).expect("kept");
        assert_eq!((t.code, t.message.as_str()), (*code, *message));
    }
}

#[test]
fn strings_seen_again_or_changed_are_held_once_and_let_go_with_the_task() {
    let mut s = TaskStore::new(Scope::Region, 86_400, 0);
    let mut t = task(1, Running, 1_000, None, &["cdb-a"]);
    t.async_request_id = "not-a-uuid".into();
    for round in 0..6 {
        // The same type and message twice, then a new type, a code, a new message.
        if round == 2 {
            t.task_type = "upgrade".into();
        }
        if round == 3 {
            t.code = Some(7);
        }
        if round == 4 {
            t.message = "step 2".into();
        }
        s.observe(obs(t.clone()));
        assert_eq!(s.get(1).map(|v| v.task_type), Some(t.task_type.clone()));
        assert_eq!(
            s.get(1).map(|v| (v.code, v.message)),
            Some((t.code, t.message.clone()))
        );
        // The instance, the type, the request id, and the message when it is not empty.
        let held = 3 + usize::from(t.code.is_some() || !t.message.is_empty());
        assert_eq!(s.symbols.len(), held, "round {round}");
    }
    t.status = Succeed;
    t.end_time = Some(1_100);
    s.observe(obs(t));
    s.evict(1_000 + 3 * 86_400);
    assert!(s.is_empty());
    // Only the last-finished entry's instance and type are left.
    assert_eq!(s.symbols.len(), 2);
}

#[test]
fn rows_of_one_key_are_added_up_once_in_key_order() {
    let mut rows = vec![
        (("b", 2), 1),
        (("a", 1), 4),
        (("b", 2), 5),
        (("a", 0), 2),
        (("a", 1), 1),
    ];
    add_up_by_key(&mut rows);
    assert_eq!(rows, vec![(("a", 0), 2), (("a", 1), 5), (("b", 2), 6)]);
}
