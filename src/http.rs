//! The small HTTP/1 serving loop shared by the exporter's server and the simulator: accept,
//! serve each connection with header timeouts, drain on shutdown within a deadline.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A response of the exporter or the simulator.
pub type HttpResponse = Response<Body>;

/// A response body: buffered whole, or streamed as chunks from a channel (a large page is
/// written by a producer while the client reads it, so it is never held in memory whole).
#[derive(Debug)]
pub enum Body {
    /// The whole body.
    Full(Full<Bytes>),
    /// Chunks in order; the body ends when the sender is dropped.
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
    /// A body already in memory as several buffers, sent in order without being joined.
    Parts(std::collections::VecDeque<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(f) => std::pin::Pin::new(f).poll_frame(cx),
            Body::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b)))),
            Body::Parts(parts) => {
                std::task::Poll::Ready(parts.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(f) => f.is_end_stream(),
            Body::Stream(_) => false,
            Body::Parts(parts) => parts.is_empty(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(f) => f.size_hint(),
            Body::Stream(_) => hyper::body::SizeHint::default(),
            Body::Parts(parts) => {
                hyper::body::SizeHint::with_exact(parts.iter().map(|b| b.len() as u64).sum())
            }
        }
    }
}

/// A [`std::io::Write`] that sends what is written as chunks of about [`ChunkWriter::CHUNK`]
/// bytes into a [`Body::Stream`]; meant for a blocking thread. A write fails once the client
/// has gone, which stops the producer.
#[derive(Debug)]
pub struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    /// Chunk size: large enough for few wake-ups, small enough to keep memory flat.
    pub const CHUNK: usize = 64 * 1024;

    /// A writer and the body it feeds.
    pub fn new() -> (ChunkWriter, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (
            ChunkWriter {
                tx,
                buf: Vec::with_capacity(Self::CHUNK),
            },
            Body::Stream(rx),
        )
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(Self::CHUNK),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl ChunkWriter {
    /// Sends a buffer made elsewhere as a chunk of its own, after what was written before.
    pub fn send_part(&mut self, part: Bytes) -> std::io::Result<()> {
        self.send()?;
        self.tx
            .blocking_send(part)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write to a client may make no progress (see [`ServeOptions::write_stall`]).
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// A connection whose writes fail with `TimedOut` once one has made no progress for `limit`;
/// reads pass through. hyper then closes the connection and drops the response body, which
/// stops its producer.
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits; reset by any progress.
    stalled_since: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled_since: None,
        }
    }

    /// Turns a pending write into an error once it has been pending for `limit`.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        match poll {
            Poll::Ready(r) => {
                self.stalled_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled_since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Sets up an accepted connection. Headers and a streamed body go out in separate writes:
/// without NODELAY, Nagle's algorithm holds the second one for the client's delayed ACK (40 ms
/// on Linux), which the scale benchmark shows as a scrape p99 40 ms above its p50.
fn prepare(stream: &tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// Accept errors, logged at most once a second with the count of those not logged.
#[derive(Debug, Default)]
struct AcceptErrors {
    last_logged: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn record(&mut self, e: &std::io::Error) {
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(error = %e, more_since_last_log = self.unlogged, "accept failed");
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}

/// Builds a response with a content type.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Body::Full(Full::new(body.into())))
        .expect("static response parts are valid")
}

/// Reads a request body of at most `max` bytes; `None` when it is larger or broken.
pub async fn read_body(body: Incoming, max: usize) -> Option<Bytes> {
    Limited::new(body, max)
        .collect()
        .await
        .ok()
        .map(http_body_util::Collected::to_bytes)
}

/// The address a request's connection came from, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// One accepted connection's serving: over TLS when configured, with the header and handshake
/// timeouts, watched for the graceful shutdown.
struct Connection {
    watcher: hyper_util::server::graceful::Watcher,
    idle_timeout: Duration,
    write_stall: Duration,
}

impl Connection {
    async fn serve<H, F>(self, stream: tokio::net::TcpStream, tls: Option<TlsServing>, handler: H)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = HttpResponse> + Send + 'static,
    {
        let peer = stream.peer_addr().ok().map(Peer);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            if let Some(peer) = peer {
                req.extensions_mut().insert(peer);
            }
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.idle_timeout);
        let Some(TlsServing { config, names }) = tls else {
            let stream = StallGuard::new(stream, self.write_stall);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = self.watcher.watch(conn).await;
            return;
        };
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            // Plain HTTP on the TLS port (an `http://` link to this server, say): one redirect
            // to the same address over https, then close.
            Ok(Ok(1..)) if first[0] != TLS_HANDSHAKE_RECORD => {
                builder.keep_alive(false);
                let local = stream.local_addr().ok().map(|a| a.ip());
                let redirect = hyper::service::service_fn(move |req| {
                    let ours = |host: &str| {
                        let ip = host.trim_start_matches('[').trim_end_matches(']');
                        local.is_some_and(|l| ip.parse() == Ok(l)) || names(host)
                    };
                    let response = redirect_to_https(&req, &ours);
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), redirect);
                let _ = self.watcher.watch(conn).await;
            }
            Ok(Ok(1..)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                // A failed or too slow handshake just closes the connection; rustls has
                // already sent the client its alert.
                if let Ok(Ok(stream)) =
                    tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
                {
                    let stream = StallGuard::new(stream, self.write_stall);
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = self.watcher.watch(conn).await;
                }
            }
            _ => {} // closed, broken or silent
        }
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to a plain HTTP request on a TLS port: 308 to the same host, path and query over
/// https (what the request asked for, on the scheme the server speaks), when the host is one
/// of the server's own (`ours`: the address connected to, or a name its certificate holds);
/// else 400, so that a forged `Host` never makes the server send a client elsewhere. Nothing of
/// the server's pages is sent in clear.
fn redirect_to_https<B>(req: &Request<B>, ours: &dyn Fn(&str) -> bool) -> HttpResponse {
    let location = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
        .filter(|a| !a.as_str().contains('@') && ours(a.host()))
        .and_then(|a| {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", hyper::http::uri::PathAndQuery::as_str);
            hyper::header::HeaderValue::from_str(&format!("https://{a}{path}")).ok()
        });
    match location {
        Some(location) => {
            let mut response = respond(
                StatusCode::PERMANENT_REDIRECT,
                "text/plain; charset=utf-8",
                "this server speaks HTTPS\n",
            );
            response
                .headers_mut()
                .insert(hyper::header::LOCATION, location);
            response
        }
        None => respond(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "this server speaks HTTPS\n",
        ),
    }
}

/// A server's TLS settings.
#[derive(Clone)]
pub struct TlsServing {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// Whether the server certificate in use names a host: plain HTTP on the TLS port is
    /// redirected only to such hosts (or to the address the client connected to).
    pub names: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for TlsServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServing")
    }
}

/// Where a server finds its TLS settings, asked at each accepted connection so that a reload
/// applies to the next one; `None` from it serves plain HTTP.
#[derive(Clone)]
pub struct TlsSource(pub Arc<dyn Fn() -> Option<TlsServing> + Send + Sync>);

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSource")
    }
}

/// How a server treats its connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long open connections may finish after shutdown.
    pub drain: Duration,
    /// Connections served at once; further clients wait in the listen backlog until one ends,
    /// so a flood of idle connections cannot use up the process's file descriptors.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (or finish its TLS
    /// handshake), and how long it may sit idle between requests (hyper's header-read timer
    /// also runs while a kept-alive connection waits): after it, the connection is closed.
    pub idle_timeout: Duration,
    /// TLS, when configured.
    pub tls: Option<TlsSource>,
    /// How long a write to the client may make no progress before the connection is closed:
    /// a client that stops reading cannot hold a connection slot, or the page it asked for,
    /// for ever.
    pub write_stall: Duration,
}

impl ServeOptions {
    /// The defaults: 256 connections, 10 s to send headers or stay idle, plain HTTP, and this
    /// drain time.
    pub fn new(drain: Duration) -> Self {
        ServeOptions {
            drain,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: HEADER_READ_TIMEOUT,
            tls: None,
            write_stall: WRITE_STALL,
        }
    }
}

/// Default of [`ServeOptions::max_connections`] (`server.max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Serves `handler` on `listener` until `shutdown` fires, then lets open connections finish for
/// at most `options.drain`.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let mut accept_errors = AcceptErrors::default();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving, and log at
                    // most once a second.
                    accept_errors.record(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        prepare(&stream);
        let tls = options.tls.as_ref().and_then(|source| (source.0)());
        let connection = Connection {
            watcher: graceful.watcher(),
            idle_timeout: options.idle_timeout,
            write_stall: options.write_stall,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            connection.serve(stream, tls, handler).await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown deadline; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_on_a_tls_port_is_sent_to_https_with_its_path() {
        let request = |host: Option<&str>, uri: &str| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header(hyper::header::HOST, h);
            }
            let ours = |h: &str| ["exporter", "[::1]", "::1"].contains(&h);
            redirect_to_https(&b.body(()).unwrap(), &ours)
        };
        let r = request(
            Some("exporter:39236"),
            "/tasks?instance_id=cdb-a&status=failed",
        );
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[hyper::header::LOCATION],
            "https://exporter:39236/tasks?instance_id=cdb-a&status=failed"
        );
        let r = request(Some("[::1]:9"), "/");
        assert_eq!(r.headers()[hyper::header::LOCATION], "https://[::1]:9/");
        for host in [
            None,
            Some("user@exporter:39236"),
            Some("a b"),
            Some(""),
            Some("evil.example.com"),
            Some("evil.example.com:39236"),
        ] {
            let r = request(host, "/metrics");
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{host:?}");
            assert!(r.headers().get(hyper::header::LOCATION).is_none());
        }
    }

    /// A client that asks for a large page and never reads it: after the stall limit the
    /// connection is closed, and the page's producer stops (the page is not pinned).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_is_dropped_and_releases_the_page() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let stopped_tx = Arc::new(std::sync::Mutex::new(stopped_tx));
        let handler = move |_req: Request<Incoming>| {
            let stopped = stopped_tx.clone();
            async move {
                let (mut w, body) = ChunkWriter::new();
                tokio::task::spawn_blocking(move || {
                    // 64 MiB, far more than any socket buffers.
                    let block = vec![b'x'; 64 * 1024];
                    let result =
                        (0..1024).try_for_each(|_| std::io::Write::write_all(&mut w, &block));
                    let _ = stopped.lock().unwrap().send(result);
                });
                hyper::Response::new(body)
            }
        };
        let shutdown = CancellationToken::new();
        let options = ServeOptions {
            write_stall: Duration::from_millis(300),
            ..ServeOptions::new(Duration::from_secs(1))
        };
        let server = tokio::spawn(serve(listener, handler, shutdown.clone(), options));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Never read. The producer must be stopped by a write error, well before the end.
        let result =
            tokio::task::spawn_blocking(move || stopped_rx.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .expect("the producer was never stopped: a slow reader pins the page");
        assert!(
            result.is_err(),
            "the whole page was written to a client that never read"
        );
        drop(client);
        shutdown.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_delayed_acks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap());
        prepare(&stream);
        assert!(stream.nodelay().unwrap());
    }
}
