//! Decoding: everything between the decoder's logits and timed text, as pure logic over a
//! [`search::TokenScorer`] so it is tested with scripted logits and real Whisper token ids.
//!
//! - [`rules`]: Whisper's logit filters (suppression, timestamp rules);
//! - [`search`]: greedy, sampling and beam search, the token budget and repetition guard;
//! - [`quality`]: compression ratio, the temperature-fallback and no-speech gates;
//! - [`segments`]: timestamp tokens → segments and the seek step;
//! - [`attention`]: the most-attended audio frame per token (AlignAtt's signal);
//! - [`timing`]: word-level timestamps from cross-attention (DTW) and their segment bookkeeping.

pub mod attention;
pub mod quality;
pub mod rules;
pub mod search;
pub mod segments;
pub mod timing;
