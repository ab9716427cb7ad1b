//! TKE pod identity, whole program: the OIDC token exchanged with STS
//! `AssumeRoleWithWebIdentity` (unsigned) for temporary keys that sign the CDB calls; the token
//! file re-read at every refresh; `--check-config` names the source; a partial set of TKE
//! variables is a config error.

use crate::common::*;
use cdb_task_exporter::config::Config;
use cdb_task_exporter::sim::Scenario;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

const PROVIDER: &str = "OIDC-TEST-PROVIDER";
const ROLE: &str = "qcs::cam::uin/100000000001:roleName/cdb-task-exporter";

/// A config with no key at all: credentials come from the environment.
fn keyless(endpoint: &str) -> String {
    format!(
        "[server]\nlisten_address = \"127.0.0.1:0\"\n[poll]\ninterval = \"1s\"\nrequest_timeout = \"900ms\"\n\
[[accounts]]\nname = \"pods\"\nendpoint = \"{endpoint}\"\n[[accounts.regions]]\nregion = \"ap-guangzhou\"\n"
    )
}

fn tke_env(token_file: &std::path::Path, sts: &str) -> BTreeMap<String, String> {
    [
        ("TKE_REGION", "ap-guangzhou"),
        ("TKE_PROVIDER_ID", PROVIDER),
        ("TKE_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("TKE_ROLE_ARN", ROLE),
        ("CDB_TASK_EXPORTER_STS_URL", sts),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// An exporter with no keys, its credentials from TKE pod identity with `token` in
/// `token_file`, against `sim`'s STS and API.
async fn start_with_token(
    sim: &cdb_task_exporter::sim::SimServer,
    clock: Arc<cdb_task_exporter::clock::SystemClock>,
    token_file: &std::path::Path,
    token: &str,
) -> Exporter {
    std::fs::write(token_file, token).unwrap();
    let vars = tke_env(token_file, &sim.url());
    let env = move |name: &str| vars.get(name).cloned();
    let config = Config::from_toml(&keyless(&sim.url())).unwrap();
    Exporter::start_with(config, clock, None, Arc::new(env)).await
}

#[tokio::test]
async fn pod_identity_signs_polls_and_rereads_the_token() {
    let scenario = Scenario {
        tasks: vec![reboot_on_a()],
        ..Scenario::default()
    };
    let (sim, clock) = start_sim(scenario).await;
    // Keys that live 30 s: each use is within the last tenth of the 7200 s asked for, so every
    // poll refreshes them and re-reads the token file.
    sim.sim.accept_web_identity(PROVIDER, ROLE, 30);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let exporter = start_with_token(&sim, clock, &token_file, "token-one\n").await;
    let s = exporter
        .wait_for(|s| s.get("tencentcloud_cdb_exporter_last_poll_success", &[]) == Some(1.0))
        .await;
    assert_eq!(s.tasks(A, "reboot", "succeed"), 1.0);
    assert_eq!(
        sim.sim.web_identity_tokens().first().map(String::as_str),
        Some("token-one")
    );
    // The kubelet rotates the token: the next refresh presents the new one.
    std::fs::write(&token_file, "token-two\n").unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !sim
        .sim
        .web_identity_tokens()
        .iter()
        .any(|t| t == "token-two")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new token was never presented"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn a_role_sts_refuses_fails_the_polls_without_stopping_them() {
    let (sim, clock) = start_sim(Scenario::default()).await;
    sim.sim
        .accept_web_identity(PROVIDER, "qcs::cam::uin/1:roleName/another", 30);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let exporter = start_with_token(&sim, clock, &token_file, "token-one").await;
    let s = exporter
        .wait_for(|s| {
            s.get(
                "tencentcloud_cdb_exporter_api_errors_total",
                &[("action", "DescribeTasks"), ("code", "Credentials")],
            )
            .is_some_and(|n| n >= 2.0)
        })
        .await;
    assert_eq!(
        s.get("tencentcloud_cdb_exporter_last_poll_success", &[]),
        Some(0.0)
    );
    exporter.stop().await;
    sim.stop().await;
}

#[test]
fn check_config_names_pod_identity_and_refuses_a_partial_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, keyless("https://cdb.tencentcloudapi.com")).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a-token-never-printed").unwrap();
    let run = |vars: &BTreeMap<String, String>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cdb-task-exporter"));
        c.args(["--config", config.to_str().unwrap(), "--check-config"])
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY")
            .env("HOME", "/nonexistent");
        for v in [
            "TKE_REGION",
            "TKE_PROVIDER_ID",
            "TKE_WEB_IDENTITY_TOKEN_FILE",
            "TKE_ROLE_ARN",
        ] {
            c.env_remove(v);
        }
        c.envs(vars).output().unwrap()
    };
    let vars = tke_env(&token_file, "https://sts.tencentcloudapi.com/");
    let out = run(&vars);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TKE pod identity"), "{stdout}");
    assert!(stdout.contains(ROLE), "{stdout}");
    assert!(!stdout.contains("a-token-never-printed"));
    let mut partial = vars.clone();
    partial.remove("TKE_ROLE_ARN");
    let out = run(&partial);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing: TKE_ROLE_ARN"), "{stderr}");
}

/// STS keys that expire in 10 minutes (inside the 12-minute refresh margin) are asked for once
/// a minute at most, not at every API request.
#[tokio::test]
async fn short_sts_keys_do_not_make_every_request_call_sts() {
    let (sim, clock) = start_sim(Scenario::default()).await;
    sim.sim.accept_web_identity(PROVIDER, ROLE, 600);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let exporter = start_with_token(&sim, clock, &token_file, "token-one").await;
    // Five successful polls, each with its requests.
    exporter
        .wait_for(|s| {
            s.get(
                "tencentcloud_cdb_exporter_api_requests_total",
                &[("action", "DescribeTasks")],
            )
            .is_some_and(|n| n >= 5.0)
        })
        .await;
    assert_eq!(sim.sim.web_identity_tokens().len(), 1, "one STS call");
    exporter.stop().await;
    sim.stop().await;
}
