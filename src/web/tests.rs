//! The web configuration file: parsing, validation and the checks it drives.

use super::*;

/// Counts the warn lines `f` logs.
fn warnings_during(f: impl FnOnce()) -> usize {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().filter(|l| l.contains("WARN")).count()
}

#[test]
fn a_broken_renewal_is_logged_once_per_change_not_per_handshake() {
    crate::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let served = ReloadingCert::new(cert_file.clone(), key_file).unwrap();
    assert!(served.names("localhost"));
    assert!(!served.names("evil.example.com"));
    let first = served.current();
    std::fs::write(&cert_file, "half a renewal").unwrap();
    let warned = warnings_during(|| {
        for _ in 0..100 {
            assert!(Arc::ptr_eq(&served.current(), &first), "the old pair stays");
        }
    });
    assert_eq!(warned, 1);
    // Another broken state of the files is worth a line of its own.
    std::fs::write(&cert_file, "still not a certificate, and longer").unwrap();
    assert_eq!(warnings_during(|| drop(served.current())), 1);
}

fn header(user: &str, password: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {token}")).unwrap()
}

fn users_config(password: &str) -> WebConfig {
    let hash = bcrypt::hash(password, 4).unwrap();
    let raw = RawWeb {
        basic_auth_users: Some([("prom".to_string(), hash)].into()),
        ..RawWeb::default()
    };
    WebConfig::validate(raw, Path::new(".")).unwrap()
}

#[test]
fn basic_auth_checks_the_password_and_caches_only_successes() {
    let web = users_config("s3cret");
    assert!(!web.authorized(None));
    assert!(!web.authorized(Some(&header("prom", "wrong"))));
    assert!(!web.cached(Some(&header("prom", "wrong"))));
    assert!(!web.authorized(Some(&header("nobody", "s3cret"))));
    assert!(!web.cached(Some(&header("prom", "s3cret"))));
    assert!(web.authorized(Some(&header("prom", "s3cret"))));
    assert!(web.cached(Some(&header("prom", "s3cret"))));
    assert!(!web.authorized(Some(&HeaderValue::from_static("Bearer x"))));
}

#[test]
fn values_in_yaml_errors_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, "basic_auth_users: \"hunter2-plain-password\"\n").unwrap();
    let e = WebConfig::load(&path).unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("[redacted]"), "{e}");
    assert_eq!(
        redact_quoted("a `key`: \"v\" and \"w\""),
        "a `key`: \"[redacted]\" and \"[redacted]\""
    );
}

#[test]
fn unknown_users_cost_what_the_dearest_known_one_does() {
    let raw = RawWeb {
        basic_auth_users: Some(
            [
                ("cheap".to_string(), bcrypt::hash("a", 4).unwrap()),
                ("dear".to_string(), bcrypt::hash("b", 6).unwrap()),
            ]
            .into(),
        ),
        ..RawWeb::default()
    };
    let web = WebConfig::validate(raw, Path::new(".")).unwrap();
    let users = web.users.as_ref().unwrap();
    let parts: bcrypt::HashParts = users.dummy.parse().unwrap();
    assert_eq!(parts.get_cost(), 6);
    assert!(!users.check("nobody", "b"));
}

#[test]
fn a_reload_keeps_the_checks_of_unchanged_users() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let config = |users: &[(&str, &str)]| {
        let raw = RawWeb {
            basic_auth_users: Some(
                users
                    .iter()
                    .map(|(u, h)| ((*u).to_string(), (*h).to_string()))
                    .collect(),
            ),
            ..RawWeb::default()
        };
        WebConfig::validate(raw, Path::new(".")).unwrap()
    };
    let security = WebSecurity::new(config(&[("prom", &hash)]));
    assert!(
        security
            .current()
            .authorized(Some(&header("prom", "s3cret")))
    );
    let other = bcrypt::hash("other", 4).unwrap();
    security.replace(config(&[("prom", &hash), ("new", &other)]));
    assert!(
        security.current().cached(Some(&header("prom", "s3cret"))),
        "still cached after the reload"
    );
    // A changed hash is checked again.
    let changed = bcrypt::hash("s3cret", 5).unwrap();
    security.replace(config(&[("prom", &changed)]));
    assert!(!security.current().cached(Some(&header("prom", "s3cret"))));
}

#[test]
fn the_dummy_hash_is_a_valid_bcrypt_hash() {
    assert!(DUMMY_HASH.parse::<bcrypt::HashParts>().is_ok());
}

#[test]
fn bad_values_name_their_key() {
    let bad = |yaml: &str| {
        let raw: RawWeb = serde_yaml_ng::from_str(yaml).unwrap();
        WebConfig::validate(raw, Path::new(".")).unwrap_err().key
    };
    assert_eq!(
        bad("basic_auth_users:\n  prom: plain\n"),
        "basic_auth_users.prom"
    );
    assert_eq!(
        bad("http_server_config:\n  headers:\n    Set-Cookie: a\n"),
        "http_server_config.headers.Set-Cookie"
    );
    assert_eq!(
        bad("tls_server_config:\n  cert_file: a.pem\n"),
        "tls_server_config.key_file"
    );
    assert_eq!(
        bad("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n"),
        "tls_server_config.min_version"
    );
    assert_eq!(
        bad(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n"
        ),
        "tls_server_config.client_ca_file"
    );
    assert_eq!(
        bad("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Maybe\n"),
        "tls_server_config.client_auth_type"
    );
    assert_eq!(
        bad("tls_server_config:\n  cert_file: missing.pem\n  key_file: b\n"),
        "tls_server_config.cert_file"
    );
}
