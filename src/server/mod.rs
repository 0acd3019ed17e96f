//! `steno serve`: the network front end, on tokio and axum.
//!
//! ```text
//! GET  /health                    ready once the model is loaded (no key needed)
//! GET  /v1/models                 the loaded model
//! POST /v1/audio/transcriptions   OpenAI-compatible batch transcription (json, text, srt, vtt,
//!                                 verbose_json; stream=true → server-sent events)   http.rs
//! GET  /v1/stream                 WebSocket: config, audio frames, end → live events   ws.rs
//! GET  /v1/realtime?intent=transcription   WebSocket: OpenAI Realtime transcription  realtime.rs
//! GET  /  /app.js /worklet.js /style.css   the live web page (compiled in)         web/
//! tcp  --wyoming ADDR              Wyoming (Home Assistant): describe, transcribe,
//!                                  audio → transcript chunks and transcript       wyoming.rs
//! ```
//!
//! One [`Engine`] serves everything: its worker runs live window jobs before batch windows, so
//! an hour-long upload does not stall the streams (engine.rs). Each WebSocket is a
//! [`crate::StreamSession`] of its own; each upload is one engine job. Blocking work (audio
//! decoding, waiting on the engine, a stream's shutdown) runs on tokio's blocking pool, never
//! on the async workers. Limits ([`ServerConfig`]) bound streams, upload size and idle time;
//! every client mistake is answered for that request alone (protocol.rs names the field).

// Input path: whatever a user or the network feeds steno passes through here, so nothing
// may panic on it (tests are exempt: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod error;
mod http;
mod observe;
pub mod protocol;
pub mod realtime;
mod ws;
pub mod wyoming;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;

pub use self::error::ApiError;
use crate::engine::Update;
use crate::error::{Error, Result};
use crate::{Engine, StreamConfig};

/// Settings of the server (documented defaults in [`ServerConfig::default`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the HTTP server; `None`: no HTTP (Wyoming alone). Default: 127.0.0.1:8080
    /// (loopback only).
    pub listen: Option<SocketAddr>,
    /// Address of the Wyoming server (Home Assistant's protocol, wyoming.rs); `None`: off.
    /// Default: off.
    pub wyoming: Option<SocketAddr>,
    /// Live streams at once; one more is refused (HTTP 503 or WebSocket close 1013). Default: 16.
    pub max_streams: usize,
    /// Largest upload, in MiB (413 above it). Default: 100.
    pub max_upload_mb: usize,
    /// A WebSocket that sends nothing for this long is closed. Default: 30 s.
    pub idle_timeout_s: u64,
    /// When set, every endpoint but `/health` and the page's static files needs
    /// `Authorization: Bearer <key>` (WebSockets may pass `?api_key=<key>`). Default: none.
    pub api_key: Option<String>,
    /// Origins allowed by CORS (`*` for any); empty: CORS off. Default: empty.
    pub cors_origins: Vec<String>,
    /// The model's name in `/v1/models`. Default: `whisper`.
    pub model_name: String,
    /// Defaults of every WebSocket stream (a client's config overrides some of them).
    /// Default: [`StreamConfig::default`] with `context_s` 10 instead of 20: windows of up
    /// to 20 s instead of 30 s, about 1.7 times less compute per stream, so more streams fit
    /// one worker (the README's capacity rows are measured with 10 s; two 60 s runs of 8 int8
    /// streams on 2026-12-02 scattered too much to rank 10 s against 20 s: worst p95 end of
    /// speech → final 2.7 s and 2.4 s), for about 1.7 points of WER on LibriSpeech fed as one
    /// stream; a client asks for more with `context_s`.
    pub stream: StreamConfig,
    /// On shutdown (SIGTERM, Ctrl-C): how long open streams and uploads get to finish, in
    /// seconds. New work is refused (503) and `/health` says `shutting_down` meanwhile; each
    /// open stream is ended as if its client had sent `end`, so its last final is flushed.
    /// Default: 25 (inside Kubernetes' default 30 s termination grace).
    pub shutdown_grace_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            wyoming: None,
            max_streams: 16,
            max_upload_mb: 100,
            idle_timeout_s: 30,
            api_key: None,
            cors_origins: Vec::new(),
            model_name: "whisper".into(),
            stream: StreamConfig {
                context_s: 10.0,
                ..StreamConfig::default()
            },
            shutdown_grace_s: 25,
        }
    }
}

impl ServerConfig {
    /// Check every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.listen.is_none() && self.wyoming.is_none() {
            return Err(Error::config(
                "listen",
                "no HTTP address and no Wyoming address: nothing to serve",
            ));
        }
        if self.max_streams == 0 {
            return Err(Error::config("max_streams", "must be at least 1"));
        }
        if !(1..=4096).contains(&self.max_upload_mb) {
            return Err(Error::config("max_upload_mb", "must be in 1..=4096 MiB"));
        }
        if self.idle_timeout_s == 0 {
            return Err(Error::config("idle_timeout_s", "must be at least 1 second"));
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err(Error::config("api_key", "is empty"));
        }
        for origin in &self.cors_origins {
            if origin != "*" && HeaderValue::from_str(origin).is_err() {
                return Err(Error::config(
                    "cors_origins",
                    format!("`{origin}` is not a valid origin"),
                ));
            }
        }
        self.stream.validate()
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    config: ServerConfig,
    /// Set once the models are loaded (`/health` is 503 until then).
    workers: OnceLock<Workers>,
    streams: AtomicUsize,
    uploads: AtomicUsize,
    next_stream: std::sync::atomic::AtomicU64,
    /// `true` once shutdown began: streams flush and end, new work is refused.
    draining: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// Whether shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves when shutdown begins (at once if it has).
    pub(crate) fn drained(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.draining.subscribe();
        async move {
            let _ = rx.wait_for(|draining| *draining).await;
        }
    }

    /// The 503 for new work while shutting down.
    pub(crate) fn refuse_while_draining(&self) -> std::result::Result<(), ApiError> {
        if self.is_draining() {
            Err(ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ))
        } else {
            Ok(())
        }
    }

    fn workers(&self) -> std::result::Result<&Workers, ApiError> {
        self.workers.get().ok_or_else(|| {
            ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "model_loading",
                "the model is still loading; retry when /health answers 200",
            )
        })
    }

    /// An engine for what all engines share (the vocabulary, the options, log-mel).
    fn any_engine(&self) -> std::result::Result<Arc<Engine>, ApiError> {
        let workers = self.workers()?;
        workers
            .engines
            .first()
            .cloned()
            .ok_or_else(|| ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "no_engine", "no engine is loaded"))
    }

    /// Queue an upload for the first free engine; its updates arrive on the returned channel.
    fn enqueue_upload(
        &self,
        mel: crate::features::Mel,
        options: crate::TranscribeOptions,
    ) -> std::result::Result<crossbeam_channel::Receiver<Update>, ApiError> {
        let (updates, rx) = crossbeam_channel::unbounded();
        self.workers()?
            .uploads
            .send(UploadJob { mel, options, updates })
            .map_err(|_| {
                ApiError::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the server is stopping",
                )
            })?;
        Ok(rx)
    }

    /// The engine serving the fewest streams, and a slot on it (held for the stream's life).
    fn engine(self: &Arc<Self>) -> std::result::Result<(Arc<Engine>, Slot), ApiError> {
        self.refuse_while_draining()?;
        let workers = self.workers()?;
        // busy[i] counts engines[i]'s streams: the two lists are made together, one per engine.
        let (index, engine) = workers
            .engines
            .iter()
            .zip(&workers.busy)
            .enumerate()
            .min_by_key(|(_, (_, busy))| busy.load(Ordering::Acquire))
            .map(|(i, (engine, busy))| {
                busy.fetch_add(1, Ordering::AcqRel);
                (i, engine.clone())
            })
            .ok_or_else(|| ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "no_engine", "no engine is loaded"))?;
        let slot = Slot {
            state: self.clone(),
            counter: Counter::Worker(index),
        };
        Ok((engine, slot))
    }

    /// Take a stream slot, or `None` at `max_streams`.
    fn try_stream_slot(self: &Arc<Self>) -> Option<Slot> {
        let taken = self
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.max_streams).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot {
            state: self.clone(),
            counter: Counter::Streams,
        })
    }

    /// With no stream and no upload left, hand the heap's free memory back to the OS
    /// ([`crate::memory`]: glibc keeps what per-stream threads freed in their arenas).
    pub(crate) fn trim_if_idle(&self) {
        if self.streams.load(Ordering::Acquire) == 0 && self.uploads.load(Ordering::Acquire) == 0 {
            crate::memory::release_free_heap();
        }
    }

    fn upload_slot(self: &Arc<Self>) -> Slot {
        self.uploads.fetch_add(1, Ordering::AcqRel);
        Slot {
            state: self.clone(),
            counter: Counter::Uploads,
        }
    }
}

enum Counter {
    Streams,
    Uploads,
    /// Streams and uploads on one engine.
    Worker(usize),
}

/// The engines (one by default), how many streams each serves, and the uploads' queue.
struct Workers {
    engines: Vec<Arc<Engine>>,
    busy: Vec<AtomicUsize>,
    /// Uploads wait here; each engine's feeder takes the next when its engine is free, so a
    /// long file never holds back uploads another engine could take (`transcribe -j`'s way).
    uploads: crossbeam_channel::Sender<UploadJob>,
}

impl Workers {
    /// Serve with `engines`: one upload feeder thread each.
    fn start(engines: Vec<Engine>) -> Result<Workers> {
        if engines.is_empty() {
            return Err(Error::Worker("no engine to serve with".into()));
        }
        let busy = engines.iter().map(|_| AtomicUsize::new(0)).collect();
        let engines: Vec<Arc<Engine>> = engines.into_iter().map(Arc::new).collect();
        let (uploads, queue) = crossbeam_channel::unbounded::<UploadJob>();
        for (i, engine) in engines.iter().enumerate() {
            let (engine, queue) = (engine.clone(), queue.clone());
            std::thread::Builder::new()
                .name(format!("steno-uploads-{i}"))
                .spawn(move || feed_uploads(&engine, &queue))
                .map_err(|e| Error::Worker(format!("cannot start an upload feeder: {e}")))?;
        }
        Ok(Workers { engines, busy, uploads })
    }
}

/// An upload's log-mel and options, and where its engine updates go.
pub(crate) struct UploadJob {
    mel: crate::features::Mel,
    options: crate::TranscribeOptions,
    updates: crossbeam_channel::Sender<Update>,
}

/// One engine's feeder: uploads one at a time, their updates passed on. An upload whose client
/// left while it waited is skipped.
fn feed_uploads(engine: &Engine, queue: &crossbeam_channel::Receiver<UploadJob>) {
    for job in queue {
        // "Nothing done yet" is true, and a send is crossbeam's only test that the receiver
        // (the request) is still there.
        if job.updates.send(Update::Progress(0.0)).is_err() {
            continue;
        }
        match engine.submit_with(job.mel, job.options) {
            Ok(rx) => {
                for update in rx {
                    let done = matches!(update, Update::Done(_));
                    let _ = job.updates.send(update);
                    if done {
                        break;
                    }
                }
            }
            Err(e) => {
                let _ = job.updates.send(Update::Done(Err(e)));
            }
        }
    }
}

/// A counted stream or upload; dropping it gives the count back, however the request ended.
pub(crate) struct Slot {
    state: Arc<AppState>,
    counter: Counter,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = match self.counter {
            Counter::Streams => &self.state.streams,
            Counter::Uploads => &self.state.uploads,
            Counter::Worker(i) => match self.state.workers.get().and_then(|w| w.busy.get(i)) {
                Some(counter) => counter,
                None => return,
            },
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A bound server, not yet serving.
pub struct Server {
    /// HTTP, unless `listen` is `None`.
    listener: Option<tokio::net::TcpListener>,
    /// Wyoming, when `wyoming` is set.
    wyoming: Option<tokio::net::TcpListener>,
    state: Arc<AppState>,
}

async fn bind_tcp(addr: Option<SocketAddr>, field: &'static str) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    tokio::net::TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| Error::config(field, format!("cannot listen on {addr}: {e}")))
}

impl Server {
    /// Check the config and bind its address (port 0 picks a free one; see
    /// [`Server::local_addr`]). Must be called inside a tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<Server> {
        config.validate()?;
        let listener = bind_tcp(config.listen, "listen").await?;
        let wyoming = bind_tcp(config.wyoming, "wyoming").await?;
        let state = Arc::new(AppState {
            config,
            workers: OnceLock::new(),
            streams: AtomicUsize::new(0),
            uploads: AtomicUsize::new(0),
            next_stream: std::sync::atomic::AtomicU64::new(1),
            draining: tokio::sync::watch::channel(false).0,
        });
        Ok(Server {
            listener,
            wyoming,
            state,
        })
    }

    /// The HTTP address actually bound (`None` without HTTP).
    pub fn local_addr(&self) -> Result<Option<SocketAddr>> {
        self.listener
            .as_ref()
            .map(|l| l.local_addr().map_err(|e| Error::config("listen", e.to_string())))
            .transpose()
    }

    /// The Wyoming address actually bound (`None` without Wyoming).
    pub fn wyoming_addr(&self) -> Result<Option<SocketAddr>> {
        self.wyoming
            .as_ref()
            .map(|l| l.local_addr().map_err(|e| Error::config("wyoming", e.to_string())))
            .transpose()
    }

    /// Load the engines with `load` (on a blocking thread, while `/health` answers 503), then
    /// serve until `shutdown` resolves. Each stream and upload goes to the least busy engine;
    /// one engine is the default (the weights loaded once), more trade memory for upload
    /// throughput. A model that fails to load ends the server with its error.
    pub async fn run(
        self,
        load: impl FnOnce() -> Result<Vec<Engine>> + Send + 'static,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let app = router(self.state.clone());
        let state = self.state.clone();
        let loading = tokio::task::spawn_blocking(move || -> Result<()> {
            let workers = Workers::start(load()?)?;
            let _ = state.workers.set(workers);
            Ok(())
        });
        let load_error: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
        let seen = load_error.clone();
        // The Wyoming listener stops when `stop` ends (its sender dropped), as HTTP does.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let wyoming = self
            .wyoming
            .map(|listener| tokio::spawn(wyoming::serve(listener, self.state.clone(), stop_rx)));
        let drain = self.state.clone();
        let grace = Duration::from_secs(self.state.config.shutdown_grace_s);
        let stop = async move {
            let _stop_tx = stop_tx;
            tokio::pin!(shutdown);
            let failed = tokio::select! {
                () = &mut shutdown => {
                    drain_streams(&drain, grace).await;
                    return;
                }
                loaded = loading => match loaded {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(e) => Some(Error::Worker(format!("loading the model failed: {e}"))),
                },
            };
            match failed {
                Some(e) => *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e),
                None => {
                    tracing::info!("model loaded; ready");
                    shutdown.await;
                    drain_streams(&drain, grace).await;
                }
            }
        };
        // Once the grace period is over, whatever is still open is dropped: axum's own graceful
        // shutdown would wait for every in-flight request without a limit.
        let deadline = {
            let state = self.state.clone();
            async move {
                state.drained().await;
                tokio::time::sleep(grace + Duration::from_secs(1)).await;
            }
        };
        match self.listener {
            Some(listener) => {
                let serve = axum::serve(listener, app).with_graceful_shutdown(stop);
                tokio::select! {
                    served = serve => served.map_err(|e| Error::Worker(format!("server failed: {e}")))?,
                    () = deadline => tracing::warn!("shutdown grace period over; dropping what is still open"),
                }
            }
            None => stop.await,
        }
        if let Some(wyoming) = wyoming {
            let _ = wyoming.await;
        }
        let failed = load_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        failed.map_or(Ok(()), Err)
    }
}

/// All routes, with authentication, CORS and the upload limit.
/// Shutdown, first part: refuse new work, end every open stream as if its client had sent
/// `end` (each flushes its last final and closes), and wait for the streams and uploads to
/// finish or for `grace` to pass.
async fn drain_streams(state: &AppState, grace: Duration) {
    state.draining.send_replace(true);
    let open = || state.streams.load(Ordering::Acquire) + state.uploads.load(Ordering::Acquire);
    tracing::info!(open = open(), grace_s = grace.as_secs(), "shutting down: draining");
    let deadline = tokio::time::Instant::now() + grace;
    while open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(left_open = open(), "drained");
}

fn router(state: Arc<AppState>) -> Router {
    let upload_limit = state.config.max_upload_mb * 1024 * 1024;
    let api = Router::new()
        .route("/v1/models", get(http::models))
        .route(
            "/v1/audio/transcriptions",
            // Room for the multipart framing and the other fields around the file.
            post(http::transcriptions).layer(DefaultBodyLimit::max(upload_limit + 64 * 1024)),
        )
        .route("/v1/stream", get(ws::stream))
        .route("/v1/realtime", get(realtime::realtime))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    let mut app = Router::new()
        .route("/health", get(http::health))
        .route("/metrics", get(observe::metrics))
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", include_str!("web/index.html")) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", include_str!("web/app.js")) }),
        )
        .route(
            "/worklet.js",
            get(|| async { page("text/javascript; charset=utf-8", include_str!("web/worklet.js")) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", include_str!("web/style.css")) }),
        )
        .merge(api)
        .fallback(|| async { ApiError::status(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state.clone());
    if let Some(cors) = cors_layer(&state.config.cors_origins) {
        app = app.layer(cors);
    }
    app.layer(middleware::from_fn(observe::request_id))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any)
            .max_age(Duration::from_secs(600)),
    )
}

/// `Authorization: Bearer <key>` (or, for the WebSocket, `?api_key=<key>`), compared in
/// constant time; 401 in OpenAI's shape otherwise.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(expected) = state.config.api_key.as_deref() else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query_key = request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "api_key")
            .map(|(_, v)| v)
    });
    let matches = |given: &str| bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
    if bearer.is_some_and(matches) || query_key.is_some_and(matches) {
        return next.run(request).await;
    }
    ApiError::status(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "missing or wrong API key: send `Authorization: Bearer <key>`",
    )
    .into_response()
}
