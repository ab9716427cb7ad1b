//! Web security (docs/http.md#web-security): the Prometheus exporter-toolkit web configuration file, so that
//! the scrape configs and files teams already use for node_exporter or mysqld_exporter work here.
//!
//! - `tls_server_config`: TLS with rustls. The certificate and key are re-read when their files
//!   change (checked at each handshake, a `stat` of two files), so a renewed certificate needs no
//!   restart; a renewal that cannot be read keeps the old one and says so in the log.
//! - `basic_auth_users`: bcrypt hashes. A successful check is cached (keyed by a digest of user,
//!   password and hash), so a scrape every 15 s pays bcrypt once, not every time. An unknown user
//!   still pays one bcrypt check, so timing does not tell which users exist.
//! - `http_server_config.headers`: added to every response.
//!
//! The whole file is re-read on SIGHUP, with the rest of the config.

use crate::config::ConfigError;
use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Accepted for compatibility with existing files; rustls offers only modern suites and
    // curves and always prefers its own order.
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    headers: Option<BTreeMap<String, String>>,
    // HTTP/2 is not served; HTTP/1.1 is what Prometheus uses for scrapes.
    http2: Option<bool>,
}

/// The exporter-toolkit `client_auth_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert`
    None,
    /// `RequestClientCert`: asked for, not required, not verified.
    Request,
    /// `RequireAnyClientCert`: required, not verified.
    RequireAny,
    /// `VerifyClientCertIfGiven`: verified against `client_ca_file` when sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`
    RequireAndVerify,
}

impl ClientAuth {
    fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "NoClientCert" => ClientAuth::None,
            "RequestClientCert" => ClientAuth::Request,
            "RequireAnyClientCert" => ClientAuth::RequireAny,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify
        )
    }
}

/// A bad value: its key, dotted as in the file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bad {
    key: String,
    message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> Bad {
    Bad {
        key: key.into(),
        message: message.into(),
    }
}

/// Header names the toolkit allows in `http_server_config.headers`.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// A validated web configuration file.
#[derive(Debug)]
pub struct WebConfig {
    /// The TLS settings, built; `None` serves plain HTTP.
    pub tls: Option<crate::http::TlsServing>,
    users: Option<Users>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebConfig {
    /// No TLS, no users, no headers: what runs without `--web.config.file`.
    pub fn open() -> WebConfig {
        WebConfig {
            tls: None,
            users: None,
            headers: Vec::new(),
        }
    }

    /// Reads and validates a web configuration file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: Some(path.to_path_buf()),
            key: key.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("server.web_config_file", format!("cannot read: {e}")))?;
        let raw: RawWeb = if text.trim().is_empty() {
            RawWeb::default()
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| {
                // serde names the unknown or mistyped field in its message; a mistyped value
                // is quoted there, and it may be a password put where a hash belongs.
                let message = redact_quoted(&e.to_string());
                let key = message
                    .split(':')
                    .next()
                    .filter(|k| !k.contains(' '))
                    .unwrap_or("")
                    .to_string();
                err(&key, message)
            })?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        Self::validate(raw, base).map_err(|b| err(&b.key, b.message))
    }

    fn validate(raw: RawWeb, base: &Path) -> Result<WebConfig, Bad> {
        let tls = match raw.tls_server_config {
            Some(t) => tls_config(t, base)?,
            None => None,
        };
        let users = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Users::new(users)?),
            _ => None,
        };
        let mut headers = Vec::new();
        let raw_headers = raw.http_server_config.and_then(|h| {
            if h.http2 == Some(true) {
                tracing::info!("http_server_config.http2 ignored: the exporter serves HTTP/1.1");
            }
            h.headers
        });
        for (name, value) in raw_headers.unwrap_or_default() {
            let key = format!("http_server_config.headers.{name}");
            if !ALLOWED_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name))
            {
                return Err(bad(
                    key,
                    format!(
                        "header not allowed (allowed: {})",
                        ALLOWED_HEADERS.join(", ")
                    ),
                ));
            }
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| bad(key.clone(), e.to_string()))?;
            let value = HeaderValue::from_str(&value).map_err(|e| bad(key, e.to_string()))?;
            headers.push((name, value));
        }
        Ok(WebConfig {
            tls,
            users,
            headers,
        })
    }

    /// Whether requests need a user and password.
    pub fn requires_auth(&self) -> bool {
        self.users.is_some()
    }

    /// Whether the `Authorization` header carries a configured user's password. May run bcrypt
    /// (tens of milliseconds): call it off the async workers unless [`Self::cached`] says yes.
    pub fn authorized(&self, authorization: Option<&HeaderValue>) -> bool {
        match &self.users {
            None => true,
            Some(users) => authorization
                .and_then(parse_basic)
                .is_some_and(|(user, password)| users.check(&user, &password)),
        }
    }

    /// Whether the request is allowed without running bcrypt: no users configured, or these
    /// credentials were checked before.
    pub fn cached(&self, authorization: Option<&HeaderValue>) -> bool {
        match &self.users {
            None => true,
            Some(users) => authorization
                .and_then(parse_basic)
                .is_some_and(|(user, password)| users.is_cached(&user, &password)),
        }
    }

    /// The configured headers, for every response.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

/// A YAML error message with every quoted value (`"..."`) replaced by `"[redacted]"`; field
/// names, which serde quotes with backticks, stay.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        out.push('"');
        out.push_str(if inside { "[redacted]" } else { part });
        inside = !inside;
    }
    out
}

/// The current web configuration, replaced on reload.
#[derive(Debug)]
pub struct WebSecurity {
    current: RwLock<Arc<WebConfig>>,
}

impl WebSecurity {
    /// Starts with this configuration.
    pub fn new(config: WebConfig) -> WebSecurity {
        WebSecurity {
            current: RwLock::new(Arc::new(config)),
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<WebConfig> {
        self.current.read().expect("lock").clone()
    }

    /// Replaces the configuration (new connections and requests use it). The successful
    /// checks of users whose hash did not change stay cached: a reload does not make every
    /// client pay bcrypt again (a digest names its hash, so a changed hash never matches).
    pub fn replace(&self, config: WebConfig) {
        let mut current = self.current.write().expect("lock");
        if let (Some(old), Some(new)) = (&current.users, &config.users) {
            let carried = old.verified.lock().expect("lock").clone();
            new.verified.lock().expect("lock").extend(carried);
        }
        *current = Arc::new(config);
    }
}

fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let v = value.to_str().ok()?;
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The users and their bcrypt hashes, with the cache of successful checks.
#[derive(Debug)]
struct Users {
    hashes: BTreeMap<String, String>,
    /// Checked for unknown users: a hash at the highest cost configured, so that an unknown
    /// user costs what a known one does and timing tells no names.
    dummy: String,
    /// Digests of (user, password, hash) that verified. Bounded: cleared when full.
    verified: Mutex<HashSet<[u8; 32]>>,
}

/// A valid bcrypt hash of nothing anyone sends; its cost is replaced by the configured ones'.
const DUMMY_HASH: &str = "$2b$10$QmDzDuSCTgCW3zWzvdRxD.8a0p3VJ1p4fXJlR/bUFGaz0VMi6cM5m";
const CACHE_LIMIT: usize = 1024;

impl Users {
    fn new(hashes: BTreeMap<String, String>) -> Result<Users, Bad> {
        for (user, hash) in &hashes {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(bad(
                    format!("basic_auth_users.{user}"),
                    "not a bcrypt hash (expected $2a$, $2b$ or $2y$ followed by cost and salt)",
                ));
            }
        }
        let cost = hashes
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(10);
        // `$2b$10$` + salt and hash: the same salt and hash at the configured cost.
        let dummy = format!("$2b${cost:02}${}", &DUMMY_HASH[7..]);
        Ok(Users {
            hashes,
            dummy,
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut d = Sha256::new();
        for part in [user, password, hash] {
            d.update((part.len() as u64).to_le_bytes());
            d.update(part.as_bytes());
        }
        d.finalize().into()
    }

    fn is_cached(&self, user: &str, password: &str) -> bool {
        self.hashes.get(user).is_some_and(|hash| {
            let key = Self::digest(user, password, hash);
            self.verified.lock().expect("lock").contains(&key)
        })
    }

    fn check(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(user) else {
            let _ = bcrypt::verify(password, &self.dummy);
            return false;
        };
        let key = Self::digest(user, password, hash);
        if self.verified.lock().expect("lock").contains(&key) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            let mut cache = self.verified.lock().expect("lock");
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }
}

fn tls_version(key: &str, v: &str) -> Result<u8, Bad> {
    match v {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        other => Err(bad(
            key.to_string(),
            format!("unknown TLS version {other:?} (expected TLS10, TLS11, TLS12 or TLS13)"),
        )),
    }
}

fn tls_config(t: RawTls, base: &Path) -> Result<Option<crate::http::TlsServing>, Bad> {
    let k = |name: &str| format!("tls_server_config.{name}");
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let (cert, key) = match (t.cert_file, t.key_file) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(bad(k("key_file"), "required when cert_file is set")),
        (None, Some(_)) => return Err(bad(k("cert_file"), "required when key_file is set")),
        (Some(c), Some(key)) => (resolve(c), resolve(key)),
    };
    if t.cipher_suites.is_some()
        || t.curve_preferences.is_some()
        || t.prefer_server_cipher_suites.is_some()
    {
        tracing::info!(
            "tls_server_config: cipher_suites, curve_preferences and prefer_server_cipher_suites are ignored; rustls offers only modern suites"
        );
    }
    let min = match &t.min_version {
        Some(v) => tls_version(&k("min_version"), v)?,
        None => 12,
    };
    let max = match &t.max_version {
        Some(v) => tls_version(&k("max_version"), v)?,
        None => 13,
    };
    if min > max {
        return Err(bad(k("min_version"), "is above max_version"));
    }
    if max < 12 {
        return Err(bad(
            k("max_version"),
            "TLS 1.0 and 1.1 are not offered; use TLS12 or TLS13",
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min.max(12)..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    let auth = match t.client_auth_type.as_deref() {
        Some(s) => ClientAuth::parse(s).ok_or_else(|| bad(k("client_auth_type"), format!("unknown value {s:?} (expected NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)")))?,
        None if t.client_ca_file.is_some() => ClientAuth::RequireAndVerify,
        None => ClientAuth::None,
    };
    let ca = t.client_ca_file.map(resolve);
    if auth.verifies() && ca.is_none() {
        return Err(bad(
            k("client_ca_file"),
            format!(
                "required by client_auth_type {:?}",
                t.client_auth_type.unwrap_or_default()
            ),
        ));
    }
    if ca.is_some() && auth == ClientAuth::None {
        return Err(bad(
            k("client_auth_type"),
            "client_ca_file is set but NoClientCert does not ask for certificates",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = client_verifier(auth, ca.as_deref(), &provider)?;
    let resolver = Arc::new(ReloadingCert::new(cert, key).map_err(|e| bad(k(&e.key), e.message))?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| bad(k("min_version"), e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(crate::http::TlsServing {
        config: Arc::new(config),
        names: Arc::new(move |host: &str| resolver.names(host)),
    }))
}

const CA_KEY: &str = "tls_server_config.client_ca_file";

fn client_verifier(
    auth: ClientAuth,
    ca: Option<&Path>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, Bad> {
    match auth {
        ClientAuth::None => Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::Request | ClientAuth::RequireAny => Ok(Arc::new(AnyClientCert {
            mandatory: auth == ClientAuth::RequireAny,
            algorithms: provider.signature_verification_algorithms,
        })),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {
            let ca = ca.expect("checked by the caller");
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| bad(CA_KEY, format!("cannot read {}: {e}", ca.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(CA_KEY, format!("{}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(CA_KEY, format!("{}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(bad(
                    CA_KEY,
                    format!("{}: no certificate in the file", ca.display()),
                ));
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if auth == ClientAuth::VerifyIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map(|v| v as Arc<dyn ClientCertVerifier>)
                .map_err(|e| bad(CA_KEY, e.to_string()))
        }
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked for (and required by
/// the second) but not checked against a CA; only the handshake signature is verified.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// When a file was last changed, and its size: a renewal changes one of them.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The key pair in use and the stamps of the two files it was read from.
#[derive(Debug)]
struct Loaded {
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
    /// The stamps of the files a reload last failed on: warned about once, until they change.
    failed: Option<(Stamp, Stamp)>,
}

/// The server certificate and key, re-read when either file changes.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    loaded: Mutex<Loaded>,
}

impl ReloadingCert {
    fn new(cert_file: PathBuf, key_file: PathBuf) -> Result<ReloadingCert, Bad> {
        let stamps = (stamp(&cert_file), stamp(&key_file));
        let key = read_certified_key(&cert_file, &key_file)?;
        Ok(ReloadingCert {
            cert_file,
            key_file,
            loaded: Mutex::new(Loaded {
                stamps,
                key,
                failed: None,
            }),
        })
    }

    /// Whether the certificate in use is valid for `host` (a DNS name or an IP address).
    fn names(&self, host: &str) -> bool {
        let key = self.loaded.lock().expect("lock").key.clone();
        let (Some(cert), Ok(name)) = (
            key.end_entity_cert().ok(),
            rustls::pki_types::ServerName::try_from(host),
        ) else {
            return false;
        };
        webpki::EndEntityCert::try_from(cert)
            .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
    }
}

fn read_certified_key(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, Bad> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(std::iter::Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| bad("cert_file", format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(bad(
            "cert_file",
            format!("{}: no certificate in the file", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| bad("key_file", format!("{}: {e}", key_file.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad("key_file", format!("{}: {e}", key_file.display())))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        bad(
            "key_file",
            format!("{} does not match the certificate: {e}", key_file.display()),
        )
    })?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ReloadingCert {
    /// The key pair to serve: re-read when a file changed since the last read.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().expect("lock");
        let now = (stamp(&self.cert_file), stamp(&self.key_file));
        if now != loaded.stamps {
            match read_certified_key(&self.cert_file, &self.key_file) {
                Ok(key) => {
                    tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                    *loaded = Loaded {
                        stamps: now,
                        key,
                        failed: None,
                    };
                }
                // A half-written renewal: keep serving the old pair, try again next time. Said
                // once per change of the files, not once per handshake (anyone can connect).
                Err(e) if loaded.failed != Some(now) => {
                    tracing::warn!(error = %e.message, "cannot reload the TLS certificate; keeping the previous one");
                    loaded.failed = Some(now);
                }
                Err(_) => {}
            }
        }
        loaded.key.clone()
    }
}

#[cfg(test)]
mod tests;
