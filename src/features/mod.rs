//! Front end: 16 kHz mono samples in, Whisper's log-Mel spectrogram out.
//!
//! [`LogMel`] reproduces `log_mel_spectrogram` from openai/whisper `whisper/audio.py`
//! (release 20250625) up to the log step; normalisation ([`Mel::normalize_whisper`], or
//! [`normalize_whisper`] on any slice) is separate because batch decoding normalises over a
//! whole file and streaming over one window. See [`mel`] for the numeric details.
//! [`MelStream`] computes the same frames incrementally; [`MelSource`] is what a batch job
//! reads windows from: a whole [`Mel`], or a [`MelFile`] read in bounded memory.

// Input path: whatever a user or the network feeds steno passes through here, so nothing
// may panic on it (tests are exempt: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod mel;
pub mod source;
pub mod stream;

pub use mel::{HOP_LENGTH, LOG10_FLOOR, LogMel, Mel, N_FFT, N_FREQS, normalize_whisper};
pub use source::{MelFile, MelSource};
pub use stream::MelStream;

/// Errors from building the front end.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("unsupported mel bin count {0}: Whisper models use 80 or 128")]
    UnsupportedMelCount(usize),
}
