//! `steno serve`: flags → [`ServerConfig`] (validated once), a tokio runtime, and the library's
//! [`Server`]; the model loads while the socket already answers `/health` with 503.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use steno::server::{Server, ServerConfig};
use steno::stream::{VadConfig, VadKind};
use steno::{Engine, StreamConfig};

use super::{DecodeArgs, ModelArgs, engine_config};

/// Options of the server (defaults: `ServerConfig::default()` and `StreamConfig::default()`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP address; loopback by default (0.0.0.0:8080 serves every interface); `none`: no
    /// HTTP (Wyoming alone).
    #[arg(long, default_value_t = Listen(ServerConfig::default().listen))]
    listen: Listen,
    /// Also serve Wyoming (Home Assistant's voice protocol) on this address, e.g.
    /// 0.0.0.0:10300; off by default.
    #[arg(long)]
    wyoming: Option<SocketAddr>,
    /// Live streams at once; one more is refused (HTTP 503 or WebSocket close 1013).
    #[arg(long, default_value_t = ServerConfig::default().max_streams)]
    max_streams: usize,
    /// Largest upload in MiB (413 above it).
    #[arg(long, default_value_t = ServerConfig::default().max_upload_mb)]
    max_upload_mb: usize,
    /// Close a WebSocket that sends nothing (or reads nothing) for this many seconds.
    #[arg(long, default_value_t = ServerConfig::default().idle_timeout_s)]
    idle_timeout_s: u64,
    /// On SIGTERM or Ctrl-C: seconds open streams and uploads get to finish (each stream's
    /// last final is flushed) while new work is refused and /health says shutting_down.
    #[arg(long, default_value_t = ServerConfig::default().shutdown_grace_s)]
    shutdown_grace_s: u64,
    /// Require `Authorization: Bearer <key>` on every endpoint but /health and the page.
    #[arg(long, env = "STENO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow cross-origin requests from this origin (repeat it; `*` for any). Off by default.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Model copies (each with its own inference thread; the session threads are split between
    /// them); streams and uploads go to the least busy. One loads the weights once; two serve
    /// parallel uploads faster on 2 cores, at twice the model memory.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Turn ONNX Runtime's memory arena off: an idle server's memory returns near its
    /// fresh size (8 streams, then idle: 251 MiB instead of 551), for slower window jobs
    /// (8 streams: end-of-speech → final p95 1.12 s instead of 0.77 s).
    #[arg(long)]
    no_memory_arena: bool,
    /// Voice activity detector of live streams: silero or energy.
    #[arg(long, default_value_t = VadConfig::default().kind.to_string())]
    vad: String,
    /// Live streams re-decode the utterance every this many ms (a client's config may change it).
    #[arg(long, default_value_t = StreamConfig::default().hop_ms)]
    hop_ms: u32,
    /// Live streams decode earlier utterances of this many seconds again as context (a
    /// client's config may change it; more is more accurate and costs more per stream).
    #[arg(long, default_value_t = ServerConfig::default().stream.context_s)]
    context_s: f32,
    #[command(flatten)]
    decode: DecodeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

impl ServeArgs {
    fn config(&self) -> Result<ServerConfig> {
        let language = (self.decode.language != "auto").then(|| self.decode.language.clone());
        let config = ServerConfig {
            listen: self.listen.0,
            wyoming: self.wyoming,
            max_streams: self.max_streams,
            max_upload_mb: self.max_upload_mb,
            idle_timeout_s: self.idle_timeout_s,
            shutdown_grace_s: self.shutdown_grace_s,
            api_key: self.api_key.clone(),
            cors_origins: self.cors_origins.clone(),
            model_name: self.model.model.clone(),
            stream: StreamConfig {
                vad: VadConfig {
                    kind: self.vad.parse::<VadKind>()?,
                    ..VadConfig::default()
                },
                hop_ms: self.hop_ms,
                context_s: self.context_s,
                language,
                ..ServerConfig::default().stream
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// `--listen`: an address, or `none`.
#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> std::result::Result<Listen, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(Listen(None));
        }
        s.parse().map(|addr| Listen(Some(addr)))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("none"),
        }
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = args.config()?;
    if args.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let mut engine = engine_config(&args.model, &args.decode)?;
    engine.runtime.threads = (engine.runtime.effective_threads() / args.workers).max(1);
    engine.runtime.memory_arena = !args.no_memory_arena;
    let workers = args.workers;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("steno-server")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        if let Some(addr) = server.wyoming_addr()? {
            eprintln!("steno serve: wyoming on tcp://{addr}");
        }
        // Scripts and tests wait for this line (the port, when --listen asked for port 0).
        if let Some(addr) = server.local_addr()? {
            eprintln!("steno serve: listening on http://{addr}");
        }
        let load = move || (0..workers).map(|_| Engine::start(engine.clone())).collect();
        server.run(load, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM: stop accepting and let open requests finish.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    eprintln!("steno serve: shutting down");
}
