//! Wiring and exit codes only: command line -> logging -> config -> run until a signal.

use cdb_task_exporter::app::{Reload, RunOptions, run};
use cdb_task_exporter::cli::{CheckError, Cli, Command, check_config_summary};
use cdb_task_exporter::clock::SystemClock;
use cdb_task_exporter::config::{Config, ConfigError};
use cdb_task_exporter::secret::Secret;
use cdb_task_exporter::sim::demo::demo_setup;
use cdb_task_exporter::sim::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Scenario, Simulator};
use cdb_task_exporter::tencent::credentials::ProcessEnv;
use cdb_task_exporter::web::WebConfig;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why the process ends with an error. The one place that maps errors to exit codes
/// (docs/configuration.md#command-line): 2 for a bad config or command line, 1 for any other start-up failure.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(
        "--config FILE (or CDB_TASK_EXPORTER_CONFIG) is required; try `cdb-task-exporter demo` for a quick look"
    )]
    NoConfig,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Check { path: PathBuf, source: CheckError },
    #[error("scenario {path}: {message}")]
    Scenario { path: PathBuf, message: String },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {address}: {source}{hint}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{0:#}")]
    Run(#[from] anyhow::Error),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::NoConfig
            | Failure::Config(_)
            | Failure::Check { .. }
            | Failure::Scenario { .. } => 2,
            Failure::Runtime(_) | Failure::Listen { .. } | Failure::Run(_) => 1,
        }
    }
}

fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn bind(
    address: std::net::SocketAddr,
    hint: &'static str,
) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Failure::Listen {
            address,
            source,
            hint,
        })
}

fn main() -> ExitCode {
    // Before any thread starts: this may execute the program again (src/malloc.rs).
    cdb_task_exporter::malloc::fix_mmap_threshold();
    let cli = Cli::parse();
    cdb_task_exporter::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return exit(Err(Failure::Runtime(e))),
    };
    runtime.block_on(async_main(cli))
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
            clock_offset,
        }) => {
            let keys = (secret_id, secret_key);
            exit(simulate(listen, scenario.as_deref(), keys, clock_offset).await)
        }
        Some(Command::Healthcheck { url }) => healthcheck(&url).await,
        Some(Command::Demo { listen }) => exit(demo(listen, &overrides).await),
        None => exit(daemon(cli.config, cli.check_config, overrides).await),
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
fn load(path: &Path, overrides: &Overrides) -> Result<(Config, String), Failure> {
    let mut config = Config::load(path)?;
    config.override_server(
        overrides.listen_address.as_deref(),
        overrides.web_config_file.as_deref(),
    )?;
    let summary = check_config_summary(&config, &ProcessEnv).map_err(|source| Failure::Check {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((config, summary))
}

async fn daemon(
    path: Option<PathBuf>,
    check_only: bool,
    overrides: Overrides,
) -> Result<(), Failure> {
    let path = path.ok_or(Failure::NoConfig)?;
    let (config, summary) = load(&path, &overrides)?;
    if check_only {
        print!("{summary}");
        println!("config OK");
        return Ok(());
    }
    let listener = bind(config.server.listen_address, "").await?;
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
    Ok(run(config, listener, shutdown, options).await?)
}

/// SIGTERM/SIGINT end the process; SIGHUP reloads the config (validated first).
async fn watch_signals(
    shutdown: CancellationToken,
    reload: Option<(PathBuf, Overrides, mpsc::Sender<Reload>)>,
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
            _ = hup.recv() => if let Some((path, overrides, tx)) = &reload { match load(path, overrides) {
                Ok((c, _)) => { let _ = tx.send(Reload::Config(Box::new(c))).await; }
                Err(e) => {
                    tracing::error!(error = %e, "reload ignored: the new config is invalid");
                    let _ = tx.send(Reload::Invalid).await;
                }
            } } else { tracing::info!("SIGHUP ignored: nothing to reload") },
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

async fn demo(listen: std::net::SocketAddr, overrides: &Overrides) -> Result<(), Failure> {
    let clock = SystemClock::shared();
    let (sim, mut config) = demo_setup(listen, clock.clone()).await?;
    config.override_server(
        overrides.listen_address.as_deref(),
        overrides.web_config_file.as_deref(),
    )?;
    if let Some(path) = &config.server.web_config_file {
        WebConfig::load(path)?;
    }
    let listen = config.server.listen_address;
    let listener = bind(listen, " (pick another with --listen)").await?;
    let addr = listener.local_addr().map_or(listen, |a| a);
    println!(
        "cdb-task-exporter demo: the exporter polls a simulated CDB API at {}",
        sim.url()
    );
    println!("  landing page: http://{addr}/");
    println!("  metrics:      http://{addr}/metrics");
    println!("  task details: http://{addr}/tasks");
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
    Ok(result?)
}

async fn simulate(
    listen: std::net::SocketAddr,
    scenario: Option<&Path>,
    (secret_id, secret_key): (Option<String>, Option<String>),
    clock_offset: i64,
) -> Result<(), Failure> {
    let scenario = match scenario {
        None => Scenario::demo(),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Scenario::from_toml(&t).map_err(|e| e.0))
            .map_err(|message| Failure::Scenario {
                path: path.to_path_buf(),
                message,
            })?,
    };
    let id = secret_id.unwrap_or_else(|| DEFAULT_SECRET_ID.to_string());
    let key = Secret::new(secret_key.unwrap_or_else(|| DEFAULT_SECRET_KEY.to_string()));
    let sim = Simulator::new(scenario, &id, key, SystemClock::shared());
    sim.set_clock_offset(clock_offset);
    let server = sim.serve(listen).await.map_err(|source| Failure::Listen {
        address: listen,
        source,
        hint: "",
    })?;
    println!("simulated CDB API listening on {}", server.url());
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone(), None).await;
    server.stop().await;
    Ok(())
}
