//! Configuration: raw serde types (unknown keys rejected) read through the `config` crate from a
//! TOML file plus `CDB_TASK_EXPORTER__SECTION__KEY` environment overrides, then validated into a
//! typed [`Config`]. Every error names the key and the file.

use crate::domain::{AccountName, InstanceId, Region};
use crate::secret::Secret;
use crate::tencent::apitime::ApiZone;
use crate::tencent::client::Endpoint;
use crate::tencent::credentials::CredentialSpec;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::shard::Shard;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    poll: RawPoll,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    sharding: RawSharding,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    accounts: Vec<RawAccount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSharding {
    total_shards: Option<i64>,
    shard: Option<i64>,
    shard_from_hostname: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    instance_info: Option<bool>,
    interval: Option<String>,
    tags: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    task_events: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen_address: Option<String>,
    max_connections: Option<i64>,
    web_config_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    interval: Option<String>,
    lookback: Option<String>,
    api_timezone: Option<String>,
    requests_per_second: Option<f64>,
    request_timeout: Option<String>,
    state_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    task_progress: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Option<String>,
    secret_id: Option<String>,
    secret_key: Option<String>,
    secret_key_file: Option<PathBuf>,
    token: Option<String>,
    endpoint: Option<String>,
    #[serde(default)]
    regions: Vec<RawRegion>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    region: Option<String>,
    instances: Option<Vec<String>>,
}

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
    /// `instances`; empty means every instance in the region.
    pub instances: Vec<InstanceId>,
}

impl AccountConfig {
    /// The endpoint of one of this account's regions.
    pub fn endpoint_for(&self, region: &str) -> Endpoint {
        self.endpoint
            .clone()
            .unwrap_or_else(|| Endpoint::default_for(region))
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

fn parse_duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default);
    let d = humantime::parse_duration(value.trim()).map_err(|e| ConfigError {
        file: None,
        key: key.into(),
        message: format!("invalid duration {value:?}: {e} (use e.g. \"60s\", \"5m\", \"24h\")"),
    })?;
    if d.is_zero() {
        return Err(ConfigError {
            file: None,
            key: key.into(),
            message: format!("duration {value:?} must be greater than zero"),
        });
    }
    Ok(d)
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

impl RawDiscovery {
    fn validate(&self) -> Result<DiscoveryConfig, ConfigError> {
        let interval = parse_duration(
            "discovery.interval",
            self.interval.as_deref(),
            defaults::DISCOVERY_INTERVAL,
        )?;
        let tags = self.tags.clone().unwrap_or_default();
        let mut labels = std::collections::BTreeSet::new();
        for (i, tag) in tags.iter().enumerate() {
            let err = |message: String| ConfigError {
                file: None,
                key: format!("discovery.tags[{i}]"),
                message,
            };
            if tag.is_empty() || tag.len() > 128 {
                return Err(err("a tag key has 1 to 128 characters".into()));
            }
            if !labels.insert(tag_label(tag)) {
                return Err(err(format!(
                    "{tag:?} gives the same label {} as an earlier key",
                    tag_label(tag)
                )));
            }
        }
        Ok(DiscoveryConfig {
            instance_info: self.instance_info.unwrap_or(true),
            interval,
            tags,
        })
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        // Sections in file order, so the first error reported is the first in the file.
        let server = self.server.validate()?;
        let discovery = self.discovery.validate()?;
        let poll = self.poll.validate()?;
        if self.accounts.is_empty() {
            return Err(key_error(
                "accounts".into(),
                "at least one [[accounts]] entry is required".into(),
            ));
        }
        let mut names = HashSet::new();
        let accounts = self
            .accounts
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.validate(i, &mut names))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            server,
            discovery,
            log: LogConfig {
                task_events: self.log.task_events.unwrap_or(false),
            },
            poll,
            metrics: MetricsConfig {
                task_progress: self.metrics.task_progress.unwrap_or(false),
            },
            sharding: resolve_shard(&self.sharding, crate::shard::hostname().as_deref())?,
            accounts,
        })
    }
}

/// An error naming a key, not yet tied to a file.
fn key_error(key: String, message: String) -> ConfigError {
    ConfigError {
        file: None,
        key,
        message,
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        let listen = self
            .listen_address
            .as_deref()
            .unwrap_or(defaults::LISTEN_ADDRESS);
        let listen_address: SocketAddr = listen.parse().map_err(|_| {
            key_error(
                "server.listen_address".into(),
                format!("invalid address {listen:?} (expected host:port, e.g. 0.0.0.0:39236)"),
            )
        })?;
        let max_connections = match self.max_connections {
            None => crate::http::DEFAULT_MAX_CONNECTIONS,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=65_536).contains(n))
                .ok_or_else(|| {
                    key_error(
                        "server.max_connections".into(),
                        format!("must be from 1 to 65536, not {n}"),
                    )
                })?,
        };
        Ok(ServerConfig {
            listen_address,
            max_connections,
            web_config_file: self.web_config_file,
        })
    }
}

impl RawPoll {
    fn validate(self) -> Result<PollConfig, ConfigError> {
        let interval = parse_duration(
            "poll.interval",
            self.interval.as_deref(),
            defaults::INTERVAL,
        )?;
        let lookback = parse_duration(
            "poll.lookback",
            self.lookback.as_deref(),
            defaults::LOOKBACK,
        )?;
        // docs/configuration.md#keys (poll.request_timeout): the default follows a short interval (as Prometheus' scrape_timeout
        // does), so that `interval = "5s"` alone is a valid config; an explicit timeout longer
        // than the interval is an error.
        let request_timeout = match self.request_timeout.as_deref() {
            Some(v) => parse_duration("poll.request_timeout", Some(v), "")?,
            None => parse_duration("poll.request_timeout", None, defaults::REQUEST_TIMEOUT)?
                .min(interval),
        };
        if request_timeout > interval {
            return Err(key_error(
                "poll.request_timeout".into(),
                format!(
                    "must not be longer than poll.interval ({} > {})",
                    humantime::format_duration(request_timeout),
                    humantime::format_duration(interval)
                ),
            ));
        }
        if lookback < interval {
            return Err(key_error(
                "poll.lookback".into(),
                "must be at least poll.interval".into(),
            ));
        }
        let tz = self
            .api_timezone
            .as_deref()
            .unwrap_or(defaults::API_TIMEZONE);
        let api_timezone: ApiZone = tz
            .parse()
            .map_err(|e| key_error("poll.api_timezone".into(), e))?;
        let rps = self
            .requests_per_second
            .unwrap_or(defaults::REQUESTS_PER_SECOND);
        if !(rps.is_finite() && rps > 0.0) {
            return Err(key_error(
                "poll.requests_per_second".into(),
                format!("must be a number greater than 0, not {rps}"),
            ));
        }
        if let Some(sf) = &self.state_file
            && sf.as_os_str().is_empty()
        {
            return Err(key_error(
                "poll.state_file".into(),
                "must not be empty".into(),
            ));
        }
        Ok(PollConfig {
            interval,
            lookback,
            api_timezone,
            requests_per_second: rps,
            request_timeout,
            state_file: self.state_file,
        })
    }
}

impl RawAccount {
    /// The `i`-th account; `names` are the account names seen so far.
    fn validate(self, i: usize, names: &mut HashSet<String>) -> Result<AccountConfig, ConfigError> {
        let k = |field: &str| format!("accounts[{i}].{field}");
        let name = self.name.unwrap_or_default();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(key_error(
                k("name"),
                format!("must be a non-empty name of letters, digits, '_', '-', '.', not {name:?}"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(key_error(
                k("name"),
                format!("account name {name:?} is used twice"),
            ));
        }
        let nonempty = |field: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
            match v {
                Some(s) if s.trim().is_empty() => {
                    Err(key_error(k(field), "must not be empty".into()))
                }
                other => Ok(other),
            }
        };
        let secret_id = nonempty("secret_id", self.secret_id)?;
        let secret_key = nonempty("secret_key", self.secret_key)?.map(Secret::new);
        let token = nonempty("token", self.token)?.map(Secret::new);
        let endpoint = self
            .endpoint
            .as_deref()
            .map(Endpoint::parse)
            .transpose()
            .map_err(|e| key_error(k("endpoint"), e.0))?;
        if self.regions.is_empty() {
            return Err(key_error(
                k("regions"),
                format!("account {name:?} needs at least one [[accounts.regions]] entry"),
            ));
        }
        let mut seen_regions = HashSet::new();
        let regions = self
            .regions
            .into_iter()
            .enumerate()
            .map(|(j, r)| r.validate(i, j, &name, &mut seen_regions))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AccountConfig {
            name: name.into(),
            credentials: CredentialSpec {
                secret_id,
                secret_key,
                secret_key_file: self.secret_key_file,
                token,
            },
            endpoint,
            regions,
        })
    }
}

impl RawRegion {
    /// Region `j` of account `i` (named `account`); `seen` are the account's regions so far.
    fn validate(
        self,
        i: usize,
        j: usize,
        account: &str,
        seen: &mut HashSet<String>,
    ) -> Result<RegionConfig, ConfigError> {
        let rk = |field: &str| format!("accounts[{i}].regions[{j}].{field}");
        let region = self.region.unwrap_or_default();
        if !is_valid_region(&region) {
            return Err(key_error(
                rk("region"),
                format!("invalid region {region:?} (expected e.g. ap-guangzhou)"),
            ));
        }
        if !seen.insert(region.clone()) {
            return Err(key_error(
                rk("region"),
                format!("region {region:?} is listed twice for account {account:?}"),
            ));
        }
        let instances = self.instances.unwrap_or_default();
        let mut ids = HashSet::new();
        for (n, id) in instances.iter().enumerate() {
            let key = format!("{}[{n}]", rk("instances"));
            if !is_valid_instance_id(id) {
                return Err(key_error(
                    key,
                    format!("invalid instance id {id:?} (expected cdb-xxxxxxxx)"),
                ));
            }
            if !ids.insert(id) {
                return Err(key_error(key, format!("instance {id:?} is listed twice")));
            }
        }
        Ok(RegionConfig {
            region: region.into(),
            instances: instances.into_iter().map(InstanceId::from).collect(),
        })
    }
}

/// `[sharding]` as a [`Shard`]; `hostname` is read only with `shard_from_hostname`.
fn resolve_shard(raw: &RawSharding, hostname: Option<&str>) -> Result<Shard, ConfigError> {
    let err = |key: &str, message: String| ConfigError {
        file: None,
        key: key.into(),
        message,
    };
    let total = raw.total_shards.unwrap_or(1);
    let total = u32::try_from(total)
        .ok()
        .filter(|t| (1..=MAX_SHARDS).contains(t))
        .ok_or_else(|| {
            err(
                "sharding.total_shards",
                format!("must be from 1 to {MAX_SHARDS}, not {total}"),
            )
        })?;
    let index = match (raw.shard, raw.shard_from_hostname.unwrap_or(false)) {
        (Some(_), true) => {
            return Err(err(
                "sharding.shard",
                "set either shard or shard_from_hostname = true, not both".into(),
            ));
        }
        (Some(n), false) => u32::try_from(n)
            .ok()
            .filter(|n| *n < total)
            .ok_or_else(|| {
                err(
                    "sharding.shard",
                    format!(
                        "must be from 0 to total_shards - 1 ({}), not {n}",
                        total - 1
                    ),
                )
            })?,
        (None, true) => {
            let host = hostname.ok_or_else(|| {
                err(
                    "sharding.shard_from_hostname",
                    "the host name cannot be read".into(),
                )
            })?;
            let n = crate::shard::ordinal_of_hostname(host)
                .map_err(|e| err("sharding.shard_from_hostname", e.0))?;
            if n >= total {
                return Err(err(
                    "sharding.shard_from_hostname",
                    format!("host name {host:?} gives shard {n}, but total_shards is {total}"),
                ));
            }
            n
        }
        (None, false) => 0,
    };
    Ok(Shard { index, total })
}

/// The most shards a deployment may have.
const MAX_SHARDS: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_never_show_a_secret_value() {
        let cases = [
            // An unclosed string: the error shows the line of the key.
            "[[accounts]]\nname = \"p\"\nsecret_key = \"s3cr3t-value-1\ntoken = \"x\"\n",
            // An unquoted value.
            "[[accounts]]\nname = \"p\"\nsecret_key = s3cr3t-value-2\n",
            // A multi-line string never closed: the error shows a later line of the value.
            "[[accounts]]\nname = \"p\"\nsecret_key = \"\"\"one\ntwo s3cr3t-value-3\n",
            "[[accounts]]\nname = \"p\"\ntoken = 's3cr3t-value-4\n",
            "[[accounts]]\nname = \"p\"\nsecret_id = \"AKIDs3cr3t-value-5\n",
        ];
        for text in cases {
            let e = Config::from_toml(text).unwrap_err();
            let shown = e.to_string();
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("[redacted"), "{shown}");
            assert!(shown.contains("TOML parse error"), "{shown}");
        }
        // Other lines are shown as they are: the message still points at the mistake.
        let e = Config::from_toml("[poll]\ninterval = 60s\n").unwrap_err();
        assert!(e.to_string().contains("interval = 60s"), "{e}");
    }

    const MINIMAL: &str = r#"
[[accounts]]
name = "default"
[[accounts.regions]]
region = "ap-guangzhou"
"#;

    fn key_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().key
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.server.listen_address, "0.0.0.0:39236".parse().unwrap());
        assert_eq!(c.poll.interval, Duration::from_secs(60));
        assert_eq!(c.poll.lookback, Duration::from_secs(86_400));
        assert_eq!(c.poll.api_timezone, ApiZone::beijing());
        assert_eq!(c.poll.requests_per_second, 20.0);
        assert_eq!(c.poll.request_timeout, Duration::from_secs(10));
        assert!(!c.metrics.task_progress);
        assert_eq!(c.sharding, Shard::ALL);
        assert!(c.accounts[0].regions[0].instances.is_empty());
        // docs/configuration.md#keys (poll.request_timeout): a short interval shortens the default timeout; equal is allowed.
        let short = Config::from_toml(&format!("[poll]\ninterval = \"5s\"\n{MINIMAL}")).unwrap();
        assert_eq!(short.poll.request_timeout, Duration::from_secs(5));
        let equal = format!("[poll]\ninterval = \"5s\"\nrequest_timeout = \"5s\"\n{MINIMAL}");
        assert_eq!(
            Config::from_toml(&equal).unwrap().poll.request_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn sharding_is_validated_and_resolved() {
        let with = |s: &str| format!("[sharding]\n{s}\n{MINIMAL}");
        let c = Config::from_toml(&with("total_shards = 3\nshard = 2")).unwrap();
        assert_eq!(c.sharding, Shard { index: 2, total: 3 });
        assert_eq!(key_of(&with("total_shards = 0")), "sharding.total_shards");
        assert_eq!(key_of(&with("total_shards = -1")), "sharding.total_shards");
        assert_eq!(
            key_of(&with("total_shards = 3\nshard = 3")),
            "sharding.shard"
        );
        assert_eq!(key_of(&with("shard = 1")), "sharding.shard");
        assert_eq!(
            key_of(&with(
                "total_shards = 3\nshard = 1\nshard_from_hostname = true"
            )),
            "sharding.shard"
        );
        assert_eq!(key_of(&with("shards = 3")), "sharding.shards");
        let raw = |total| RawSharding {
            total_shards: Some(total),
            shard: None,
            shard_from_hostname: Some(true),
        };
        assert_eq!(
            resolve_shard(&raw(3), Some("cdb-task-exporter-1")).unwrap(),
            Shard { index: 1, total: 3 }
        );
        for (host, total) in [
            (Some("cdb-task-exporter"), 3),
            (Some("exporter-5"), 3),
            (None, 3),
        ] {
            assert_eq!(
                resolve_shard(&raw(total), host).unwrap_err().key,
                "sharding.shard_from_hostname",
                "{host:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(
            key_of(&format!("{MINIMAL}\n[poll]\nintervall = \"5s\"\n")),
            "poll.intervall"
        );
        assert_eq!(
            key_of(&format!("{MINIMAL}instances = \"cdb-abcd1234\"\n")),
            "accounts[0].regions[0].instances"
        );
        assert_eq!(key_of(&format!("bogus = 1\n{MINIMAL}")), "bogus");
        assert_eq!(
            key_of(&MINIMAL.replace("name =", "nmae =")),
            "accounts[0].nmae"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let with_poll = |line: &str| format!("[poll]\n{line}\n{MINIMAL}");
        assert_eq!(key_of(&with_poll("interval = \"6x\"")), "poll.interval");
        assert_eq!(key_of(&with_poll("interval = \"0s\"")), "poll.interval");
        assert_eq!(key_of(&with_poll("lookback = \"soon\"")), "poll.lookback");
        assert_eq!(
            key_of(&with_poll("api_timezone = \"Asia/Shanghai\"")),
            "poll.api_timezone"
        );
        assert_eq!(
            key_of(&with_poll("requests_per_second = 0")),
            "poll.requests_per_second"
        );
        assert_eq!(
            key_of(&with_poll("request_timeout = \"90s\"")),
            "poll.request_timeout"
        );
        assert_eq!(
            key_of(&format!(
                "[server]\nlisten_address = \"nowhere\"\n{MINIMAL}"
            )),
            "server.listen_address"
        );
        assert_eq!(
            key_of(&MINIMAL.replace("ap-guangzhou", "Guangzhou")),
            "accounts[0].regions[0].region"
        );
        assert_eq!(
            key_of(&format!(
                "{MINIMAL}instances = [\"cdb-abcd1234\", \"mysql-1\"]\n"
            )),
            "accounts[0].regions[0].instances[1]"
        );
        assert_eq!(key_of(""), "accounts");
    }

    #[test]
    fn duplicates_are_rejected() {
        let two_accounts = format!("{MINIMAL}{MINIMAL}");
        assert_eq!(key_of(&two_accounts), "accounts[1].name");
        let two_regions = format!("{MINIMAL}[[accounts.regions]]\nregion = \"ap-guangzhou\"\n");
        assert_eq!(key_of(&two_regions), "accounts[0].regions[1].region");
    }

    #[test]
    fn validators() {
        for ok in [
            "ap-guangzhou",
            "ap-shanghai-fsi",
            "na-siliconvalley",
            "ap-guangzhou-open",
        ] {
            assert!(is_valid_region(ok), "{ok}");
        }
        for bad in [
            "",
            "guangzhou",
            "AP-guangzhou",
            "ap-",
            "ap--x",
            "ap-a-b-c",
            "a-b",
        ] {
            assert!(!is_valid_region(bad), "{bad}");
        }
        assert!(is_valid_instance_id("cdb-c1nl9rpv"));
        for bad in ["cdb-", "cdb-ABC12345", "c1nl9rpv", "cdb-a b"] {
            assert!(!is_valid_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_are_wrapped() {
        let text = MINIMAL.replace(
            "name = \"default\"",
            "name = \"default\"\nsecret_id = \"AKIDx\"\nsecret_key = \"topsecret\"",
        );
        let c = Config::from_toml(&text).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert_eq!(
            c.accounts[0]
                .credentials
                .secret_key
                .as_ref()
                .map(Secret::expose),
            Some("topsecret")
        );
    }
}
