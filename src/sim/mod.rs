//! The simulated CDB API: a real HTTP server speaking the wire protocol of `DescribeTasks`.
//!
//! It checks TC3 signatures the way the API does (exact body bytes, signed headers, UTC scope
//! date, five-minute skew, known SecretId), answers the API's error codes, serves tasks from a
//! [`Scenario`] whose statuses change over time, filtered, ordered newest first and paged, in
//! either item shape, and injects faults on demand. The demo and every whole-program test use it.

mod cdb;
mod cynosdb;
pub use cynosdb::PAYLOAD_SECRET;
pub mod demo;
mod postgres;
pub mod scenario;

use crate::clock::{Clock, SystemClock};
use crate::http::{HttpResponse, read_body, respond, serve};
use crate::product::{PRODUCTS, Product};
use crate::secret::Secret;
use crate::tencent::apitime::ApiZone;
use crate::tencent::model::DescribeTasksRequest;
use crate::tencent::sign::{
    self, canonical_request, parse_authorization, string_to_sign, utc_date,
};
use hyper::{Method, Request, StatusCode, body::Incoming};
pub use scenario::{Fault, Faults, Scenario, Shape, SimInstance, SimTask, Step, TaskState};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// SecretId the simulator accepts when none is given (documented in the README).
pub const DEFAULT_SECRET_ID: &str = "AKIDsimulator0000000000000000000000";
/// SecretKey the simulator accepts when none is given (documented in the README).
pub const DEFAULT_SECRET_KEY: &str = "simulatorSecretKey000000000000000";

/// Largest request body the simulator reads.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// How many requests the simulator remembers for inspection.
const MAX_LOGGED_REQUESTS: usize = 10_000;
/// Allowed clock skew between the signer and the server, as the API allows.
const MAX_SKEW_SECONDS: i64 = 300;

/// What the simulator saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The product, by the signature's service (`""` when the signature was refused).
    pub product: String,
    /// `X-TC-Action`
    pub action: String,
    /// `X-TC-Region`
    pub region: String,
    /// The decoded body, when it was a valid `DescribeTasks` request.
    pub request: Option<DescribeTasksRequest>,
    /// `OK`, or the error code (or `HTTP502`, `Malformed`) answered.
    pub outcome: String,
}

struct Inner {
    /// Sorted newest first, as the API orders them: (start, job id) descending.
    tasks: RwLock<Vec<SimTask>>,
    /// The last query's matches, for paging through it without a rescan.
    matches: Mutex<Option<Matches>>,
    shape: Shape,
    zone: ApiZone,
    faults: Mutex<Faults>,
    dice: Mutex<fastrand::Rng>,
    keys: Vec<(String, Secret)>,
    /// Pod identity: what STS `AssumeRoleWithWebIdentity` accepts, and what it issued.
    oidc: Mutex<Oidc>,
    clock: Arc<SystemClock>,
    started: i64,
    /// How far the simulated API's clock is ahead of the machine's (negative: behind): its
    /// `Date` header, its signature check and its task times follow it.
    clock_offset: AtomicI64,
    served: AtomicU64,
    /// `DescribeTasks` requests answered (the fault schedule counts these).
    tasks_served: AtomicU64,
    /// `DescribeDBInstances` requests seen (they are not in `log`).
    instance_requests: AtomicU64,
    log: Mutex<Vec<RecordedRequest>>,
    instances: RwLock<Vec<SimInstance>>,
    instances_error: Mutex<Option<String>>,
}

/// The tasks one query matched at one moment: indices into the sorted tasks, with their state.
struct Matches {
    /// The query without its paging, the region and the moment.
    key: String,
    hits: Arc<Vec<(usize, TaskState)>>,
}

/// Sorts tasks the way the API lists them: newest start first, then the larger job id.
fn sort_newest_first(tasks: &mut [SimTask]) {
    tasks.sort_by_key(|t| std::cmp::Reverse((t.start, t.job_id)));
}

/// A request parameter the API would refuse with `InvalidParameter`, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParameter(pub String);

/// The simulated STS side of TKE pod identity.
#[derive(Default)]
struct Oidc {
    /// `ProviderId` and `RoleArn` accepted; `None`: the action is refused.
    accepts: Option<(String, String)>,
    /// Lifetime of issued keys, seconds.
    lifetime: i64,
    /// Tokens presented, in order.
    tokens: Vec<String>,
    /// Issued temporary keys: id, key, token.
    issued: Vec<(String, Secret, String)>,
}

/// The STS action of TKE pod identity.
pub const ASSUME_ROLE_WITH_WEB_IDENTITY: &str = "AssumeRoleWithWebIdentity";

/// A simulator: cheap to clone, shared between its server and the test that drives it.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("tasks", &self.inner.tasks.read().expect("lock").len())
            .field("started", &self.inner.started)
            .finish_non_exhaustive()
    }
}

/// A running simulator server.
#[derive(Debug)]
pub struct SimServer {
    /// The simulator, for inspection and changes.
    pub sim: Simulator,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Fires to stop it.
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Base URL, e.g. `http://127.0.0.1:1234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

impl Simulator {
    /// A simulator of `scenario` accepting one key pair; task times are relative to `clock.now()`
    /// at this call.
    pub fn new(
        scenario: Scenario,
        secret_id: &str,
        secret_key: Secret,
        clock: Arc<SystemClock>,
    ) -> Self {
        let started = clock.now();
        let mut tasks = scenario.tasks;
        sort_newest_first(&mut tasks);
        Simulator {
            inner: Arc::new(Inner {
                tasks: RwLock::new(tasks),
                matches: Mutex::new(None),
                shape: scenario.shape,
                zone: scenario.zone.unwrap_or_else(ApiZone::beijing),
                dice: Mutex::new(fastrand::Rng::with_seed(scenario.faults.seed)),
                faults: Mutex::new(scenario.faults),
                keys: vec![(secret_id.to_string(), secret_key)],
                oidc: Mutex::new(Oidc::default()),
                clock,
                started,
                clock_offset: AtomicI64::new(0),
                served: AtomicU64::new(0),
                tasks_served: AtomicU64::new(0),
                instance_requests: AtomicU64::new(0),
                log: Mutex::new(Vec::new()),
                instances: RwLock::new(scenario.instances),
                instances_error: Mutex::new(scenario.instances_error),
            }),
        }
    }

    /// A simulator with the default key pair.
    pub fn with_default_keys(scenario: Scenario, clock: Arc<SystemClock>) -> Self {
        Self::new(
            scenario,
            DEFAULT_SECRET_ID,
            Secret::new(DEFAULT_SECRET_KEY),
            clock,
        )
    }

    /// Unix time, on the simulated API's clock, the scenario's relative times count from.
    pub fn started(&self) -> i64 {
        self.inner.started + self.clock_offset()
    }

    /// Sets how far the simulated API's clock is ahead of this machine's (negative: behind),
    /// as a real API's clock can be from a host's: its `Date` header, its signature check and
    /// the absolute times of its tasks follow it.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.inner.clock_offset.store(seconds, Ordering::SeqCst);
    }

    /// The offset set by [`Simulator::set_clock_offset`].
    pub fn clock_offset(&self) -> i64 {
        self.inner.clock_offset.load(Ordering::SeqCst)
    }

    /// Now on the API's own clock (the machine's real time and the offset), as its `Date`
    /// header and its signature check see it.
    fn api_now(&self) -> i64 {
        real_now() + self.clock_offset()
    }

    /// Adds a task while running.
    pub fn add_task(&self, task: SimTask) {
        let mut tasks = self.inner.tasks.write().expect("lock");
        let key = std::cmp::Reverse((task.start, task.job_id));
        let at = tasks.partition_point(|t| std::cmp::Reverse((t.start, t.job_id)) < key);
        tasks.insert(at, task);
        *self.inner.matches.lock().expect("lock") = None;
    }

    /// Makes STS `AssumeRoleWithWebIdentity` (served on the same address) accept this provider
    /// and role, issuing temporary keys that live `lifetime` seconds and that the CDB actions
    /// then accept with their token.
    pub fn accept_web_identity(&self, provider_id: &str, role_arn: &str, lifetime: i64) {
        let mut oidc = self.inner.oidc.lock().expect("lock");
        oidc.accepts = Some((provider_id.to_string(), role_arn.to_string()));
        oidc.lifetime = lifetime;
    }

    /// The web identity tokens presented to STS so far.
    pub fn web_identity_tokens(&self) -> Vec<String> {
        self.inner.oidc.lock().expect("lock").tokens.clone()
    }

    /// Replaces what `DescribeDBInstances` lists.
    pub fn set_instances(&self, instances: Vec<SimInstance>) {
        *self.inner.instances.write().expect("lock") = instances;
    }

    /// Makes `DescribeDBInstances` answer this error code (or answer normally again).
    pub fn set_instances_error(&self, code: Option<&str>) {
        *self.inner.instances_error.lock().expect("lock") = code.map(str::to_string);
    }

    /// Replaces the faults while running.
    pub fn set_faults(&self, faults: Faults) {
        *self.inner.dice.lock().expect("lock") = fastrand::Rng::with_seed(faults.seed);
        *self.inner.faults.lock().expect("lock") = faults;
    }

    /// How many `DescribeDBInstances` requests were seen.
    pub fn instance_requests(&self) -> u64 {
        self.inner.instance_requests.load(Ordering::SeqCst)
    }

    /// The requests seen so far (the most recent ones, in a long run), `DescribeDBInstances`
    /// excepted (see [`Simulator::instance_requests`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log.lock().expect("lock").clone()
    }

    /// Forgets the requests seen so far (a benchmark measures from a mark on).
    pub fn clear_requests(&self) {
        self.inner.log.lock().expect("lock").clear();
    }

    /// How many requests [`Simulator::requests`] holds.
    pub fn request_count(&self) -> usize {
        self.inner.log.lock().expect("lock").len()
    }

    /// Binds `addr` and serves until the returned server is stopped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let sim = self.clone();
        let handler = move |req: Request<Incoming>| {
            let sim = sim.clone();
            async move { sim.handle(req).await }
        };
        let task = tokio::spawn(serve(
            listener,
            handler,
            shutdown.clone(),
            crate::http::ServeOptions::new(Duration::from_secs(1)),
        ));
        Ok(SimServer {
            sim: self,
            addr,
            shutdown,
            task,
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        if req.method() == Method::GET && req.uri().path() == "/_sim/stats" {
            let tasks = self.inner.tasks.read().expect("lock").len();
            let served = self.inner.served.load(Ordering::SeqCst);
            let tasks_served = self.inner.tasks_served.load(Ordering::SeqCst);
            let body = json!({"requests": served, "describe_tasks_requests": tasks_served, "tasks": tasks});
            return respond(StatusCode::OK, "application/json", body.to_string());
        }
        if req.method() != Method::POST || req.uri().path() != "/" {
            return respond(StatusCode::NOT_FOUND, "text/plain", "not found\n");
        }
        let (parts, body) = req.into_parts();
        let Some(body) = read_body(body, MAX_REQUEST_BYTES).await else {
            return error_response("RequestSizeLimitExceeded", "request body too large", 0);
        };
        if parts
            .headers
            .get("x-tc-action")
            .and_then(|v| v.to_str().ok())
            == Some(ASSUME_ROLE_WITH_WEB_IDENTITY)
        {
            return self.assume_role_with_web_identity(&parts.headers, &body);
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let mut record = RecordedRequest {
            product: String::new(),
            action: header("x-tc-action"),
            region: header("x-tc-region"),
            request: None,
            outcome: "OK".into(),
        };
        let seq = self.inner.served.fetch_add(1, Ordering::SeqCst) + 1;
        let (resp, delay) = match self.check_auth(&parts.headers, &body) {
            Err((code, msg)) => {
                record.outcome = code.to_string();
                (error_response(code, &msg, seq), None)
            }
            Ok(product) if header("x-tc-version") != product.version() => {
                record.outcome = "NoSuchVersion".into();
                let msg = format!("version {:?} is not supported", header("x-tc-version"));
                (error_response("NoSuchVersion", &msg, seq), None)
            }
            Ok(product) => {
                record.product = product.name().to_string();
                self.answer(product, &mut record, &body, seq)
            }
        };
        if PRODUCTS.iter().any(|p| p.listing_action() == record.action) {
            // Kept apart, so that the request log shows the task polling alone.
            self.inner.instance_requests.fetch_add(1, Ordering::SeqCst);
        } else {
            let mut log = self.inner.log.lock().expect("lock");
            if log.len() >= MAX_LOGGED_REQUESTS {
                // A long-running simulator (the demo) keeps only the recent past.
                log.drain(..MAX_LOGGED_REQUESTS / 2);
            }
            log.push(record);
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        with_date(resp, self.api_now())
    }

    /// Verifies the TC3 signature as the API does.
    /// The key a request's SecretId signs with: a configured one, or temporary keys STS
    /// issued, which go with their token.
    fn signing_key(
        &self,
        secret_id: &str,
        token: Option<&str>,
    ) -> Result<Secret, (&'static str, String)> {
        if let Some((_, key)) = self.inner.keys.iter().find(|(id, _)| id == secret_id) {
            return Ok(key.clone());
        }
        let oidc = self.inner.oidc.lock().expect("lock");
        match oidc.issued.iter().find(|(id, ..)| id == secret_id) {
            Some((_, key, issued_token)) if token == Some(issued_token.as_str()) => Ok(key.clone()),
            Some(_) => Err((
                "AuthFailure.TokenFailure",
                "the token does not match the temporary key".into(),
            )),
            None => Err((
                "AuthFailure.SecretIdNotFound",
                "the SecretId is not found".into(),
            )),
        }
    }

    /// Verifies the TC3 signature as the API does; the credential scope names the product
    /// whose API answers.
    fn check_auth(
        &self,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> Result<&'static dyn Product, (&'static str, String)> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let auth = get("authorization").and_then(parse_authorization).ok_or((
            "AuthFailure.InvalidAuthorization",
            "Authorization header is missing or malformed".to_string(),
        ))?;
        let ts: i64 = get("x-tc-timestamp")
            .and_then(|t| t.trim().parse().ok())
            .ok_or((
                "AuthFailure.InvalidAuthorization",
                "X-TC-Timestamp is missing or not a number".to_string(),
            ))?;
        let api_now = self.api_now();
        if (api_now - ts).abs() > MAX_SKEW_SECONDS {
            return Err((
                "AuthFailure.SignatureExpire",
                format!(
                    "timestamp {ts} is more than {MAX_SKEW_SECONDS}s from server time {api_now}"
                ),
            ));
        }
        let key = self.signing_key(auth.secret_id, get("x-tc-token"))?;
        let signature_failure = || {
            (
                "AuthFailure.SignatureFailure",
                "the provided credentials could not be validated".to_string(),
            )
        };
        let product = PRODUCTS
            .iter()
            .copied()
            .find(|p| p.service() == auth.service)
            .ok_or_else(signature_failure)?;
        if auth.date != utc_date(ts) {
            return Err(signature_failure());
        }
        let names: Vec<&str> = auth.signed_headers.split(';').collect();
        if !names.contains(&"content-type") || !names.contains(&"host") {
            return Err(signature_failure());
        }
        let mut values = Vec::new();
        for name in &names {
            values.push((*name, get(name).ok_or_else(signature_failure)?));
        }
        let cr = canonical_request(&values, auth.signed_headers, body);
        let scope = format!("{}/{}/tc3_request", auth.date, auth.service);
        let sts = string_to_sign(ts, &scope, &cr);
        let expected = sign::signature(key.expose(), auth.date, auth.service, &sts);
        if expected != auth.signature {
            return Err(signature_failure());
        }
        Ok(product)
    }

    /// Answers an authenticated request with the product's simulated API: one line per
    /// product.
    fn answer(
        &self,
        product: &dyn Product,
        record: &mut RecordedRequest,
        body: &[u8],
        seq: u64,
    ) -> (HttpResponse, Option<Duration>) {
        match product.name() {
            "cdb" => self.answer_cdb(record, body, seq),
            "cynosdb" => self.answer_cynosdb(record, body, seq),
            "postgres" => self.answer_postgres(record, body, seq),
            other => {
                record.outcome = "InvalidAction".into();
                let msg = format!("the simulator does not serve {other}");
                (error_response("InvalidAction", &msg, seq), None)
            }
        }
    }

    /// STS `AssumeRoleWithWebIdentity`: unsigned (`Authorization: SKIP`), version 2018-08-13;
    /// issues temporary keys for an accepted provider and role.
    fn assume_role_with_web_identity(
        &self,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> HttpResponse {
        let seq = self.inner.served.fetch_add(1, Ordering::SeqCst) + 1;
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        if header("authorization") != "SKIP" || header("x-tc-version") != "2018-08-13" {
            return error_response(
                "AuthFailure.InvalidAuthorization",
                "AssumeRoleWithWebIdentity is unsigned (Authorization: SKIP), version 2018-08-13",
                seq,
            );
        }
        if header("x-tc-region").is_empty() {
            return error_response("MissingParameter", "the Region parameter is required", seq);
        }
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let field = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut oidc = self.inner.oidc.lock().expect("lock");
        let token = field("WebIdentityToken");
        oidc.tokens.push(token.clone());
        let accepted = oidc
            .accepts
            .as_ref()
            .is_some_and(|(p, r)| *p == field("ProviderId") && *r == field("RoleArn"));
        if !accepted || token.is_empty() || field("RoleSessionName").is_empty() {
            return error_response(
                "InvalidParameter.WebIdentityTokenError",
                "the web identity, provider or role is not accepted",
                seq,
            );
        }
        let id = format!("AKIDtmp{seq:016}");
        let key = format!("tmp-key-{seq}-{}", fastrand::u64(..));
        let session = format!("tmp-token-{seq}-{}", fastrand::u64(..));
        let expires = self.inner.clock.now() + oidc.lifetime;
        oidc.issued
            .push((id.clone(), Secret::new(key.as_str()), session.clone()));
        let body = json!({"Response": {
            "Credentials": {"Token": session, "TmpSecretId": id, "TmpSecretKey": key},
            "ExpiredTime": expires,
            "Expiration": "",
            "RequestId": request_id(seq),
        }});
        respond(StatusCode::OK, "application/json", body.to_string())
    }

    fn draw_fault(&self, seq: u64) -> Option<Fault> {
        let faults = self.inner.faults.lock().expect("lock");
        if let Some((_, f)) = faults.schedule.iter().find(|(n, _)| *n == seq) {
            return Some(*f);
        }
        if faults.always.is_some() {
            return faults.always;
        }
        let mut dice = self.inner.dice.lock().expect("lock");
        let shares = [
            (faults.rate_limit, Fault::RateLimit),
            (faults.internal_error, Fault::InternalError),
            (faults.http_502, Fault::Http502),
            (faults.malformed, Fault::Malformed),
            (faults.bad_item, Fault::BadItem),
            (faults.slow, Fault::Slow),
        ];
        let roll = dice.f64();
        let mut acc = 0.0;
        for (share, fault) in shares {
            acc += share;
            if share > 0.0 && roll < acc {
                return Some(fault);
            }
        }
        None
    }

    /// The answer a fault puts in place of the real one, with the outcome to record; `None`
    /// for no fault, or one that changes the real answer (a slow or bad-item page).
    fn fault_response(
        &self,
        fault: Option<Fault>,
        body: &[u8],
        seq: u64,
    ) -> Option<(&'static str, HttpResponse)> {
        match fault {
            Some(Fault::RateLimit) => Some((
                "RequestLimitExceeded",
                error_response(
                    "RequestLimitExceeded",
                    "request rate exceeds the limit",
                    seq,
                ),
            )),
            Some(Fault::InternalError) => Some((
                "InternalError",
                error_response("InternalError", "internal error", seq),
            )),
            Some(Fault::Http502) => Some((
                "HTTP502",
                respond(
                    StatusCode::BAD_GATEWAY,
                    "text/html",
                    "<html><body>502 Bad Gateway</body></html>",
                ),
            )),
            Some(Fault::Malformed) => Some((
                "Malformed",
                respond(
                    StatusCode::OK,
                    "application/json",
                    "{\"Response\": {\"TotalCount\": 3, \"Items\": [{\"JobId\"",
                ),
            )),
            Some(Fault::Redirect) => {
                let to = self.inner.faults.lock().expect("lock").redirect_to.clone();
                let mut r = respond(StatusCode::TEMPORARY_REDIRECT, "text/plain", "moved\n");
                if let Ok(v) = hyper::header::HeaderValue::from_str(&to) {
                    r.headers_mut().insert(hyper::header::LOCATION, v);
                }
                Some(("Redirect", r))
            }
            Some(Fault::ControlChars) => Some((
                "ControlChars",
                error_response(
                    "FailedOperation\n2026-01-01T00:00:00Z ERROR forged",
                    "line one\n\u{1b}[31mERROR a forged log line\u{1b}[0m",
                    seq,
                ),
            )),
            Some(Fault::EndlessPages) => Some(("EndlessPages", cdb::endless_page(body, seq))),
            Some(Fault::Slow | Fault::BadItem) | None => None,
        }
    }
}

/// The machine's time, unix seconds: the API's clock is real, whatever clock the scenario's
/// task times follow.
fn real_now() -> i64 {
    SystemClock::new().now()
}

/// `resp` with the `Date` header of an answer sent at `now` (the API sends one; the exporter
/// learns the API's clock from it).
fn with_date(mut resp: HttpResponse, now: i64) -> HttpResponse {
    let date = chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = hyper::header::HeaderValue::from_str(&date) {
        resp.headers_mut().insert(hyper::header::DATE, v);
    }
    resp
}

fn request_id(seq: u64) -> String {
    format!("5e4d0000-0000-4000-8000-{seq:012x}")
}

fn error_response(code: &str, message: &str, seq: u64) -> HttpResponse {
    let body = json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id(seq)}});
    respond(StatusCode::OK, "application/json", body.to_string())
}
