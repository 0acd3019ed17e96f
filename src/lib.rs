//! # steno: speech to text with Whisper models on ONNX Runtime
//!
//! ```text
//! file (WAV/FLAC/MP3/Ogg/M4A) ─ audio::read_audio ─▶ 16 kHz mono f32
//!   ─ features::LogMel ─▶ log-mel [n_mels × frames], normalised per clip
//!   ─ Engine (worker thread owning the ORT sessions)
//!        ├─ model::Encoder: mel window ─▶ cross-attention K/V of every decoder layer
//!        ├─ decode::search: greedy / beam over model::Decoder (self-attention KV cache),
//!        │    decode::rules (Whisper's logit filters), decode::quality (fallback gates)
//!        └─ transcribe: Whisper's seek loop ─▶ Transcript { segments with times }
//!   ─ output: txt / json / srt / vtt / tsv
//!
//! live (stream::StreamSession; microphone through stream::capture, files, the network):
//! samples pushed in chunks ─ rubato → Silero VAD → features::MelStream (frames once, raw)
//!   ─ window jobs (the same decode_window) on the Engine's worker, before batch work
//!   ─ commit policy (AlignAtt / LocalAgreement-2) ─▶ Partial / Final / Stats events
//!
//! network (server, feature `server`): axum on tokio
//!   POST /v1/audio/transcriptions (OpenAI) ─ the Engine's batch jobs ─▶ json/srt/vtt/SSE
//!   WebSocket /v1/stream ─ one StreamSession per connection ─▶ the events as JSON
//!   WebSocket /v1/realtime?intent=transcription (OpenAI Realtime) ─ a StreamSession's turns ─▶ items
//!   TCP --wyoming (Home Assistant) ─ one StreamSession per request ─▶ transcript chunks, transcript
//! ```
//!
//! The library is the product: the `steno` binary only turns command-line flags into an
//! [`EngineConfig`] and prints what [`Engine`] returns. Weights ([`model::WhisperModel`], owned by
//! the worker) are apart from per-clip state (caches, mel, transcript), so the live streaming
//! engine and the server can share the same pieces.

pub mod audio;
pub mod decode;
pub mod engine;
pub mod error;
pub mod eval;
pub mod features;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod output;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;
pub mod stream;
pub mod tokenizer;
pub mod transcribe;

pub use engine::{Engine, EngineConfig, FileEvent, ModelConfig};
pub use error::{Error, Result};
pub use model::ModelVariant;
pub use runtime::{Device, RuntimeConfig};
pub use stream::{StreamConfig, StreamEvent, StreamSession};
pub use transcribe::{Segment, Task, TranscribeOptions, Transcript};
