//! The command line (docs/configuration.md#command-line).

use crate::config::{Config, ConfigError};
use crate::domain::AccountName;
use crate::tencent::credentials::{CredentialError, Environment, Provider, mask_id};
use crate::web::WebConfig;
use clap::{Parser, Subcommand, ValueEnum};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from.
pub const REVISION: &str = env!("GIT_REVISION");

/// `--version` output: version and git revision.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("GIT_REVISION"),
    ")"
);

/// Prometheus exporter for Tencent Cloud CDB (MySQL) background tasks.
#[derive(Debug, Parser)]
#[command(name = "cdb-task-exporter", version = LONG_VERSION, about)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, env = "CDB_TASK_EXPORTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the config and the credential sources, print a summary, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Log format (logs go to stderr; the level follows RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Web configuration file in the Prometheus exporter-toolkit format (TLS, basic auth,
    /// response headers); overrides `server.web_config_file`.
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    pub web_config_file: Option<PathBuf>,

    /// Address to listen on (host:port); overrides `server.listen_address` (and `demo --listen`).
    #[arg(long = "web.listen-address", value_name = "ADDR", global = true)]
    pub web_listen_address: Option<String>,

    /// What to run instead of the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exporter against a built-in simulated CDB API (no cloud account needed).
    Demo {
        /// Address of the exporter's HTTP server.
        #[arg(long, default_value = "127.0.0.1:39236")]
        listen: SocketAddr,
    },
    /// Check that an exporter's HTTP server answers, for container and Kubernetes health checks:
    /// exit 0 when GET URL answers 200, or 401 (basic auth is on: the server answers, and the
    /// check needs no password). Over https the certificate is not verified: the check talks to
    /// its own process.
    Healthcheck {
        /// What to ask (set the variable in a container whose exporter listens elsewhere).
        #[arg(
            long,
            env = "CDB_TASK_EXPORTER_HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:39236/healthz"
        )]
        url: String,
    },
    /// Run only the simulated CDB API.
    Simulate {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: SocketAddr,
        /// Scenario file (TOML); the built-in demo scenario when omitted.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// SecretId to accept (default: the documented simulator key).
        #[arg(long, requires = "secret_key")]
        secret_id: Option<String>,
        /// SecretKey to accept (default: the documented simulator key).
        #[arg(long, requires = "secret_id")]
        secret_key: Option<String>,
        /// Seconds the simulated API's clock is ahead of this machine's (negative: behind):
        /// its Date header, signature check and task times follow it.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        clock_offset: i64,
    },
}

/// Why `--check-config` (and start-up, which runs the same checks) refuses a config that
/// parsed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// `poll.state_file` cannot be written.
    #[error("key `poll.state_file`: {0}")]
    StateFile(String),
    /// The web configuration file is bad.
    #[error(transparent)]
    WebConfig(#[from] ConfigError),
    /// An account's credentials cannot be resolved.
    #[error("accounts[{index}] ({account}): credentials: {source}")]
    Credentials {
        /// Position in `[[accounts]]`.
        index: usize,
        /// Its name.
        account: AccountName,
        /// Why.
        source: CredentialError,
    },
}

/// Whether the state file can be kept at `path`: its directory exists and takes a new file (a
/// probe file is created and removed), and the path is not a directory.
pub fn check_state_file(path: &std::path::Path) -> Result<(), CheckError> {
    if path.is_dir() {
        return Err(CheckError::StateFile(format!(
            "{} is a directory, not a file",
            path.display()
        )));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(CheckError::StateFile(format!(
            "directory {} does not exist",
            dir.display()
        )));
    }
    let probe = dir.join(format!(".cdb-task-exporter-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        CheckError::StateFile(format!("directory {} is not writable: {e}", dir.display()))
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// One `--check-config` line of a region entry: its product, endpoint and what it watches.
fn region_line(
    out: &mut String,
    a: &crate::config::AccountConfig,
    r: &crate::config::RegionConfig,
) {
    let endpoint = a.endpoint_for(&r.region, r.product);
    let watched = if r.instances.is_empty() {
        let key = r.product.list_key();
        format!("every {} in the region", &key[..key.len() - 1])
    } else {
        r.instances.join(", ")
    };
    let _ = writeln!(
        out,
        "  region {} product {} via {}: {watched}",
        r.region,
        r.product.name(),
        endpoint.url,
    );
}

/// The `--check-config` summary: accounts, regions, instances and credential sources, secrets
/// never shown. `Err` names the state file or the account whose credentials cannot be
/// resolved.
pub fn check_config_summary(config: &Config, env: &dyn Environment) -> Result<String, CheckError> {
    let mut out = String::new();
    let p = &config.poll;
    if let Some(path) = &p.state_file {
        check_state_file(path)?;
    }
    let _ = writeln!(out, "listen_address: {}", config.server.listen_address);
    if let Some(path) = &config.server.web_config_file {
        let web = WebConfig::load(path)?;
        let _ = writeln!(
            out,
            "web config {}: tls {}, basic auth {}, {} extra headers",
            path.display(),
            if web.tls.is_some() { "on" } else { "off" },
            if web.requires_auth() { "on" } else { "off" },
            web.headers().len()
        );
    }
    let _ = writeln!(
        out,
        "poll: interval {}, lookback {}, api_timezone {}, requests_per_second {}, request_timeout {}, state_file {}",
        humantime::format_duration(p.interval),
        humantime::format_duration(p.lookback),
        p.api_timezone,
        p.requests_per_second,
        humantime::format_duration(p.request_timeout),
        p.state_file
            .as_ref()
            .map_or_else(|| "none".to_string(), |f| f.display().to_string())
    );
    let _ = writeln!(
        out,
        "metrics: task_progress {}",
        config.metrics.task_progress
    );
    let _ = writeln!(
        out,
        "sharding: shard {} of total_shards {}",
        config.sharding.index, config.sharding.total
    );
    for (i, a) in config.accounts.iter().enumerate() {
        let (source, provider) =
            Provider::resolve(&a.credentials, env).map_err(|source| CheckError::Credentials {
                index: i,
                account: a.name.clone(),
                source,
            })?;
        let id = match &provider {
            Provider::Static(c) => mask_id(&c.secret_id),
            Provider::InstanceRole(_) | Provider::TkeOidc(_) => "(temporary)".to_string(),
        };
        let token = a
            .credentials
            .token
            .as_ref()
            .map_or("", |_| ", token [redacted]");
        let _ = writeln!(
            out,
            "account {:?}: credentials from {source}, secret_id {id}, secret_key [redacted]{token}",
            a.name.as_str()
        );
        for r in &a.regions {
            region_line(&mut out, a, r);
        }
    }
    Ok(out)
}
