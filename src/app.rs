//! The daemon's wiring: the metrics, the target registry, the server and the reload loop, shut
//! down in order. [`run`] is the testable entry point.

use crate::cli::{REVISION, VERSION};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::server::{ServerState, run_server};
use crate::tencent::credentials::Environment;
use crate::web::{WebConfig, WebSecurity};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
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
    let mut registry = Registry::new(
        metrics.clone(),
        config.poll.state_file.as_deref(),
        options.clock.clone(),
        options.env,
    );
    let web = Arc::new(WebSecurity::new(load_web(&config)?));
    let server_state = ServerState {
        metrics: metrics.clone(),
        targets: registry.targets().clone(),
        web: web.clone(),
        clock: options.clock.clone(),
    };
    let writer_stop = CancellationToken::new();
    let writer = registry
        .persister()
        .cloned()
        .map(|p| tokio::spawn(p.run(writer_stop.clone())));
    registry.apply(&config).await?;
    if let Some(p) = registry.persister() {
        // The file names this run's start at once: if the process dies before its first poll
        // is written, the next run still counts the tasks that ended after this start.
        p.durable().await;
    }
    metrics.config_loaded(true, options.clock.now());
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
    let reloading = Reloading {
        registry: &mut registry,
        web: &web,
        metrics: &metrics,
        clock: &options.clock,
        started_with: StartOnly::of(&config),
    };
    reloading.run(options.reloads, &shutdown).await;
    tracing::info!("shutting down");
    registry.stop_all().await;
    writer_stop.cancel();
    if let Some(w) = writer {
        let _ = w.await;
    }
    server_stop.cancel();
    let _ = server.await;
    Ok(())
}

/// What applying reloads needs.
struct Reloading<'a> {
    registry: &'a mut Registry,
    web: &'a WebSecurity,
    metrics: &'a Metrics,
    clock: &'a SharedClock,
    /// The start-up values of the keys a reload cannot change.
    started_with: StartOnly,
}

impl Reloading<'_> {
    /// Applies the configs that arrive on `reloads` (web config included) until `shutdown`; a
    /// config that cannot be applied leaves everything as it was.
    async fn run(
        mut self,
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
            let applied = match new {
                None => {
                    reloads = None;
                    continue;
                }
                Some(Reload::Invalid) => false,
                Some(Reload::Config(new)) => self.apply(&new).await,
            };
            self.metrics.config_loaded(applied, self.clock.now());
        }
    }

    /// Applies one config, web config first checked; whether it was applied.
    async fn apply(&mut self, new: &Config) -> bool {
        let new_web = match load_web(new) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "reload rejected: bad web config; keeping the running configuration");
                return false;
            }
        };
        if let Err(e) = self.registry.apply(new).await {
            tracing::error!(error = %e, "reload rejected; keeping the running configuration");
            return false;
        }
        self.web.replace(new_web);
        let waiting = self.started_with.changed_in(new);
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

    fn config(interval: &str) -> Config {
        Config::from_toml(&format!(
            "[poll]\ninterval = \"{interval}\"\n[[accounts]]\nname = \"a\"\nsecret_id = \"AKIDa\"\nsecret_key = \"ka\"\n[[accounts.regions]]\nregion = \"ap-guangzhou\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_reload_names_the_start_only_keys_it_cannot_apply() {
        let base = config("60s");
        let started = StartOnly::of(&base);
        assert!(started.changed_in(&config("120s")).is_empty());
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
}
