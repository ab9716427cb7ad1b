//! Config loading and validation: every key, the errors that name it, the redaction of secrets.

use super::raw::{RawSharding, resolve_shard};
use super::*;
use crate::secret::Secret;

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
