//! Where keys come from: each source, the chain, the caches.

use super::*;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn static_cred(p: Provider) -> Credential {
    match p {
        Provider::Static(c) => c,
        other => panic!("expected static credentials, got {other:?}"),
    }
}

#[test]
fn config_keys_win_over_environment() {
    let spec = CredentialSpec {
        secret_id: Some("AKIDconfig".into()),
        secret_key: Some(Secret::new("k1")),
        ..Default::default()
    };
    let e = env(&[
        ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
        ("TENCENTCLOUD_SECRET_KEY", "k2"),
    ]);
    let (source, p) = Provider::resolve(&spec, &e).unwrap();
    assert_eq!(source, Source::Config);
    assert_eq!(static_cred(p).secret_id, "AKIDconfig");
}

#[test]
fn key_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "  filekey\n").unwrap();
    let spec = CredentialSpec {
        secret_id: Some("AKIDx".into()),
        secret_key_file: Some(path.clone()),
        ..Default::default()
    };
    let none = env(&[]);
    let (source, p) = Provider::resolve(&spec, &none).unwrap();
    assert_eq!(source, Source::KeyFile(path));
    assert_eq!(static_cred(p).secret_key.expose(), "filekey");
    let missing = CredentialSpec {
        secret_key_file: Some(dir.path().join("nope")),
        ..spec
    };
    assert!(
        Provider::resolve(&missing, &none)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}

#[test]
fn environment_with_each_token_variable() {
    for var in [
        "TENCENTCLOUD_TOKEN",
        "TENCENTCLOUD_SECURITY_TOKEN",
        "TENCENTCLOUD_SESSION_TOKEN",
    ] {
        let e = env(&[
            ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
            ("TENCENTCLOUD_SECRET_KEY", "k2"),
            (var, "tok"),
        ]);
        let (source, p) = Provider::resolve(&CredentialSpec::default(), &e).unwrap();
        assert_eq!(source, Source::Environment);
        let c = static_cred(p);
        assert_eq!(c.token.as_ref().map(Secret::expose), Some("tok"), "{var}");
    }
}

#[test]
fn profile_file_then_instance_role() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".tencentcloud/credentials");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        "[other]\nsecret_id = wrong\n\n[default]\nsecret_id = AKIDprofile \nsecret_key= pk\n",
    )
    .unwrap();
    let home = dir.path().to_str().unwrap().to_string();
    let e = env(&[("HOME", &home)]);
    let (source, p) = Provider::resolve(&CredentialSpec::default(), &e).unwrap();
    assert_eq!(source, Source::Profile(file));
    let c = static_cred(p);
    assert_eq!(
        (c.secret_id.as_str(), c.secret_key.expose()),
        ("AKIDprofile", "pk")
    );

    let empty = tempfile::tempdir().unwrap();
    let home = empty.path().to_str().unwrap().to_string();
    let e = env(&[("HOME", &home)]);
    let (source, _) = Provider::resolve(&CredentialSpec::default(), &e).unwrap();
    if !Path::new("/etc/tencentcloud/credentials").exists() {
        assert_eq!(source, Source::InstanceRole);
    }
}

#[test]
fn half_specified_config_is_an_error() {
    let none = env(&[]);
    let spec = CredentialSpec {
        secret_id: Some("AKIDx".into()),
        ..Default::default()
    };
    assert!(Provider::resolve(&spec, &none).is_err());
    let spec = CredentialSpec {
        secret_key: Some(Secret::new("k")),
        ..Default::default()
    };
    assert!(Provider::resolve(&spec, &none).is_err());
}

#[test]
fn debug_never_shows_keys() {
    let c = Credential {
        secret_id: "AKIDabcdefghijklmnop".into(),
        secret_key: Secret::new("supersecretkey"),
        token: Some(Secret::new("supersecrettoken")),
    };
    let shown = format!("{c:?}");
    assert!(!shown.contains("supersecret"), "{shown}");
    assert!(!shown.contains("AKIDabcdefghijklmnop"), "{shown}");
    assert!(shown.contains("AKID...mnop"), "{shown}");
}
