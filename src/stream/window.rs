//! Live window jobs: what a stream asks of the inference worker, and the worker's side of it.
//!
//! In: a [`WindowJob`] (a normalised log-mel window of one utterance, the prompt from earlier
//! utterances, the tokens already committed as a forced prefix). Out: a [`WindowOutcome`] (the
//! hypothesis, the alignment heads' most-attended frame behind each new token, and, for
//! finals, word times). The decoding itself is [`crate::transcribe::decode_window`], the same
//! function the batch seek loop uses: no second copy of the decoding rules.

use std::sync::Arc;
use std::time::Instant;

use crate::decode::attention::restart_at;
use crate::decode::search::Hypothesis;
use crate::decode::segments::TimedTokens;
use crate::decode::timing;
use crate::engine::EngineHandle;
use crate::error::Result;
use crate::model::encoder::MelFrames;
use crate::model::{CrossKv, WhisperModel};
use crate::transcribe::{
    AttentionTrack, TranscribeOptions, WindowHypothesis, WindowText, Word, align_words, decode_window, detect_language,
    initial_tokens,
};

/// An attention jump back by more than this many encoder frames (0.5 s), with repeated text,
/// marks a decoder that restarted over the audio ([`restart_at`]).
const RESTART_JUMP_FRAMES: u32 = 25;

/// One window of one live stream for the worker.
#[derive(Debug, Clone)]
pub struct WindowJob {
    /// The stream, for logs and errors.
    pub stream: u64,
    /// Normalised log-mel `[n_mels][frames]`.
    pub mel: Vec<f32>,
    /// Mel frames in `mel` (even; padding included).
    pub frames: usize,
    /// Mel frames that hold audio (the rest is padding).
    pub content_frames: usize,
    /// Text tokens of earlier utterances.
    pub prompt: Vec<u32>,
    /// Tokens of this utterance already committed: the output starts with them.
    pub forced: Vec<u32>,
    /// The previous hypothesis after `forced`, verified in one decoder call (greedy).
    pub draft: Vec<u32>,
    /// Log-probabilities of the forced tokens when they were decoded (word probabilities);
    /// zeros (probability 1) where unknown. Shorter than `forced` is padded with zeros.
    pub forced_logprobs: Vec<f32>,
    /// Language token; `None` = detect (multilingual models) or none (English-only).
    pub language: Option<u32>,
    /// Record where the decoder looks (AlignAtt); needs a model with `cross_qk`.
    pub track_attention: bool,
    /// Align words to the audio (finals of models with `cross_qk`).
    pub words: bool,
    /// The utterance's final (the worker serves finals before partials).
    pub is_final: bool,
    /// Seconds from the stream start to the window's first frame (word times are on the
    /// stream's clock).
    pub time_offset_s: f64,
    /// Decoding options (greedy, one temperature, no timestamps: see `StreamConfig`).
    pub options: Arc<TranscribeOptions>,
    /// Search for tokens after the forced ones; `false`: the forced tokens are the whole
    /// text (a cut at the maximum length; only their word times are wanted).
    pub decode: bool,
    /// The window's first mel frame on the stream's clock (the key of [`WindowCache`]).
    pub start_frame: u64,
    /// A final whose utterance heard nothing new since its last partial: that partial's
    /// window (`start_frame`, content frames) and hypothesis. When the worker still holds that
    /// window's encoder output, the hypothesis is the final text as it stands (greedy decoding
    /// of the same window, prompt and prefix gives the same tokens): no encoder run and no
    /// search, only the word alignment. Otherwise the job runs as an ordinary window.
    pub reuse: Option<Reuse>,
    /// A partial whose window may serve its utterance's final: the VAD hears silence at its
    /// end, so the speech may be over. The worker keeps its encoder output ([`WindowCache`]);
    /// any other window drops the stream's entry (a later final cannot reuse an earlier
    /// window, and a window heard mid-speech is stale by the next hop).
    pub keep_window: bool,
    /// A more urgent job may stop this one midway (`engine::Running`): ordinary partials,
    /// unless the stream's last ones were stopped.
    pub stoppable: bool,
}

impl WindowJob {
    /// How soon the worker serves the job, lower first (see `engine::pick_next`).
    pub(crate) fn urgency(&self) -> u8 {
        urgency(self.is_final, self.keep_window)
    }
}

/// Finals 0; partials whose window the final may reuse (`keep_window`: heard in a pause) 1;
/// other partials 2.
pub(crate) fn urgency(is_final: bool, keep_window: bool) -> u8 {
    match (is_final, keep_window) {
        (true, _) => 0,
        (false, true) => 1,
        (false, false) => 2,
    }
}

/// See [`WindowJob::reuse`].
#[derive(Debug, Clone)]
pub struct Reuse {
    pub start_frame: u64,
    pub content_frames: usize,
    pub tokens: Vec<u32>,
    /// Their log-probabilities when decoded.
    pub token_logprobs: Vec<f32>,
}

/// The encoder output of each stream's last window, kept by the worker so a final can reuse
/// it. Bounded: the streams seen last, [`WindowCache::STREAMS`] at most.
#[derive(Default)]
pub struct WindowCache {
    entries: Vec<(u64, u64, usize, crate::model::CrossKv)>,
}

impl WindowCache {
    /// Streams whose last window is kept.
    pub const STREAMS: usize = 8;

    fn take(&mut self, stream: u64, start_frame: u64, content: usize) -> Option<crate::model::CrossKv> {
        let i = self.entries.iter().position(|e| e.0 == stream)?;
        let entry = self.entries.remove(i);
        (entry.1 == start_frame && entry.2 == content).then_some(entry.3)
    }

    /// Drop the entry of a stream that has ended.
    pub(crate) fn forget(&mut self, stream: u64) {
        self.entries.retain(|e| e.0 != stream);
    }

    fn put(&mut self, stream: u64, start_frame: u64, content: usize, cross: crate::model::CrossKv) {
        self.entries.retain(|e| e.0 != stream);
        if self.entries.len() >= Self::STREAMS {
            self.entries.remove(0);
        }
        self.entries.push((stream, start_frame, content, cross));
    }
}

/// What the worker found in a [`WindowJob`].
#[derive(Debug, Clone, Default)]
pub struct WindowOutcome {
    /// The hypothesis, starting with the job's forced tokens; text tokens only.
    pub tokens: Vec<u32>,
    /// Log-probability of each of `tokens` when decoded (forced ones as the job gave them).
    pub token_logprobs: Vec<f32>,
    /// For each token after the forced ones: the most-attended encoder frame (20 ms, from the
    /// window start) when the decoder predicted it. Empty without attention tracking.
    pub new_token_frames: Vec<u32>,
    /// Words with times on the stream's clock (jobs with `words`).
    pub words: Option<Vec<Word>>,
    pub no_speech_prob: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f32,
    /// The search stopped a repetition loop.
    pub repetitive: bool,
    /// Milliseconds spent in the encoder and in decoding (search and alignment).
    pub encode_ms: f64,
    pub decode_ms: f64,
    /// The job reused its stream's last window ([`WindowJob::reuse`]).
    pub reused: bool,
    /// A more urgent job stopped this one ([`WindowJob::stoppable`]): nothing else is set.
    pub stopped: bool,
}

/// Tokens forced in the pre-sizing window: the most one live window can hold (Whisper's
/// `sample_len`, 224 for every model, counts the forced tokens), less room for a few new ones.
const PRESIZE_TOKENS: usize = 200;

/// Run one live window of the largest size a stream can ask for, once per engine, before its
/// first stream starts (a blocking call of a few hundred milliseconds on the worker).
///
/// Why: ONNX Runtime's CPU arena grows to the largest run it has served and keeps that
/// memory for the next runs. Without this a long stream's RSS climbs in steps during its first
/// minutes, as longer windows (context, utterance, padding) and longer texts come: on the
/// long-form audio looped 5 times it went from 555 MiB at 1 minute to 640 MiB at about 4
/// minutes, then stayed flat. With the largest window run first, that memory is taken at the
/// start and the stream's RSS stays flat from then on. The outputs do not change: the window
/// leaves no state behind (a final's window is not cached).
pub(crate) fn presize(handle: &EngineHandle, options: Arc<TranscribeOptions>) -> Result<()> {
    if handle.presized.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return Ok(());
    }
    let started = Instant::now();
    let frames = match handle.mel_frames {
        MelFrames::Fixed(n) => n,
        MelFrames::Dynamic { max } => max,
    };
    let sentence = handle.tokenizer.encode(
        " And so, my fellow Americans, ask not what your country can do for you; ask what you can do for your country.",
    );
    let forced: Vec<u32> = sentence.iter().copied().cycle().take(PRESIZE_TOKENS).collect();
    let prompt: Vec<u32> = sentence.iter().copied().cycle().take(64).collect();
    let job = WindowJob {
        stream: u64::MAX,
        // Digital silence after normalisation ((log10 floor + 4) / 4).
        mel: vec![-1.5; handle.spec.n_mels * frames],
        frames,
        content_frames: frames,
        prompt,
        forced,
        draft: Vec::new(),
        forced_logprobs: Vec::new(),
        language: None,
        track_attention: handle.has_cross_qk,
        words: handle.has_cross_qk,
        is_final: true,
        time_offset_s: 0.0,
        options,
        decode: true,
        start_frame: 0,
        reuse: None,
        keep_window: false,
        stoppable: false,
    };
    let (rx, _ticket) = handle.submit_window(job)?;
    rx.recv()
        .map_err(|_| crate::Error::Worker("the inference thread stopped".into()))??;
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        frames,
        "the largest live window ran once (ONNX Runtime's arena is sized)"
    );
    Ok(())
}

/// Run a live window on the worker's model.
pub(crate) fn run_window(model: &mut WhisperModel, job: &WindowJob, cache: &mut WindowCache) -> Result<WindowOutcome> {
    let _span = tracing::debug_span!("window", stream = job.stream, frames = job.content_frames).entered();
    if let Some(reuse) = &job.reuse
        && let Some(cross) = cache.take(job.stream, reuse.start_frame, reuse.content_frames)
    {
        // Only finals reuse, and an utterance has one final: the entry is spent.
        return reuse_window(model, job, reuse, &cross);
    }
    let started = Instant::now();
    let cross = model.encoder.encode(&job.mel, job.frames)?;
    let encode_ms = started.elapsed().as_secs_f64() * 1e3;
    let outcome = decode_job(model, job, &cross, encode_ms);
    // A partial's window heard up to a pause may serve its utterance's final; a final's never
    // serves again (the next utterance's windows end elsewhere), nor does a partial's heard
    // mid-speech (the speech goes on past it). Each entry holds a window's cross K/V (12 MB for
    // tiny at 20 s; up to 18 MB at 30 s), so only what may be reused is kept: with every
    // partial kept, each added server stream cost 16.5 MiB instead of 8.3 (benches/serve_load.py).
    if job.keep_window {
        cache.put(job.stream, job.start_frame, job.content_frames, cross);
    } else {
        cache.forget(job.stream);
    }
    outcome
}

/// A final on the encoder output of the stream's last partial: align the words only.
fn reuse_window(model: &mut WhisperModel, job: &WindowJob, reuse: &Reuse, cross: &CrossKv) -> Result<WindowOutcome> {
    let started = Instant::now();
    let hyp = forced_hypothesis(&reuse.tokens, &reuse.token_logprobs);
    let language = job.language;
    let words = if job.words && !reuse.tokens.is_empty() && model.decoder.has_cross_qk() {
        Some(words_for(model, job, cross, &hyp, language, reuse.content_frames)?)
    } else {
        None
    };
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "final reused the last window"
    );
    Ok(WindowOutcome {
        tokens: reuse.tokens.clone(),
        token_logprobs: hyp.token_logprobs,
        words,
        reused: true,
        decode_ms: started.elapsed().as_secs_f64() * 1e3,
        ..WindowOutcome::default()
    })
}

/// A hypothesis made of given tokens (log-probabilities padded with 0 to their length).
fn forced_hypothesis(tokens: &[u32], logprobs: &[f32]) -> Hypothesis {
    let mut token_logprobs = logprobs.to_vec();
    token_logprobs.resize(tokens.len(), 0.0);
    Hypothesis {
        tokens: tokens.to_vec(),
        token_logprobs,
        sum_logprob: 0.0,
        avg_logprob: 0.0,
        no_speech_prob: 0.0,
        temperature: 0.0,
        repetitive: false,
    }
}

/// Word times for `hyp`'s text over the window `cross` encodes (`content_frames` of audio).
fn words_for(
    model: &mut WhisperModel,
    job: &WindowJob,
    cross: &CrossKv,
    hyp: &Hypothesis,
    language: Option<u32>,
    content_frames: usize,
) -> Result<Vec<Word>> {
    let eot = model.tokens.eot;
    let tokens: Vec<u32> = hyp.tokens.iter().copied().filter(|&t| t < eot).collect();
    let content_s = content_frames as f32 / 100.0;
    let sot_sequence = initial_tokens(model, language, job.options.task, true, &[]).0;
    let spaceless = language
        .and_then(|l| model.tokens.languages.iter().find(|x| x.token == l))
        .is_some_and(|l| timing::SPACELESS_LANGUAGES.contains(&l.code.as_str()));
    let piece = TimedTokens {
        start_s: 0.0,
        end_s: f64::from(content_s),
        tokens,
    };
    let aligned = align_words(
        model,
        cross,
        hyp,
        std::slice::from_ref(&piece),
        &sot_sequence,
        content_frames,
        job.time_offset_s,
        job.time_offset_s,
        spaceless,
    )?;
    let end_s = job.time_offset_s + f64::from(content_s);
    Ok(aligned
        .iter()
        .flat_map(|segment| &segment.words)
        .map(|w| Word::from_timing(w, end_s))
        .collect())
}

/// Detect the language if needed, search, cut a restart, align words.
fn decode_job(model: &mut WhisperModel, job: &WindowJob, cross: &CrossKv, encode_ms: f64) -> Result<WindowOutcome> {
    let started = Instant::now();
    let language = match job.language {
        Some(token) => Some(token),
        None if model.spec.multilingual => {
            let (code, _) = detect_language(model, cross)?;
            model.tokens.language(&code)
        }
        None => None,
    };
    let mut track = job.track_attention.then(|| AttentionTrack {
        content_frames: job.content_frames.div_ceil(2),
        frames: Vec::new(),
    });
    let content_s = job.content_frames as f32 / 100.0;
    let (hyp, compression_ratio, prefix_len) = if job.decode {
        let WindowHypothesis {
            hyp,
            compression_ratio,
            prefix_len,
        } = decode_window(
            model,
            cross,
            &WindowText {
                prompt: &job.prompt,
                forced: &job.forced,
                draft: &job.draft,
                language,
                content_s,
                seed: job.stream,
            },
            &job.options,
            track.as_mut(),
        )?;
        (hyp, compression_ratio, prefix_len)
    } else {
        (forced_hypothesis(&job.forced, &[]), 0.0, 0)
    };
    // The forced tokens were scored when they were first decoded; keep those scores.
    let mut hyp = hyp;
    for (slot, &lp) in hyp.token_logprobs.iter_mut().zip(&job.forced_logprobs) {
        *slot = lp;
    }
    let eot = model.tokens.eot;
    let mut tokens: Vec<u32> = hyp.tokens.iter().copied().filter(|&t| t < eot).collect();
    let new_count = tokens.len().saturating_sub(job.forced.len());
    let mut new_token_frames: Vec<u32> = match &track {
        Some(track) if prefix_len > 0 => (0..new_count)
            .map_while(|j| track.frames.get(prefix_len - 1 + j).copied())
            .collect(),
        _ => Vec::new(),
    };
    // A decoder that loops back over the window's audio (Whisper's repeat on padded windows)
    // is cut where the repeat begins.
    if let Some(cut) = restart_at(&tokens, job.forced.len(), &new_token_frames, RESTART_JUMP_FRAMES, 3) {
        tracing::debug!(cut, "the decoder restarted over the audio: hypothesis cut");
        tokens.truncate(cut);
        new_token_frames.truncate(cut - job.forced.len());
    }
    tracing::debug!(
        content = job.content_frames.div_ceil(2),
        forced = job.forced.len(),
        ?tokens,
        ?new_token_frames,
        "window decoded"
    );
    let token_logprobs: Vec<f32> = hyp.token_logprobs.iter().take(tokens.len()).copied().collect();
    let words = if job.words && !tokens.is_empty() && model.decoder.has_cross_qk() {
        let hyp = Hypothesis {
            tokens: tokens.clone(),
            token_logprobs: token_logprobs.clone(),
            ..hyp.clone()
        };
        Some(words_for(model, job, cross, &hyp, language, job.content_frames)?)
    } else {
        None
    };
    let decode_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(
        encode_ms,
        decode_ms,
        words = job.words,
        new = new_count,
        "window timing"
    );
    Ok(WindowOutcome {
        tokens,
        token_logprobs,
        new_token_frames,
        words,
        no_speech_prob: hyp.no_speech_prob,
        avg_logprob: hyp.avg_logprob,
        compression_ratio,
        repetitive: hyp.repetitive,
        encode_ms,
        decode_ms,
        reused: false,
        stopped: false,
    })
}
