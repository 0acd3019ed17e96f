//! Live streaming: audio pushed in as it arrives, partial and final transcripts out.
//!
//! ```text
//! microphone (capture, feature `mic`) / file / network ─ StreamSession::push ─▶
//!   session: resampler → vad → features::MelStream → commit policy ─ window jobs ─▶ Engine worker
//!   ◀─ TimedEvent { Partial | Final | Stats | Warning | Error } ─┘
//! ```
//!
//! - [`config`]: [`StreamConfig`], validated once;
//! - [`session`]: [`StreamSession`], the per-stream coordinator thread and its state;
//! - [`commit`]: the commit policies (AlignAtt, LocalAgreement-2);
//! - [`vad`]: Silero VAD and the energy detector, and the speech segmenter;
//! - [`window`]: the window jobs the worker runs (batch and live share its decoder);
//! - `capture`: the microphone through cpal.

// Input path: whatever a user or the network feeds steno passes through here, so nothing
// may panic on it (tests are exempt: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[cfg(feature = "mic")]
pub mod capture;
pub mod commit;
pub mod config;
pub mod session;
pub mod vad;
pub mod window;

pub use commit::PolicyKind;
pub use config::{Pacing, StreamConfig};
pub use session::{AudioSender, EndReason, StreamEvent, StreamSession, StreamStats, TimedEvent};
pub use vad::{VadConfig, VadKind};
