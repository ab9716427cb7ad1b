//! The exporter's HTTP server: `/metrics`, `/healthz`, `/readyz`, `/`; graceful shutdown.

use crate::http::{ChunkWriter, HttpResponse, respond, serve};
use crate::metrics::{Metrics, TargetId};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long open connections may finish after shutdown.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Which targets have completed a successful poll.
#[derive(Debug, Default)]
pub struct Readiness {
    targets: Mutex<BTreeMap<TargetId, bool>>,
}

impl Readiness {
    /// Sets the configured targets, keeping what is known of those that stay.
    pub fn set_targets(&self, ids: impl IntoIterator<Item = TargetId>) {
        let mut t = self.targets.lock().expect("lock");
        let old = std::mem::take(&mut *t);
        for id in ids {
            let ready = old.get(&id).copied().unwrap_or(false);
            t.insert(id, ready);
        }
    }

    /// A target completed a successful poll.
    pub fn mark_ready(&self, id: &TargetId) {
        if let Some(r) = self.targets.lock().expect("lock").get_mut(id) {
            *r = true;
        }
    }

    /// Targets not ready yet.
    pub fn pending(&self) -> Vec<TargetId> {
        self.targets
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, r)| !**r)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every target, with its readiness.
    pub fn all(&self) -> Vec<(TargetId, bool)> {
        self.targets
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, r)| (id.clone(), *r))
            .collect()
    }
}

/// What the server shows.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The metrics to render.
    pub metrics: Arc<Metrics>,
    /// Readiness of the targets.
    pub readiness: Arc<Readiness>,
}

/// Serves until `shutdown` fires, then drains for at most [`DRAIN`].
pub async fn run_server(listener: TcpListener, state: ServerState, shutdown: CancellationToken) {
    let handler = move |req: Request<Incoming>| {
        let state = state.clone();
        async move { route(&state, &req) }
    };
    serve(listener, handler, shutdown, DRAIN).await;
}

fn route(state: &ServerState, req: &Request<Incoming>) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n",
        );
    }
    match req.uri().path() {
        "/metrics" => metrics_page(state),
        "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/readyz" => {
            let pending = state.readiness.pending();
            if pending.is_empty() {
                respond(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
            } else {
                let list: Vec<String> = pending.iter().map(ToString::to_string).collect();
                let body = format!(
                    "waiting for a first successful poll of: {}\n",
                    list.join(", ")
                );
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    body,
                )
            }
        }
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            landing_page(state),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    }
}

/// `/metrics`, streamed: rendered on a blocking thread from the latest snapshots, chunk by
/// chunk, while the client reads.
fn metrics_page(state: &ServerState) -> HttpResponse {
    let (mut writer, body) = ChunkWriter::new();
    let metrics = state.metrics.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        if metrics.render_to(&mut writer).is_ok() {
            let _ = writer.flush();
        }
    });
    hyper::Response::builder()
        .status(StatusCode::OK)
        .header(
            hyper::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(body)
        .expect("static response parts are valid")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn landing_page(state: &ServerState) -> String {
    let rows: String = state
        .readiness
        .all()
        .iter()
        .map(|(id, ready)| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&id.account),
                escape(&id.region),
                if *ready {
                    "polled"
                } else {
                    "waiting for first poll"
                }
            )
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>CDB task exporter</title></head>\
<body><h1>CDB task exporter</h1><p>Version {}. Tencent Cloud CDB (MySQL) tasks from DescribeTasks, \
polled in the background.</p><p><a href=\"/metrics\">Metrics</a> &middot; <a href=\"/healthz\">Health</a> \
&middot; <a href=\"/readyz\">Readiness</a></p><table><tr><th>account</th><th>region</th><th>state</th></tr>{rows}</table>\
</body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}
