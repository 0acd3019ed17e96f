//! Quality gates on a decoded window, as pure functions: when to retry at a higher temperature
//! and when a window is silence. A port of openai/whisper `transcribe.py` (release 20250625):
//! `decode_with_fallback`'s conditions and the no-speech skip, with `compression_ratio` from
//! `utils.py` (zlib at its default level, as Python's `zlib.compress`).

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

use super::search::Hypothesis;

/// Thresholds of the gates (Whisper's defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QualityThresholds {
    /// Retry when the text compresses better than this (too repetitive). Default: 2.4.
    pub compression_ratio: Option<f32>,
    /// Retry when the average log-prob is below this. Default: −1.0.
    pub logprob: Option<f32>,
    /// A window is silence when P(no speech) is above this and the log-prob is low. Default: 0.6.
    pub no_speech: Option<f32>,
    /// A window is silence, and is not decoded at all, when no frame's speech-band (200–4000 Hz)
    /// mel power reaches this, in log10 units ([`crate::features::Mel::band_peak_log10`]).
    /// Default: −3.0, about broadband noise at −55 dBFS; speech at −55 dBFS RMS still peaks
    /// near −1.7. Whisper hallucinates text ("you") on digital silence and hum with a confident
    /// log-prob, so its own gate does not catch them.
    pub silence_log10_power: Option<f32>,
}

/// Speech band of the energy gate, Hz.
pub const SPEECH_BAND_HZ: (f64, f64) = (200.0, 4000.0);

impl Default for QualityThresholds {
    fn default() -> Self {
        QualityThresholds {
            compression_ratio: Some(2.4),
            logprob: Some(-1.0),
            no_speech: Some(0.6),
            silence_log10_power: Some(-3.0),
        }
    }
}

/// Bytes of the UTF-8 text over bytes of its zlib compression (`whisper.utils.compression_ratio`).
/// Empty text has ratio 0.
pub fn compression_ratio(text: &str) -> f32 {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::new(6));
    // Writing into a Vec cannot fail.
    let compressed = enc.write_all(bytes).and_then(|_| enc.finish()).unwrap_or_default();
    if compressed.is_empty() {
        return 0.0;
    }
    bytes.len() as f32 / compressed.len() as f32
}

/// `decode_with_fallback`: does this result need a retry at the next temperature?
pub fn needs_fallback(h: &Hypothesis, compression: f32, t: &QualityThresholds) -> bool {
    let too_repetitive = h.repetitive || t.compression_ratio.is_some_and(|max| compression > max);
    let low_logprob = t.logprob.is_some_and(|min| h.avg_logprob < f64::from(min));
    if !(too_repetitive || low_logprob) {
        return false;
    }
    // Silence is not retried: a likely no-speech window with a low log-prob is accepted (and
    // then dropped by `is_silence`).
    let silence = t.no_speech.is_some_and(|max| h.no_speech_prob > max) && low_logprob;
    !silence
}

/// The no-speech skip of `transcribe()`: drop the window's text when P(no speech) is high,
/// unless the decoder was confident anyway.
pub fn is_silence(h: &Hypothesis, t: &QualityThresholds) -> bool {
    match t.no_speech {
        Some(max) if h.no_speech_prob > max => !t.logprob.is_some_and(|min| h.avg_logprob > f64::from(min)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyp(avg_logprob: f64, no_speech_prob: f32) -> Hypothesis {
        Hypothesis {
            tokens: vec![1, 2, 3],
            token_logprobs: vec![-0.1, -0.2, -0.3],
            sum_logprob: avg_logprob * 4.0,
            avg_logprob,
            no_speech_prob,
            temperature: 0.0,
            repetitive: false,
        }
    }

    #[test]
    fn compression_ratio_matches_python_zlib() {
        // Python 3.11: len(s) / len(zlib.compress(s)) for these strings.
        let rep = "Thank you. ".repeat(20);
        // zlib.compress(b"Thank you. " * 20) is 22 bytes: 220 / 22 = 10.0
        assert!(
            (compression_ratio(&rep) - 10.0).abs() < 1e-6,
            "{}",
            compression_ratio(&rep)
        );
        // b" And so my fellow Americans" (27 bytes) compresses to 35 bytes.
        let plain = " And so my fellow Americans";
        assert!((compression_ratio(plain) - 27.0 / 35.0).abs() < 1e-6);
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn repetitive_text_falls_back() {
        let t = QualityThresholds::default();
        assert!(needs_fallback(&hyp(-0.2, 0.0), 3.0, &t));
        assert!(!needs_fallback(&hyp(-0.2, 0.0), 1.5, &t));
        let mut looped = hyp(-0.2, 0.0);
        looped.repetitive = true;
        assert!(needs_fallback(&looped, 1.0, &t));
    }

    #[test]
    fn low_logprob_falls_back_unless_it_is_silence() {
        let t = QualityThresholds::default();
        assert!(needs_fallback(&hyp(-1.5, 0.1), 1.0, &t));
        assert!(!needs_fallback(&hyp(-1.5, 0.9), 1.0, &t), "silence is not retried");
    }

    #[test]
    fn silence_gate_needs_high_no_speech_and_low_confidence() {
        let t = QualityThresholds::default();
        assert!(is_silence(&hyp(-1.5, 0.9), &t));
        assert!(!is_silence(&hyp(-0.3, 0.9), &t), "confident text is kept");
        assert!(!is_silence(&hyp(-1.5, 0.3), &t));
        let off = QualityThresholds { no_speech: None, ..t };
        assert!(!is_silence(&hyp(-1.5, 0.99), &off));
    }
}
