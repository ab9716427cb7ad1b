//! The demo's wiring (`cdb-task-exporter demo`): a simulator with the built-in scenario, and a
//! config that points the exporter at it.

use crate::config::Config;
use crate::sim::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, Scenario, SimServer, Simulator};
use std::net::SocketAddr;
use std::sync::Arc;

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
[[accounts.regions]]
region = "ap-guangzhou"
product = "cynosdb"
[[accounts.regions]]
region = "ap-guangzhou"
product = "postgres"
"#,
        sim.url()
    );
    let config = Config::from_toml(&text).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    Ok((sim, config))
}
