//! Every target, owned in one place. [`Targets`] holds one [`TargetHandle`] per target id,
//! with what runs for it (its poller and its instance listing); the server, the metrics page
//! and the state writer read the handles from there. [`Registry`] applies a configuration to
//! them in one pass: a pure [`Plan`] of the difference (keep, restart, stop, start), then its
//! effects. Removing a target is removing its entry: its store, series, status row and
//! inventory go with the handle.

use crate::call::RateLimiter;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{AccountConfig, Config, DiscoveryConfig, PollConfig, RegionConfig};
use crate::discovery::Discovery;
use crate::domain::{AccountName, TargetId};
use crate::metrics::{Metrics, TargetSeries};
use crate::poller::{PollSettings, Target, TargetParts};
use crate::shard::Shard;
use crate::state::{self, Loaded, Persistable, Persister, Saved, SavedTarget, StateWriter};
use crate::target::TargetHandle;
use crate::tasks::{Scope, TaskStore};
use crate::tencent::credentials::{CredentialError, Environment, Provider};
use crate::tencent::{Client, ClientOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything that defines a target: when it changes, the target restarts. `account` has its
/// region list emptied.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    account: AccountConfig,
    /// With only this shard's listed instances.
    region: RegionConfig,
    poll: PollConfig,
    shard: Shard,
    task_events: bool,
    discovery: DiscoveryConfig,
}

impl TargetSpec {
    /// The instances whose counters the target keeps: this shard's, and of those the listed
    /// ones when it lists any.
    fn keeps(&self) -> impl Fn(&str) -> bool + '_ {
        |instance: &str| {
            self.shard.owns(instance)
                && (self.region.instances.is_empty()
                    || self.region.instances.iter().any(|i| i.as_str() == instance))
        }
    }

    fn listed(&self) -> Vec<String> {
        self.region
            .instances
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

/// What runs for a target: its poller and its instance listing, stopped by `cancel`.
#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    poller: JoinHandle<()>,
    /// When `discovery.instance_info` is on.
    discovery: Option<JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.poller.await;
        if let Some(d) = self.discovery {
            let _ = d.await;
        }
    }
}

/// One target in the registry.
#[derive(Debug)]
struct Entry {
    handle: Arc<TargetHandle>,
    spec: TargetSpec,
    /// None only while a restart stops it (the handle stays, so a state write in between still
    /// saves the target).
    running: Option<Running>,
}

/// Every target by id: the one map of the exporter.
#[derive(Debug, Default)]
pub struct Targets {
    entries: Mutex<BTreeMap<TargetId, Entry>>,
    /// Set once the first config is applied: until then no target means "starting", not
    /// "nothing to wait for".
    configured: AtomicBool,
}

impl Targets {
    /// Every target's handle, in id order.
    pub fn handles(&self) -> Vec<Arc<TargetHandle>> {
        self.entries
            .lock()
            .expect("lock")
            .values()
            .map(|e| e.handle.clone())
            .collect()
    }

    /// Whether the first configuration has been applied.
    pub fn configured(&self) -> bool {
        self.configured.load(Ordering::Acquire)
    }
}

impl state::Source for Targets {
    fn targets(&self) -> Vec<Arc<dyn Persistable>> {
        self.handles()
            .into_iter()
            .map(|h| h as Arc<dyn Persistable>)
            .collect()
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
        target: Box<TargetId>,
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
pub struct Plan {
    /// Running and unchanged.
    pub keep: Vec<TargetId>,
    /// Running and changed: stopped, then started with their store and counters carried over.
    pub restart: Vec<TargetId>,
    /// Running and gone from the config.
    pub stop: Vec<TargetId>,
    /// New.
    pub start: Vec<TargetId>,
}

impl Plan {
    /// The difference between the running targets and the desired ones.
    pub fn new(
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
        // A target depends on its account's keys and endpoint, not on the account's other
        // regions: adding a region must not restart the others.
        let account = AccountConfig {
            regions: Vec::new(),
            ..a.clone()
        };
        let targets = a.regions.iter().filter_map(|r| {
            let shard = config.sharding;
            let mut region = r.clone();
            region.instances.retain(|i| shard.owns(i));
            // A list whose every instance belongs to another shard is not this shard's.
            let empty = !r.instances.is_empty() && region.instances.is_empty();
            let options = ClientOptions {
                endpoint: account.endpoint_for(&region.region, region.product),
                region: region.region.to_string(),
                zone: config.poll.api_timezone,
                timeout: config.poll.request_timeout,
            };
            let spec = TargetSpec {
                account: account.clone(),
                region,
                poll: config.poll.clone(),
                shard,
                task_events: config.log.task_events,
                discovery: config.discovery.clone(),
            };
            (!empty).then_some((spec, options))
        });
        let targets: Vec<(TargetSpec, ClientOptions)> = targets.collect();
        let (source, provider) =
            Provider::resolve(&a.credentials, env).map_err(|source| ApplyError::Credentials {
                index,
                account: a.name.clone(),
                source,
            })?;
        tracing::info!(account = %a.name, %source, "credentials");
        let provider = Arc::new(provider);
        for (spec, options) in targets {
            let product = spec.region.product;
            let id = TargetId::new(a.name.clone(), spec.region.region.clone(), product.name());
            let client = Client::with(options, provider.clone(), product, SystemClock::shared())
                .map_err(|source| ApplyError::Client {
                    target: Box::new(id.clone()),
                    source,
                })?;
            desired.insert(id, Desired { spec, client });
        }
    }
    Ok(desired)
}

/// Applies configurations to the [`Targets`]: starts, restarts and stops pollers, restores
/// targets from the state file, shares each account's rate limit.
pub struct Registry {
    targets: Arc<Targets>,
    metrics: Arc<Metrics>,
    /// Writes the state file, when there is one.
    persister: Option<Arc<Persister>>,
    /// What the state file held at start-up, taken by each target when it first starts.
    restored: Saved,
    limiters: BTreeMap<String, (u64, Arc<RateLimiter>)>,
    clock: SharedClock,
    env: Arc<dyn Environment + Send + Sync>,
    process_start: i64,
}

impl Registry {
    /// An empty registry; with `state_file`, the file is read now and written from now on
    /// (an unreadable one is left untouched and persistence is off for the run).
    pub fn new(
        metrics: Arc<Metrics>,
        state_file: Option<&std::path::Path>,
        clock: SharedClock,
        env: Arc<dyn Environment + Send + Sync>,
    ) -> Registry {
        let targets = Arc::new(Targets::default());
        let process_start = clock.now();
        let (persister, restored) = match state_file {
            None => (None, Saved::default()),
            Some(path) => match state::load(path, process_start) {
                Loaded::State(saved) => {
                    let writer = StateWriter::new(
                        path.to_path_buf(),
                        targets.clone(),
                        Some(metrics.clone()),
                    );
                    (Some(Persister::new(Arc::new(writer))), saved)
                }
                Loaded::Unreadable(e) => {
                    // Writing over it could lose the saved baseline: persistence is off for
                    // this run, and the metric says so.
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the state file; leaving it untouched and keeping no state this run");
                    metrics.state_file_error("read");
                    (None, Saved::default())
                }
            },
        };
        Registry {
            targets,
            metrics,
            persister,
            restored,
            limiters: BTreeMap::new(),
            clock,
            env,
            process_start,
        }
    }

    /// The targets, for the server.
    pub fn targets(&self) -> &Arc<Targets> {
        &self.targets
    }

    /// The state file's persister, when there is a state file.
    pub fn persister(&self) -> Option<&Arc<Persister>> {
        self.persister.as_ref()
    }

    /// Starts, stops and restarts targets so that they match `config`. Everything that can
    /// fail (credentials, clients) is done first: on failure nothing changes.
    pub async fn apply(&mut self, config: &Config) -> Result<(), ApplyError> {
        let mut desired = desired_targets(config, self.env.as_ref())?;
        let plan = {
            let entries = self.targets.entries.lock().expect("lock");
            let running = entries
                .iter()
                .map(|(id, e)| (id.clone(), &e.spec))
                .collect();
            let wanted = desired
                .iter()
                .map(|(id, d)| (id.clone(), &d.spec))
                .collect();
            Plan::new(&running, &wanted)
        };
        for id in &plan.stop {
            self.remove(id).await;
        }
        self.metrics
            .shard(config.sharding.index, config.sharding.total);
        for id in &plan.restart {
            let d = desired
                .remove(id)
                .expect("planned from the desired targets");
            self.replace(id, d).await;
        }
        for id in &plan.start {
            let d = desired
                .remove(id)
                .expect("planned from the desired targets");
            let handle = self.first_handle(id, &d.spec);
            self.start(handle, d);
        }
        self.targets.configured.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops a target and removes it, with everything it had.
    async fn remove(&self, id: &TargetId) {
        let entry = self.targets.entries.lock().expect("lock").remove(id);
        if let Some(Entry {
            running: Some(r), ..
        }) = entry
        {
            r.stop().await;
        }
        self.metrics.forget_target(id);
        tracing::info!(target_id = %id, "target removed");
    }

    /// Restarts a changed target: its store and counters go on (a restart is not a counter
    /// reset), for the instances it still watches. Its old handle stays registered until the
    /// new one replaces it, so a state write in between still saves it.
    async fn replace(&mut self, id: &TargetId, desired: Desired) {
        let running = self
            .targets
            .entries
            .lock()
            .expect("lock")
            .get_mut(id)
            .and_then(|e| e.running.take());
        if let Some(r) = running {
            r.stop().await;
        }
        let old = self.targets.entries.lock().expect("lock")[id]
            .handle
            .clone();
        let counters = old.counters();
        let series = TargetSeries::restored(
            desired.spec.region.product,
            &counters,
            desired.spec.shard,
            &desired.spec.keeps(),
        );
        let handle = TargetHandle::new(id.clone(), desired.spec.shard, old.state().clone(), series);
        self.metrics.target_restarted(id);
        tracing::info!(target_id = %id, "target changed; restarting it");
        self.start(handle, desired);
    }

    /// A new target's handle: restored from the state file, or empty with its baseline now.
    fn first_handle(&mut self, id: &TargetId, spec: &TargetSpec) -> TargetHandle {
        let (saved, series) = if let Some(saved) = self.restored.targets.remove(&id.to_string()) {
            let (saved, series) = saved.resume(
                spec.region.product,
                spec.shard,
                &spec.keeps(),
                self.process_start,
            );
            tracing::info!(target_id = %id, tasks = saved.store.len(), "restored from the state file");
            (saved, series)
        } else {
            // Baseline at start-up, or at the reload that added the target.
            let store = TaskStore::new(
                Scope::Region,
                spec.poll.lookback.as_secs() as i64,
                self.clock.now(),
            );
            (
                SavedTarget::new(None, store),
                TargetSeries::of(spec.region.product),
            )
        };
        TargetHandle::new(id.clone(), spec.shard, Arc::new(Mutex::new(saved)), series)
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

    /// Registers `handle` (replacing any entry of its id) and starts its poller and listing.
    fn start(&mut self, handle: TargetHandle, desired: Desired) {
        let Desired { spec, client } = desired;
        let handle = Arc::new(handle);
        let id = handle.id().clone();
        let limiter = self.limiter(
            &format!("{}/{}", id.account, id.product),
            spec.poll.requests_per_second,
        );
        let settings = PollSettings {
            task_events: spec.task_events,
            ..PollSettings::new(spec.poll.interval, spec.poll.lookback, spec.shard)
        };
        let target = Target::new(TargetParts {
            handle: handle.clone(),
            instances: spec.listed(),
            client: client.clone(),
            limiter: limiter.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            settings,
            persister: self.persister.clone(),
        });
        let cancel = CancellationToken::new();
        let discovery = spec.discovery.instance_info.then(|| {
            let d = Discovery {
                handle: handle.clone(),
                client,
                limiter,
                metrics: self.metrics.clone(),
                interval: spec.discovery.interval,
                tags: spec.discovery.tags.clone(),
                listed: spec.listed(),
            };
            tokio::spawn(d.run(cancel.clone()))
        });
        let poller = tokio::spawn(target.run(cancel.clone()));
        let running = Some(Running {
            cancel,
            poller,
            discovery,
        });
        self.targets.entries.lock().expect("lock").insert(
            id,
            Entry {
                handle,
                spec,
                running,
            },
        );
    }

    /// Stops every target, then writes the state one last time.
    pub async fn stop_all(&mut self) {
        let running: Vec<Running> = self
            .targets
            .entries
            .lock()
            .expect("lock")
            .values_mut()
            .filter_map(|e| e.running.take())
            .collect();
        for r in &running {
            r.cancel.cancel();
        }
        for r in running {
            r.stop().await;
        }
        // The last write, through the running writer; one stuck in the file system does not
        // keep the process from exiting (`durable` gives up after DURABLE_WAIT).
        if let Some(p) = &self.persister {
            p.durable().await;
        }
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
            product: "cdb",
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
