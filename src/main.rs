//! Wiring and exit codes only: command line -> logging -> config -> run until a signal.

use cdb_task_exporter::app::{RunOptions, demo_setup, run};
use cdb_task_exporter::cli::{Cli, Command, LogFormat, check_config_summary};
use cdb_task_exporter::clock::SystemClock;
use cdb_task_exporter::config::Config;
use cdb_task_exporter::secret::Secret;
use cdb_task_exporter::sim::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Scenario, Simulator};
use cdb_task_exporter::tencent::credentials::ProcessEnv;
use cdb_task_exporter::web::WebConfig;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async_main(cli))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    // RUST_LOG as `level` or `target=level,...`; a bad value falls back to info (and says so).
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (
                Targets::new().with_default(tracing::Level::INFO),
                Some(format!("{v:?}: {e}")),
            ),
        },
        _ => (Targets::new().with_default(tracing::Level::INFO), None),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(fmt.json().with_filter(filter))
            .init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init(),
    }
    if let Some(bad) = bad {
        tracing::warn!(rust_log = %bad, "RUST_LOG not understood; logging at info");
    }
}

async fn async_main(cli: Cli) -> ExitCode {
    let overrides = Overrides {
        listen_address: cli.web_listen_address,
        web_config_file: cli.web_config_file,
    };
    match cli.command {
        Some(Command::Simulate {
            listen,
            scenario,
            secret_id,
            secret_key,
        }) => simulate(listen, scenario.as_deref(), secret_id, secret_key).await,
        Some(Command::Healthcheck { url }) => healthcheck(&url).await,
        Some(Command::Demo { listen }) => demo(listen, &overrides).await,
        None => daemon(cli.config, cli.check_config, overrides).await,
    }
}

/// Command-line flags that win over the config file.
#[derive(Debug, Clone, Default)]
struct Overrides {
    listen_address: Option<String>,
    web_config_file: Option<PathBuf>,
}

/// Loads and fully validates a config, credentials and web config included; returns it with
/// its summary.
fn load(path: &Path, overrides: &Overrides) -> Result<(Config, String), String> {
    let mut config = Config::load(path).map_err(|e| e.to_string())?;
    config
        .override_server(
            overrides.listen_address.as_deref(),
            overrides.web_config_file.as_deref(),
        )
        .map_err(|e| e.to_string())?;
    let summary = check_config_summary(&config, &ProcessEnv)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((config, summary))
}

async fn daemon(path: Option<PathBuf>, check_only: bool, overrides: Overrides) -> ExitCode {
    let Some(path) = path else {
        eprintln!(
            "error: --config FILE (or CDB_TASK_EXPORTER_CONFIG) is required; try `cdb-task-exporter demo` for a quick look"
        );
        return ExitCode::from(2);
    };
    let (config, summary) = match load(&path, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        print!("{summary}");
        println!("config OK");
        return ExitCode::SUCCESS;
    }
    let listener = match tokio::net::TcpListener::bind(config.server.listen_address).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}: {e}",
                config.server.listen_address
            );
            return ExitCode::from(1);
        }
    };
    // The bound address: with port 0 in the config, the one the system chose.
    let address = listener.local_addr().map_or_else(
        |_| config.server.listen_address.to_string(),
        |a| a.to_string(),
    );
    tracing::info!(%address, version = cdb_task_exporter::cli::LONG_VERSION, "serving metrics");
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(watch_signals(shutdown.clone(), Some((path, overrides, tx))));
    let options = RunOptions {
        clock: SystemClock::shared(),
        env: Arc::new(ProcessEnv),
        reloads: Some(rx),
    };
    finish(run(config, listener, shutdown, options).await)
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM/SIGINT end the process; SIGHUP reloads the config (validated first).
async fn watch_signals(
    shutdown: CancellationToken,
    reload: Option<(PathBuf, Overrides, mpsc::Sender<Config>)>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match &reload {
                Some((path, overrides, tx)) => match load(path, overrides) {
                    Ok((c, _)) => { let _ = tx.send(c).await; }
                    Err(e) => tracing::error!(error = %e, "reload ignored: the new config is invalid"),
                },
                None => tracing::info!("SIGHUP ignored: nothing to reload"),
            },
        }
    }
    shutdown.cancel();
}

async fn healthcheck(url: &str) -> ExitCode {
    cdb_task_exporter::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .danger_accept_invalid_certs(true)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match client.get(url).send().await.map(|r| r.status().as_u16()) {
        Ok(200 | 401) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(listen: std::net::SocketAddr, overrides: &Overrides) -> ExitCode {
    let clock = SystemClock::shared();
    let (sim, mut config) = match demo_setup(listen, clock.clone()).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let checked = config
        .override_server(
            overrides.listen_address.as_deref(),
            overrides.web_config_file.as_deref(),
        )
        .map_err(|e| e.to_string())
        .and_then(|()| match &config.server.web_config_file {
            Some(path) => WebConfig::load(path).map(drop).map_err(|e| e.to_string()),
            None => Ok(()),
        });
    if let Err(e) = checked {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let listen = config.server.listen_address;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e} (pick another with --listen)");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().map_or(listen, |a| a);
    println!(
        "cdb-task-exporter demo: the exporter polls a simulated CDB API at {}",
        sim.url()
    );
    println!("  landing page: http://{addr}/");
    println!("  metrics:      http://{addr}/metrics");
    println!("Press Ctrl-C to stop.");
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone(), None));
    let options = RunOptions {
        clock,
        env: Arc::new(ProcessEnv),
        reloads: None,
    };
    let result = run(config, listener, shutdown, options).await;
    sim.stop().await;
    finish(result)
}

async fn simulate(
    listen: std::net::SocketAddr,
    scenario: Option<&Path>,
    secret_id: Option<String>,
    secret_key: Option<String>,
) -> ExitCode {
    let scenario = match scenario {
        None => Scenario::demo(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Scenario::from_toml(&t))
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: scenario {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let id = secret_id.unwrap_or_else(|| DEFAULT_SECRET_ID.to_string());
    let key = Secret::new(secret_key.unwrap_or_else(|| DEFAULT_SECRET_KEY.to_string()));
    let sim = Simulator::new(scenario, &id, key, SystemClock::shared());
    let server = match sim.serve(listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    println!("simulated CDB API listening on {}", server.url());
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone(), None).await;
    server.stop().await;
    ExitCode::SUCCESS
}
