//! The config file as written (every key optional, unknown keys refused) and its validation
//! into the typed [`Config`](super::Config): each error names its key.

use super::{
    AccountConfig, Config, ConfigError, DiscoveryConfig, LogConfig, MetricsConfig, PollConfig,
    RegionConfig, ServerConfig, Shard, defaults, is_valid_region, tag_label,
};
use crate::domain::InstanceId;
use crate::secret::Secret;
use crate::tencent::apitime::ApiZone;
use crate::tencent::client::Endpoint;
use crate::tencent::credentials::CredentialSpec;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
pub(super) struct RawSharding {
    pub(super) total_shards: Option<i64>,
    pub(super) shard: Option<i64>,
    pub(super) shard_from_hostname: Option<bool>,
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
    product: Option<String>,
    instances: Option<Vec<String>>,
    clusters: Option<Vec<String>>,
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
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
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
        seen: &mut HashSet<(String, &'static str)>,
    ) -> Result<RegionConfig, ConfigError> {
        let rk = |field: &str| format!("accounts[{i}].regions[{j}].{field}");
        let region = self.region.unwrap_or_default();
        if !is_valid_region(&region) {
            return Err(key_error(
                rk("region"),
                format!("invalid region {region:?} (expected e.g. ap-guangzhou)"),
            ));
        }
        let product = match self.product.as_deref() {
            None => crate::product::default_product(),
            Some(name) => crate::product::named(name).ok_or_else(|| {
                let known: Vec<&str> = crate::product::PRODUCTS.iter().map(|p| p.name()).collect();
                key_error(
                    rk("product"),
                    format!(
                        "unknown product {name:?} (expected one of {})",
                        known.join(", ")
                    ),
                )
            })?,
        };
        if !seen.insert((region.clone(), product.name())) {
            return Err(key_error(
                rk("region"),
                format!(
                    "region {region:?} is listed twice for product {:?} of account {account:?}",
                    product.name()
                ),
            ));
        }
        let list_key = product.list_key();
        for (key, given) in [("instances", &self.instances), ("clusters", &self.clusters)] {
            if key != list_key && given.is_some() {
                return Err(key_error(
                    rk(key),
                    format!(
                        "not a key of product {:?}: list its ids in `{list_key}`",
                        product.name()
                    ),
                ));
            }
        }
        let ids = if list_key == "clusters" {
            self.clusters
        } else {
            self.instances
        }
        .unwrap_or_default();
        let mut unique = HashSet::new();
        for (n, id) in ids.iter().enumerate() {
            let key = format!("{}[{n}]", rk(list_key));
            if !product.valid_id(id) {
                return Err(key_error(
                    key,
                    format!("invalid id {id:?} (expected {})", product.id_example()),
                ));
            }
            if !unique.insert(id) {
                return Err(key_error(key, format!("{id:?} is listed twice")));
            }
        }
        Ok(RegionConfig {
            region: region.into(),
            product,
            instances: ids.into_iter().map(InstanceId::from).collect(),
        })
    }
}

/// `[sharding]` as a [`Shard`]; `hostname` is read only with `shard_from_hostname`.
pub(super) fn resolve_shard(
    raw: &RawSharding,
    hostname: Option<&str>,
) -> Result<Shard, ConfigError> {
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
