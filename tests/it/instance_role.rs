//! The last link of the credential chain: temporary keys of the CVM instance role, read from a
//! metadata service (here a fake one on loopback) and cached until close to their expiry.

use crate::common::serve_on_loopback;
use cdb_task_exporter::http::respond;
use cdb_task_exporter::tencent::credentials::{CredentialSpec, Provider, Source};
use hyper::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_util::sync::CancellationToken;

async fn metadata(expires_in: i64) -> (String, Arc<AtomicUsize>, CancellationToken) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let (addr, stop) = serve_on_loopback(move |req: hyper::Request<hyper::body::Incoming>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            match req.uri().path() {
                "/latest/meta-data/cam/security-credentials/" => {
                    respond(StatusCode::OK, "text/plain", "exporter-role")
                }
                "/latest/meta-data/cam/security-credentials/exporter-role" => {
                    let expires = chrono::Utc::now().timestamp() + expires_in;
                    let body = format!(
                        r#"{{"TmpSecretId":"AKIDtemporary000000","TmpSecretKey":"tmpkey","Token":"tmptoken","ExpiredTime":{expires},"Expiration":"","Code":"Success"}}"#
                    );
                    respond(StatusCode::OK, "application/json", body)
                }
                _ => respond(StatusCode::NOT_FOUND, "text/plain", "no"),
            }
        }
    })
    .await;
    let base = format!("http://{addr}/latest/meta-data/cam/security-credentials/");
    (base, hits, stop)
}

fn resolve(base: &str) -> (Source, Provider) {
    let base = base.to_string();
    let env = move |k: &str| match k {
        "CDB_TASK_EXPORTER_METADATA_URL" => Some(base.clone()),
        "HOME" => Some("/nonexistent".to_string()),
        _ => None,
    };
    Provider::resolve(&CredentialSpec::default(), &env).unwrap()
}

#[tokio::test]
async fn instance_role_keys_are_fetched_and_cached() {
    cdb_task_exporter::install_crypto_provider();
    let (base, hits, stop) = metadata(3600).await;
    let (source, provider) = resolve(&base);
    assert_eq!(source, Source::InstanceRole);
    let c = provider.get().await.unwrap();
    assert_eq!(c.secret_id, "AKIDtemporary000000");
    assert_eq!(c.secret_key.expose(), "tmpkey");
    assert_eq!(
        c.token
            .as_ref()
            .map(cdb_task_exporter::secret::Secret::expose),
        Some("tmptoken")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    provider.get().await.unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "cached while far from expiry"
    );
    stop.cancel();
}

#[tokio::test]
async fn keys_close_to_expiry_are_refreshed_and_a_missing_role_is_an_error() {
    cdb_task_exporter::install_crypto_provider();
    let (base, hits, stop) = metadata(60).await;
    let (_, provider) = resolve(&base);
    provider.get().await.unwrap();
    provider.get().await.unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "refreshed: under 5 minutes left"
    );
    stop.cancel();

    let (_, provider) = resolve(&base.replace("security-credentials/", "nothing/"));
    let e = provider.get().await.unwrap_err();
    assert_eq!(e.as_label(), "Credentials");
    assert!(!e.is_retryable());
}

/// Keys that expire soon are fetched again at most once a minute while they still work: an
/// endpoint handing out short keys cannot make every API request a metadata request.
#[tokio::test]
async fn keys_expiring_soon_are_fetched_at_most_once_a_minute() {
    cdb_task_exporter::install_crypto_provider();
    // 4 minutes left: inside the 5-minute refresh margin, yet good for a while.
    let (base, hits, stop) = metadata(240).await;
    let (_, provider) = resolve(&base);
    for _ in 0..20 {
        provider.get().await.unwrap();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one fetch (role and keys)");
    stop.cancel();
}

/// A metadata service that answers without end, or with log-forging codes, is bounded and
/// escaped.
#[tokio::test]
async fn metadata_answers_are_capped_and_their_codes_escaped() {
    cdb_task_exporter::install_crypto_provider();
    let (addr, stop) = serve_on_loopback(move |req: hyper::Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/huge/" => respond(StatusCode::OK, "text/plain", "x".repeat(8 * 1024 * 1024)),
            "/forged/" => respond(StatusCode::OK, "text/plain", "role"),
            "/forged/role" => respond(
                StatusCode::OK,
                "application/json",
                r#"{"TmpSecretId":"a","TmpSecretKey":"b","Token":"c","ExpiredTime":1,"Code":"Bad\nINFO forged line"}"#,
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "no"),
        }
    })
    .await;
    let (_, provider) = resolve(&format!("http://{addr}/huge/"));
    let e = provider.get().await.unwrap_err().to_string();
    assert!(e.contains("larger than 65536 bytes"), "{e}");
    let (_, provider) = resolve(&format!("http://{addr}/forged/"));
    let e = provider.get().await.unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e:?}");
    assert!(e.contains(r"Bad\nINFO forged line"), "{e}");
    stop.cancel();
}
