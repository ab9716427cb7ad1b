//! Entry points of the fuzz targets under `fuzz/` (cargo-fuzz, nightly). They live in the
//! library so that a stable test (`tests/it/fuzz_corpora.rs`) replays the committed corpora
//! through the same code: an input a fuzzer once found stays covered on every CI run.
//!
//! Each takes arbitrary bytes, must not panic, and checks what its inputs may never break.

use crate::config::Config;
use crate::server::{Page, resolve};
use crate::state;
use crate::tasks::{Observation, Scope, TaskStore};
use crate::tencent::apitime::ApiZone;
use crate::tencent::model::{Envelope, decode_response, is_plausible_instance_id};
use std::collections::HashMap;

/// A `now` for targets that need one (2023-11-14).
const NOW: i64 = 1_700_000_000;

/// A `DescribeTasks` response body: decoded, then fed to a task store.
pub fn describe_tasks_response(data: &[u8]) {
    let Ok(Envelope::Page(page)) = decode_response(data, ApiZone::beijing()) else {
        return;
    };
    assert_eq!(page.items.len() + page.malformed.len(), page.item_count);
    let mut store = TaskStore::new(Scope::Region, 86_400, NOW);
    for task in page.items {
        assert!(
            task.instance_ids
                .iter()
                .all(|i| is_plausible_instance_id(i))
        );
        assert!(task.task_type.len() <= 40, "{}", task.task_type);
        assert!((0..=100).contains(&task.progress));
        let job = task.job_id;
        store.observe(Observation {
            task: task.clone(),
            via_instance: None,
        });
        // What the store gives back is what it was given (or a later state of the same job).
        let kept = store.get(job).expect("tracked");
        assert_eq!(kept.job_id, job);
    }
    let aggregates = store.aggregates();
    // Every tracked task counts under at least one instance (`""` when it names none).
    assert!(aggregates.tasks.iter().map(|(_, n)| n).sum::<u64>() as usize >= store.len());
    store.evict(NOW + 10 * 86_400);
}

/// A config: TOML, then optionally a NUL byte and `NAME=value` lines of environment overrides.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: HashMap<String, String> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Config::from_toml_and_env(toml, env) {
        Ok(c) => {
            assert!(c.poll.request_timeout <= c.poll.interval);
            assert!(c.poll.lookback >= c.poll.interval);
            assert!(c.sharding.index < c.sharding.total);
            assert!(!c.accounts.is_empty());
        }
        Err(e) => {
            // Every error says what is wrong.
            assert!(!e.message.is_empty());
        }
    }
}

/// A state file's bytes: decoded, and if taken, written and read back the same.
pub fn state_file(data: &[u8]) {
    let Ok(saved) = state::decode(data, NOW) else {
        return;
    };
    let bytes = serde_json::to_vec(&saved).expect("a decoded state serializes");
    let again = state::decode(&bytes, NOW).expect("what was written reads back");
    assert_eq!(again, saved);
    for t in saved.targets.values() {
        let _ = t.store.aggregates();
    }
}

/// An HTTP request line's method and target (`GET /metrics?x=1`), routed.
pub fn request_target(data: &[u8]) {
    let (method, target) = match data.iter().position(|b| *b == b' ') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"/"[..]),
    };
    let (Ok(method), Ok(uri)) = (
        hyper::Method::from_bytes(method),
        hyper::Uri::try_from(target),
    ) else {
        return;
    };
    if let Ok(page) = resolve(&method, &uri) {
        assert!(method == hyper::Method::GET || method == hyper::Method::HEAD);
        let path = match page {
            Page::Metrics => "/metrics",
            Page::Health => "/healthz",
            Page::Ready => "/readyz",
            Page::Landing => "/",
            Page::Tasks => "/tasks",
            Page::ApiTasks => "/api/v1/tasks",
        };
        assert_eq!(uri.path(), path);
        // The task query never panics, whatever the query string.
        let _ = crate::details::Filter::parse(uri.query());
    }
}
