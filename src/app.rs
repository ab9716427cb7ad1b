//! The daemon: starts the server and one poller per target, applies config reloads, and shuts
//! everything down in order. [`run`] is the testable entry point.

use crate::cli::{REVISION, VERSION};
use crate::clock::SharedClock;
use crate::config::{AccountConfig, Config, DiscoveryConfig, PollConfig, RegionConfig};
use crate::discovery::Discovery;
use crate::metrics::{Metrics, TargetId};
use crate::poller::{Discovered, PollSettings, RateLimiter, Target, TargetParts};
use crate::server::{Readiness, ServerState, run_server};
use crate::shard::Shard;
use crate::sim::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Scenario, SimServer, Simulator};
use crate::state::{self, Loaded, Saved, SavedTarget, SharedTarget, StateWriter};
use crate::tasks::{Scope, TaskStore};
use crate::tencent::credentials::{Environment, Provider};
use crate::tencent::{Client, ClientOptions};
use crate::web::{WebConfig, WebSecurity};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What `run` needs from outside besides the config.
pub struct RunOptions {
    /// Wall clock for windows and the baseline.
    pub clock: SharedClock,
    /// Where credentials are looked up.
    pub env: Arc<dyn Environment + Send + Sync>,
    /// New, already validated configs (SIGHUP).
    pub reloads: Option<mpsc::Receiver<Config>>,
}

/// Everything that defines a target: when it changes, the target restarts. `account` has its
/// region list emptied.
#[derive(Debug, Clone, PartialEq)]
struct TargetSpec {
    account: AccountConfig,
    /// With only this shard's listed instances.
    region: RegionConfig,
    poll: PollConfig,
    shard: Shard,
    task_events: bool,
    discovery: DiscoveryConfig,
}

struct Running {
    spec: TargetSpec,
    cancel: CancellationToken,
    handle: JoinHandle<Target>,
    /// The instance listing, when `discovery.instance_info` is on; stops with `cancel`.
    discovery: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops the poller and the instance listing, and returns the poller (with its store).
    async fn stop(self) -> Result<Target, tokio::task::JoinError> {
        self.cancel.cancel();
        let target = self.handle.await;
        if let Some(d) = self.discovery {
            let _ = d.await;
        }
        target
    }
}

struct Fleet {
    running: BTreeMap<TargetId, Running>,
    limiters: BTreeMap<String, (u64, Arc<RateLimiter>)>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    state: Option<Arc<StateWriter>>,
    state_dirty: Arc<Notify>,
    restored: Saved,
    clock: SharedClock,
    env: Arc<dyn Environment + Send + Sync>,
    process_start: i64,
}

fn state_key(id: &TargetId) -> String {
    id.to_string()
}

impl Fleet {
    /// Starts, stops and restarts targets so that they match `config`. Credentials are resolved
    /// first; on failure nothing changes.
    async fn apply(&mut self, config: &Config) -> Result<(), String> {
        let mut desired: BTreeMap<TargetId, (TargetSpec, Arc<Provider>)> = BTreeMap::new();
        for (i, a) in config.accounts.iter().enumerate() {
            let (source, provider) = Provider::resolve(&a.credentials, self.env.as_ref())
                .map_err(|e| format!("accounts[{i}] ({}): credentials: {e}", a.name))?;
            tracing::info!(account = %a.name, %source, "credentials");
            let provider = Arc::new(provider);
            // A target depends on its account's keys and endpoint, not on the account's other
            // regions: adding a region must not restart the others.
            let account = AccountConfig {
                regions: Vec::new(),
                ..a.clone()
            };
            for r in &a.regions {
                let id = TargetId {
                    account: a.name.clone(),
                    region: r.region.clone(),
                };
                let shard = config.sharding;
                let mut region = r.clone();
                if !r.instances.is_empty() {
                    region.instances.retain(|i| shard.owns(i));
                    if region.instances.is_empty() {
                        // Every listed instance belongs to another shard.
                        continue;
                    }
                }
                let spec = TargetSpec {
                    account: account.clone(),
                    region,
                    poll: config.poll.clone(),
                    shard,
                    task_events: config.log.task_events,
                    discovery: config.discovery.clone(),
                };
                desired.insert(id, (spec, provider.clone()));
            }
        }
        // Stop targets that left or changed; keep the store of changed ones.
        let mut carried: BTreeMap<TargetId, SharedTarget> = BTreeMap::new();
        let ids: Vec<TargetId> = self.running.keys().cloned().collect();
        for id in ids {
            let unchanged = desired
                .get(&id)
                .is_some_and(|(spec, _)| *spec == self.running[&id].spec);
            if unchanged {
                continue;
            }
            let run = self.running.remove(&id).expect("present");
            let target = run.stop().await;
            self.metrics.remove_target(&id);
            if desired.contains_key(&id) {
                if let Ok(t) = target {
                    carried.insert(id.clone(), t.state().clone());
                }
                tracing::info!(target_id = %id, "target changed; restarting it");
            } else {
                tracing::info!(target_id = %id, "target removed");
            }
        }
        if let Some(state) = &self.state {
            state.retain(|k| desired.keys().any(|id| state_key(id) == k));
        }
        self.readiness.set_targets(desired.keys().cloned());
        self.metrics
            .shard(config.sharding.index, config.sharding.total);
        let now = self.clock.now();
        for (id, (spec, provider)) in desired {
            if self.running.contains_key(&id) {
                continue;
            }
            let state = match carried.remove(&id) {
                Some(c) => c,
                None => Arc::new(Mutex::new(
                    match self.restored.targets.remove(&state_key(&id)) {
                        Some(mut saved) => {
                            // Tasks that ended after the last poll of the previous run ended
                            // while it was down: they count.
                            let cutoff = saved.covered_until.unwrap_or(self.process_start);
                            saved.store.set_baseline_cutoff(cutoff);
                            tracing::info!(target_id = %id, tasks = saved.store.len(), "restored from the state file");
                            saved
                        }
                        None => {
                            let lookback = spec.poll.lookback.as_secs() as i64;
                            // Baseline at start-up, or at the reload that added the target.
                            SavedTarget {
                                covered_until: None,
                                store: TaskStore::new(Scope::Region, lookback, now),
                            }
                        }
                    },
                )),
            };
            self.start(id, spec, provider, state)?;
        }
        Ok(())
    }

    fn start(
        &mut self,
        id: TargetId,
        spec: TargetSpec,
        provider: Arc<Provider>,
        state: SharedTarget,
    ) -> Result<(), String> {
        let rate = spec.poll.requests_per_second;
        let limiter = match self.limiters.get(&id.account) {
            Some((bits, l)) if *bits == rate.to_bits() => l.clone(),
            _ => {
                let l = Arc::new(RateLimiter::new(rate));
                self.limiters
                    .insert(id.account.clone(), (rate.to_bits(), l.clone()));
                l
            }
        };
        let options = ClientOptions {
            endpoint: spec.account.endpoint_for(&spec.region.region),
            region: spec.region.region.clone(),
            zone: spec.poll.api_timezone,
            timeout: spec.poll.request_timeout,
        };
        let client = Client::new(options, provider).map_err(|e| e.to_string())?;
        let settings = PollSettings {
            task_events: spec.task_events,
            ..PollSettings::new(spec.poll.interval, spec.poll.lookback, spec.shard)
        };
        let discovered = Discovered::default();
        let target = Target::new(TargetParts {
            id: id.clone(),
            instances: spec.region.instances.clone(),
            client: client.clone(),
            limiter: limiter.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            settings,
            state: state.clone(),
            discovered: discovered.clone(),
        });
        self.readiness.attach(&id, state.clone());
        if let Some(writer) = &self.state {
            writer.register(&state_key(&id), state);
        }
        let cancel = CancellationToken::new();
        let discovery = spec.discovery.instance_info.then(|| {
            let d = Discovery {
                id: id.clone(),
                client,
                limiter,
                metrics: self.metrics.clone(),
                readiness: self.readiness.clone(),
                discovered,
                interval: spec.discovery.interval,
                tags: spec.discovery.tags.clone(),
                listed: spec.region.instances.clone(),
                shard: spec.shard,
            };
            tokio::spawn(d.run(cancel.clone()))
        });
        let readiness = self.readiness.clone();
        let persist = self.state.is_some();
        let dirty = self.state_dirty.clone();
        let handle = tokio::spawn(target.run(cancel.clone(), move |t, report| {
            let error = report.failure.as_ref().map(|e| {
                let message = crate::tencent::model::sanitize(&e.to_string());
                (e.as_label().to_string(), message)
            });
            readiness.record(&t.id, report.started_at, report.mode, error);
            if persist {
                dirty.notify_one();
            }
        }));
        self.running.insert(
            id,
            Running {
                spec,
                cancel,
                handle,
                discovery,
            },
        );
        Ok(())
    }

    /// Stops every target, then writes the state one last time.
    async fn stop_all(&mut self) {
        for run in self.running.values() {
            run.cancel.cancel();
        }
        for (_, run) in std::mem::take(&mut self.running) {
            let _ = run.stop().await;
        }
        if let Some(state) = &self.state {
            let state = state.clone();
            let _ = tokio::task::spawn_blocking(move || state.write()).await;
        }
    }
}

/// Runs the exporter until `shutdown` fires: serves `listener`, polls every target, applies
/// reloads. API failures never end it.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    options: RunOptions,
) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    let metrics = Arc::new(Metrics::new(
        config.metrics.task_progress,
        VERSION,
        REVISION,
    ));
    let readiness = Arc::new(Readiness::default());
    let process_start = options.clock.now();
    let (state, restored) = match &config.poll.state_file {
        Some(path) => match state::load(path, process_start) {
            Loaded::State(saved) => {
                let writer = StateWriter::new(path.clone(), Some(metrics.clone()));
                (Some(Arc::new(writer)), saved)
            }
            Loaded::Unreadable(e) => {
                // Writing over it could lose the saved baseline: persistence is off for this
                // run, and the metric says so.
                tracing::warn!(path = %path.display(), error = %e, "cannot read the state file; leaving it untouched and keeping no state this run");
                metrics.state_file_error("read");
                (None, Saved::default())
            }
        },
        None => (None, Saved::default()),
    };
    let web = Arc::new(WebSecurity::new(load_web(&config)?));
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(run_server(
        listener,
        ServerState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            web: web.clone(),
            clock: options.clock.clone(),
        },
        server_stop.clone(),
        config.server.max_connections,
    ));
    let state_dirty = Arc::new(Notify::new());
    let writer_stop = CancellationToken::new();
    let writer = state.clone().map(|s| {
        let dirty = state_dirty.clone();
        let stop = writer_stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = dirty.notified() => {
                        let s = s.clone();
                        let _ = tokio::task::spawn_blocking(move || s.write()).await;
                    }
                }
            }
        })
    });
    let mut fleet = Fleet {
        running: BTreeMap::new(),
        limiters: BTreeMap::new(),
        metrics,
        readiness,
        state,
        state_dirty,
        restored,
        clock: options.clock,
        env: options.env,
        process_start,
    };
    fleet.apply(&config).await.map_err(anyhow::Error::msg)?;
    let mut reloads = options.reloads;
    loop {
        let next = async {
            match reloads.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            new = next => match new {
                Some(new) => match load_web(&new) {
                    Ok(new_web) => match fleet.apply(&new).await {
                        Ok(()) => {
                            web.replace(new_web);
                            tracing::info!("configuration reloaded");
                        }
                        Err(e) => tracing::error!(error = %e, "reload rejected; keeping the running configuration"),
                    },
                    Err(e) => tracing::error!(error = %e, "reload rejected: bad web config; keeping the running configuration"),
                },
                None => reloads = None,
            },
        }
    }
    tracing::info!("shutting down");
    fleet.stop_all().await;
    writer_stop.cancel();
    if let Some(w) = writer {
        let _ = w.await;
    }
    server_stop.cancel();
    let _ = server.await;
    Ok(())
}

/// The web configuration the config points at, or the open default.
fn load_web(config: &Config) -> anyhow::Result<WebConfig> {
    match &config.server.web_config_file {
        Some(path) => Ok(WebConfig::load(path)?),
        None => Ok(WebConfig::open()),
    }
}

/// The demo's pieces: a simulator with the built-in scenario on a free loopback port, and a
/// config pointing the exporter at it with a short interval.
pub async fn demo_setup(
    listen: SocketAddr,
    clock: Arc<crate::clock::SystemClock>,
) -> anyhow::Result<(SimServer, Config)> {
    let sim = Simulator::with_default_keys(Scenario::demo(), clock)
        .serve("127.0.0.1:0".parse().expect("valid address"))
        .await?;
    let text = format!(
        r#"
[server]
listen_address = "{listen}"
[poll]
interval = "5s"
lookback = "24h"
request_timeout = "3s"
[metrics]
task_progress = true
[[accounts]]
name = "demo"
secret_id = "{DEFAULT_SECRET_ID}"
secret_key = "{DEFAULT_SECRET_KEY}"
endpoint = "{}"
[[accounts.regions]]
region = "ap-guangzhou"
"#,
        sim.url()
    );
    let config = Config::from_toml(&text).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    Ok((sim, config))
}
