//! Where an account's keys come from, first match wins (docs/configuration.md#keys): the config (`secret_id` +
//! `secret_key` [+ `token`], or `secret_id` + `secret_key_file`); the environment
//! (`TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY`, token from `TENCENTCLOUD_TOKEN`,
//! `TENCENTCLOUD_SECURITY_TOKEN` or `TENCENTCLOUD_SESSION_TOKEN`); the profile file
//! (`~/.tencentcloud/credentials`, INI section `[default]`); else the CVM instance role from the
//! metadata service, refreshed before it expires.

use super::Error;
use crate::clock::{SharedClock, SystemClock};
use crate::secret::Secret;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// One key pair, possibly temporary.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// SecretId. Not a secret in itself, but never printed in full either.
    pub secret_id: String,
    /// SecretKey.
    pub secret_key: Secret,
    /// Session token of temporary credentials.
    pub token: Option<Secret>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("secret_id", &mask_id(&self.secret_id))
            .field("secret_key", &self.secret_key)
            .field("token", &self.token)
            .finish()
    }
}

/// A SecretId shortened to its first four and last four characters, for summaries.
pub fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 10 {
        return "[redacted]".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}...{tail}")
}

/// What the config says about an account's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialSpec {
    /// `secret_id`
    pub secret_id: Option<String>,
    /// `secret_key`
    pub secret_key: Option<Secret>,
    /// `secret_key_file`
    pub secret_key_file: Option<PathBuf>,
    /// `token`
    pub token: Option<Secret>,
}

/// Which source an account's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `secret_id` + `secret_key` in the config.
    Config,
    /// `secret_id` in the config, the key in a file.
    KeyFile(PathBuf),
    /// `TENCENTCLOUD_SECRET_ID` / `TENCENTCLOUD_SECRET_KEY`.
    Environment,
    /// A profile file.
    Profile(PathBuf),
    /// The CVM instance role (metadata service).
    InstanceRole,
    /// TKE pod identity: the service account's OIDC token exchanged with STS
    /// `AssumeRoleWithWebIdentity` for this role.
    TkeOidc {
        /// `TKE_ROLE_ARN`
        role_arn: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Config => f.write_str("config (secret_id + secret_key)"),
            Source::KeyFile(p) => write!(f, "config secret_id + key file {}", p.display()),
            Source::Environment => f.write_str("environment (TENCENTCLOUD_SECRET_ID/_KEY)"),
            Source::Profile(p) => write!(f, "profile file {}", p.display()),
            Source::InstanceRole => f.write_str("CVM instance role (metadata service)"),
            Source::TkeOidc { role_arn } => write!(
                f,
                "TKE pod identity (OIDC token exchanged by STS AssumeRoleWithWebIdentity for role {role_arn})"
            ),
        }
    }
}

/// Where the process environment is read from; injected so tests do not touch the real one.
pub trait Environment {
    /// The value of a variable, `None` when unset or empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Environment for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.trim().is_empty())
    }
}

/// Why an account's credentials cannot be resolved at start-up (or reload).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// `secret_key` and `secret_key_file` both set.
    #[error("set either secret_key or secret_key_file, not both")]
    TwoKeys,
    /// `secret_id` without a key.
    #[error("secret_id is set but neither secret_key nor secret_key_file")]
    NoKey,
    /// A key or token without `secret_id`.
    #[error("secret_key, secret_key_file and token need secret_id")]
    NoSecretId,
    /// A file that cannot be read, or is empty or malformed.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// Which file (`secret_key_file`, `profile file`, `TKE_WEB_IDENTITY_TOKEN_FILE`).
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Some TKE pod identity variables set, not all.
    #[error("TKE pod identity needs TKE_REGION, TKE_PROVIDER_ID, TKE_WEB_IDENTITY_TOKEN_FILE, TKE_ROLE_ARN; missing: {}", missing.join(", "))]
    PartialTke {
        /// The variables not set.
        missing: Vec<&'static str>,
    },
    /// The HTTP client for STS or the metadata service cannot be built.
    #[error("cannot build the credentials' HTTP client: {0}")]
    Client(String),
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> CredentialError {
    CredentialError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The default metadata endpoint of CVM instance roles.
pub const METADATA_URL: &str =
    "http://metadata.tencentyun.com/latest/meta-data/cam/security-credentials/";

/// A resolved credential provider.
#[derive(Debug)]
pub enum Provider {
    /// Keys that do not change while the process runs (until a reload).
    Static(Credential),
    /// Temporary keys of the CVM instance role, fetched and refreshed on demand.
    InstanceRole(InstanceRole),
    /// Temporary keys for a TKE pod's OIDC token, fetched and refreshed on demand.
    TkeOidc(WebIdentity),
}

impl Provider {
    /// Resolves an account's credentials: the source, and a provider. Reads the key file and the
    /// profile file now, so a bad one is reported at start-up.
    pub fn resolve(
        spec: &CredentialSpec,
        env: &dyn Environment,
    ) -> Result<(Source, Provider), CredentialError> {
        if let Some(id) = &spec.secret_id {
            let (source, key) = match (&spec.secret_key, &spec.secret_key_file) {
                (Some(key), None) => (Source::Config, key.clone()),
                (None, Some(path)) => (Source::KeyFile(path.clone()), read_key_file(path)?),
                (Some(_), Some(_)) => {
                    return Err(CredentialError::TwoKeys);
                }
                (None, None) => {
                    return Err(CredentialError::NoKey);
                }
            };
            let cred = Credential {
                secret_id: id.trim().to_string(),
                secret_key: key,
                token: spec.token.clone(),
            };
            return Ok((source, Provider::Static(cred)));
        }
        if spec.secret_key.is_some() || spec.secret_key_file.is_some() || spec.token.is_some() {
            return Err(CredentialError::NoSecretId);
        }
        if let (Some(id), Some(key)) = (
            env.var("TENCENTCLOUD_SECRET_ID"),
            env.var("TENCENTCLOUD_SECRET_KEY"),
        ) {
            let token = [
                "TENCENTCLOUD_TOKEN",
                "TENCENTCLOUD_SECURITY_TOKEN",
                "TENCENTCLOUD_SESSION_TOKEN",
            ]
            .iter()
            .find_map(|k| env.var(k))
            .map(Secret::new);
            let cred = Credential {
                secret_id: id.trim().to_string(),
                secret_key: Secret::new(key.trim()),
                token,
            };
            return Ok((Source::Environment, Provider::Static(cred)));
        }
        for path in profile_paths(env) {
            if path.is_file() {
                let cred = read_profile(&path)?;
                return Ok((Source::Profile(path), Provider::Static(cred)));
            }
        }
        if let Some(identity) = WebIdentity::from_env(env)? {
            let source = Source::TkeOidc {
                role_arn: identity.role_arn.clone(),
            };
            return Ok((source, Provider::TkeOidc(identity)));
        }
        let url = env
            .var("CDB_TASK_EXPORTER_METADATA_URL")
            .unwrap_or_else(|| METADATA_URL.to_string());
        Ok((
            Source::InstanceRole,
            Provider::InstanceRole(InstanceRole::new(url)?),
        ))
    }

    /// Current credentials.
    pub async fn get(&self) -> Result<Credential, Error> {
        match self {
            Provider::Static(c) => Ok(c.clone()),
            Provider::InstanceRole(role) => role.get().await,
            Provider::TkeOidc(identity) => identity.get().await,
        }
    }
}

fn read_key_file(path: &Path) -> Result<Secret, CredentialError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error("secret_key_file", path, format!("cannot read: {e}")))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(file_error("secret_key_file", path, "is empty"));
    }
    Ok(Secret::new(key))
}

/// Profile files in the order the official SDKs look for them.
fn profile_paths(env: &dyn Environment) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = env.var("TENCENTCLOUD_CREDENTIALS_FILE") {
        paths.push(PathBuf::from(p));
    }
    if let Some(home) = env.var("HOME") {
        paths.push(Path::new(&home).join(".tencentcloud/credentials"));
    }
    paths.push(PathBuf::from("/etc/tencentcloud/credentials"));
    paths
}

/// Reads `secret_id` / `secret_key` of section `[default]` of an INI profile file.
fn read_profile(path: &Path) -> Result<Credential, CredentialError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error("profile file", path, format!("cannot read: {e}")))?;
    parse_profile(&text).ok_or_else(|| {
        file_error(
            "profile file",
            path,
            "has no [default] section with secret_id and secret_key",
        )
    })
}

fn parse_profile(text: &str) -> Option<Credential> {
    let mut section = String::new();
    let (mut id, mut key) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != "default" {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "secret_id" => id = Some(v.trim().to_string()),
                "secret_key" => key = Some(Secret::new(v.trim())),
                _ => {}
            }
        }
    }
    match (id, key) {
        (Some(id), Some(key)) if !id.is_empty() && !key.expose().is_empty() => Some(Credential {
            secret_id: id,
            secret_key: key,
            token: None,
        }),
        _ => None,
    }
}

/// Temporary credentials of the CVM instance role.
#[derive(Debug)]
pub struct InstanceRole {
    base_url: String,
    http: reqwest::Client,
    keys: KeyCache,
}

/// Temporary keys, when they expire, and when they were fetched.
#[derive(Debug, Clone)]
struct Cached {
    credential: Credential,
    expires: i64,
    fetched: i64,
}

/// The shortest time between two fetches of temporary keys while the cached ones are still
/// good for [`MIN_REFETCH_SECS`]: an endpoint that hands out keys expiring soon cannot make
/// every API request a credential request.
const MIN_REFETCH_SECS: i64 = 60;

/// The most bytes a credential endpoint's answer may have (real ones are about 2 KiB).
pub const MAX_CREDENTIAL_ANSWER: usize = 64 * 1024;

impl Cached {
    /// The keys, unless they should be fetched again: `margin` seconds before they expire,
    /// but not sooner than [`MIN_REFETCH_SECS`] after the last fetch while they still work.
    fn usable(&self, now: i64, margin: i64) -> Option<Credential> {
        let left = self.expires - now;
        let fresh =
            left > margin || (now - self.fetched < MIN_REFETCH_SECS && left > MIN_REFETCH_SECS);
        fresh.then(|| self.credential.clone())
    }
}

/// Temporary keys, cached until they should be fetched again; concurrent callers share one
/// fetch.
#[derive(Debug)]
struct KeyCache {
    /// Expiry times are wall-clock times: the real one unless a test gives another.
    clock: SharedClock,
    cached: Mutex<Option<Cached>>,
    /// Held while fetching: concurrent callers wait for that fetch instead of making theirs.
    fetching: tokio::sync::Mutex<()>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            clock: SystemClock::shared(),
            cached: Mutex::default(),
            fetching: tokio::sync::Mutex::default(),
        }
    }
}

impl KeyCache {
    /// The cached keys while usable ([`Cached::usable`] with `margin`), else what `fetch`
    /// (given now) brings, with its expiry.
    async fn get<F, Fut>(&self, margin: i64, fetch: F) -> Result<Credential, Error>
    where
        F: FnOnce(i64) -> Fut,
        Fut: std::future::Future<Output = Result<(Credential, i64), Error>>,
    {
        let now = self.clock.now();
        let usable = || {
            self.cached
                .lock()
                .expect("lock")
                .as_ref()
                .and_then(|c| c.usable(now, margin))
        };
        if let Some(cred) = usable() {
            return Ok(cred);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(cred) = usable() {
            return Ok(cred); // fetched by the caller that held the lock before
        }
        let (credential, expires) = fetch(now).await?;
        *self.cached.lock().expect("lock") = Some(Cached {
            credential: credential.clone(),
            expires,
            fetched: now,
        });
        Ok(credential)
    }
}

/// The body of a credential endpoint's answer, at most [`MAX_CREDENTIAL_ANSWER`] bytes.
async fn capped_text(mut resp: reqwest::Response) -> Result<String, String> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_CREDENTIAL_ANSWER as u64)
    {
        return Err(format!("answer larger than {MAX_CREDENTIAL_ANSWER} bytes"));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if buf.len() + chunk.len() > MAX_CREDENTIAL_ANSWER {
            return Err(format!("answer larger than {MAX_CREDENTIAL_ANSWER} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| "answer is not UTF-8".to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    tmp_secret_id: String,
    tmp_secret_key: String,
    token: String,
    expired_time: i64,
    #[serde(default)]
    code: String,
}

impl InstanceRole {
    fn new(base_url: String) -> Result<Self, CredentialError> {
        crate::install_crypto_provider();
        // No fallback to a default client: it would drop the short timeout that keeps an
        // unreachable metadata service (off CVM) from stalling polls.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CredentialError::Client(e.to_string()))?;
        Ok(InstanceRole {
            base_url,
            http,
            keys: KeyCache::default(),
        })
    }

    async fn get(&self) -> Result<Credential, Error> {
        self.keys.get(300, |_| self.fetch()).await
    }

    /// Fetches the role's keys, with their expiry.
    async fn fetch(&self) -> Result<(Credential, i64), Error> {
        let fail = |what: String| Error::Credentials(format!("CVM instance role: {what}"));
        let get = |url: String| async move {
            let resp = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(fail(format!("metadata service answered {}", resp.status())));
            }
            capped_text(resp).await.map_err(fail)
        };
        let role = get(self.base_url.clone()).await?;
        let role = role.lines().next().unwrap_or_default().trim().to_string();
        // The role goes into a URL path: a name, nothing else.
        let plausible = role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+=,".contains(&b));
        if !plausible || role.len() > 128 {
            return Err(fail("the metadata service named no usable role".into()));
        }
        if role.is_empty() {
            return Err(fail("no role is bound to this instance".into()));
        }
        let body = get(format!("{}{role}", self.base_url)).await?;
        let rc: RoleCredentials =
            serde_json::from_str(&body).map_err(|e| fail(format!("bad answer: {e}")))?;
        if !rc.code.is_empty() && rc.code != "Success" {
            let code = crate::tencent::model::sanitize(&rc.code);
            return Err(fail(format!("metadata code {code}")));
        }
        let cred = Credential {
            secret_id: rc.tmp_secret_id,
            secret_key: Secret::new(rc.tmp_secret_key),
            token: Some(Secret::new(rc.token)),
        };
        Ok((cred, rc.expired_time))
    }
}

/// The TKE pod identity variables, all four needed.
pub const TKE_VARIABLES: [&str; 4] = [
    "TKE_REGION",
    "TKE_PROVIDER_ID",
    "TKE_WEB_IDENTITY_TOKEN_FILE",
    "TKE_ROLE_ARN",
];

/// The STS endpoint; `CDB_TASK_EXPORTER_STS_URL` overrides it (a proxy, the simulator).
pub const STS_URL: &str = "https://sts.tencentcloudapi.com/";

/// How long the temporary keys are asked for.
const OIDC_DURATION_SECS: i64 = 7200;

/// TKE pod identity (docs/configuration.md#keys, credentials): the token file, re-read at every refresh (the
/// kubelet rotates it), exchanged with an unsigned STS `AssumeRoleWithWebIdentity` for
/// temporary keys, which are refreshed when a tenth of their lifetime remains.
#[derive(Debug)]
pub struct WebIdentity {
    region: String,
    provider_id: String,
    token_file: PathBuf,
    role_arn: String,
    url: String,
    http: reqwest::Client,
    keys: KeyCache,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsAnswer {
    response: StsResponse,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsResponse {
    credentials: Option<StsCredentials>,
    expired_time: Option<i64>,
    error: Option<StsError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    token: String,
    tmp_secret_id: String,
    tmp_secret_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsError {
    code: String,
    #[serde(default)]
    message: String,
}

impl WebIdentity {
    /// The identity the environment describes; `None` when no TKE variable is set, an error
    /// naming the missing ones when only some are, or when the token file cannot be read.
    fn from_env(env: &dyn Environment) -> Result<Option<WebIdentity>, CredentialError> {
        let values: Vec<Option<String>> = TKE_VARIABLES.iter().map(|v| env.var(v)).collect();
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let missing: Vec<&str> = TKE_VARIABLES
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(CredentialError::PartialTke { missing });
        }
        let [region, provider_id, token_file, role_arn] =
            <[Option<String>; 4]>::try_from(values).expect("four values");
        let token_file = PathBuf::from(token_file.expect("checked"));
        read_token(&token_file)?;
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CredentialError::Client(e.to_string()))?;
        Ok(Some(WebIdentity {
            region: region.expect("checked"),
            provider_id: provider_id.expect("checked"),
            token_file,
            role_arn: role_arn.expect("checked"),
            url: env
                .var("CDB_TASK_EXPORTER_STS_URL")
                .unwrap_or_else(|| STS_URL.to_string()),
            http,
            keys: KeyCache::default(),
        }))
    }

    async fn get(&self) -> Result<Credential, Error> {
        self.keys
            .get(OIDC_DURATION_SECS / 10, |now| self.fetch(now))
            .await
    }

    /// Exchanges the token for keys, with their expiry.
    async fn fetch(&self, now: i64) -> Result<(Credential, i64), Error> {
        let fail = |what: String| Error::Credentials(format!("TKE pod identity: {what}"));
        let token = read_token(&self.token_file).map_err(|e| fail(e.to_string()))?;
        let body = serde_json::json!({
            "ProviderId": self.provider_id,
            "WebIdentityToken": token.expose(),
            "RoleArn": self.role_arn,
            "RoleSessionName": format!("cdb-task-exporter-{now}"),
            "DurationSeconds": OIDC_DURATION_SECS,
        });
        let host = self
            .url
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        // Unsigned, as the STS documentation has it for this action.
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Host", host)
            .header("Authorization", "SKIP")
            .header("X-TC-Action", "AssumeRoleWithWebIdentity")
            .header("X-TC-Version", "2018-08-13")
            .header("X-TC-Region", &self.region)
            .header("X-TC-Timestamp", now.to_string())
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("STS answered {}", resp.status())));
        }
        let text = capped_text(resp).await.map_err(fail)?;
        let answer: StsAnswer =
            serde_json::from_str(&text).map_err(|e| fail(format!("bad STS answer: {e}")))?;
        if let Some(e) = answer.response.error {
            let message = crate::tencent::model::sanitize(&e.message);
            let code = crate::tencent::model::sanitize(&e.code);
            return Err(fail(format!("STS error {code}: {message}")));
        }
        let (Some(c), Some(expires)) = (answer.response.credentials, answer.response.expired_time)
        else {
            return Err(fail("STS answer without credentials".into()));
        };
        let cred = Credential {
            secret_id: c.tmp_secret_id,
            secret_key: Secret::new(c.tmp_secret_key),
            token: Some(Secret::new(c.token)),
        };
        Ok((cred, expires))
    }
}

fn read_token(path: &Path) -> Result<Secret, CredentialError> {
    let what = "TKE_WEB_IDENTITY_TOKEN_FILE";
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_error(what, path, format!("cannot read: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(file_error(what, path, "is empty"));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests;
