//! `cdb-task-exporter`: a Prometheus exporter for the background tasks of Tencent Cloud CDB
//! (MySQL) instances, read from the `DescribeTasks` API. The reference users depend on (metrics,
//! configuration, counting rules, endpoints) is in `docs/`, which the comments here cite.
//!
//! # Layout
//!
//! - [`domain`]: the shared vocabulary: targets, tasks, statuses, task types, instances.
//! - [`cli`]: the command line.
//! - [`config`]: raw TOML and environment config, validated into a typed [`config::Config`].
//! - [`secret`]: the type that keeps keys out of logs.
//! - [`logging`]: logs on stderr, text (fields quoted logfmt-style) or JSON.
//! - [`clock`]: wall-clock time as an injected dependency.
//! - [`tencent`]: the cloud API and nothing else: signing ([`tencent::sign`]), the answer
//!   envelope, the common task query and page ([`tencent::model`]), naive API times
//!   ([`tencent::apitime`]), paging ([`tencent::paging`]), one signed call ([`tencent::client`]),
//!   credentials ([`tencent::credentials`]).
//! - [`product`]: the product seam: what differs between database products (service, version,
//!   actions, wire fields, status and type mappings, ids, metric prefix), one module each.
//! - [`tasks`]: the task store of one target: latest state by `JobId` in 48 bytes a task,
//!   exactly-once accounting of finished tasks, eviction. Pure.
//! - [`intern`]: the reference-counted string table the store keeps its strings in.
//! - [`shard`]: which instances this process owns when the work is split (docs/configuration.md#sharding).
//! - [`window`]: which start-time ranges to ask for next. Pure.
//! - [`call`]: one API call: rate limit, retries with backoff, request and error counting.
//! - [`poller`]: one target's loop: query plan, paging, retries, rate limit; client -> store ->
//!   metrics.
//! - [`discovery`]: instance metadata from `DescribeDBInstances`, on its own schedule
//!   (docs/metrics.md#instance-metadata).
//! - [`metrics`]: in three parts: the self-metrics as a table of definitions
//!   ([`metrics::Metrics`]), the task series of a target ([`metrics::TargetSeries`]: book,
//!   snapshot, saved counters) and the text format ([`metrics::text`], an `Exposition` a
//!   second format can sit beside).
//! - [`details`]: task details for responders: the query, selection and rendering of
//!   `/api/v1/tasks` and `/tasks` (docs/http.md#task-details).
//! - [`server`]: `/metrics`, `/healthz`, `/readyz`, `/`.
//! - [`web`]: the web configuration file (TLS, basic auth, headers; docs/http.md#web-security).
//! - [`http`]: the HTTP/1 serving loop shared by the server and the simulator; streamed bodies.
//! - [`state`]: the state file, written atomically.
//! - [`target`]: one target's handle: its store and covered window, series, status row and
//!   instance inventory.
//! - [`registry`]: every target by id, and the application of a configuration to them (a pure
//!   plan, then its effects).
//! - [`app`]: `run()`, the testable entry point: wiring of the metrics, the registry, the server
//!   and the reload loop; shutdown.
//! - [`fuzz`]: the fuzz targets' entry points, shared with the stable test that replays their
//!   corpora.
//! - [`sim`]: the simulated API (scenarios, signature check, faults) for the demo and tests; the
//!   signature's service picks the product, whose answers live in a module of their own.

// Lints: the [lints] table of Cargo.toml (unsafe code forbidden, docs required, clippy
// pedantic with the exceptions it lists).

pub mod app;
pub mod call;
pub mod cli;
pub mod clock;
pub mod config;
pub mod details;
pub mod discovery;
pub mod domain;
pub mod fuzz;
pub mod http;
pub mod intern;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod poller;
pub mod product;
pub mod registry;
pub mod secret;
pub mod server;
pub mod shard;
pub mod sim;
pub mod state;
pub mod target;
pub mod tasks;
pub mod tencent;
pub mod web;
pub mod window;

/// Installs rustls' `ring` crypto provider for the process; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
