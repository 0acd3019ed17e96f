//! Transcription of one clip of any length: Whisper's seek loop. A port of openai/whisper
//! `transcribe.py` (release 20250625) over steno's pieces: windows of up to 30 s of log-mel
//! go through the encoder once, the decoder searches tokens (with the temperature fallback
//! ladder and quality gates), timestamp tokens split the output into segments, and the next
//! window starts where the last complete segment ended, with the text so far as the prompt.
//!
//! Where steno differs from Whisper, on purpose:
//! - a window holds only its audio plus [`TranscribeOptions::pad_s`] of padding when the encoder
//!   takes dynamic lengths (Whisper always pads to 30 s): the encoder's cost follows the audio;
//! - timestamps past the window's audio are suppressed, and each window has a token budget
//!   (`max_tokens_per_second`), so a confused decoder cannot run to the context limit;
//! - empty segments are dropped from the output instead of kept with empty text;
//! - at best-of 1 (live finals), once temperature 0 fails the gates, the hotter temperatures
//!   are sampled together, one batch row each, and the first that passes is taken, as
//!   Whisper's sequential ladder would: one batched decode instead of up to five in a row
//!   (a short utterance that loops at every temperature: 242 → 52 ms of decoding for the
//!   hotter steps, tiny.en int8). The rows draw other samples than lone decodes would.
//!
//! In: a normalised [`Mel`] (whole clip) and options; out: a [`Transcript`] of [`Segment`]s with
//! times in seconds on the clip's clock (monotonic).

use crate::decode::quality::{QualityThresholds, SPEECH_BAND_HZ, compression_ratio, is_silence, needs_fallback};
use crate::decode::rules::{FilterOptions, LogitFilters};
use crate::decode::search::{self, DecodeStrategy, DecodeTask, Hypothesis, TokenScorer};
use crate::decode::segments::{TimedTokens, split_window};
use crate::decode::timing;
use crate::error::{Error, Result};
use crate::features::{Mel, MelSource};
use crate::model::encoder::MelFrames;
use crate::model::{CrossKv, Decoder, KvCache, WhisperModel};

/// What to do with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Text in the spoken language.
    #[default]
    Transcribe,
    /// English text from any language (multilingual models).
    Translate,
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "transcribe" => Ok(Task::Transcribe),
            "translate" => Ok(Task::Translate),
            other => Err(Error::config(
                "task",
                format!("`{other}` is not one of transcribe, translate"),
            )),
        }
    }
}

/// Settings of a transcription (documented defaults in [`TranscribeOptions::default`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TranscribeOptions {
    pub task: Task,
    /// Language code (`en`, `de`…); `None` = detect from the first window (multilingual models)
    /// or English (English-only models).
    pub language: Option<String>,
    /// Search at temperature 0 (and candidates sampled above it). Default: beam 5, best-of 5.
    pub strategy: DecodeStrategy,
    /// The temperature ladder: retry at the next temperature when a gate fails.
    /// Default: 0.0, 0.2, 0.4, 0.6, 0.8, 1.0.
    pub temperatures: Vec<f64>,
    pub thresholds: QualityThresholds,
    /// Prompt each window with the text so far (Whisper's `condition_on_previous_text`). Default: true.
    pub condition_on_previous_text: bool,
    pub filters: FilterOptions,
    /// Token budget per window: 16 + this × the window's seconds. Default: 12.
    pub max_tokens_per_second: f32,
    /// Padding appended to a window's audio for dynamic-length encoders, in seconds. Default: 1.0.
    pub pad_s: f32,
    /// Shortest encoder window for dynamic-length encoders, in seconds (short clips are padded
    /// up to it). Default: 10.
    pub min_window_s: f32,
    /// Word-level times (cross-attention alignment + DTW, Whisper's method). Default: false.
    pub word_timestamps: bool,
    /// Seed of the sampler used at temperatures > 0. Default: 0.
    pub seed: u64,
    /// Text tokens that precede the first window as its prompt (Whisper's `initial_prompt`,
    /// encoded with [`crate::tokenizer::Tokenizer::encode`]): spellings, names, a style.
    /// Default: none.
    pub initial_prompt: Vec<u32>,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        TranscribeOptions {
            task: Task::Transcribe,
            language: None,
            strategy: DecodeStrategy::Beam {
                beam_size: 5,
                patience: 1.0,
                best_of: 5,
            },
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            thresholds: QualityThresholds::default(),
            condition_on_previous_text: true,
            filters: FilterOptions::default(),
            max_tokens_per_second: 12.0,
            pad_s: 5.0,
            min_window_s: 10.0,
            word_timestamps: false,
            seed: 0,
            initial_prompt: Vec::new(),
        }
    }
}

impl TranscribeOptions {
    /// Check values that do not depend on the model.
    pub fn validate(&self) -> Result<()> {
        self.strategy.validate()?;
        if self.temperatures.is_empty() || self.temperatures.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(Error::config(
                "temperatures",
                "need at least one temperature, each ≥ 0 (e.g. 0,0.2,0.4,0.6,0.8,1)",
            ));
        }
        if !(self.max_tokens_per_second.is_finite() && self.max_tokens_per_second > 0.0) {
            return Err(Error::config("max_tokens_per_second", "must be a positive number"));
        }
        if !(self.min_window_s.is_finite() && (0.0..=30.0).contains(&self.min_window_s)) {
            return Err(Error::config(
                "min_window_s",
                format!("{} is not in 0..=30 seconds", self.min_window_s),
            ));
        }
        if !(self.pad_s.is_finite() && (0.0..=30.0).contains(&self.pad_s)) {
            return Err(Error::config(
                "pad_s",
                format!("{} is not in 0..=30 seconds", self.pad_s),
            ));
        }
        Ok(())
    }

    /// Check the options against a loaded model (language, task).
    pub fn check_model(&self, model: &WhisperModel) -> Result<()> {
        if let Some(code) = &self.language {
            if !model.spec.multilingual && code != "en" {
                return Err(Error::config(
                    "language",
                    format!("`{code}`: {} is an English-only model", model.spec.model_type),
                ));
            }
            if model.spec.multilingual && model.tokens.language(code).is_none() {
                let known: Vec<&str> = model.tokens.languages.iter().map(|l| l.code.as_str()).collect();
                return Err(Error::config(
                    "language",
                    format!("`{code}` is not a language of this model ({})", known.join(", ")),
                ));
            }
        }
        if self.word_timestamps && !model.decoder.has_cross_qk() {
            return Err(Error::config(
                "word_timestamps",
                format!(
                    "{} does not report cross attention; word times need steno's export (models/provision)",
                    model.files.decoder.display()
                ),
            ));
        }
        if self.task == Task::Translate && !model.spec.multilingual {
            return Err(Error::config(
                "task",
                format!(
                    "translate needs a multilingual model; {} is English-only",
                    model.spec.model_type
                ),
            ));
        }
        Ok(())
    }
}

/// A timed piece of the transcript (Whisper's segment, with its quality fields).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    pub id: usize,
    /// Seconds from the start of the audio.
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
    pub temperature: f64,
    pub compression_ratio: f64,
    /// Words with their times, when asked for ([`TranscribeOptions::word_timestamps`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// One word of a segment (its text keeps the leading space and attached punctuation).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Word {
    pub word: String,
    /// Seconds from the start of the audio.
    pub start: f64,
    pub end: f64,
    /// Mean probability of the word's tokens.
    pub probability: f64,
}

impl Word {
    /// An aligned word with its times rounded to the mel clock and its end capped at `end_s`.
    pub(crate) fn from_timing(w: &timing::WordTiming, end_s: f64) -> Word {
        Word {
            word: w.word.clone(),
            start: round_cs(w.start),
            end: round_cs(w.end.min(end_s)),
            probability: f64::from(w.probability),
        }
    }
}

/// The result of transcribing one clip.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transcript {
    pub segments: Vec<Segment>,
    /// The language used (given or detected); `None` for English-only models.
    pub language: Option<String>,
    /// Seconds of audio.
    pub duration: f64,
}

impl Transcript {
    /// The whole text, segments joined as Whisper does (each segment's text starts with its space).
    pub fn text(&self) -> String {
        let joined: String = self.segments.iter().map(|s| s.text.as_str()).collect();
        joined.trim().to_owned()
    }
}

/// The decoder over one window's cross K/V, as a [`TokenScorer`] for the search.
struct WindowScorer<'a> {
    decoder: &'a mut Decoder,
    cross: &'a CrossKv,
    tiled: Option<CrossKv>,
    cache: Option<KvCache>,
    attention: Option<&'a mut AttentionTrack>,
}

/// The most-attended audio frame of every token position fed to the decoder in one window
/// (one row only: live decoding is greedy), for the AlignAtt commit policy.
#[derive(Debug, Clone, Default)]
pub struct AttentionTrack {
    /// Encoder frames (20 ms) that hold audio; padding frames never count as attended.
    pub content_frames: usize,
    /// One entry per fed position, in order: the prompt, the forced tokens, then each sampled
    /// token but the last. Entry `i` is where the decoder looked when predicting token `i + 1`.
    pub frames: Vec<u32>,
}

impl TokenScorer for WindowScorer<'_> {
    fn n_vocab(&self) -> usize {
        self.decoder.n_vocab()
    }

    fn reset(&mut self, batch: usize) -> Result<()> {
        if let Some(track) = self.attention.as_deref_mut() {
            track.frames.clear();
        }
        self.cache = Some(self.decoder.new_cache(batch)?);
        Ok(())
    }

    fn feed(&mut self, tokens: &[u32], n: usize, logits: &mut Vec<f32>) -> Result<()> {
        let cache = self
            .cache
            .as_mut()
            .ok_or_else(|| Error::config("decoder", "feed before reset"))?;
        let cross = if cache.batch() == 1 || self.decoder.broadcasts_cross() {
            self.cross
        } else {
            // Graphs that cannot share one row of cross K/V get it tiled, once per row count.
            if self.tiled.as_ref().is_none_or(|t| t.batch != cache.batch()) {
                self.tiled = Some(self.cross.repeat(cache.batch(), self.decoder.row_axis())?);
            }
            self.tiled.as_ref().unwrap_or(self.cross)
        };
        let track = self.attention.as_deref_mut().filter(|_| cache.batch() == 1);
        let want_qk = track.is_some();
        let qk = self.decoder.forward_rows(tokens, n, cache, cross, want_qk, 1, logits)?;
        if let (Some(track), Some(qk)) = (track, qk) {
            track.frames.extend(crate::decode::attention::most_attended_frames(
                &qk.data,
                qk.heads,
                qk.frames,
                track.content_frames,
            ));
        }
        Ok(())
    }

    fn feed_rows(&mut self, tokens: &[u32], rows: usize, logits: &mut Vec<f32>) -> Result<bool> {
        let cache = self
            .cache
            .as_mut()
            .ok_or_else(|| Error::config("decoder", "feed before reset"))?;
        if !self.decoder.verifies_drafts() || cache.batch() != 1 {
            return Ok(false);
        }
        let want_qk = self.attention.is_some();
        let qk = self
            .decoder
            .forward_rows(tokens, tokens.len(), cache, self.cross, want_qk, rows, logits)?;
        if let (Some(track), Some(qk)) = (self.attention.as_deref_mut(), qk) {
            track.frames.extend(crate::decode::attention::most_attended_frames(
                &qk.data,
                qk.heads,
                qk.frames,
                track.content_frames,
            ));
        }
        Ok(true)
    }

    fn rewind(&mut self, len: usize) -> Result<()> {
        let cache = self
            .cache
            .as_mut()
            .ok_or_else(|| Error::config("decoder", "rewind before reset"))?;
        self.decoder.rewind(cache, len)?;
        if let Some(track) = self.attention.as_deref_mut() {
            track.frames.truncate(len);
        }
        Ok(())
    }

    fn reorder(&mut self, source: &[usize]) -> Result<()> {
        let cache = self
            .cache
            .as_mut()
            .ok_or_else(|| Error::config("decoder", "reorder before reset"))?;
        self.decoder.reorder(cache, source)
    }
}

/// The tokens that start every window: [<|startofprev|> prompt…] <|sot|> [lang task] [<|notimestamps|>].
pub(crate) fn initial_tokens(
    model: &WhisperModel,
    language: Option<u32>,
    task: Task,
    timestamps: bool,
    prompt: &[u32],
) -> (Vec<u32>, usize) {
    let t = &model.tokens;
    let mut tokens = Vec::new();
    if !prompt.is_empty() {
        tokens.push(t.sot_prev);
        // Whisper keeps the last n_text_ctx/2 − 1 prompt tokens.
        let keep = model.spec.n_text_ctx / 2 - 1;
        tokens.extend_from_slice(&prompt[prompt.len().saturating_sub(keep)..]);
    }
    let sot_index = tokens.len();
    tokens.push(t.sot);
    if model.spec.multilingual {
        tokens.push(language.unwrap_or(t.sot + 1));
        tokens.push(match task {
            Task::Transcribe => t.transcribe,
            Task::Translate => t.translate,
        });
    }
    if !timestamps {
        tokens.push(t.no_timestamps);
    }
    (tokens, sot_index)
}

/// Whisper's `detect_language`: the likeliest language token after <|startoftranscript|>.
pub(crate) fn detect_language(model: &mut WhisperModel, cross: &CrossKv) -> Result<(String, f32)> {
    let mut cache = model.decoder.new_cache(1)?;
    let (logits, _) = model
        .decoder
        .forward(&[model.tokens.sot], 1, &mut cache, cross, false)?;
    // Only the language tokens compete (Whisper masks every other token).
    let langs = &model.tokens.languages;
    let mask: Vec<f32> = langs.iter().map(|l| logits[l.token as usize]).collect();
    let lse = crate::decode::rules::log_sum_exp(&mask);
    let (best, best_logit) = mask
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b });
    let code = langs
        .get(best)
        .map(|l| l.code.clone())
        .ok_or_else(|| Error::config("language", "the model lists no languages"))?;
    Ok((code, (best_logit - lse).exp()))
}

/// The text side of one window: what comes before the sampled tokens.
#[derive(Debug, Clone, Copy)]
pub struct WindowText<'a> {
    /// Earlier text (prompt tokens without <|startofprev|>); the last n_text_ctx/2 − 1 are kept.
    pub prompt: &'a [u32],
    /// Tokens the output must start with (live: the words of this utterance already committed).
    pub forced: &'a [u32],
    /// Tokens expected after the forced ones, verified in one call (greedy; see
    /// [`DecodeTask::draft`]); empty for none.
    pub draft: &'a [u32],
    /// Language token (multilingual models); `None` = the model's first language.
    pub language: Option<u32>,
    /// Seconds of audio in the window (timestamps past it are suppressed; the token budget).
    pub content_s: f32,
    /// Seed of the sampler at temperatures above 0.
    pub seed: u64,
}

/// What [`decode_window`] found.
#[derive(Debug, Clone)]
pub struct WindowHypothesis {
    /// The best hypothesis; its tokens start with the forced ones.
    pub hyp: Hypothesis,
    pub compression_ratio: f32,
    /// Positions fed before the first sampled token (the initial tokens and the forced ones).
    pub prefix_len: usize,
}

/// Decode one encoded window: the prompt, Whisper's filters, the token budget, the search and
/// the temperature fallback ladder of `options`. The one window decoder: the batch seek loop
/// ([`transcribe`]) and live streaming (`stream`) both call it. With `attention`, the
/// alignment heads' most-attended frame of every fed position is recorded (greedy only).
pub fn decode_window(
    model: &mut WhisperModel,
    cross: &CrossKv,
    text: &WindowText,
    options: &TranscribeOptions,
    attention: Option<&mut AttentionTrack>,
) -> Result<WindowHypothesis> {
    let (initial, sot_index) = initial_tokens(
        model,
        text.language,
        options.task,
        options.filters.timestamps,
        text.prompt,
    );
    let filters = LogitFilters::new(&model.tokens, &options.filters, Some(text.content_s));
    let context_room = model.spec.n_text_ctx.saturating_sub(initial.len() + text.forced.len());
    let budget = (16.0 + options.max_tokens_per_second * text.content_s).ceil() as usize;
    // Whisper's sample_len (n_text_ctx / 2) and the rate cap count the forced tokens too.
    let max_tokens = (model.spec.n_text_ctx / 2)
        .min(budget)
        .saturating_sub(text.forced.len())
        .min(context_room);
    let mut scorer = WindowScorer {
        decoder: &mut model.decoder,
        cross,
        tiled: None,
        cache: None,
        attention,
    };
    let task = DecodeTask {
        prompt: &initial,
        sot_index,
        forced: text.forced,
        draft: if options.temperatures.first() == Some(&0.0) {
            text.draft
        } else {
            &[]
        },
        filters: &filters,
        max_tokens,
        temperature: 0.0,
        length_penalty: None,
        eot: model.tokens.eot,
        no_speech: model.tokens.no_speech,
        seed: text.seed,
    };
    let (hyp, compression_ratio) = decode_with_fallback(&mut scorer, &task, options, &model.tokenizer)?;
    Ok(WindowHypothesis {
        hyp,
        compression_ratio,
        prefix_len: initial.len() + text.forced.len(),
    })
}

/// Transcribe a whole clip. `progress` is called with the seconds of audio done so far.
pub fn transcribe(
    model: &mut WhisperModel,
    mel: &Mel,
    options: &TranscribeOptions,
    progress: &mut dyn FnMut(f64),
) -> Result<Transcript> {
    let mut mel = mel;
    transcribe_interleaved(model, &mut mel, options, &mut |s, _| progress(s), &mut |_| {})
}

/// [`transcribe`], calling `between` with the model before each window: the inference worker
/// serves live streams there, so a long batch job never holds them back by more than one window.
/// `progress` hears the seconds done and the segments so far (they only grow), so a caller can
/// pass finished segments on while the rest is decoded.
pub fn transcribe_interleaved(
    model: &mut WhisperModel,
    mel: &mut dyn MelSource,
    options: &TranscribeOptions,
    progress: &mut dyn FnMut(f64, &[Segment]),
    between: &mut dyn FnMut(&mut WhisperModel),
) -> Result<Transcript> {
    options.validate()?;
    options.check_model(model)?;
    let content_frames = mel.n_frames();
    let duration = content_frames as f64 / 100.0;
    let _span = tracing::info_span!("transcribe", duration_s = duration).entered();
    let max_frames = model.spec.max_mel_frames();
    let pad_frames = (options.pad_s * 100.0).round() as usize;
    let min_frames = (options.min_window_s * 100.0).round() as usize;

    let mut seek = 0usize;
    // Whisper: the initial prompt leads the tokens so far, so it prompts until the first reset.
    let mut all_tokens: Vec<u32> = options.initial_prompt.clone();
    let mut prompt_reset_since = 0usize;
    let mut segments: Vec<Segment> = Vec::new();
    let mut language: Option<(String, u32)> = match &options.language {
        Some(code) if model.spec.multilingual => model.tokens.language(code).map(|t| (code.clone(), t)),
        _ => None,
    };
    let mut window_index = 0u64;
    // Padding with the clip's silence value is what Whisper's 30 s of appended zero samples
    // look like to the encoder; measured on LibriSpeech it beats openai/whisper's later habit
    // of padding the mel with 0.0 when the window is short (see the module doc).
    let pad_value = mel.silence_value();
    let mut last_speech_s = 0.0f64;

    // Windows shorter than this hold no word; Whisper's output on them is noise.
    const MIN_WINDOW_FRAMES: usize = 10;
    while seek + MIN_WINDOW_FRAMES <= content_frames {
        between(model);
        let segment_size = max_frames.min(content_frames - seek);
        if let Some(min) = options.thresholds.silence_log10_power {
            let (lo, hi) = SPEECH_BAND_HZ;
            let peak = mel.band_peak_log10(seek, segment_size, lo, hi)?;
            if peak < min {
                tracing::debug!(seek, peak, "window is silent (energy gate)");
                seek += segment_size;
                progress(seek.min(content_frames) as f64 / 100.0, &segments);
                continue;
            }
        }
        let encoder_frames = match model.encoder.mel_frames() {
            MelFrames::Fixed(n) => n,
            // Even, so the stride-2 convolution maps frames exactly to 20 ms positions.
            MelFrames::Dynamic { max } => ((segment_size + pad_frames).max(min_frames).div_ceil(2) * 2).min(max),
        };
        // Frames past the clip's end (the last window, or a fixed 30 s encoder) are padding.
        let window = mel.window(seek, encoder_frames, pad_value)?;
        let cross = model.encoder.encode(&window, encoder_frames)?;

        if model.spec.multilingual && language.is_none() {
            let (code, p) = detect_language(model, &cross)?;
            tracing::info!(language = %code, probability = p, "detected language");
            let token = model.tokens.language(&code).unwrap_or(model.tokens.sot + 1);
            language = Some((code, token));
        }

        let prompt: &[u32] = if options.condition_on_previous_text {
            &all_tokens[prompt_reset_since..]
        } else {
            &[]
        };
        let window_s = segment_size as f32 / 100.0;
        let WindowHypothesis {
            hyp,
            compression_ratio: ratio,
            ..
        } = decode_window(
            model,
            &cross,
            &WindowText {
                prompt,
                forced: &[],
                draft: &[],
                language: language.as_ref().map(|l| l.1),
                content_s: window_s,
                seed: options.seed ^ window_index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            },
            options,
            None,
        )?;
        window_index += 1;

        if is_silence(&hyp, &options.thresholds) {
            tracing::debug!(seek, no_speech = hyp.no_speech_prob, "window is silence");
            seek += segment_size;
            progress(seek.min(content_frames) as f64 / 100.0, &segments);
            continue;
        }

        let split = split_window(&hyp.tokens, model.tokens.timestamp_begin, segment_size);
        let time_offset = seek as f64 / 100.0;
        let mut next_seek = seek + split.advance_frames;
        let words = if options.word_timestamps && !split.segments.is_empty() {
            let sot_sequence = initial_tokens(model, language.as_ref().map(|l| l.1), options.task, true, &[]).0;
            let spaceless = language
                .as_ref()
                .is_some_and(|l| timing::SPACELESS_LANGUAGES.contains(&l.0.as_str()));
            let aligned = align_words(
                model,
                &cross,
                &hyp,
                &split.segments,
                &sot_sequence,
                segment_size,
                time_offset,
                last_speech_s,
                spaceless,
            )?;
            if let Some(end) = timing::last_word_end(&aligned) {
                // Whisper: with word times, an unfinished window resumes after its last word.
                if !split.single_timestamp_ending && end > time_offset {
                    next_seek = ((end * 100.0).round() as usize).max(seek + 1);
                }
                last_speech_s = end;
            }
            Some(aligned)
        } else {
            None
        };
        for (i, piece) in split.segments.into_iter().enumerate() {
            let text = model.tokenizer.decode(&piece.tokens);
            if piece.start_s == piece.end_s || text.trim().is_empty() {
                continue;
            }
            let (mut start, mut end) = (time_offset + piece.start_s, time_offset + piece.end_s);
            let seg_words = words.as_ref().and_then(|w| w.get(i)).map(|w| {
                (start, end) = (w.start, w.end);
                w.words.iter().map(|t| Word::from_timing(t, duration)).collect()
            });
            all_tokens.extend_from_slice(&piece.tokens);
            segments.push(Segment {
                id: segments.len(),
                start: round_cs(start),
                end: round_cs(end.min(duration)),
                text,
                tokens: piece.tokens,
                avg_logprob: hyp.avg_logprob,
                no_speech_prob: f64::from(hyp.no_speech_prob),
                temperature: hyp.temperature,
                compression_ratio: f64::from(ratio),
                words: seg_words,
            });
        }
        if !options.condition_on_previous_text || hyp.temperature > 0.5 {
            prompt_reset_since = all_tokens.len();
        }
        seek = next_seek;
        progress(seek.min(content_frames) as f64 / 100.0, &segments);
    }
    progress(duration, &segments);
    Ok(Transcript {
        segments,
        language: language.map(|l| l.0),
        duration,
    })
}

/// Whisper's `add_word_timestamps` for one window: run the decoder once over
/// `<|sot|>… <|notimestamps|> text <|eot|>` to get the alignment heads' cross attention, align
/// it to the audio frames with DTW ([`timing::find_alignment`]) and hand the words to the
/// window's segments ([`timing::assign_words`]). Token probabilities are the ones the search saw.
#[allow(clippy::too_many_arguments)]
pub(crate) fn align_words(
    model: &mut WhisperModel,
    cross: &CrossKv,
    hyp: &Hypothesis,
    pieces: &[TimedTokens],
    sot_sequence: &[u32],
    num_frames: usize,
    time_offset: f64,
    last_speech_s: f64,
    spaceless: bool,
) -> Result<Vec<timing::SegmentWords>> {
    let eot = model.tokens.eot;
    let text_per_piece: Vec<Vec<u32>> = pieces
        .iter()
        .map(|p| p.tokens.iter().copied().filter(|&t| t < eot).collect())
        .collect();
    let text_tokens: Vec<u32> = text_per_piece.iter().flatten().copied().collect();
    // The pieces are a prefix of the hypothesis, so its first text-token log-probs are theirs.
    let probs: Vec<f32> = hyp
        .tokens
        .iter()
        .zip(&hyp.token_logprobs)
        .filter(|(t, _)| **t < eot)
        .map(|(_, lp)| lp.exp())
        .take(text_tokens.len())
        .collect();
    let spans: Vec<timing::SegmentSpan> = pieces
        .iter()
        .zip(&text_per_piece)
        .map(|(p, t)| timing::SegmentSpan {
            start: time_offset + p.start_s,
            end: time_offset + p.end_s,
            text_tokens: t.len(),
        })
        .collect();
    let alignment = if text_tokens.is_empty() {
        Vec::new()
    } else {
        let mut sequence = sot_sequence.to_vec();
        sequence.push(model.tokens.no_timestamps);
        sequence.extend_from_slice(&text_tokens);
        sequence.push(eot);
        let mut cache = model.decoder.new_cache(1)?;
        let (_, qk) = model
            .decoder
            .forward(&sequence, sequence.len(), &mut cache, cross, true)?;
        let qk = qk.ok_or_else(|| Error::config("word_timestamps", "the decoder returned no cross attention"))?;
        let tokenizer = &model.tokenizer;
        let token_bytes = |t: u32| tokenizer.bytes(t);
        let splitter = timing::WordSplitter {
            eot,
            spaceless,
            token_bytes: &token_bytes,
        };
        timing::find_alignment(
            timing::CrossQk {
                scores: &qk.data,
                n_tokens: qk.tokens,
                n_heads: qk.heads,
                n_frames: qk.frames,
            },
            sot_sequence.len(),
            &text_tokens,
            &probs,
            num_frames,
            &splitter,
            timing::MEDFILT_WIDTH,
        )
    };
    Ok(timing::assign_words(
        alignment,
        &spans,
        time_offset,
        last_speech_s,
        timing::PREPEND_PUNCTUATIONS,
        timing::APPEND_PUNCTUATIONS,
    ))
}

/// Round seconds to centiseconds (the mel clock), so times print and compare cleanly.
fn round_cs(seconds: f64) -> f64 {
    (seconds * 100.0).round() / 100.0
}

/// `decode_with_fallback`: decode `task` at each temperature of the ladder until the gates pass
/// (the hotter ones batched at best-of 1; see the module doc).
fn decode_with_fallback(
    scorer: &mut dyn TokenScorer,
    task: &DecodeTask,
    options: &TranscribeOptions,
    tokenizer: &crate::tokenizer::Tokenizer,
) -> Result<(Hypothesis, f32)> {
    // Every attempt, for the case where none passes the gates.
    let mut attempts: Vec<(Hypothesis, f32)> = Vec::new();
    let temperatures = &options.temperatures;
    // At best_of 1 (live finals) the hotter steps are decoded together, one row each, once the
    // first has failed: a loop that fails them all (a short utterance read as "ladies and
    // ladies and …") costs one batched decode instead of five in a row. The outcome is the
    // sequential ladder's rule (the first that passes, in order), on the batch's samples.
    let batch_hot = matches!(options.strategy, DecodeStrategy::Greedy { best_of: 1 }) && temperatures.len() > 2;
    let mut hot: std::vec::IntoIter<Hypothesis> = Vec::new().into_iter();
    for (i, &temperature) in temperatures.iter().enumerate() {
        let task = DecodeTask {
            temperature,
            ..task.clone()
        };
        let hyp = if batch_hot && i > 0 {
            if i == 1 {
                hot = search::sample_each(scorer, &task, &temperatures[1..])?.into_iter();
            }
            hot.next()
                .ok_or_else(|| Error::Worker("the batched ladder returned too few rows".into()))?
        } else {
            search::decode(scorer, &task, options.strategy)?
        };
        let ratio = compression_ratio(&tokenizer.decode(&hyp.tokens));
        let retry = needs_fallback(&hyp, ratio, &options.thresholds);
        tracing::debug!(
            temperature,
            avg_logprob = hyp.avg_logprob,
            ratio,
            retry,
            "window decoded"
        );
        attempts.push((hyp, ratio));
        if !retry {
            return attempts.pop().ok_or_else(|| Error::config("temperatures", "empty"));
        }
    }
    // All attempts failed: keep the likeliest of those that are not repetitive (or of all, if
    // every one is). openai/whisper keeps the last (hottest) one; faster-whisper's choice is
    // better, since a high-temperature sample is rarely the best reading.
    let not_repetitive =
        |a: &(Hypothesis, f32)| !a.0.repetitive && options.thresholds.compression_ratio.is_none_or(|max| a.1 <= max);
    let pool: Vec<(Hypothesis, f32)> = if attempts.iter().any(not_repetitive) {
        attempts.into_iter().filter(not_repetitive).collect()
    } else {
        attempts
    };
    pool.into_iter()
        .max_by(|a, b| a.0.avg_logprob.total_cmp(&b.0.avg_logprob))
        .ok_or_else(|| Error::config("temperatures", "empty"))
}
