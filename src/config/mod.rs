//! Configuration: raw serde types (unknown keys rejected) read through the `config` crate from a
//! TOML file plus `CDB_TASK_EXPORTER__SECTION__KEY` environment overrides, then validated into a
//! typed [`Config`]. Every error names the key and the file.

use crate::domain::{AccountName, InstanceId, Region};
use crate::product::Product;
use crate::tencent::apitime::ApiZone;
use crate::tencent::client::Endpoint;
use crate::tencent::credentials::CredentialSpec;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::shard::Shard;

mod raw;

use raw::RawConfig;

/// Prefix of environment overrides: `CDB_TASK_EXPORTER__POLL__INTERVAL=30s`.
pub const ENV_PREFIX: &str = "CDB_TASK_EXPORTER";

/// A configuration error: which key, in which file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the error came from one.
    pub file: Option<PathBuf>,
    /// The dotted key, e.g. `poll.interval` or `accounts[0].regions[1].instances[2]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[poll]`
    pub poll: PollConfig,
    /// `[metrics]`
    pub metrics: MetricsConfig,
    /// `[sharding]`, resolved (the host name's ordinal already read).
    pub sharding: Shard,
    /// `[discovery]`
    pub discovery: DiscoveryConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[[accounts]]`
    pub accounts: Vec<AccountConfig>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `listen_address`
    pub listen_address: SocketAddr,
    /// `max_connections`: HTTP connections served at once.
    pub max_connections: usize,
    /// `web_config_file` (or `--web.config.file`): TLS, basic auth and headers.
    pub web_config_file: Option<PathBuf>,
}

/// `[discovery]` (docs/metrics.md#instance-metadata)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// `instance_info`: call `DescribeDBInstances` and export instance metadata.
    pub instance_info: bool,
    /// `interval` between two listings.
    pub interval: Duration,
    /// `tags`: tag keys copied into `tag_<key>` labels, in this order.
    pub tags: Vec<String>,
}

/// `[log]` (docs/semantics.md#task-events)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// `task_events`: one log line per observed task status change.
    pub task_events: bool,
}

/// A tag key as a label name: `tag_` and the key with every byte outside `[a-zA-Z0-9_]` made
/// `_`.
pub fn tag_label(key: &str) -> String {
    let mut out = String::with_capacity(4 + key.len());
    out.push_str("tag_");
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// `[poll]`
#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    /// `interval`
    pub interval: Duration,
    /// `lookback`
    pub lookback: Duration,
    /// `api_timezone`
    pub api_timezone: ApiZone,
    /// `requests_per_second`
    pub requests_per_second: f64,
    /// `request_timeout`
    pub request_timeout: Duration,
    /// `state_file`
    pub state_file: Option<PathBuf>,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `task_progress`
    pub task_progress: bool,
}

/// One `[[accounts]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// `name`, the `account` label.
    pub name: AccountName,
    /// The credential keys given in the config (the rest of the chain is resolved later).
    pub credentials: CredentialSpec,
    /// `endpoint` override, parsed.
    pub endpoint: Option<Endpoint>,
    /// `[[accounts.regions]]`
    pub regions: Vec<RegionConfig>,
}

/// One `[[accounts.regions]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    /// `region`
    pub region: Region,
    /// `product` (default `cdb`).
    pub product: &'static dyn Product,
    /// The ids the product's list key names (`instances`, or `clusters` for `cynosdb`); empty
    /// means every one in the region.
    pub instances: Vec<InstanceId>,
}

impl AccountConfig {
    /// The endpoint of one of this account's regions for `product`: the account's override
    /// (for every product), or the product's own host.
    pub fn endpoint_for(&self, region: &str, product: &dyn Product) -> Endpoint {
        self.endpoint
            .clone()
            .unwrap_or_else(|| Endpoint::of(product, region))
    }
}

/// Defaults of docs/configuration.md#keys.
pub mod defaults {
    /// `server.listen_address`
    pub const LISTEN_ADDRESS: &str = "0.0.0.0:39236";
    /// `poll.interval`
    pub const INTERVAL: &str = "60s";
    /// `poll.lookback`
    pub const LOOKBACK: &str = "24h";
    /// `poll.api_timezone`
    pub const API_TIMEZONE: &str = "+08:00";
    /// `poll.requests_per_second`
    pub const REQUESTS_PER_SECOND: f64 = 20.0;
    /// `poll.request_timeout`
    pub const REQUEST_TIMEOUT: &str = "10s";
    /// `discovery.interval`
    pub const DISCOVERY_INTERVAL: &str = "10m";
}

impl Config {
    /// Loads a config file with environment overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: Some(path.to_path_buf()),
            key: key.to_string(),
            message,
        };
        if !path.is_file() {
            return Err(err(
                "",
                "config file not found or not a regular file".into(),
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read: {e}")))?;
        // `accounts` is a list: the environment can override its scalars only by index, which
        // the config crate cannot merge into a list. Say so, instead of a type error. (The
        // variable's value is never shown: it may be a key.)
        let list_prefix = format!("{ENV_PREFIX}__ACCOUNTS");
        if let Some(name) = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .find(|k| k.to_ascii_uppercase().starts_with(&list_prefix))
        {
            return Err(err(
                "accounts",
                format!(
                    "environment variable {name}: the accounts list cannot be overridden from the environment; set it in the file (credentials: TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY or secret_key_file)"
                ),
            ));
        }
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        Self::from_sources(&text, env).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })
    }

    /// Parses and validates TOML text with these environment overrides (names with the
    /// `CDB_TASK_EXPORTER__` prefix), as [`Config::load`] applies the process environment.
    pub fn from_toml_and_env(
        text: &str,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env.into_iter().collect()));
        Self::from_sources(text, env)
    }

    /// Parses and validates TOML text (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let empty = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(Default::default()));
        Self::from_sources(text, empty)
    }

    fn from_sources(text: &str, env: config::Environment) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(env)
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| {
                let mut e = from_config_error(&e);
                e.message = redact_secret_lines(&e.message, text);
                e
            })?;
        raw.validate()
    }
}

/// Keys whose values are secret: a parse error never shows their lines.
const SECRET_KEYS: &[&str] = &["secret_id", "secret_key", "token"];

/// The key a line of TOML source assigns, or that the assignment it continues (a multi-line
/// string, an unclosed one) belongs to: the nearest `key =` at or above it.
fn governing_key(source: &str, line: usize) -> Option<String> {
    source
        .lines()
        .take(line)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find_map(|l| {
            let (key, _) = l.split_once('=')?;
            let key = key.trim().trim_matches('"');
            let bare = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            bare.then(|| key.rsplit('.').next().unwrap_or(key).to_string())
        })
}

/// A TOML parse error shows the offending source line (`  4 | secret_key = "...`): where that
/// line belongs to a secret key's value, its text and its marker line are replaced.
fn redact_secret_lines(message: &str, source: &str) -> String {
    let mut out = Vec::new();
    let mut redacting = false;
    for l in message.lines() {
        let snippet = l.split_once(" | ").or_else(|| l.split_once(" |"));
        match snippet.and_then(|(n, _)| n.trim().parse::<usize>().ok()) {
            Some(n) => {
                let key = governing_key(source, n);
                redacting = key.is_some_and(|k| SECRET_KEYS.contains(&k.as_str()));
                if redacting {
                    out.push(format!("{n} | [redacted: the value of a secret]"));
                } else {
                    out.push(l.to_string());
                }
            }
            // The marker line under a redacted line would show the value's length.
            None if redacting && l.trim_start().starts_with('|') => {}
            None => {
                redacting = false;
                out.push(l.to_string());
            }
        }
    }
    out.join("\n")
}

/// Turns the `config` crate's error into one that names the key.
///
/// The crate words errors as "<serde message> for key `accounts[0]regions[1]`"; serde names an
/// unknown key as "unknown field `x`". Both are joined into one dotted key.
fn from_config_error(e: &config::ConfigError) -> ConfigError {
    let text = e.to_string();
    let between = |s: &str, start: &str| {
        s.split_once(start)
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(k, _)| k.to_string())
    };
    let (message, path) = match text.rsplit_once(" for key `") {
        Some((msg, rest)) => (msg.to_string(), rest.trim_end_matches('`').to_string()),
        None => (text.clone(), String::new()),
    };
    let path = path
        .replace("][", "].[")
        .replace(']', "].")
        .replace("].[", "][");
    let path = path.trim_end_matches('.').replace("..", ".");
    let key = match (path.is_empty(), between(&message, "unknown field `")) {
        (true, Some(field)) => field,
        (false, Some(field)) => format!("{path}.{field}"),
        (_, None) => path,
    };
    ConfigError {
        file: None,
        key,
        message,
    }
}

/// A region name: `xx-name[-suffix]`, lower-case letters and digits.
pub fn is_valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    (2..=3).contains(&parts.len())
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A CDB instance id, as its product checks it.
pub fn is_valid_instance_id(id: &str) -> bool {
    crate::product::default_product().valid_id(id)
}

impl Config {
    /// Applies the command line's `--web.listen-address` and `--web.config.file`, which win
    /// over `server.listen_address` and `server.web_config_file`.
    pub fn override_server(
        &mut self,
        listen_address: Option<&str>,
        web_config_file: Option<&Path>,
    ) -> Result<(), ConfigError> {
        if let Some(listen) = listen_address {
            self.server.listen_address = listen.parse().map_err(|_| ConfigError {
                file: None,
                key: "--web.listen-address".into(),
                message: format!(
                    "invalid address {listen:?} (expected host:port, e.g. 0.0.0.0:39236)"
                ),
            })?;
        }
        if let Some(web) = web_config_file {
            self.server.web_config_file = Some(web.to_path_buf());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
