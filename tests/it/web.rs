//! Web security (docs/http.md#web-security), whole program: TLS, basic auth, client certificates, headers,
//! reload of users on SIGHUP, a bad web config, gzip.

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cdb-task-exporter");

/// A reqwest client trusting the test CA, limited to these TLS versions, with the client
/// certificate when asked.
fn client(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    with_cert: bool,
) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let config = if with_cert {
        let certs = CertificateDer::pem_slice_iter(pki.client_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).unwrap();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap()
}

const ALL: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS12, &rustls::version::TLS13];

/// Starts the exporter in-process against a simulator, with this web config.
async fn start(dir: &Path, web_yaml: &str) -> (Exporter, cdb_task_exporter::sim::SimServer) {
    let web = dir.join("web.yml");
    std::fs::write(&web, web_yaml).unwrap();
    let (sim, clock) = start_sim(cdb_task_exporter::sim::Scenario::demo()).await;
    let text = config_text(&sim.url(), "", &region("ap-guangzhou", &[])).replace(
        "listen_address = \"127.0.0.1:0\"",
        &format!(
            "listen_address = \"127.0.0.1:0\"\nweb_config_file = {:?}",
            web.to_str().unwrap()
        ),
    );
    let config = cdb_task_exporter::config::Config::from_toml(&text).unwrap();
    (Exporter::start(config, clock).await, sim)
}

#[tokio::test]
async fn tls_with_basic_auth_protects_every_page_and_adds_headers() {
    cdb_task_exporter::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let yaml = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: server-key.pem\nbasic_auth_users:\n  prom: {:?}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        pki.server_cert.display(),
        bcrypt_hash("right horse"),
    );
    let (exporter, sim) = start(dir.path(), &yaml).await;
    let https = client(&pki, ALL, false);
    for path in ["/metrics", "/", "/healthz", "/readyz"] {
        let url = format!("https://127.0.0.1:{}{path}", exporter.addr.port());
        let resp = https.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} without credentials");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Basic realm=\"cdb-task-exporter\""
        );
        assert_eq!(resp.headers()["x-frame-options"], "deny");
        let resp = https
            .get(&url)
            .basic_auth("prom", Some("wrong horse"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} with a wrong password");
        let resp = https
            .get(&url)
            .basic_auth("nobody", Some("right horse"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} with an unknown user");
    }
    let url = format!("https://127.0.0.1:{}/metrics", exporter.addr.port());
    let resp = https
        .get(&url)
        .basic_auth("prom", Some("right horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "deny");
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("tencentcloud_cdb_exporter_build_info"),
        "{body}"
    );
    // Plain HTTP on the TLS port gets no page, only a redirect to the same URL over https (an
    // alert's http:// link to /tasks still opens), which then asks for the password.
    let port = exporter.addr.port();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/tasks?status=failed"))
        .basic_auth("prom", Some("right horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 308);
    assert_eq!(
        plain.headers()["location"],
        format!("https://127.0.0.1:{port}/tasks?status=failed").as_str()
    );
    assert_eq!(plain.text().await.unwrap(), "this server speaks HTTPS\n");
    // A name the certificate holds is redirected too; any other Host is refused, so a forged
    // one never sends a client elsewhere.
    let with_host = |host: &'static str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/tasks"))
            .header("host", host)
            .send()
    };
    let named = with_host("localhost").await.unwrap();
    assert_eq!(named.status(), 308);
    assert_eq!(named.headers()["location"], "https://localhost/tasks");
    let forged = with_host("evil.example.com").await.unwrap();
    assert_eq!(forged.status(), 400);
    assert!(forged.headers().get("location").is_none());
    let followed = https
        .get(format!("http://127.0.0.1:{port}/tasks?status=failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.url().scheme(), "https");
    assert_eq!(followed.status(), 401);
    // So the health check's default http:// URL works on a TLS port too.
    let healthcheck = healthcheck(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(
        healthcheck.status.success(),
        "{}",
        String::from_utf8_lossy(&healthcheck.stderr)
    );
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn min_version_tls13_refuses_a_tls12_client() {
    cdb_task_exporter::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let yaml = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  min_version: TLS13\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let (exporter, sim) = start(dir.path(), &yaml).await;
    let url = format!("https://127.0.0.1:{}/healthz", exporter.addr.port());
    let tls12 = client(&pki, &[&rustls::version::TLS12], false);
    assert!(
        tls12.get(&url).send().await.is_err(),
        "a TLS 1.2 client got an answer"
    );
    let tls13 = client(&pki, &[&rustls::version::TLS13], false);
    assert_eq!(tls13.get(&url).send().await.unwrap().status(), 200);
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn require_and_verify_client_cert_refuses_a_client_without_one() {
    cdb_task_exporter::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let yaml = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let (exporter, sim) = start(dir.path(), &yaml).await;
    let url = format!("https://127.0.0.1:{}/healthz", exporter.addr.port());
    let anonymous = client(&pki, ALL, false);
    assert!(
        anonymous.get(&url).send().await.is_err(),
        "a client without a certificate got an answer"
    );
    let with_cert = client(&pki, ALL, true);
    assert_eq!(with_cert.get(&url).send().await.unwrap().status(), 200);
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test]
async fn metrics_are_gzipped_when_accepted_and_decode_to_the_same_page() {
    use std::io::Read;
    cdb_task_exporter::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (exporter, sim) = start(dir.path(), "").await;
    exporter
        .wait_for(|s| s.text.contains("tasks_finished_total"))
        .await;
    let url = format!("http://{}/metrics", exporter.addr);
    let http = reqwest::Client::new();
    let resp = http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let compressed = resp.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .unwrap();
    let resp = http.get(&url).send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    let plain = resp.text().await.unwrap();
    // Process figures (memory, CPU time) move between two scrapes; the rest must not.
    let stable = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.contains("process_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(stable(&text), stable(&plain));
    assert!(
        compressed.len() * 4 < plain.len(),
        "{} vs {}",
        compressed.len(),
        plain.len()
    );
    let refused = http
        .get(&url)
        .header("accept-encoding", "gzip;q=0, identity")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get("content-encoding").is_none());
    exporter.stop().await;
    sim.stop().await;
}

/// `cdb-task-exporter healthcheck --url URL`, on a blocking thread (an exporter in this test
/// answers on the test's runtime).
async fn healthcheck(url: String) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["healthcheck", "--url", &url])
            .env_remove("CDB_TASK_EXPORTER_HEALTHCHECK_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary reads `--web.config.file` and `--web.listen-address`, and SIGHUP switches users.
#[tokio::test]
async fn sighup_switches_basic_auth_users() {
    cdb_task_exporter::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (sim, _clock) = start_sim(cdb_task_exporter::sim::Scenario::demo()).await;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(&sim.url(), "", &region("ap-guangzhou", &[])),
    )
    .unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  alice: {:?}\n", bcrypt_hash("a-pass")),
    )
    .unwrap();
    // Another loopback address than the config's, and a port the system picks (a port chosen
    // here could be taken by a test running beside this one before the exporter binds it).
    let mut child = Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--web.config.file",
            web.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.2:0",
            "--log-format",
            "json",
        ])
        .env_remove("CDB_TASK_EXPORTER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = bound_address(child.stderr.take().unwrap());
    let running = Running(child);
    assert!(
        address.starts_with("127.0.0.2:"),
        "--web.listen-address wins: {address}"
    );
    let port = address.rsplit_once(':').unwrap().1.to_string();
    let url = format!("http://{address}/healthz");
    let http = reqwest::Client::new();
    let status = |user: &'static str, password: &'static str| {
        let req = http.get(&url).basic_auth(user, Some(password));
        async move { req.send().await.map(|r| r.status().as_u16()).ok() }
    };
    let deadline = Instant::now() + PATIENCE;
    while status("alice", "a-pass").await != Some(200) {
        assert!(Instant::now() < deadline, "alice never got in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status("bob", "b-pass").await, Some(401));
    // The health check needs no password: a 401 shows the server answers. A closed port fails.
    let healthy = |url: String| async { healthcheck(url).await.status.success() };
    assert!(healthy(format!("http://127.0.0.2:{port}/healthz")).await);
    assert!(!healthy(format!("http://127.0.0.1:{}/healthz", free_port())).await);
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  bob: {:?}\n", bcrypt_hash("b-pass")),
    )
    .unwrap();
    let kill = Command::new("kill")
        .args(["-HUP", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    while status("bob", "b-pass").await != Some(200) {
        assert!(Instant::now() < deadline, "the reload never let bob in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status("alice", "a-pass").await, Some(401));
    // A bad web config on reload is refused: bob keeps his access, and the reload metric says
    // the running config is not the file's.
    std::fs::write(&web, "basic_auth_users:\n  bob: not-a-bcrypt-hash\n").unwrap();
    let kill = Command::new("kill")
        .args(["-HUP", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let metrics = format!("http://{address}/metrics");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let resp = http
            .get(&metrics)
            .basic_auth("bob", Some("b-pass"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "bob lost his access");
        let s = Series::parse(&resp.text().await.unwrap());
        if s.get(
            "tencentcloud_cdb_exporter_config_last_reload_successful",
            &[],
        ) == Some(0.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the bad reload was not refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(running);
    sim.stop().await;
}

#[test]
fn a_bad_web_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(
            "https://cdb.tencentcloudapi.com",
            "",
            &region("ap-guangzhou", &[]),
        ),
    )
    .unwrap();
    let cases = [
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: b.pem\n  min_version: TLS14\n",
            "tls_server_config.min_version",
        ),
        (
            "basic_auth_users:\n  prom: not-a-hash\n",
            "basic_auth_users.prom",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n",
            "tls_server_config.cert_file",
        ),
        ("basic_auth_user:\n  prom: x\n", "basic_auth_user"),
    ];
    for (yaml, key) in cases {
        let web = dir.path().join("web.yml");
        std::fs::write(&web, yaml).unwrap();
        for extra in [&["--check-config"][..], &[][..]] {
            let out = Command::new(BIN)
                .args(["--config", config.to_str().unwrap(), "--web.config.file"])
                .arg(&web)
                .args(extra)
                .env_remove("CDB_TASK_EXPORTER_CONFIG")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
            assert!(stderr.contains(key), "{yaml}: {stderr}");
        }
    }
    let out = Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--web.listen-address",
            "nowhere",
            "--check-config",
        ])
        .env_remove("CDB_TASK_EXPORTER_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--web.listen-address"));
}

/// A renewed certificate is served from the next connection on, without a signal.
#[tokio::test]
async fn a_renewed_certificate_is_picked_up_without_a_restart() {
    cdb_task_exporter::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let old = pki(&mkdir(dir.path().join("old")));
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::copy(&old.server_cert, &cert).unwrap();
    std::fs::copy(&old.server_key, &key).unwrap();
    let yaml = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n";
    let (exporter, sim) = start(dir.path(), yaml).await;
    let url = format!("https://127.0.0.1:{}/healthz", exporter.addr.port());
    let trusts_old = client(&old, ALL, false);
    assert_eq!(trusts_old.get(&url).send().await.unwrap().status(), 200);
    // Renewal: a certificate from another CA, written over the same files.
    let new = pki(&mkdir(dir.path().join("new")));
    let trusts_new = client(&new, ALL, false);
    assert!(
        trusts_new.get(&url).send().await.is_err(),
        "still the old one"
    );
    std::fs::copy(&new.server_key, &key).unwrap();
    std::fs::copy(&new.server_cert, &cert).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        // A fresh client: a new connection and handshake.
        let fresh = client(&new, ALL, false);
        if fresh
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(client(&old, ALL, false).get(&url).send().await.is_err());
    exporter.stop().await;
    sim.stop().await;
}

fn mkdir(path: std::path::PathBuf) -> std::path::PathBuf {
    std::fs::create_dir_all(&path).unwrap();
    path
}

/// A flood of wrong passwords from one address takes one bcrypt check at a time: the rest of
/// it is answered 429 at once, and a first login from another address does not queue behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_from_one_address_does_not_starve_a_first_login() {
    let dir = tempfile::tempdir().unwrap();
    // Cost 10: each check takes tens of milliseconds, as real hashes do.
    let hash = bcrypt::hash("right horse", 10).unwrap();
    let (exporter, sim) = start(
        dir.path(),
        &format!("basic_auth_users:\n  prom: {hash:?}\n"),
    )
    .await;
    let url = format!("http://{}/healthz", exporter.addr);
    let flood = reqwest::Client::new();
    let requests: Vec<_> = (0..40)
        .map(|i| {
            let request = flood
                .get(&url)
                .basic_auth("prom", Some(format!("wrong {i}")))
                .send();
            tokio::spawn(async move { request.await.unwrap().status().as_u16() })
        })
        .collect();
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let login = elsewhere
        .get(&url)
        .basic_auth("prom", Some("right horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    let busy = statuses.iter().filter(|s| **s == 429).count();
    let refused = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(busy + refused, 40, "{statuses:?}");
    assert!(
        busy > 0,
        "the flood was never held to its share: {statuses:?}"
    );
    assert!(refused > 0, "{statuses:?}");
    exporter.stop().await;
    sim.stop().await;
}
