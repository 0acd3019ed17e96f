//! Settings of a live stream, validated once ([`StreamConfig::validate`]); every default is in
//! [`StreamConfig::default`] (and [`VadConfig::default`]), which the CLI reads.

use super::commit::PolicyKind;
use super::vad::VadConfig;
use crate::decode::rules::FilterOptions;
use crate::decode::search::DecodeStrategy;
use crate::error::{Error, Result};
use crate::transcribe::TranscribeOptions;

/// How input is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    /// Real-time input (a microphone): pushing never blocks; samples that find the input
    /// queue full are dropped, counted and reported.
    #[default]
    Live,
    /// A file as fast as possible: pushing blocks, each decode is waited for at a position set
    /// by the audio, so the same input always gives the same events.
    Lockstep,
}

/// Settings of a live stream (documented defaults in [`StreamConfig::default`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamConfig {
    pub vad: VadConfig,
    /// Commit policy. Default: auto (AlignAtt with `cross_qk`, else LocalAgreement-2).
    pub commit_policy: PolicyKind,
    /// Re-decode the utterance every this many ms of new audio (a floor: a busy worker
    /// stretches it). Default: 500.
    pub hop_ms: u32,
    /// Live pacing: the largest share of wall time partials may keep the worker busy. After a
    /// window job (partial or final) that took `d` ms to encode and decode, the stream's next
    /// partial waits at least `d × (1 / x − 1)` ms (the hop stretches), where `x` is this share
    /// divided among the engine's live streams in an utterance now (one stream: all of it;
    /// eight speaking at once: an eighth each), so that many streams leave the worker room for
    /// their finals. Finals, and the partial that prepares one when a pause begins, never
    /// wait. 1: no limit. Lockstep pacing ignores it (its output depends on the audio alone). Default: 0.5, so that one thread keeps a stream within half a core
    /// (with 20 s of context a window takes about 350 ms on one thread against 195 ms on two,
    /// where the 500 ms hop rarely waits for it). Measured 2026-12-02 (LibriSpeech as one stream
    /// in real time, fp32, `--threads 1`): 0.74 cores without a limit, committed-word lag p50 /
    /// p95 1.28 / 2.23 s; with 0.5: 0.42 cores, partials every 668 ms (p50), lag 1.22 / 2.34 s,
    /// endpoint → final 89 / 338 ms, WER 11.44 %; with 0.45: 0.39 cores, lag 1.30 / 2.40 s,
    /// WER 11.12 %. On 2 threads 0.5 left the lag as it was without a limit (0.93 s p50).
    pub max_duty_cycle: f32,
    /// AlignAtt: tokens attended within this many ms of the audio's end are not committed.
    /// Default: 500 (SimulStreaming's 25 frames).
    pub frame_threshold_ms: u32,
    /// AlignAtt: an attention jump back by more than this discards an update. Default: 4000.
    pub rewind_threshold_ms: u32,
    /// AlignAtt: commit a word only once two consecutive decodes agree on it as well
    /// (LocalAgreement-2 on top). Measured on LibriSpeech fed as one stream: 12.6 % WER
    /// against 13.4 % without, for about 0.06 s more commit lag. Default: true.
    pub alignatt_agreement: bool,
    /// An utterance longer than this is ended at its last commit boundary. Default: 20 s
    /// (at most 30, Whisper's window).
    pub max_utterance_s: f32,
    /// Tokens of earlier utterances' final text given as the prompt. Default: 64.
    pub prompt_max_tokens: usize,
    /// Earlier utterances that started within this many seconds lead each window as audio,
    /// with their final text as a forced prefix, so the decoder hears a pause-split sentence
    /// whole and windows come near Whisper's 30 s (0: off). Default: 20. Measured 2026-12-02
    /// with `steno stream-bench` (tiny.en, 2 cores, lockstep unless said):
    /// - WER of the finals, LibriSpeech as one stream, fp32: 11.31 % with 20 s (also in real
    ///   time), 12.98 % with 10 s, 14.72 % with 0 (batch greedy on the same audio: 11.12 %);
    ///   int8: 10.86 % with 20 s, 12.60 % with 10 s (batch 10.73 %). Long-form: fp32 12.75 %
    ///   with 20 s, 15.63 % with 10 s (batch 12.75 %); int8 13.05 % with 20 s (batch 12.59 %).
    ///   Earlier runs: 12.72 % with 15 s, 13.62 % with 20 s but windows capped at 20 s.
    /// - The price: windows of up to 30 s every hop, 1.6 to 1.75 times the CPU per audio
    ///   second of 10 s. In real time with 2 threads (fp32, the defaults): 0.54 cores,
    ///   committed-word lag p50 / p95 0.93 / 1.69 s, endpoint → final 35 / 54 ms, WER 11.12 %;
    ///   with 10 s (2026-12-01): 0.88 / 1.67 s and 15 / 37 ms. With `--threads 1`: 0.74 cores
    ///   without a duty-cycle limit (10 s: 0.41), 0.42 with the default `max_duty_cycle`.
    ///   The server keeps 10 s for its many streams (`ServerConfig`'s default).
    pub context_s: f32,
    /// Verify the previous hypothesis in one decoder call instead of re-decoding it token by
    /// token (same output, fewer calls). Default: true.
    pub verify_draft: bool,
    /// Seconds of padding after a window's audio (dynamic-length encoders): Whisper expects
    /// speech to be followed by more audio, and a window that ends at the last word tends to
    /// lose it. Default: 5.
    pub window_pad_s: f32,
    /// Shortest encoder window (dynamic-length encoders), seconds. Default: 10.
    pub min_window_s: f32,
    /// Language code for multilingual models (`None`: detected per window; English-only
    /// models take only `en`). Default: none.
    pub language: Option<String>,
    pub pacing: Pacing,
    /// Input chunks the queue holds before live input is dropped. Default: 512.
    pub input_queue: usize,
    /// Events the caller may leave unread before the stream waits. Default: 1024.
    pub event_queue: usize,
    /// A `Stats` event every this many seconds of audio (and at the end). Default: 10.
    pub stats_interval_s: f64,
    /// Turn events (OpenAI Realtime's turns): `SpeechStarted` when an utterance opens (its id
    /// given then), `SpeechStopped` when its end is decided, and a `Final` for every utterance,
    /// with empty text when nothing was heard. Default: false.
    pub turn_events: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            vad: VadConfig::default(),
            commit_policy: PolicyKind::Auto,
            hop_ms: 500,
            max_duty_cycle: 0.5,
            frame_threshold_ms: 500,
            rewind_threshold_ms: 4000,
            alignatt_agreement: true,
            max_utterance_s: 20.0,
            prompt_max_tokens: 64,
            context_s: 20.0,
            verify_draft: true,
            window_pad_s: 5.0,
            min_window_s: 10.0,
            language: None,
            pacing: Pacing::Live,
            input_queue: 512,
            event_queue: 1024,
            stats_interval_s: 10.0,
            turn_events: false,
        }
    }
}

impl StreamConfig {
    /// Check every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.vad.validate()?;
        if !(100..=10_000).contains(&self.hop_ms) {
            return Err(Error::config(
                "hop_ms",
                format!("{} is not in 100..=10000 ms", self.hop_ms),
            ));
        }
        if !(self.max_duty_cycle.is_finite() && (0.05..=1.0).contains(&self.max_duty_cycle)) {
            return Err(Error::config(
                "max_duty_cycle",
                format!("{} is not in 0.05..=1", self.max_duty_cycle),
            ));
        }
        if self.frame_threshold_ms > 5_000 {
            return Err(Error::config(
                "frame_threshold_ms",
                format!("{} is more than 5000 ms", self.frame_threshold_ms),
            ));
        }
        if !(self.max_utterance_s.is_finite() && (2.0..=30.0).contains(&self.max_utterance_s)) {
            return Err(Error::config(
                "max_utterance_s",
                format!("{} is not in 2..=30 seconds", self.max_utterance_s),
            ));
        }
        if self.prompt_max_tokens > 223 {
            return Err(Error::config(
                "prompt_max_tokens",
                format!("{} is more than Whisper's 223", self.prompt_max_tokens),
            ));
        }
        if !(self.context_s.is_finite() && (0.0..=25.0).contains(&self.context_s)) {
            return Err(Error::config(
                "context_s",
                format!("{} is not in 0..=25 seconds", self.context_s),
            ));
        }
        if !(self.window_pad_s.is_finite() && (0.0..=10.0).contains(&self.window_pad_s)) {
            return Err(Error::config(
                "window_pad_s",
                format!("{} is not in 0..=10 seconds", self.window_pad_s),
            ));
        }
        if !(self.min_window_s.is_finite() && (1.0..=30.0).contains(&self.min_window_s)) {
            return Err(Error::config(
                "min_window_s",
                format!("{} is not in 1..=30 seconds", self.min_window_s),
            ));
        }
        if self.input_queue == 0 || self.event_queue == 0 {
            return Err(Error::config("input_queue", "queues need room for at least one item"));
        }
        if !(self.stats_interval_s.is_finite() && self.stats_interval_s > 0.0) {
            return Err(Error::config(
                "stats_interval_s",
                "must be a positive number of seconds",
            ));
        }
        Ok(())
    }

    /// The decoding options of live windows, from the engine's: greedy at temperature 0 (a
    /// partial is redone every hop; the fallback ladder would multiply its cost), no timestamp
    /// tokens (an utterance is one segment; words get times from the alignment heads), the
    /// engine's gates, padding and token budget.
    pub(crate) fn decode_options(&self, engine: &TranscribeOptions) -> TranscribeOptions {
        TranscribeOptions {
            strategy: DecodeStrategy::Greedy { best_of: 1 },
            temperatures: vec![0.0],
            filters: FilterOptions {
                timestamps: false,
                ..engine.filters.clone()
            },
            condition_on_previous_text: true,
            word_timestamps: false,
            language: self.language.clone(),
            pad_s: self.window_pad_s,
            min_window_s: self.min_window_s,
            ..engine.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        StreamConfig::default().validate().unwrap();
        let bad = StreamConfig {
            hop_ms: 5,
            ..StreamConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("hop_ms"));
        let bad = StreamConfig {
            max_utterance_s: 45.0,
            ..StreamConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("max_utterance_s"));
    }

    #[test]
    fn live_decoding_is_greedy_without_timestamps() {
        let o = StreamConfig::default().decode_options(&TranscribeOptions::default());
        assert_eq!(o.strategy, DecodeStrategy::Greedy { best_of: 1 });
        assert_eq!(o.temperatures, vec![0.0]);
        assert!(!o.filters.timestamps);
    }
}
