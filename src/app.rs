//! The daemon: starts the server and one poller per target, applies config reloads, and shuts
//! everything down in order. [`run`] is the testable entry point.

use crate::cli::{REVISION, VERSION};
use crate::clock::SharedClock;
use crate::config::{AccountConfig, Config, DiscoveryConfig, PollConfig, RegionConfig};
use crate::discovery::Discovery;
use crate::domain::{AccountName, TargetId};
use crate::metrics::Metrics;
use crate::poller::{Discovered, PollSettings, RateLimiter, Target, TargetParts};
use crate::server::{ServerState, TargetBoard, run_server};
use crate::shard::Shard;
use crate::state::{self, Loaded, Persister, Saved, SavedTarget, SharedTarget, StateWriter};
use crate::tasks::{Scope, TaskStore};
use crate::tencent::credentials::{CredentialError, Environment, Provider};
use crate::tencent::{Client, ClientOptions};
use crate::web::{WebConfig, WebSecurity};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What `run` needs from outside besides the config.
pub struct RunOptions {
    /// Wall clock for windows and the baseline.
    pub clock: SharedClock,
    /// Where credentials are looked up.
    pub env: Arc<dyn Environment + Send + Sync>,
    /// What each SIGHUP brought.
    pub reloads: Option<mpsc::Receiver<Reload>>,
}

/// What a reload request (SIGHUP) brought.
#[derive(Debug)]
pub enum Reload {
    /// A config that validated: apply it.
    Config(Box<Config>),
    /// The file did not validate (the reason is logged where it was read): keep running as
    /// is, and say so in `config_last_reload_successful`.
    Invalid,
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
    board: Arc<TargetBoard>,
    /// Writes the state file, when there is one.
    state: Option<Arc<Persister>>,
    /// The start-up values of the keys a reload cannot change.
    started_with: StartOnly,
    restored: Saved,
    clock: SharedClock,
    env: Arc<dyn Environment + Send + Sync>,
    process_start: i64,
}

/// The keys read only at start-up, and their values: a reload that changes one cannot apply it.
#[derive(Debug, Clone, PartialEq)]
struct StartOnly {
    listen_address: std::net::SocketAddr,
    max_connections: usize,
    state_file: Option<std::path::PathBuf>,
}

impl StartOnly {
    fn of(config: &Config) -> Self {
        StartOnly {
            listen_address: config.server.listen_address,
            max_connections: config.server.max_connections,
            state_file: config.poll.state_file.clone(),
        }
    }

    /// The keys whose value in `new` differs from this start-up's: they wait for a restart.
    /// Pure.
    fn changed_in(&self, new: &Config) -> Vec<&'static str> {
        let new = StartOnly::of(new);
        let mut keys = Vec::new();
        if new.listen_address != self.listen_address {
            keys.push("server.listen_address");
        }
        if new.max_connections != self.max_connections {
            keys.push("server.max_connections");
        }
        if new.state_file != self.state_file {
            keys.push("poll.state_file");
        }
        keys
    }
}

/// The instances whose counters a target keeps: this shard's, and of those the listed ones
/// when it lists any.
fn keeps(spec: &TargetSpec) -> impl Fn(&str) -> bool + '_ {
    |instance: &str| {
        spec.shard.owns(instance)
            && (spec.region.instances.is_empty()
                || spec.region.instances.iter().any(|i| i.as_str() == instance))
    }
}

/// Why a configuration cannot be applied. Nothing has changed when it is returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An account's credentials cannot be resolved.
    #[error("accounts[{index}] ({account}): credentials: {source}")]
    Credentials {
        /// Position in `[[accounts]]`.
        index: usize,
        /// Its name.
        account: AccountName,
        /// What is wrong.
        source: CredentialError,
    },
    /// A target's API client cannot be built.
    #[error("{target}: {source}")]
    Client {
        /// The target.
        target: TargetId,
        /// Why.
        source: crate::tencent::Error,
    },
}

/// A target as a configuration asks for it, with everything that can fail already built.
struct Desired {
    spec: TargetSpec,
    client: Client,
}

/// What a reload does to the running targets. Pure: computed from the specs alone.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Running and unchanged.
    keep: Vec<TargetId>,
    /// Running and changed: stopped, then started with their store carried over.
    restart: Vec<TargetId>,
    /// Running and gone from the config.
    stop: Vec<TargetId>,
    /// New.
    start: Vec<TargetId>,
}

impl Plan {
    fn new(
        running: &BTreeMap<TargetId, &TargetSpec>,
        desired: &BTreeMap<TargetId, &TargetSpec>,
    ) -> Plan {
        let mut plan = Plan::default();
        for (id, spec) in running {
            match desired.get(id) {
                Some(new) if new == spec => plan.keep.push(id.clone()),
                Some(_) => plan.restart.push(id.clone()),
                None => plan.stop.push(id.clone()),
            }
        }
        plan.start = desired
            .keys()
            .filter(|id| !running.contains_key(*id))
            .cloned()
            .collect();
        plan
    }
}

/// The targets `config` asks for: credentials resolved and clients built, so that applying
/// them cannot fail half-way.
fn desired_targets(
    config: &Config,
    env: &dyn Environment,
) -> Result<BTreeMap<TargetId, Desired>, ApplyError> {
    let mut desired = BTreeMap::new();
    for (index, a) in config.accounts.iter().enumerate() {
        let (source, provider) =
            Provider::resolve(&a.credentials, env).map_err(|source| ApplyError::Credentials {
                index,
                account: a.name.clone(),
                source,
            })?;
        tracing::info!(account = %a.name, %source, "credentials");
        let provider = Arc::new(provider);
        // A target depends on its account's keys and endpoint, not on the account's other
        // regions: adding a region must not restart the others.
        let account = AccountConfig {
            regions: Vec::new(),
            ..a.clone()
        };
        for r in &a.regions {
            let target = TargetId {
                account: a.name.clone(),
                region: r.region.clone(),
            };
            let shard = config.sharding;
            let mut region = r.clone();
            region.instances.retain(|i| shard.owns(i));
            if !r.instances.is_empty() && region.instances.is_empty() {
                continue; // every listed instance belongs to another shard
            }
            let options = ClientOptions {
                endpoint: account.endpoint_for(&region.region),
                region: region.region.to_string(),
                zone: config.poll.api_timezone,
                timeout: config.poll.request_timeout,
            };
            let client =
                Client::new(options, provider.clone()).map_err(|source| ApplyError::Client {
                    target: target.clone(),
                    source,
                })?;
            let spec = TargetSpec {
                account: account.clone(),
                region,
                poll: config.poll.clone(),
                shard,
                task_events: config.log.task_events,
                discovery: config.discovery.clone(),
            };
            desired.insert(target, Desired { spec, client });
        }
    }
    Ok(desired)
}

impl Fleet {
    /// Starts, stops and restarts targets so that they match `config`. Everything that can
    /// fail (credentials, clients) is done first: on failure nothing changes.
    async fn apply(&mut self, config: &Config) -> Result<(), ApplyError> {
        let mut desired = desired_targets(config, self.env.as_ref())?;
        let running_specs = self
            .running
            .iter()
            .map(|(id, r)| (id.clone(), &r.spec))
            .collect();
        let desired_specs = desired
            .iter()
            .map(|(id, d)| (id.clone(), &d.spec))
            .collect();
        let plan = Plan::new(&running_specs, &desired_specs);
        // Stop targets that left or changed; keep the store of changed ones.
        let mut carried: BTreeMap<TargetId, SharedTarget> = BTreeMap::new();
        for id in plan.stop.iter().chain(&plan.restart) {
            let run = self
                .running
                .remove(id)
                .expect("planned from the running targets");
            let old_shard = run.spec.shard;
            let target = run.stop().await;
            match (desired.get(id), target) {
                // Its counters go on from their values (not a reset), for the instances it
                // still watches; the book is replaced at once, so a state write in between
                // never sees it empty.
                (Some(new), Ok(t)) => {
                    let counters = self.metrics.saved_counters(id, old_shard);
                    self.metrics.remove_target(id);
                    self.metrics
                        .restore_counters(id, &counters, new.spec.shard, &keeps(&new.spec));
                    carried.insert(id.clone(), t.state().clone());
                    tracing::info!(target_id = %id, "target changed; restarting it");
                }
                (Some(_), Err(_)) => self.metrics.remove_target(id),
                (None, _) => {
                    self.metrics.remove_target(id);
                    tracing::info!(target_id = %id, "target removed");
                }
            }
        }
        if let Some(state) = &self.state {
            state.writer().retain(|id| desired.contains_key(id));
        }
        self.board.set_targets(desired.keys().cloned());
        self.metrics
            .shard(config.sharding.index, config.sharding.total);
        for id in plan.restart.iter().chain(&plan.start) {
            let d = desired
                .remove(id)
                .expect("planned from the desired targets");
            let state = match carried.remove(id) {
                Some(c) => c,
                None => self.initial_state(id, &d.spec),
            };
            self.start(id.clone(), d, state);
        }
        Ok(())
    }

    /// A new target's state: restored from the state file, or empty with its baseline now.
    fn initial_state(&mut self, id: &TargetId, spec: &TargetSpec) -> SharedTarget {
        let saved = match self.restored.targets.remove(&id.to_string()) {
            Some(saved) => {
                let saved = saved.resume(
                    id,
                    spec.shard,
                    &self.metrics,
                    &keeps(spec),
                    self.process_start,
                );
                tracing::info!(target_id = %id, tasks = saved.store.len(), "restored from the state file");
                saved
            }
            None => SavedTarget::new(
                None,
                // Baseline at start-up, or at the reload that added the target.
                TaskStore::new(
                    Scope::Region,
                    spec.poll.lookback.as_secs() as i64,
                    self.clock.now(),
                ),
            ),
        };
        Arc::new(Mutex::new(saved))
    }

    fn limiter(&mut self, account: &str, rate: f64) -> Arc<RateLimiter> {
        match self.limiters.get(account) {
            Some((bits, l)) if *bits == rate.to_bits() => l.clone(),
            _ => {
                let l = Arc::new(RateLimiter::new(rate));
                self.limiters
                    .insert(account.to_string(), (rate.to_bits(), l.clone()));
                l
            }
        }
    }

    fn start(&mut self, id: TargetId, desired: Desired, state: SharedTarget) {
        let Desired { spec, client } = desired;
        let limiter = self.limiter(&id.account, spec.poll.requests_per_second);
        let settings = PollSettings {
            task_events: spec.task_events,
            ..PollSettings::new(spec.poll.interval, spec.poll.lookback, spec.shard)
        };
        let discovered = Discovered::default();
        let target = Target::new(TargetParts {
            id: id.clone(),
            instances: spec
                .region
                .instances
                .iter()
                .map(ToString::to_string)
                .collect(),
            client: client.clone(),
            limiter: limiter.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            settings,
            state: state.clone(),
            discovered: discovered.clone(),
            persister: self.state.clone(),
        });
        self.board.attach(&id, state.clone());
        if let Some(p) = &self.state {
            p.writer().register(&id, spec.shard, state);
        }
        let cancel = CancellationToken::new();
        let discovery = spec.discovery.instance_info.then(|| {
            let d = Discovery {
                id: id.clone(),
                client,
                limiter,
                metrics: self.metrics.clone(),
                board: self.board.clone(),
                discovered,
                interval: spec.discovery.interval,
                tags: spec.discovery.tags.clone(),
                listed: spec
                    .region
                    .instances
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                shard: spec.shard,
            };
            tokio::spawn(d.run(cancel.clone()))
        });
        let board = self.board.clone();
        let handle = tokio::spawn(target.run(cancel.clone(), move |t, report| {
            let error = report.failure.as_ref().map(|e| {
                let message = crate::tencent::model::sanitize(&e.to_string());
                (e.as_label().to_string(), message)
            });
            board.record(&t.id, report.started_at, report.mode, error);
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
    }

    /// Stops every target, then writes the state one last time.
    async fn stop_all(&mut self) {
        for run in self.running.values() {
            run.cancel.cancel();
        }
        for (_, run) in std::mem::take(&mut self.running) {
            let _ = run.stop().await;
        }
        // The last write, through the running writer; one stuck in the file system does not
        // keep the process from exiting (`durable` gives up after DURABLE_WAIT).
        if let Some(p) = &self.state {
            p.durable().await;
        }
    }
}

/// The state file's writer and what it restored, or neither (no file, or an unreadable one,
/// which is then left untouched).
fn restore_state(
    config: &Config,
    metrics: &Arc<Metrics>,
    now: i64,
) -> (Option<Arc<Persister>>, Saved) {
    let Some(path) = &config.poll.state_file else {
        return (None, Saved::default());
    };
    match state::load(path, now) {
        Loaded::State(saved) => {
            let writer = StateWriter::new(path.clone(), Some(metrics.clone()));
            (Some(Persister::new(Arc::new(writer))), saved)
        }
        Loaded::Unreadable(e) => {
            // Writing over it could lose the saved baseline: persistence is off for this run,
            // and the metric says so.
            tracing::warn!(path = %path.display(), error = %e, "cannot read the state file; leaving it untouched and keeping no state this run");
            metrics.state_file_error("read");
            (None, Saved::default())
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
    let board = Arc::new(TargetBoard::default());
    let process_start = options.clock.now();
    let (state, restored) = restore_state(&config, &metrics, process_start);
    let web = Arc::new(WebSecurity::new(load_web(&config)?));
    let server_state = ServerState {
        metrics: metrics.clone(),
        board: board.clone(),
        web: web.clone(),
        clock: options.clock.clone(),
    };
    let writer_stop = CancellationToken::new();
    let writer = state
        .clone()
        .map(|p| tokio::spawn(p.run(writer_stop.clone())));
    let mut fleet = Fleet {
        running: BTreeMap::new(),
        limiters: BTreeMap::new(),
        metrics,
        board,
        state,
        started_with: StartOnly::of(&config),
        restored,
        clock: options.clock,
        env: options.env,
        process_start,
    };
    fleet.apply(&config).await?;
    if let Some(p) = &fleet.state {
        // The file names this run's start at once: if the process dies before its first poll
        // is written, the next run still counts the tasks that ended after this start.
        p.durable().await;
    }
    fleet.metrics.config_loaded(true, process_start);
    // Served once the first config is applied: the first scrape already has every target's
    // series and `shard_info`, and `/readyz` lists the targets it waits for. (The listener is
    // bound: connections made meanwhile wait in its backlog.)
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(run_server(
        listener,
        server_state,
        server_stop.clone(),
        config.server.max_connections,
    ));
    apply_reloads(&mut fleet, &web, options.reloads, &shutdown).await;
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

/// Applies the configs that arrive on `reloads` (web config included) until `shutdown`; a
/// config that cannot be applied leaves everything as it was.
async fn apply_reloads(
    fleet: &mut Fleet,
    web: &WebSecurity,
    mut reloads: Option<mpsc::Receiver<Reload>>,
    shutdown: &CancellationToken,
) {
    loop {
        let next = async {
            match reloads.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let new = tokio::select! {
            () = shutdown.cancelled() => return,
            new = next => new,
        };
        let new = match new {
            None => {
                reloads = None;
                continue;
            }
            Some(Reload::Invalid) => {
                fleet.metrics.config_loaded(false, fleet.clock.now());
                continue;
            }
            Some(Reload::Config(new)) => new,
        };
        let applied = match load_web(&new) {
            Err(e) => {
                tracing::error!(error = %e, "reload rejected: bad web config; keeping the running configuration");
                false
            }
            Ok(new_web) => match fleet.apply(&new).await {
                Ok(()) => {
                    web.replace(new_web);
                    let waiting = fleet.started_with.changed_in(&new);
                    if waiting.is_empty() {
                        tracing::info!("configuration reloaded");
                    } else {
                        // The rest applies; these keep their start-up values until a restart.
                        tracing::warn!(
                            needs_restart = %waiting.join(","),
                            "configuration reloaded, except keys read only at start-up: restart to apply them"
                        );
                    }
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload rejected; keeping the running configuration");
                    false
                }
            },
        };
        fleet.metrics.config_loaded(applied, fleet.clock.now());
    }
}

/// The web configuration the config points at, or the open default.
fn load_web(config: &Config) -> anyhow::Result<WebConfig> {
    match &config.server.web_config_file {
        Some(path) => Ok(WebConfig::load(path)?),
        None => Ok(WebConfig::open()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_region: &str, interval: &str, second_account: &str) -> Config {
        Config::from_toml(&format!(
            r#"
[poll]
interval = "{interval}"
[[accounts]]
name = "a"
secret_id = "AKIDa"
secret_key = "ka"
[[accounts.regions]]
region = "ap-guangzhou"
{extra_region}
{second_account}
"#
        ))
        .unwrap()
    }

    fn specs(d: &BTreeMap<TargetId, Desired>) -> BTreeMap<TargetId, &TargetSpec> {
        d.iter().map(|(id, d)| (id.clone(), &d.spec)).collect()
    }

    fn id(account: &str, region: &str) -> TargetId {
        TargetId {
            account: account.into(),
            region: region.into(),
        }
    }

    fn no_env() -> impl Environment {
        |_: &str| None::<String>
    }

    #[test]
    fn a_reload_plan_keeps_restarts_stops_and_starts() {
        crate::install_crypto_provider();
        let env = no_env();
        let second = "[[accounts]]\nname = \"b\"\nsecret_id = \"AKIDb\"\nsecret_key = \"kb\"\n[[accounts.regions]]\nregion = \"ap-beijing\"";
        let old = desired_targets(&config("", "60s", second), &env).unwrap();
        // A new region for account a; account b gone.
        let new = desired_targets(
            &config("[[accounts.regions]]\nregion = \"ap-shanghai\"", "60s", ""),
            &env,
        )
        .unwrap();
        let plan = Plan::new(&specs(&old), &specs(&new));
        assert_eq!(
            plan,
            Plan {
                keep: vec![id("a", "ap-guangzhou")],
                restart: vec![],
                stop: vec![id("b", "ap-beijing")],
                start: vec![id("a", "ap-shanghai")],
            },
            "adding a region does not restart the account's others"
        );
        // The shared [poll] section changed: every target restarts, with its store.
        let slower = desired_targets(&config("", "120s", ""), &env).unwrap();
        let plan = Plan::new(&specs(&new), &specs(&slower));
        assert_eq!(plan.restart, [id("a", "ap-guangzhou")]);
        assert_eq!(plan.stop, [id("a", "ap-shanghai")]);
        assert!(plan.keep.is_empty() && plan.start.is_empty());
    }

    #[test]
    fn a_reload_names_the_start_only_keys_it_cannot_apply() {
        let base = config("", "60s", "");
        let started = StartOnly::of(&base);
        assert!(started.changed_in(&config("", "120s", "")).is_empty());
        let mut moved = base.clone();
        moved.server.listen_address = "127.0.0.1:9999".parse().unwrap();
        moved.server.max_connections = 3;
        moved.poll.state_file = Some("/var/lib/x/state.json".into());
        assert_eq!(
            started.changed_in(&moved),
            [
                "server.listen_address",
                "server.max_connections",
                "poll.state_file"
            ]
        );
    }

    #[test]
    fn credentials_that_cannot_be_resolved_fail_before_anything_changes() {
        // Account c takes its keys from the environment, where the TKE variables are partial:
        // resolving fails, and apply returns before it stops or starts anything.
        let env = |name: &str| (name == "TKE_REGION").then(|| "ap-guangzhou".to_string());
        let third = "[[accounts]]\nname = \"c\"\n[[accounts.regions]]\nregion = \"ap-beijing\"";
        let err = desired_targets(&config("", "60s", third), &env)
            .err()
            .expect("an error");
        assert!(
            matches!(&err, ApplyError::Credentials { index: 1, account, .. } if account == "c"),
            "{err}"
        );
        assert!(
            err.to_string().contains("missing: TKE_PROVIDER_ID"),
            "{err}"
        );
    }
}
