//! One signed HTTP call per action, with typed errors. No retries and no metrics: the poller
//! decides what to do with a failure.

use super::apitime::ApiZone;
use super::credentials::Provider;
use super::model::{
    Envelope, InstancePage, TaskPage, TaskQuery, decode_instances, decode_response,
};
use super::sign::{SignInput, sign};
use super::{DESCRIBE_DB_INSTANCES, DESCRIBE_TASKS, Error, MAX_BODY_BYTES, SERVICE, VERSION};
use crate::clock::{Clock, SystemClock};
use std::sync::Arc;
use std::time::Duration;

/// The content type the exporter sends and signs (the SDKs' value, no charset).
pub const CONTENT_TYPE: &str = "application/json";

/// Why an endpoint URL is refused, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EndpointError(pub String);

/// Where requests for one region go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL, `scheme://authority/`.
    pub url: String,
    /// The authority as sent in `Host` (and signed).
    pub host: String,
}

impl Endpoint {
    /// The API's own host for `region`: finance regions (`*-fsi`) have their own, every other
    /// region the default host. An `endpoint` in the config (http allowed) replaces it.
    pub fn default_for(region: &str) -> Endpoint {
        let host = if region.ends_with("-fsi") {
            format!("{SERVICE}.{region}.tencentcloudapi.com")
        } else {
            format!("{SERVICE}.tencentcloudapi.com")
        };
        Endpoint {
            url: format!("https://{host}/"),
            host,
        }
    }

    /// Parses an endpoint URL (`https://host[:port][/]` or `http://…`).
    pub fn parse(raw: &str) -> Result<Endpoint, EndpointError> {
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| {
            EndpointError(format!(
                "endpoint {raw:?} must start with https:// or http://"
            ))
        })?;
        if scheme != "https" && scheme != "http" {
            return Err(EndpointError(format!(
                "endpoint {raw:?} must use https or http"
            )));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty()
            || authority.contains(['/', '?', '#', '@', ' '])
            || authority.ends_with(':')
        {
            return Err(EndpointError(format!(
                "endpoint {raw:?} must be scheme://host[:port] with no path"
            )));
        }
        Ok(Endpoint {
            url: format!("{scheme}://{authority}/"),
            host: authority.to_ascii_lowercase(),
        })
    }
}

/// How a client is set up.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where to send requests.
    pub endpoint: Endpoint,
    /// `X-TC-Region`.
    pub region: String,
    /// Zone of the API's naive timestamps.
    pub zone: ApiZone,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// A `DescribeTasks` client for one account and region.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    options: ClientOptions,
    credentials: Arc<Provider>,
}

/// `User-Agent` and `X-TC-RequestClient`.
pub fn user_agent() -> String {
    format!("cdb-task-exporter/{}", env!("CARGO_PKG_VERSION"))
}

impl Client {
    /// A client. The signing timestamp is always the real system time: the API checks it against
    /// its own clock, whatever clock the rest of the exporter is given.
    pub fn new(options: ClientOptions, credentials: Arc<Provider>) -> Result<Client, Error> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(user_agent())
            .pool_idle_timeout(Duration::from_secs(50))
            // The API never redirects. Following one would send the signed request (and the
            // session token) elsewhere and take another server's answer as the API's; and it
            // would hide HTTP attempts from api_requests_total. A 3xx is an HttpStatus error.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(Client {
            http,
            options,
            credentials,
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// One `DescribeTasks` call: one page.
    pub async fn describe_tasks(&self, query: &TaskQuery) -> Result<TaskPage, Error> {
        let request = query.to_request(self.options.zone);
        let body = serde_json::to_vec(&request).map_err(|e| Error::Decode(e.to_string()))?;
        let bytes = self.call(DESCRIBE_TASKS, body).await?;
        page_or_error(decode_response(&bytes, self.options.zone).map_err(|e| Error::Decode(e.0))?)
    }

    /// One `DescribeDBInstances` call: the page of at most `limit` instances from `offset`.
    pub async fn describe_db_instances(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<InstancePage, Error> {
        let body = serde_json::json!({"Offset": offset, "Limit": limit});
        let bytes = self
            .call(DESCRIBE_DB_INSTANCES, body.to_string().into_bytes())
            .await?;
        page_or_error(decode_instances(&bytes).map_err(|e| Error::Decode(e.0))?)
    }

    /// Sends one signed request and returns the body of a 200 answer, at most
    /// [`MAX_BODY_BYTES`] long.
    async fn call(&self, action: &str, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        let cred = self.credentials.get().await?;
        let signed = sign(&SignInput {
            secret_id: &cred.secret_id,
            secret_key: cred.secret_key.expose(),
            token: cred
                .token
                .as_ref()
                .map(super::super::secret::Secret::expose),
            host: &self.options.endpoint.host,
            service: SERVICE,
            action,
            version: VERSION,
            region: &self.options.region,
            timestamp: SystemClock::new().now(),
            content_type: CONTENT_TYPE,
            body: &body,
        });
        let mut req = self
            .http
            .post(&self.options.endpoint.url)
            .header("X-TC-RequestClient", user_agent())
            .header("X-TC-Language", "en-US");
        for (name, value) in signed.headers {
            req = req.header(name, value);
        }
        let mut resp = req.body(body).send().await.map_err(transport_error)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Error::HttpStatus(status));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(Error::TooLarge);
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
            if buf.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Error::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }
}

/// A decoded answer as a page, or its API error.
fn page_or_error<P>(envelope: Envelope<P>) -> Result<P, Error> {
    match envelope {
        Envelope::Page(page) => Ok(page),
        Envelope::Error {
            code,
            message,
            request_id,
        } => Err(Error::Api {
            code,
            message,
            request_id,
        }),
    }
}

/// Maps a reqwest failure, keeping only its kind and a description that holds no secret (the
/// URL is the endpoint; headers are never part of reqwest's messages).
fn transport_error(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout
    } else {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        Error::Transport(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fsi_and_override_endpoints() {
        let e = Endpoint::default_for("ap-guangzhou");
        assert_eq!(e.url, "https://cdb.tencentcloudapi.com/");
        assert_eq!(e.host, "cdb.tencentcloudapi.com");
        let e = Endpoint::default_for("ap-shanghai-fsi");
        assert_eq!(e.host, "cdb.ap-shanghai-fsi.tencentcloudapi.com");
        assert_eq!(e.url, "https://cdb.ap-shanghai-fsi.tencentcloudapi.com/");
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.url, "http://127.0.0.1:8080/");
        assert_eq!(e.host, "127.0.0.1:8080");
        let e = Endpoint::parse("https://cdb.intl.tencentcloudapi.com/").unwrap();
        assert_eq!(e.host, "cdb.intl.tencentcloudapi.com");
        for bad in [
            "cdb.tencentcloudapi.com",
            "ftp://x",
            "http://",
            "http://h/path",
            "http://u@h",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
