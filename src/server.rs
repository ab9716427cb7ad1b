//! The exporter's HTTP server: `/metrics`, `/healthz`, `/readyz`, `/`; graceful shutdown.

use crate::clock::SharedClock;
use crate::details::{self, Filter, Source, escape};
use crate::domain::TargetId;
use crate::http::{Body, ChunkWriter, HttpResponse, Peer, ServeOptions, TlsSource, respond, serve};
use crate::metrics::Metrics;
use crate::metrics::{Format, negotiate};
use crate::registry::Targets;
use crate::target::TargetStatus;
use crate::web::{WebConfig, WebSecurity};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long open connections may finish after shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Every target with its status, in id order.
fn statuses(targets: &Targets) -> Vec<(TargetId, TargetStatus)> {
    targets
        .handles()
        .iter()
        .map(|h| (h.id().clone(), h.status()))
        .collect()
}

/// A unix time as RFC 3339 (UTC), or `never`.
fn when(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(
            || "never".to_string(),
            |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// What the server shows, and how it is protected.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The metrics to render.
    pub metrics: Arc<Metrics>,
    /// Every target: its status, task store and instances.
    pub targets: Arc<Targets>,
    /// TLS, users and headers (docs/http.md#web-security), replaced on reload.
    pub web: Arc<WebSecurity>,
    /// Wall clock, for relative times on the task page.
    pub clock: SharedClock,
}

/// bcrypt checks run at once, at most: a flood of wrong passwords costs two cores' worth of
/// blocking threads, not hundreds.
const BCRYPT_CHECKS: usize = 2;

/// Serves until `shutdown` fires, then drains for at most [`DRAIN`]; at most `max_connections`
/// at once.
pub async fn run_server(
    listener: TcpListener,
    state: ServerState,
    shutdown: CancellationToken,
    max_connections: usize,
) {
    let checks = Arc::new(Checks::default());
    let web = state.web.clone();
    let handler = move |req: Request<Incoming>| {
        let state = state.clone();
        let checks = checks.clone();
        async move {
            let web = state.web.current();
            let mut response = match authorized(&web, &req, &checks).await {
                Auth::Allowed => route(&state, &req).await,
                Auth::Denied => unauthorized(),
                Auth::Busy => respond(
                    StatusCode::TOO_MANY_REQUESTS,
                    "text/plain; charset=utf-8",
                    "a password check from this address is already running\n",
                ),
            };
            for (name, value) in web.headers() {
                response.headers_mut().insert(name.clone(), value.clone());
            }
            response
        }
    };
    let options = ServeOptions {
        max_connections,
        tls: Some(TlsSource(Arc::new(move || web.current().tls.clone()))),
        ..ServeOptions::new(DRAIN)
    };
    serve(listener, handler, shutdown, options).await;
}

/// The bcrypt checks under way: [`BCRYPT_CHECKS`] at once in all, and one at a time per
/// client address, so that a flood of wrong passwords from one address takes at most one of
/// them and a first login from elsewhere does not queue behind it.
#[derive(Debug)]
struct Checks {
    slots: tokio::sync::Semaphore,
    /// Addresses with a check running or waiting for a slot.
    busy: std::sync::Mutex<std::collections::HashSet<std::net::IpAddr>>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            slots: tokio::sync::Semaphore::new(BCRYPT_CHECKS),
            busy: std::sync::Mutex::default(),
        }
    }
}

/// Frees an address's share when its check ends (or its request goes away).
struct Share<'a>(&'a Checks, Option<std::net::IpAddr>);

impl Drop for Share<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.1 {
            self.0.busy.lock().expect("lock").remove(&ip);
        }
    }
}

/// What basic auth says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// No users configured, or the right password.
    Allowed,
    /// No or wrong credentials.
    Denied,
    /// A check from the same address is under way: answered 429 without bcrypt.
    Busy,
}

/// Whether the request may see any page: basic auth when users are configured. A cached
/// success answers at once; otherwise bcrypt runs on a blocking thread, one check at a time
/// per client address.
async fn authorized(web: &Arc<WebConfig>, req: &Request<Incoming>, checks: &Checks) -> Auth {
    let authorization = req.headers().get(hyper::header::AUTHORIZATION).cloned();
    if web.cached(authorization.as_ref()) {
        return Auth::Allowed;
    }
    if authorization.is_none() {
        return Auth::Denied; // nothing to check (a browser's first request)
    }
    let ip = req.extensions().get::<Peer>().map(|p| p.0.ip());
    if let Some(ip) = ip
        && !checks.busy.lock().expect("lock").insert(ip)
    {
        return Auth::Busy;
    }
    let _share = Share(checks, ip);
    let Ok(_permit) = checks.slots.acquire().await else {
        return Auth::Denied;
    };
    let web = web.clone();
    let ok = tokio::task::spawn_blocking(move || web.authorized(authorization.as_ref()))
        .await
        .unwrap_or(false);
    if ok { Auth::Allowed } else { Auth::Denied }
}

fn unauthorized() -> HttpResponse {
    let mut response = respond(
        StatusCode::UNAUTHORIZED,
        "text/plain; charset=utf-8",
        "Unauthorized\n",
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"cdb-task-exporter\""),
    );
    response
}

/// The pages the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/metrics`
    Metrics,
    /// `/healthz`
    Health,
    /// `/readyz`
    Ready,
    /// `/`
    Landing,
    /// `/tasks`
    Tasks,
    /// `/api/v1/tasks`
    ApiTasks,
}

/// Which page a request asks for; `Err` is the status to answer instead. Pure.
pub fn resolve(method: &Method, uri: &hyper::Uri) -> Result<Page, StatusCode> {
    if method != Method::GET && method != Method::HEAD {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    match uri.path() {
        "/metrics" => Ok(Page::Metrics),
        "/healthz" => Ok(Page::Health),
        "/readyz" => Ok(Page::Ready),
        "/" => Ok(Page::Landing),
        "/tasks" => Ok(Page::Tasks),
        "/api/v1/tasks" => Ok(Page::ApiTasks),
        _ => Err(StatusCode::NOT_FOUND),
    }
}

/// `/readyz`: 200 once every target has had a successful poll, with one line per target (a
/// prober reads the status, a person the reasons). Before the first config's targets are known
/// there are none, which means "starting", not "nothing to wait for". Pure.
fn readiness(configured: bool, all: &[(TargetId, TargetStatus)]) -> (StatusCode, String) {
    if !configured {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the targets are not configured yet\n".to_string(),
        );
    }
    let body = all
        .iter()
        .map(|(id, s)| {
            format!(
                "{id}: {}; last poll {}, last success {}, last error {}\n",
                if s.ready() {
                    "ready"
                } else {
                    "waiting for a first successful poll"
                },
                when(s.last_poll),
                when(s.last_success),
                s.last_error.as_ref().map_or("none", |e| e.0.as_str()),
            )
        })
        .collect();
    let status = if all.iter().all(|(_, s)| s.ready()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn route(state: &ServerState, req: &Request<Incoming>) -> HttpResponse {
    let page = match resolve(req.method(), req.uri()) {
        Ok(page) => page,
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed\n",
            );
        }
        Err(status) => return respond(status, "text/plain; charset=utf-8", "not found\n"),
    };
    match page {
        Page::Metrics => {
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            metrics_page(state, accepts_gzip(req.headers()), negotiate(accept))
        }
        Page::Health => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        Page::Ready => {
            let (status, body) = readiness(state.targets.configured(), &statuses(&state.targets));
            respond(status, "text/plain; charset=utf-8", body)
        }
        // The landing page escapes what it shows too; it gets the same policy as `/tasks`.
        Page::Landing => html_response(StatusCode::OK, landing_page(state)),
        Page::Tasks | Page::ApiTasks => tasks_page(state, page, req.uri().query()).await,
    }
}

/// `/tasks` and `/api/v1/tasks`: the selection runs on a blocking thread (it scans the stores
/// under their locks).
async fn tasks_page(state: &ServerState, page: Page, query: Option<&str>) -> HttpResponse {
    let html = page == Page::Tasks;
    let filter = match Filter::parse(query) {
        Ok(f) => f,
        Err(e) => {
            let body = if html {
                details::html_error(&e)
            } else {
                details::json_error(&e)
            };
            return tasks_response(StatusCode::BAD_REQUEST, html, body);
        }
    };
    let sources: Vec<Source> = state
        .targets
        .handles()
        .iter()
        .map(|h| Source {
            id: h.id().clone(),
            state: h.state().clone(),
            instances: h.instances(),
        })
        .collect();
    let now = state.clock.now();
    let rendered = tokio::task::spawn_blocking(move || {
        let selection = details::select(&sources, &filter);
        if html {
            details::to_html(&selection, &filter, now)
        } else {
            details::to_json(&selection)
        }
    })
    .await;
    match rendered {
        Ok(body) => tasks_response(StatusCode::OK, html, body),
        Err(_) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "the task query failed\n",
        ),
    }
}

/// The task page's `Content-Security-Policy`, computed once (it hashes the style sheet).
static TASK_PAGE_POLICY: std::sync::LazyLock<hyper::header::HeaderValue> =
    std::sync::LazyLock::new(|| {
        hyper::header::HeaderValue::from_str(&details::content_security_policy())
            .expect("the policy is ASCII")
    });

/// A task page or API answer: HTML with its policy, or JSON.
fn tasks_response(status: StatusCode, html: bool, body: String) -> HttpResponse {
    if html {
        html_response(status, body)
    } else {
        respond(status, "application/json", body)
    }
}

/// An HTML page with the pages' `Content-Security-Policy` and no content sniffing.
fn html_response(status: StatusCode, body: String) -> HttpResponse {
    let mut response = respond(status, "text/html; charset=utf-8", body);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        TASK_PAGE_POLICY.clone(),
    );
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    response
}

/// `/metrics`: from the targets' latest snapshots. A small page is answered on the request's
/// own task, from parts kept between scrapes (a blocking thread and a channel would cost more
/// than the page: see [`crate::metrics::SMALL_PAGE_SERIES`]); a large one is sent from a
/// blocking thread while the client reads: gzipped, from the deflated families kept since the
/// last gzip scrape ([`Metrics::gzip_page`]), else rendered and streamed in chunks.
fn metrics_page(state: &ServerState, gzip: bool, format: Format) -> HttpResponse {
    let metrics = state.metrics.clone();
    let targets = state.targets.handles();
    let series = || targets.iter().map(|h| h.series());
    let body = if gzip && metrics.is_small(series()) {
        Body::Parts(metrics.gzip_page(series(), format).into())
    } else if let Some(parts) = (!gzip)
        .then(|| metrics.small_page(series(), format))
        .flatten()
    {
        // The kept task families go out as they are kept, never copied into a page buffer.
        Body::Parts(parts.into())
    } else {
        let (writer, body) = ChunkWriter::new();
        tokio::task::spawn_blocking(move || {
            let series = targets.iter().map(|h| h.series());
            stream_page(&metrics, series, writer, (gzip, format));
        });
        body
    };
    let mut response = hyper::Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, format.content_type())
        .header(hyper::header::VARY, "Accept, Accept-Encoding");
    if gzip {
        response = response.header(hyper::header::CONTENT_ENCODING, "gzip");
    }
    response
        .body(body)
        .expect("static response parts are valid")
}

/// Sends a large page into `writer`: gzipped from its parts, or rendered as it is written;
/// stops when the client goes away.
fn stream_page<'a>(
    metrics: &Metrics,
    series: impl IntoIterator<Item = &'a crate::metrics::TargetSeries>,
    mut writer: ChunkWriter,
    (gzip, format): (bool, Format),
) {
    use std::io::Write;
    if gzip {
        for part in metrics.gzip_page(series, format) {
            if writer.send_part(part).is_err() {
                return;
            }
        }
    } else if metrics
        .render_format_to(&mut writer, series, format)
        .is_ok()
    {
        let _ = writer.flush();
    }
}

/// Whether `Accept-Encoding` allows gzip. Pure. As RFC 9110 says: an explicit `gzip` entry
/// wins over `*`, and a weight of 0 refuses; codings and the `q` parameter compare
/// case-insensitively.
pub fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    let values: Vec<&str> = headers
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let weight = |name: &str| {
        values
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|entry| {
                let mut parts = entry.split(';').map(str::trim);
                let coding = parts.next()?;
                coding.eq_ignore_ascii_case(name).then(|| {
                    parts
                        .find_map(|p| {
                            let (k, v) = p.split_once('=')?;
                            k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
                        })
                        .map_or(Some(1.0), |q| {
                            q.parse::<f32>().ok().filter(|q| q.is_finite())
                        })
                        .unwrap_or(0.0)
                })
            })
            .reduce(f32::max)
    };
    weight("gzip")
        .or_else(|| weight("*"))
        .is_some_and(|q| q > 0.0)
}

fn landing_page(state: &ServerState) -> String {
    let rows: String = statuses(&state.targets)
        .iter()
        .map(|(id, s)| {
            let error = s.last_error.as_ref().map_or_else(String::new, |(code, msg)| {
                format!("{}: {}", escape(code), escape(msg))
            });
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&id.account),
                escape(&id.region),
                if s.ready() { "ready" } else { "waiting for a first successful poll" },
                when(s.last_poll),
                when(s.last_success),
                error,
                s.mode,
            )
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>CDB task exporter</title></head>\
<body><h1>CDB task exporter</h1><p>Version {}. Tencent Cloud CDB (MySQL) tasks from DescribeTasks, \
polled in the background.</p><p><a href=\"/metrics\">Metrics</a> &middot; <a href=\"/healthz\">Health</a> \
&middot; <a href=\"/readyz\">Readiness</a> &middot; <a href=\"/tasks\">Tasks</a> \
&middot; <a href=\"/api/v1/tasks\">Tasks (JSON)</a></p><table><tr><th>account</th><th>region</th><th>state</th><th>last poll</th><th>last success</th><th>last error</th><th>query mode</th></tr>{rows}</table>\
</body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for v in values {
            h.append(
                hyper::header::ACCEPT_ENCODING,
                hyper::header::HeaderValue::from_static(v),
            );
        }
        h
    }

    #[test]
    fn not_ready_until_the_targets_are_known_and_polled() {
        let (status, body) = readiness(false, &[]);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("starting"), "{body}");
        let id = TargetId {
            account: "acct".into(),
            region: "ap-guangzhou".into(),
            product: "cdb",
        };
        let mut s = TargetStatus::default();
        assert_eq!(
            readiness(true, &[(id.clone(), s.clone())]).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.last_poll = Some(100);
        s.last_error = Some(("Timeout".into(), "m".into()));
        assert_eq!(
            readiness(true, &[(id.clone(), s.clone())]).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.last_success = Some(200);
        s.last_poll = Some(200);
        s.last_error = None;
        let (status, body) = readiness(true, &[(id, s)]);
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("ready; last poll"), "{body}");
        // A config with no targets at all is ready once applied.
        assert_eq!(readiness(true, &[]).0, StatusCode::OK);
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts_gzip(&headers(&["gzip"])));
        assert!(accepts_gzip(&headers(&["deflate, GZIP;q=0.5"])));
        assert!(accepts_gzip(&headers(&["identity", "gzip"])));
        assert!(accepts_gzip(&headers(&["*"])));
        assert!(!accepts_gzip(&headers(&[])));
        assert!(!accepts_gzip(&headers(&["identity"])));
        assert!(!accepts_gzip(&headers(&["gzip;q=0"])));
        assert!(!accepts_gzip(&headers(&["gzip; q=0.0, br"])));
        assert!(!accepts_gzip(&headers(&["gzipx"])));
        // The explicit entry wins over the wildcard, whatever their order; `Q` is `q`.
        assert!(!accepts_gzip(&headers(&["gzip;q=0, *"])));
        assert!(!accepts_gzip(&headers(&["*, gzip;q=0"])));
        assert!(!accepts_gzip(&headers(&["gzip;Q=0"])));
        assert!(!accepts_gzip(&headers(&["GZIP ; Q = 0"])));
        assert!(accepts_gzip(&headers(&["*;q=0, gzip"])));
        assert!(!accepts_gzip(&headers(&["*;q=0"])));
        assert!(!accepts_gzip(&headers(&["gzip;q=nonsense"])));
    }
}
