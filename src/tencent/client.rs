//! One signed HTTP call per action, with typed errors. No retries and no metrics: the poller
//! decides what to do with a failure.

use super::apiclock::ApiClock;
use super::apitime::ApiZone;
use super::credentials::Provider;
use super::model::{Envelope, InstancePage, TaskPage, TaskQuery};
use super::sign::{SignInput, sign};
use super::{Error, MAX_BODY_BYTES};
use crate::clock::{SharedClock, SystemClock};
use crate::product::Product;
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
    /// CDB's own host for `region` (see [`Endpoint::of`]).
    pub fn default_for(region: &str) -> Endpoint {
        Endpoint::of(crate::product::default_product(), region)
    }

    /// `product`'s own host for `region`: finance regions (`*-fsi`) have their own, every other
    /// region the default host. An `endpoint` in the config (http allowed) replaces it.
    pub fn of(product: &dyn Product, region: &str) -> Endpoint {
        let host = product.host(region);
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
    /// The endpoint's clock, learnt from its answers; shared by the clones of this client.
    clock: Arc<ApiClock>,
    /// What it asks and how the answers decode.
    product: &'static dyn Product,
}

/// `User-Agent` and `X-TC-RequestClient`.
pub fn user_agent() -> String {
    format!("cdb-task-exporter/{}", env!("CARGO_PKG_VERSION"))
}

impl Client {
    /// A client that signs with the system's time, corrected by the API's clock offset: the
    /// API checks the timestamp against its own (real) clock, whatever clock the rest of the
    /// exporter is given.
    /// It speaks CDB's API.
    pub fn new(options: ClientOptions, credentials: Arc<Provider>) -> Result<Client, Error> {
        let product = crate::product::default_product();
        Client::with(options, credentials, product, SystemClock::shared())
    }

    /// A client of `product`'s API whose signing timestamps come from `clock` (corrected by
    /// the API's offset).
    pub fn with(
        options: ClientOptions,
        credentials: Arc<Provider>,
        product: &'static dyn Product,
        clock: SharedClock,
    ) -> Result<Client, Error> {
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
        let clock = Arc::new(ApiClock::new(clock, &options.endpoint.url));
        Ok(Client {
            http,
            options,
            credentials,
            clock,
            product,
        })
    }

    /// The API's clock minus this host's, seconds, once an answer said (docs/semantics.md#clock-skew).
    pub fn clock_offset(&self) -> Option<i64> {
        self.clock.offset()
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The product this client speaks for.
    pub fn product(&self) -> &'static dyn Product {
        self.product
    }

    /// One call of the product's task action: one page.
    pub async fn describe_tasks(&self, query: &TaskQuery) -> Result<TaskPage, Error> {
        let zone = self.options.zone;
        let body = self.product.task_request(query, zone);
        let bytes = self.call(self.product.task_action(), body).await?;
        page_or_error(
            self.product
                .decode_tasks(&bytes, zone)
                .map_err(|e| Error::Decode(e.0))?,
        )
    }

    /// One call of the product's listing action: the page of at most `limit` instances from
    /// `offset`.
    pub async fn describe_db_instances(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<InstancePage, Error> {
        let body = self.product.listing_request(offset, limit);
        let bytes = self.call(self.product.listing_action(), body).await?;
        page_or_error(
            self.product
                .decode_listing(&bytes)
                .map_err(|e| Error::Decode(e.0))?,
        )
    }

    /// Sends one signed request and returns the body of a 200 answer, at most
    /// [`MAX_BODY_BYTES`] long.
    ///
    /// Every answer's `Date` teaches the API's clock. An `AuthFailure.SignatureExpire` answer
    /// whose `Date` moved the clock offset comes back as [`Error::ClockCorrected`]: the same
    /// request, signed again, can pass.
    async fn call(&self, action: &str, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        let cred = self.credentials.get().await?;
        let _first = self.clock.await_first_answer().await;
        let signed_at = self.clock.now();
        let signed_with = self.clock.offset().unwrap_or(0);
        let signed = sign(&SignInput {
            secret_id: &cred.secret_id,
            secret_key: cred.secret_key.expose(),
            token: cred
                .token
                .as_ref()
                .map(super::super::secret::Secret::expose),
            host: &self.options.endpoint.host,
            service: self.product.service(),
            action,
            version: self.product.version(),
            region: &self.options.region,
            timestamp: signed_at,
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
        if let Some(date) = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
        {
            self.clock.observe(date);
        }
        let corrected = self.clock.offset().filter(|o| (o - signed_with).abs() > 1);
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
        if let Some(offset) = corrected
            && is_signature_expire(&buf)
        {
            return Err(Error::ClockCorrected { offset });
        }
        Ok(buf)
    }
}

/// Whether an answer is the API's `AuthFailure.SignatureExpire` error.
fn is_signature_expire(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Response")]
        response: Response,
    }
    #[derive(serde::Deserialize)]
    struct Response {
        #[serde(rename = "Error")]
        error: Option<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        #[serde(rename = "Code")]
        code: String,
    }
    body.len() < 64 * 1024
        && serde_json::from_slice::<Answer>(body).is_ok_and(|a| {
            a.response
                .error
                .is_some_and(|e| e.code == "AuthFailure.SignatureExpire")
        })
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
