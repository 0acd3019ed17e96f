//! The command line: clap arguments (low level) converted once into the library's validated
//! configs (high level). Nothing from clap reaches the library.

mod bench;
mod eval;
mod live;
#[cfg(feature = "server")]
mod serve;
mod transcribe;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use steno::decode::quality::QualityThresholds;
use steno::decode::rules::FilterOptions;
use steno::decode::search::DecodeStrategy;
use steno::runtime::default_models_dir;
use steno::{Device, EngineConfig, ModelConfig, ModelVariant, RuntimeConfig, Task, TranscribeOptions};

/// Speech to text with Whisper models on ONNX Runtime.
#[derive(Debug, Parser)]
#[command(name = "steno", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output on stderr (-v info, -vv debug); STENO_LOG=<filter> overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log lines as plain text, or as one JSON object per line (fields and the current spans,
    /// e.g. a server request's `request_id`), for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Transcribe audio files (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A).
    Transcribe(transcribe::TranscribeArgs),
    /// Measure word error rate and speed on a folder of audio with refs.tsv.
    Eval(eval::EvalArgs),
    /// Live transcription of a file or stdin: partial and final transcripts as they happen.
    Stream(live::StreamArgs),
    /// Live transcription of the microphone (Ctrl-C ends it after the last words).
    Listen(live::ListenArgs),
    /// Benchmark the live engine on a folder fed as one stream (WER, latencies, CPU, memory; JSON).
    StreamBench(bench::BenchArgs),
    /// Serve transcription over HTTP (OpenAI-compatible), WebSocket streaming and a live web page.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

/// Which model and where it runs.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model name provisioned under the models folder (tiny.en, base) or a folder holding a
    /// Whisper ONNX export (steno's or sherpa-onnx's layout).
    #[arg(long, default_value = "tiny.en")]
    model: String,
    /// Weights to load: fp32, or int8 (int8 weights in blocks of 32, int8 dot products).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "int8"])]
    model_variant: String,
    /// Execution provider: cpu, cuda (error if unavailable) or auto (CUDA when it loads).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "auto"])]
    device: String,
    /// Threads per ONNX Runtime session (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Path to libonnxruntime.so (default: ORT_DYLIB_PATH, then models/runtime/).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// Folder of provisioned models (default: STENO_MODELS_DIR, then the source tree's models/).
    #[arg(long)]
    models_dir: Option<PathBuf>,
}

/// How to decode.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Spoken language (en, de, …), or auto to detect it (multilingual models).
    #[arg(long, default_value = "auto")]
    language: String,
    /// transcribe, or translate to English (multilingual models).
    #[arg(long, default_value = "transcribe", value_parser = ["transcribe", "translate"])]
    task: String,
    /// Beam width at temperature 0; 1 = greedy.
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Candidates sampled at temperatures above 0.
    #[arg(long, default_value_t = 5)]
    best_of: usize,
    /// Beam search patience (finished candidates = beam size × patience).
    #[arg(long, default_value_t = 1.0)]
    patience: f32,
    /// Temperature fallback ladder, comma-separated.
    #[arg(long, default_value = "0,0.2,0.4,0.6,0.8,1.0", value_delimiter = ',')]
    temperature: Vec<f64>,
    /// Do not prompt each window with the text before it.
    #[arg(long)]
    no_context: bool,
    /// Retry at a higher temperature when the text compresses better than this (0 = off).
    #[arg(long, default_value_t = 2.4)]
    compression_ratio_threshold: f32,
    /// Retry at a higher temperature when the average log-probability is below this (0 = off).
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    logprob_threshold: f32,
    /// Treat a window as silence when P(no speech) is above this and confidence is low (0 = off).
    #[arg(long, default_value_t = 0.6)]
    no_speech_threshold: f32,
    /// Skip windows whose speech-band (200–4000 Hz) power never reaches this, log10 units
    /// (−3 ≈ −55 dBFS noise; 0 = off).
    #[arg(long, default_value_t = -3.0, allow_negative_numbers = true)]
    silence_threshold: f32,
    /// Word-level timestamps (cross-attention alignment + DTW), as `words` of each segment in
    /// --format json.
    #[arg(long)]
    word_timestamps: bool,
    /// Seconds of padding after a window's audio (dynamic-length encoders).
    #[arg(long, default_value_t = 5.0)]
    pad_seconds: f32,
    /// Shortest encoder window in seconds (dynamic-length encoders): short clips are padded up to it.
    #[arg(long, default_value_t = 10.0)]
    min_window_seconds: f32,
}

fn nonzero(x: f32) -> Option<f32> {
    (x != 0.0).then_some(x)
}

impl ModelArgs {
    fn runtime(&self) -> Result<RuntimeConfig> {
        let models_dir = self.models_dir.clone().unwrap_or_else(default_models_dir);
        let config = RuntimeConfig {
            device: self.device.parse::<Device>()?,
            threads: self.threads,
            library: self.ort_library.clone(),
            models_dir,
            ..RuntimeConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    fn model(&self, runtime: &RuntimeConfig) -> Result<ModelConfig> {
        let variant: ModelVariant = self.model_variant.parse()?;
        Ok(ModelConfig::resolve(&self.model, &runtime.models_dir, variant))
    }
}

impl DecodeArgs {
    fn options(&self) -> Result<TranscribeOptions> {
        let strategy = if self.beam_size > 1 {
            DecodeStrategy::Beam {
                beam_size: self.beam_size,
                patience: self.patience,
                best_of: self.best_of,
            }
        } else {
            DecodeStrategy::Greedy { best_of: self.best_of }
        };
        let options = TranscribeOptions {
            task: self.task.parse::<Task>()?,
            language: (self.language != "auto").then(|| self.language.clone()),
            strategy,
            temperatures: self.temperature.clone(),
            thresholds: QualityThresholds {
                compression_ratio: nonzero(self.compression_ratio_threshold),
                logprob: nonzero(self.logprob_threshold),
                no_speech: nonzero(self.no_speech_threshold),
                silence_log10_power: nonzero(self.silence_threshold),
            },
            condition_on_previous_text: !self.no_context,
            filters: FilterOptions::default(),
            pad_s: self.pad_seconds,
            min_window_s: self.min_window_seconds,
            word_timestamps: self.word_timestamps,
            ..TranscribeOptions::default()
        };
        options.validate()?;
        Ok(options)
    }
}

/// Build the engine config from the two argument groups.
fn engine_config(model: &ModelArgs, decode: &DecodeArgs) -> Result<EngineConfig> {
    let runtime = model.runtime()?;
    Ok(EngineConfig {
        model: model.model(&runtime)?,
        options: decode.options()?,
        runtime,
    })
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        // Only steno's own events: decoders' internal logs (symphonia's probe) would add lines
        // to a one-line error.
        0 => "steno=warn",
        1 => "steno=info",
        _ => "steno=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STENO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_span_events(if verbose >= 2 {
            tracing_subscriber::fmt::format::FmtSpan::CLOSE
        } else {
            tracing_subscriber::fmt::format::FmtSpan::NONE
        });
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // One object per line: the event's fields, its span and the spans around it.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

/// Parse the command line and run it.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    match cli.command {
        Command::Transcribe(args) => transcribe::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Stream(args) => live::run_stream(args),
        Command::Listen(args) => live::run_listen(args),
        Command::StreamBench(args) => bench::run(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(args),
    }
}
