//! A live stream: samples pushed in, [`StreamEvent`]s out, on a coordinator thread of its own.
//!
//! ```text
//! push / AudioSender ─ bounded channel ─▶ coordinator thread (this module; one per stream)
//!     rubato to 16 kHz → VAD (512-sample windows) → MelStream (raw frames, once each)
//!     → utterance state + commit policy ── window jobs ─▶ Engine worker (shared, see engine.rs)
//!  ◀─ bounded channel of TimedEvent (Partial, Final, Stats, Warning, Error) ─┘
//! ```
//!
//! Per-stream state lives in `Coordinator` and `Utterance` (the analogue of whisper.cpp's
//! `whisper_state`); the engine holds the weights. The coordinator keeps at most one window job
//! queued or running: the next partial is built from the newest audio when the previous one
//! returns, so a slow machine stretches the hop instead of falling behind, and a stale partial
//! never waits in a queue. Endpoint (final) jobs are never dropped.
//!
//! Two pacings ([`Pacing`]): `Live` (a microphone: pushing never blocks, samples that find the
//! input queue full are dropped, counted and reported as a `Warning`) and `Lockstep` (a file
//! as fast as possible: pushing blocks, and every job is waited for at a position fixed by the
//! audio, so the output is deterministic).
//!
//! Turns: [`StreamSession::flush`] ends the utterances heard so far (finals, then `Flushed`)
//! and [`StreamSession::discard`] drops the one in progress, the stream going on after either;
//! with `turn_events` each utterance is announced (`SpeechStarted`, `SpeechStopped`) and always
//! ends with a final. Together they carry OpenAI Realtime's turns (server/realtime.rs).
//!
//! Invariants (asserted by the tests): committed text only grows within an utterance; each
//! final's text begins with the last committed text; exactly one final per utterance; times
//! are on the audio clock (seconds from the stream's first sample) and never go back.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::commit::{AlignAtt, CommitPolicy, LocalAgreement, PolicyKind, Update};
use super::config::{Pacing, StreamConfig};
use super::vad::{SpeechDetector, VAD_WINDOW, VadEvent, VadSegmenter, detector};
use super::window::{Reuse, WindowJob, WindowOutcome};
use crate::audio::StreamResampler;
use crate::decode::quality::SPEECH_BAND_HZ;
use crate::engine::{Engine, EngineHandle, Speaking};
use crate::error::{Error, Result};
use crate::features::{LogMel, MelStream};
use crate::model::encoder::MelFrames;
use crate::transcribe::{Segment, TranscribeOptions, Word};

/// What a stream tells its caller.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The current utterance so far: `committed` never changes except by growing; `tentative`
    /// may still change. Times in seconds on the audio clock.
    Partial {
        utterance: u64,
        committed: String,
        tentative: String,
        start: f64,
        end: f64,
    },
    /// The utterance is over: its text (beginning with the last committed text) never changes.
    Final {
        utterance: u64,
        text: String,
        start: f64,
        end: f64,
        segments: Vec<Segment>,
        /// Word times, for models with `cross_qk`.
        #[serde(skip_serializing_if = "Option::is_none")]
        words: Option<Vec<Word>>,
        /// Milliseconds from the endpoint decision to this event (queueing and decoding).
        compute_ms: f64,
        /// Why the utterance ended.
        reason: EndReason,
    },
    /// Running totals.
    Stats(StreamStats),
    /// Something the caller should know; the stream goes on.
    Warning { message: String },
    /// A job failed; the stream goes on (the utterance keeps what was committed).
    Error { message: String },
    /// An utterance opened (only with `turn_events`): speech from `start` (seconds on the
    /// audio clock, the VAD's padding included). Its `Final` always follows.
    SpeechStarted { utterance: u64, start: f64 },
    /// The end of an utterance was decided (only with `turn_events`): speech up to `end`; its
    /// `Final` follows once decoded.
    SpeechStopped { utterance: u64, end: f64 },
    /// Everything pushed before [`StreamSession::flush`] (or [`StreamSession::discard`]) is
    /// accounted for: its finals came before this event. `end`: where the audio taken stops.
    Flushed { end: f64 },
}

/// Why an utterance ended (the `reason` of a final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The speaker paused (`min_silence_ms` of silence): `end` is where speech stopped.
    Silence,
    /// The utterance reached `max_utterance_s` and was cut at its last committed word; the
    /// speech goes on in the next utterance.
    MaxLength,
    /// The input ended.
    EndOfInput,
    /// The caller ended the utterance ([`StreamSession::flush`]).
    Flush,
}

/// Running totals of a stream.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StreamStats {
    /// Seconds of audio received (16 kHz clock).
    pub audio_s: f64,
    /// Wall seconds since the stream started.
    pub wall_s: f64,
    /// Inference seconds / audio seconds (below 1: faster than real time).
    pub real_time_factor: f64,
    /// Mean milliseconds per window job (encoder and decoder).
    pub mean_decode_ms: f64,
    pub partial_jobs: u64,
    pub final_jobs: u64,
    /// Finals that reused their last partial's encoder window (no encoder run, no search).
    pub reused_finals: u64,
    /// Partials stopped midway on the worker by a more urgent job of any stream (a final, or
    /// a partial heard in a pause); the next hop asks again.
    pub stopped_partials: u64,
    /// Samples dropped because the coordinator fell behind (live pacing only).
    pub dropped_samples: u64,
}

/// An event with its emission time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimedEvent {
    /// Milliseconds since the stream started, when the event was emitted (wall clock).
    pub wall_ms: f64,
    #[serde(flatten)]
    pub event: StreamEvent,
}

enum Input {
    Audio {
        samples: Vec<f32>,
        rate: u32,
    },
    /// End the utterances heard so far (`discard`: drop the one not yet ending), then `Flushed`.
    Flush {
        discard: bool,
    },
    Finish,
}

/// Pushes audio into a stream from any thread (a capture callback): never blocks.
#[derive(Clone)]
pub struct AudioSender {
    tx: Sender<Input>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AudioSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSender").finish_non_exhaustive()
    }
}

impl AudioSender {
    /// Queue `samples` (mono, `sample_rate` Hz) without blocking; when the queue is full (or
    /// the stream is over) they are dropped and counted, and `false` is returned.
    pub fn try_push(&self, samples: &[f32], sample_rate: u32) -> bool {
        let message = Input::Audio {
            samples: samples.to_vec(),
            rate: sample_rate,
        };
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(samples.len() as u64, Ordering::Relaxed);
                false
            }
        }
    }
}

/// A live stream on an [`Engine`] (see the module doc).
pub struct StreamSession<'e> {
    input: Option<Sender<Input>>,
    events: Option<Receiver<TimedEvent>>,
    dropped: Arc<AtomicU64>,
    pacing: Pacing,
    coordinator: Option<JoinHandle<()>>,
    _engine: PhantomData<&'e Engine>,
    /// The engine of a [`StreamSession::start_shared`] stream, kept alive by it.
    _shared: Option<Arc<Engine>>,
}

impl std::fmt::Debug for StreamSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSession")
            .field("pacing", &self.pacing)
            .finish_non_exhaustive()
    }
}

/// Stream ids, for logs and the sampler seed.
static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

impl<'e> StreamSession<'e> {
    /// Start a stream on `engine`'s worker. Fails when the configuration is invalid or does
    /// not fit the model, or the VAD model cannot be loaded.
    pub fn start(engine: &'e Engine, config: StreamConfig) -> Result<StreamSession<'e>> {
        Self::spawn(engine, config, None)
    }

    /// Start the coordinator; the lifetime is the caller's ([`StreamSession::start`] borrows
    /// the engine, [`StreamSession::start_shared`] owns a reference to it).
    fn spawn(engine: &Engine, config: StreamConfig, shared: Option<Arc<Engine>>) -> Result<StreamSession<'e>> {
        config.validate()?;
        let handle = engine.handle()?;
        super::window::presize(&handle, Arc::new(config.decode_options(&handle.options)))?;
        let vad = detector(&config.vad, engine.runtime_config())?;
        let coordinator = Coordinator::new(handle, config.clone(), vad)?;
        let (input_tx, input_rx) = bounded::<Input>(config.input_queue);
        let (events_tx, events_rx) = bounded::<TimedEvent>(config.event_queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_seen = dropped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("steno-stream-{}", coordinator.id))
            .spawn(move || coordinator.run(input_rx, events_tx, dropped_seen))
            .map_err(|e| Error::Worker(format!("cannot start the stream thread: {e}")))?;
        Ok(StreamSession {
            input: Some(input_tx),
            events: Some(events_rx),
            dropped,
            pacing: config.pacing,
            coordinator: Some(thread),
            _engine: PhantomData,
            _shared: shared,
        })
    }

    /// Push samples (mono, `sample_rate` Hz, f32 in [-1, 1]). `Lockstep` pacing blocks while
    /// the stream is busy; `Live` never blocks and drops what does not fit (counted, reported).
    pub fn push(&self, samples: &[f32], sample_rate: u32) -> Result<()> {
        if !(crate::audio::MIN_SOURCE_RATE..=crate::audio::MAX_SOURCE_RATE).contains(&sample_rate) {
            return Err(Error::config(
                "sample_rate",
                format!("{sample_rate} Hz is not a usable audio rate"),
            ));
        }
        let input = self
            .input
            .as_ref()
            .ok_or_else(|| Error::Worker("the stream is finished".into()))?;
        match self.pacing {
            Pacing::Lockstep => input
                .send(Input::Audio {
                    samples: samples.to_vec(),
                    rate: sample_rate,
                })
                .map_err(|_| Error::Worker("the stream thread has stopped".into())),
            Pacing::Live => {
                self.sender()?.try_push(samples, sample_rate);
                Ok(())
            }
        }
    }

    /// A non-blocking pusher for another thread (a capture callback).
    pub fn sender(&self) -> Result<AudioSender> {
        let tx = self
            .input
            .clone()
            .ok_or_else(|| Error::Worker("the stream is finished".into()))?;
        Ok(AudioSender {
            tx,
            dropped: self.dropped.clone(),
        })
    }

    /// End of input: the last words are decoded and emitted as a final, then a `Stats`
    /// event, then the event channel closes.
    pub fn finish(&mut self) {
        if let Some(input) = self.input.take() {
            // Blocking on purpose: the end of input must not be dropped.
            let _ = input.send(Input::Finish);
        }
    }

    /// End the turn: what was pushed so far is decoded to its end as finals (reason `flush`),
    /// as at the end of input, then a `Flushed` event; the stream goes on, and the next speech
    /// opens a new utterance. Blocks only while the input queue is full.
    pub fn flush(&self) -> Result<()> {
        self.send_flush(false)
    }

    /// Drop the turn: the utterance in progress is dropped without a final (one whose end was
    /// already decided is still finished), as is input not yet in an utterance, then a
    /// `Flushed` event; the stream goes on.
    pub fn discard(&self) -> Result<()> {
        self.send_flush(true)
    }

    fn send_flush(&self, discard: bool) -> Result<()> {
        let input = self
            .input
            .as_ref()
            .ok_or_else(|| Error::Worker("the stream is finished".into()))?;
        // Blocking on purpose, as `finish`: a flush must not be dropped.
        input
            .send(Input::Flush { discard })
            .map_err(|_| Error::Worker("the stream thread has stopped".into()))
    }

    /// The events; the channel closes after the last one.
    pub fn events(&self) -> &Receiver<TimedEvent> {
        // Only `Drop` takes it.
        self.events
            .as_ref()
            .unwrap_or_else(|| unreachable!("events are taken only on drop"))
    }
}

impl StreamSession<'static> {
    /// [`StreamSession::start`] on a shared engine, for streams that live as long as they like
    /// (a server's connections); the engine stays loaded while any stream holds it.
    pub fn start_shared(engine: Arc<Engine>, config: StreamConfig) -> Result<StreamSession<'static>> {
        let kept = engine.clone();
        Self::spawn(&engine, config, Some(kept))
    }
}

impl Drop for StreamSession<'_> {
    fn drop(&mut self) {
        // Nobody reads the events any more: dropping the receiver first ends the coordinator's
        // sends, so it cannot sit blocked on a full event queue while `finish` waits for room
        // in the input queue (a server client that stopped reading).
        self.events.take();
        self.finish();
        if let Some(thread) = self.coordinator.take() {
            let _ = thread.join();
        }
    }
}

/// The state of one utterance.
struct Utterance {
    /// Event id, given when the utterance first shows text.
    id: Option<u64>,
    /// First mel frame (stream clock).
    start_frame: u64,
    /// Committed tokens (the forced prefix of every later decode).
    committed: Vec<u32>,
    /// Their log-probabilities when they were decoded.
    committed_logprobs: Vec<f32>,
    /// The rest of the last hypothesis.
    tentative: Vec<u32>,
    /// The commit boundary's audio position: where the decoder looked when predicting the
    /// first uncommitted token (stream mel frame), for cutting at the maximum length.
    boundary_frame: Option<u64>,
    /// Mel frame up to which the last partial decoded.
    decoded_to: u64,
    /// What the last Partial event said (to skip repeats).
    last_sent: (usize, Vec<u32>),
    /// The last partial's window (start frame, content frames) and its hypothesis for this
    /// utterance (context tokens removed).
    last_window: Option<(u64, usize, Vec<u32>)>,
    /// That hypothesis's token log-probabilities and quality (avg log-prob, no-speech
    /// probability, compression ratio), which a reused final reports.
    last_scores: (Vec<f32>, (f64, f32, f32)),
    /// `SpeechStopped` was emitted (turn events).
    stopped: bool,
    /// A window led by earlier finals came back with nothing for this utterance: Whisper took
    /// the context's last sentence for the end of the text. Its windows go without context.
    alone: bool,
    /// Counts this utterance among the engine's streams in speech while it is open.
    _speaking: Speaking,
}

/// Silence (ms) after which the speech heard so far is decoded without waiting for the hop
/// (`Coordinator::maybe_schedule_partial`): early enough for the decode to be ready when the
/// VAD's `min_silence_ms` (500 by default) ends the utterance, even at one thread.
const PREPARE_AFTER_SILENCE_MS: u64 = 200;

/// Mel frames of an utterance (2 s) after which a partial led by context that decodes nothing
/// for it means the context swallowed it (`Coordinator::context_swallowed`).
const SWALLOWED_AFTER_FRAMES: u64 = 200;

/// Why an utterance ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    /// The VAD heard `min_silence_ms` of silence; speech ended at this frame.
    Silence { end_frame: u64 },
    /// The utterance reached `max_utterance_s`.
    MaxLength,
    /// End of input (`EndOfInput`) or a flush (`Flush`).
    Finished { end_frame: u64, reason: EndReason },
}

/// A window job on the worker.
struct InFlight {
    rx: Receiver<Result<WindowOutcome>>,
    /// Cancels the job while it waits in the worker's queue (see `request_endpoint`).
    ticket: crate::engine::Ticket,
    kind: JobKind,
    /// Mel frames the job's window starts at and holds (context included).
    start_frame: u64,
    content_frames: usize,
    /// The utterance the job decodes, by its first frame.
    utterance_start: u64,
    /// Tokens of earlier finals leading the forced prefix (audio context).
    context_len: usize,
    submitted: Instant,
    /// A partial heard in a pause (`WindowJob::keep_window`).
    keep_window: bool,
}

/// A final kept as audio context for the next utterances.
#[derive(Debug, Clone)]
struct Heard {
    start_frame: u64,
    tokens: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum JobKind {
    /// A partial; `prepared`: decoded before its hop because a pause began (it does not commit).
    Partial { prepared: bool },
    /// Final of the current utterance; `decided` is when the endpoint was decided; `cut`:
    /// the next utterance starts at this frame (maximum length).
    Final {
        end_frame: u64,
        decided: Instant,
        reason: EndReason,
        cut: Option<u64>,
        /// The endpoint it answers (to decode it again without context).
        endpoint: Endpoint,
    },
}

/// The per-stream state: everything between the pushed samples and the events.
struct Coordinator {
    id: u64,
    config: StreamConfig,
    handle: EngineHandle,
    options: Arc<TranscribeOptions>,
    /// A final's options: the partials' plus the engine's temperature ladder, so a final
    /// that fails the quality gates (a repetition loop, found on tiny.en int8: "Ask not. Ask
    /// not. Ask not. …" for JFK's second utterance) is decoded again hotter, as batch does.
    /// Partials stay at temperature 0: they are redone every hop anyway.
    final_options: Arc<TranscribeOptions>,
    policy: Box<dyn CommitPolicy>,
    track_attention: bool,
    resampler: Option<StreamResampler>,
    resampled: Vec<f32>,
    vad: Box<dyn SpeechDetector>,
    segmenter: VadSegmenter,
    /// 16 kHz samples not yet seen by the VAD (fewer than one window).
    vad_pending: Vec<f32>,
    mel: MelStream,
    utterance: Option<Utterance>,
    /// An endpoint waiting for the job in flight to return.
    endpoint: Option<(Endpoint, Instant)>,
    /// VAD events heard while the last utterance was finishing, handled after its final.
    deferred: std::collections::VecDeque<VadEvent>,
    in_flight: Option<InFlight>,
    /// Live pacing with `max_duty_cycle` below 1: no regular partial before this instant.
    partial_not_before: Option<Instant>,
    next_utterance: u64,
    /// Finals of earlier utterances, oldest first: the newest ones within `context_s` lead
    /// each window as audio with their text forced; older ones are the prompt.
    history: std::collections::VecDeque<Heard>,
    language: Option<u32>,
    events: Option<Sender<TimedEvent>>,
    started: Instant,
    stats: StreamStats,
    busy_ms: f64,
    nonfinite_warned: bool,
    last_stats_audio_s: f64,
    /// The last time reported by an event (times never go back).
    last_end_s: f64,
    /// The worker may hold this stream's last window (a partial heard in a pause, for the
    /// final to reuse) ending at this mel frame: forgotten once the speech goes on past what
    /// a final could reuse it for (`forget_kept_window`).
    window_kept: Option<u64>,
    /// This stream's partials stopped in a row by more urgent jobs (`WindowJob::stoppable`).
    stopped_in_row: u32,
}

/// After this many of a stream's partials in a row were stopped, its next one runs to the end
/// (under a steady run of finals the stream still shows text).
const MAX_STOPPED_IN_ROW: u32 = 2;

impl Drop for Coordinator {
    /// However the stream ends, the worker drops what it keeps for it.
    fn drop(&mut self) {
        self.handle.forget(self.id);
    }
}

impl Coordinator {
    fn new(handle: EngineHandle, config: StreamConfig, vad: Box<dyn SpeechDetector>) -> Result<Coordinator> {
        let kind = match config.commit_policy {
            PolicyKind::Auto if handle.has_cross_qk => PolicyKind::AlignAtt,
            PolicyKind::Auto => PolicyKind::LocalAgreement,
            PolicyKind::AlignAtt if !handle.has_cross_qk => {
                return Err(Error::config(
                    "commit_policy",
                    "alignatt needs a model with cross_qk (steno's export); use la2 or auto",
                ));
            }
            other => other,
        };
        let policy: Box<dyn CommitPolicy> = match kind {
            PolicyKind::AlignAtt => Box::new(
                AlignAtt::new(config.frame_threshold_ms, config.rewind_threshold_ms)
                    .with_agreement(config.alignatt_agreement),
            ),
            _ => Box::new(LocalAgreement::default()),
        };
        let language = match &config.language {
            Some(code) if handle.spec.multilingual => Some(
                handle
                    .tokens
                    .language(code)
                    .ok_or_else(|| Error::config("language", format!("`{code}` is not a language of this model")))?,
            ),
            Some(code) if code != "en" => {
                return Err(Error::config(
                    "language",
                    format!("`{code}`: {} is an English-only model", handle.spec.model_type),
                ));
            }
            _ => None,
        };
        let options = Arc::new(config.decode_options(&handle.options));
        let final_options = Arc::new(TranscribeOptions {
            temperatures: handle.options.temperatures.clone(),
            ..(*options).clone()
        });
        let log_mel = LogMel::new(handle.spec.n_mels).map_err(|e| Error::config("n_mels", e.to_string()))?;
        Ok(Coordinator {
            id: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            segmenter: VadSegmenter::new(&config.vad),
            track_attention: kind == PolicyKind::AlignAtt,
            policy,
            options,
            final_options,
            language,
            config,
            handle,
            resampler: None,
            resampled: Vec::new(),
            vad,
            vad_pending: Vec::new(),
            mel: MelStream::new(log_mel),
            utterance: None,
            endpoint: None,
            deferred: std::collections::VecDeque::new(),
            in_flight: None,
            partial_not_before: None,
            next_utterance: 0,
            history: std::collections::VecDeque::new(),
            events: None,
            started: Instant::now(),
            stats: StreamStats::default(),
            busy_ms: 0.0,
            nonfinite_warned: false,
            last_stats_audio_s: 0.0,
            last_end_s: 0.0,
            window_kept: None,
            stopped_in_row: 0,
        })
    }

    fn run(mut self, input: Receiver<Input>, events: Sender<TimedEvent>, dropped: Arc<AtomicU64>) {
        let _span = tracing::info_span!("stream", id = self.id).entered();
        self.events = Some(events);
        self.started = Instant::now();
        let never = crossbeam_channel::never();
        loop {
            self.report_drops(&dropped);
            let job_rx = self.in_flight.as_ref().map(|j| j.rx.clone());
            crossbeam_channel::select! {
                recv(input) -> message => match message {
                    Ok(Input::Audio { samples, rate }) => self.on_audio(&samples, rate),
                    Ok(Input::Flush { discard }) => self.on_flush(discard),
                    Ok(Input::Finish) | Err(_) => break,
                },
                recv(job_rx.as_ref().unwrap_or(&never)) -> outcome => {
                    let outcome = outcome.unwrap_or_else(|_| Err(Error::Worker("the inference thread stopped".into())));
                    self.on_outcome(outcome);
                },
            }
            if self.events.is_none() {
                return;
            }
        }
        self.report_drops(&dropped);
        self.on_end_of_input();
        self.emit_stats();
    }

    fn report_drops(&mut self, dropped: &AtomicU64) {
        let now = dropped.load(Ordering::Relaxed);
        if now > self.stats.dropped_samples {
            let new = now - self.stats.dropped_samples;
            self.stats.dropped_samples = now;
            self.emit(StreamEvent::Warning {
                message: format!("dropped {new} input samples ({now} in all): the stream fell behind its input"),
            });
        }
    }

    fn emit(&mut self, event: StreamEvent) {
        let wall_ms = self.started.elapsed().as_secs_f64() * 1e3;
        if let Some(tx) = &self.events
            && tx.send(TimedEvent { wall_ms, event }).is_err()
        {
            // The caller is gone: stop producing.
            self.events = None;
        }
    }

    /// A `Stats` event every `stats_interval_s` of audio.
    fn maybe_emit_stats(&mut self) {
        if self.mel.samples_seen() as f64 / 16_000.0 - self.last_stats_audio_s >= self.config.stats_interval_s {
            self.emit_stats();
        }
    }

    fn emit_stats(&mut self) {
        let audio_s = self.mel.samples_seen() as f64 / 16_000.0;
        let jobs = self.stats.partial_jobs + self.stats.final_jobs;
        self.stats.audio_s = audio_s;
        self.stats.wall_s = self.started.elapsed().as_secs_f64();
        self.stats.real_time_factor = if audio_s > 0.0 {
            self.busy_ms / 1e3 / audio_s
        } else {
            0.0
        };
        self.stats.mean_decode_ms = if jobs > 0 { self.busy_ms / jobs as f64 } else { 0.0 };
        self.last_stats_audio_s = audio_s;
        let stats = self.stats.clone();
        self.emit(StreamEvent::Stats(stats));
    }

    /// New samples at `rate`: resample, then VAD and mel frame by VAD window.
    fn on_audio(&mut self, samples: &[f32], rate: u32) {
        let clean: Vec<f32>;
        let samples = if samples.iter().all(|x| x.is_finite()) {
            samples
        } else {
            if !self.nonfinite_warned {
                self.nonfinite_warned = true;
                self.emit(StreamEvent::Warning {
                    message: "input has NaN or infinite samples; they are read as silence".into(),
                });
            }
            clean = samples.iter().map(|&x| if x.is_finite() { x } else { 0.0 }).collect();
            &clean
        };
        let mut out = std::mem::take(&mut self.resampled);
        out.clear();
        if rate == 16_000 {
            if let Some(mut r) = self.resampler.take() {
                let _ = r.finish(&mut out);
            }
            out.extend_from_slice(samples);
        } else {
            if self.resampler.as_ref().is_some_and(|r| r.from_rate() != rate)
                && let Some(mut r) = self.resampler.take()
            {
                let _ = r.finish(&mut out);
            }
            if self.resampler.is_none() {
                match StreamResampler::new(rate, &format!("stream {}", self.id)) {
                    Ok(r) => self.resampler = Some(r),
                    Err(e) => {
                        self.emit(StreamEvent::Error {
                            message: format!("input at {rate} Hz: {e}"),
                        });
                        self.resampled = out;
                        return;
                    }
                }
            }
            if let Some(r) = self.resampler.as_mut()
                && let Err(e) = r.push(samples, &mut out)
            {
                self.emit(StreamEvent::Error { message: e.to_string() });
            }
        }
        self.feed_16k(&out);
        self.resampled = out;
        self.maybe_emit_stats();
    }

    fn feed_16k(&mut self, samples: &[f32]) {
        crate::metrics::add_audio_seconds(samples.len() as f64 / f64::from(crate::audio::SAMPLE_RATE));
        self.vad_pending.extend_from_slice(samples);
        let mut offset = 0;
        // Taken out while its windows are handled, so no window is copied.
        let pending = std::mem::take(&mut self.vad_pending);
        while let Some(window) = pending.get(offset..offset + VAD_WINDOW) {
            self.on_vad_window(window);
            offset += VAD_WINDOW;
        }
        self.vad_pending = pending;
        self.vad_pending.drain(..offset);
    }

    fn on_vad_window(&mut self, window: &[f32]) {
        self.mel.push(window);
        let probability = match self.vad.probability(window) {
            Ok(p) => p,
            Err(e) => {
                self.emit(StreamEvent::Error {
                    message: format!("voice activity detection: {e}"),
                });
                0.0
            }
        };
        if let Some(event) = self.segmenter.push(probability) {
            if self.finalizing() {
                // The last utterance's final is still being made: this speech is the next
                // utterance's, heard once that final is out (never dropped).
                self.deferred.push_back(event);
            } else {
                self.on_vad_event(event);
            }
        }
        self.forget_kept_window();
        self.maybe_cut_at_max_length();
        self.maybe_schedule_partial();
        if self.utterance.is_none() && self.in_flight.is_none() {
            // Between utterances keep only what a coming speech start can reach back to.
            let keep = (self.config.vad.speech_pad_ms as u64 / 10) + self.config.vad.min_speech_ms as u64 / 10 + 64;
            let from = self
                .mel
                .frames_end()
                .saturating_sub(keep)
                .min(self.oldest_context_frame());
            self.mel.discard_before(from);
        }
    }

    /// The speech went on after a pause past the kept window's reach (its end plus the VAD's
    /// speech padding, as `submit` checks a reuse): that window can no longer serve a final,
    /// so the worker drops it now rather than at the stream's next window, which the duty
    /// cycle may put seconds away. With many streams the kept windows (up to 18 MB each at
    /// 30 s) are much of a stream's memory.
    fn forget_kept_window(&mut self) {
        let Some(kept_end) = self.window_kept else { return };
        let speech_pad = u64::from(self.config.vad.speech_pad_ms / 10);
        let heard = self.segmenter.samples() / 160;
        // Not while the utterance is ending: the VAD's silence run is over then too (it has
        // ended the speech), and the final waiting for a prepare in flight reuses its window.
        let speaking = self.utterance.is_some() && !self.finalizing() && self.segmenter.silence_run() == 0;
        if speaking && beyond_reach(kept_end, heard, speech_pad) {
            self.window_kept = None;
            self.handle.forget(self.id);
        }
    }

    fn on_vad_event(&mut self, event: VadEvent) {
        match event {
            VadEvent::SpeechStart { sample } if self.utterance.is_none() => {
                self.open_utterance(sample / 160);
            }
            VadEvent::SpeechEnd { sample } if self.utterance.is_some() => {
                self.request_endpoint(Endpoint::Silence {
                    end_frame: sample / 160,
                });
            }
            _ => {}
        }
    }

    /// The current utterance is ending: its endpoint waits for a job, or its final is queued
    /// or running.
    fn finalizing(&self) -> bool {
        self.endpoint.is_some()
            || matches!(
                self.in_flight,
                Some(InFlight {
                    kind: JobKind::Final { .. },
                    ..
                })
            )
    }

    /// Handle the VAD events that came while an utterance was finishing, in order.
    fn replay_deferred(&mut self) {
        while !self.finalizing() {
            let Some(event) = self.deferred.pop_front() else { break };
            self.on_vad_event(event);
        }
    }

    /// The first frame a coming window may still read as context.
    fn oldest_context_frame(&self) -> u64 {
        let now = self.mel.frames_end();
        let reach = (self.config.context_s * 100.0) as u64 + (self.config.max_utterance_s * 100.0) as u64;
        self.history
            .iter()
            .map(|h| h.start_frame)
            .find(|&s| s + reach >= now)
            .unwrap_or(now)
    }

    fn open_utterance(&mut self, start_frame: u64) {
        let start_frame = start_frame.max(self.mel.frames_start());
        tracing::debug!(start_frame, "utterance starts");
        self.policy.reset();
        // With turn events every utterance is announced, so it has its id from the start.
        let id = self.config.turn_events.then(|| {
            let id = self.next_utterance;
            self.next_utterance += 1;
            id
        });
        self.utterance = Some(Utterance {
            id,
            start_frame,
            committed: Vec::new(),
            committed_logprobs: Vec::new(),
            tentative: Vec::new(),
            boundary_frame: None,
            decoded_to: start_frame,
            last_sent: (0, Vec::new()),
            last_window: None,
            last_scores: (Vec::new(), (0.0, 0.0, 0.0)),
            stopped: false,
            alone: false,
            _speaking: Speaking::new(&self.handle),
        });
        if let Some(utterance) = id {
            self.emit(StreamEvent::SpeechStarted {
                utterance,
                start: start_frame as f64 / 100.0,
            });
        }
    }

    /// `SpeechStopped` for the current utterance, once, ending at `end_frame` (turn events).
    fn announce_stop(&mut self, end_frame: u64) {
        let Some(u) = self.utterance.as_mut() else { return };
        if u.stopped {
            return;
        }
        u.stopped = true;
        if let Some(utterance) = u.id.filter(|_| self.config.turn_events) {
            let end = end_frame.max(u.start_frame) as f64 / 100.0;
            self.emit(StreamEvent::SpeechStopped { utterance, end });
        }
    }

    fn maybe_cut_at_max_length(&mut self) {
        let Some(u) = &self.utterance else { return };
        let max_frames = (self.config.max_utterance_s * 100.0) as u64;
        if self.endpoint.is_none()
            && !matches!(
                self.in_flight,
                Some(InFlight {
                    kind: JobKind::Final { .. },
                    ..
                })
            )
            && self.mel.frames_end().saturating_sub(u.start_frame) >= max_frames
        {
            self.request_endpoint(Endpoint::MaxLength);
        }
    }

    fn request_endpoint(&mut self, endpoint: Endpoint) {
        let decided = Instant::now();
        if let Endpoint::Silence { end_frame } | Endpoint::Finished { end_frame, .. } = endpoint {
            self.announce_stop(end_frame.min(self.mel.frames_end()));
        }
        // A partial still queued behind other streams' jobs is not worth waiting for: withdraw
        // it and queue the final now (the worker serves finals first). One already running
        // returns first and the final follows it.
        if self
            .in_flight
            .as_ref()
            .is_some_and(|job| matches!(job.kind, JobKind::Partial { .. }) && job.ticket.cancel())
        {
            self.in_flight = None;
        }
        if self.in_flight.is_some() {
            self.endpoint = Some((endpoint, decided));
            if self.config.pacing == Pacing::Lockstep {
                self.wait_in_flight();
            }
            return;
        }
        self.submit_final(endpoint, decided);
    }

    fn maybe_schedule_partial(&mut self) {
        if self.endpoint.is_some() {
            return;
        }
        let Some(u) = &self.utterance else { return };
        let end = self.mel.frames_end();
        let hop = u64::from(self.config.hop_ms / 10);
        // Nothing new worth decoding during a pause, once a decode has heard the speech up to
        // the pause (the final can then reuse that decode).
        let silence = self.segmenter.silence_run();
        let speech_end = (self.segmenter.samples() - silence) / 160;
        let pausing = silence >= u64::from(self.config.hop_ms) * 16 && u.decoded_to >= speech_end;
        // A pause has begun and no decode has heard the speech up to it: decode now rather
        // than at the next hop, so that if the pause becomes the endpoint, the final finds
        // this window ready (see `WindowJob::reuse`) instead of decoding from scratch.
        let prepare = silence >= PREPARE_AFTER_SILENCE_MS * 16 && u.decoded_to < speech_end;
        if let Some(job) = &self.in_flight {
            // The pause began while this stream's partial heard before it still waits in the
            // worker's queue (behind other streams' jobs): withdraw it for the prepare, which
            // the worker serves sooner and a final of this pause can reuse.
            let superseded = prepare && matches!(job.kind, JobKind::Partial { .. }) && !job.keep_window;
            if !(superseded && job.ticket.cancel()) {
                return;
            }
            tracing::debug!("a queued partial gives way to the pause's prepare");
            self.in_flight = None;
        }
        if (end < u.decoded_to + hop && !prepare) || end < u.start_frame + hop || pausing {
            return;
        }
        if !prepare && self.partial_not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let (start, content) = (u.start_frame, (end - u.start_frame) as usize);
        if !self.has_speech_energy(start, content) {
            return;
        }
        // Decoded early only to prepare a final: it shows, and may serve the final, but does not
        // commit (its audio is nearly the last decode's, so the two would agree by default).
        let prepared = end < u.decoded_to + hop;
        let forced = u.committed.clone();
        if let Some(u) = self.utterance.as_mut() {
            u.decoded_to = end;
        }
        self.submit(JobKind::Partial { prepared }, start, content, 0, forced, None);
    }

    /// When the next regular partial may start after a job that kept the worker busy `busy_ms`
    /// (`max_duty_cycle`; live pacing only: lockstep output depends on the audio alone).
    fn duty_cycle_rest(&self, busy_ms: f64) -> Option<Instant> {
        if self.config.pacing != Pacing::Live {
            return None;
        }
        // The streams in an utterance now share the worker's time for partials evenly: with
        // many streams the worker keeps room for finals instead of filling up with partials.
        let speaking = self.handle.speaking.load(Ordering::Acquire).max(1);
        let rest_ms = rest_after_ms(busy_ms, self.config.max_duty_cycle, speaking)?;
        Some(Instant::now() + std::time::Duration::from_secs_f64(rest_ms / 1e3))
    }

    /// The speech-band energy gate on raw frames (the batch gate's measure).
    fn has_speech_energy(&self, start: u64, frames: usize) -> bool {
        match self.options.thresholds.silence_log10_power {
            Some(min) => {
                let (lo, hi) = SPEECH_BAND_HZ;
                self.mel.band_peak_log10(start, frames, lo, hi) >= min
            }
            None => true,
        }
    }

    fn submit_final(&mut self, endpoint: Endpoint, decided: Instant) {
        let Some(u) = &self.utterance else { return };
        let now_frame = self.mel.frames_end();
        let (end_frame, cut) = match endpoint {
            Endpoint::Silence { end_frame } | Endpoint::Finished { end_frame, .. } => (end_frame.min(now_frame), None),
            Endpoint::MaxLength => match u.boundary_frame {
                // Cut where the committed words end; the rest starts the next utterance.
                Some(b) if !u.committed.is_empty() && b > u.start_frame => (b, Some(b)),
                _ => (now_frame, Some(now_frame)),
            },
        };
        let start = u.start_frame;
        let content = end_frame.saturating_sub(start) as usize;
        let forced = u.committed.clone();
        let reason = match endpoint {
            Endpoint::Silence { .. } => EndReason::Silence,
            Endpoint::MaxLength => EndReason::MaxLength,
            Endpoint::Finished { reason, .. } => reason,
        };
        self.announce_stop(end_frame);
        if content < 10 || (!self.has_speech_energy(start, content) && forced.is_empty()) {
            // Nothing to hear: the utterance ends without text (and without events if it
            // never showed any).
            self.close_utterance(end_frame, cut, decided, reason, None);
            return;
        }
        let kind = JobKind::Final {
            end_frame,
            decided,
            reason,
            cut,
            endpoint,
        };
        // Nothing heard since the last partial (its window reaches the end of speech): the
        // final is that partial's hypothesis, on its window (see `WindowJob::reuse`).
        let Some(u) = &self.utterance else { return };
        let reuse = match endpoint {
            Endpoint::Silence { .. } | Endpoint::Finished { .. } => u.last_window.clone(),
            Endpoint::MaxLength => None,
        };
        // The silence that ended the utterance is decoded with it: a window that stops where
        // the VAD's speech ends clips soft word endings, and Whisper reads a window cut off
        // after the last word as an unfinished sentence (without it, finals that no partial
        // had prepared came out lowercase and unpunctuated, and tiny.en int8 said JFK's "Ask
        // not." twice). At most `min_silence_ms`: what came later may be the next utterance.
        let tail = match endpoint {
            Endpoint::Silence { .. } | Endpoint::Finished { .. } => now_frame
                .saturating_sub(end_frame)
                .min(u64::from(self.config.vad.min_silence_ms / 10))
                as usize,
            Endpoint::MaxLength => 0,
        };
        // At the maximum length only the committed words are final: nothing is decoded past them.
        self.submit(kind, start, content, tail, forced, reuse);
    }

    /// The earlier finals that lead a window for the utterance at `utterance_start` ending at
    /// `end`: the newest ones that started within `context_s` of it, as long as the window
    /// still fits the encoder with its padding.
    fn context_for(&self, utterance_start: u64, end: u64) -> (u64, Vec<u32>) {
        let max_frames = self.handle.spec.max_mel_frames() as u64;
        let pad = (self.options.pad_s * 100.0).round() as u64;
        let reach = (self.config.context_s * 100.0) as u64;
        let mut start = utterance_start;
        let mut taken = 0;
        for heard in self.history.iter().rev() {
            let fits = end.saturating_sub(heard.start_frame) + pad <= max_frames;
            if heard.start_frame + reach < utterance_start || !fits || heard.start_frame < self.mel.frames_start() {
                break;
            }
            start = heard.start_frame;
            taken += 1;
        }
        let tokens = self
            .history
            .iter()
            .skip(self.history.len() - taken)
            .flat_map(|h| h.tokens.iter().copied())
            .collect();
        (start, tokens)
    }

    /// The prompt: tokens of the finals before the context, the last `prompt_max_tokens`.
    fn prompt_before(&self, context_start: u64) -> Vec<u32> {
        let tokens: Vec<u32> = self
            .history
            .iter()
            .take_while(|h| h.start_frame < context_start)
            .flat_map(|h| h.tokens.iter().copied())
            .collect();
        let keep_from = tokens.len().saturating_sub(self.config.prompt_max_tokens);
        tokens.get(keep_from..).unwrap_or_default().to_vec()
    }

    /// Queue a window job for the utterance at `start` holding `content` frames of it, with the
    /// audio context of earlier finals in front ([`Coordinator::context_for`]).
    fn submit(
        &mut self,
        kind: JobKind,
        start: u64,
        content: usize,
        tail: usize,
        committed: Vec<u32>,
        reuse: Option<(u64, usize, Vec<u32>)>,
    ) {
        let end = start + content as u64;
        let alone = self.utterance.as_ref().is_some_and(|u| u.alone);
        let is_final = matches!(kind, JobKind::Final { .. });
        // The VAD hears silence now: if the speech is over, the final can reuse this window, so
        // the worker keeps it.
        let keep_window = !is_final && self.segmenter.silence_run() > 0;
        let (window_start, context) = if self.config.context_s > 0.0 && !alone {
            self.context_for(start, end)
        } else {
            (start, Vec::new())
        };
        let max_frames = self.handle.spec.max_mel_frames();
        let pad = (self.options.pad_s * 100.0).round() as usize;
        let min = (self.options.min_window_s * 100.0).round() as usize;
        let content = ((end + tail as u64 - window_start) as usize).min(max_frames);
        let frames = match self.handle.mel_frames {
            MelFrames::Fixed(n) => n,
            // Even, so the stride-2 convolution maps frames exactly to 20 ms positions.
            MelFrames::Dynamic { max } => ((content + pad).max(min).div_ceil(2) * 2).min(max),
        };
        let mel = self.mel.window(window_start, content, frames);
        // Any other window replaces or spends the stream's kept one on the worker.
        self.window_kept = keep_window.then_some(window_start + content as u64);
        // A final cut at the maximum length where the committed words end: they are the whole
        // text, nothing is decoded past them.
        let forced_only = matches!(
            kind,
            JobKind::Final { endpoint: Endpoint::MaxLength, cut: Some(c), .. } if c != self.mel.frames_end()
        );
        let speech_pad = u64::from(self.config.vad.speech_pad_ms / 10);
        let last_scores = self
            .utterance
            .as_ref()
            .map(|u| u.last_scores.0.clone())
            .unwrap_or_default();
        let reuse = reuse.and_then(|(w_start, w_content, tokens)| {
            (w_start == window_start
                && w_start + w_content as u64 + speech_pad >= end
                && tokens.starts_with(&committed))
            .then(|| Reuse {
                start_frame: w_start,
                content_frames: w_content,
                tokens: context.iter().chain(&tokens).copied().collect(),
                token_logprobs: vec![0.0; context.len()].into_iter().chain(last_scores).collect(),
            })
        });
        let forced_logprobs: Vec<f32> = std::iter::repeat_n(0.0, context.len())
            .chain(
                self.utterance
                    .as_ref()
                    .map(|u| u.committed_logprobs.clone())
                    .unwrap_or_default(),
            )
            .collect();
        let context_len = context.len();
        // The last hypothesis after the committed words: most of it usually stands.
        let draft = Some(())
            .filter(|_| self.config.verify_draft)
            .and(self.utterance.as_ref())
            .and_then(|u| u.last_window.as_ref())
            .and_then(|(_, _, tokens)| tokens.strip_prefix(committed.as_slice()))
            .map(<[u32]>::to_vec)
            .unwrap_or_default();
        let mut forced = context;
        forced.extend_from_slice(&committed);
        let job = WindowJob {
            stream: self.id,
            mel,
            frames,
            content_frames: content,
            prompt: self.prompt_before(window_start),
            forced,
            draft,
            forced_logprobs,
            language: self.language,
            track_attention: self.track_attention,
            words: is_final && self.handle.has_cross_qk,
            is_final,
            time_offset_s: window_start as f64 / 100.0,
            options: if forced_only {
                Arc::new(TranscribeOptions {
                    max_tokens_per_second: 0.0,
                    ..(*self.options).clone()
                })
            } else if is_final {
                self.final_options.clone()
            } else {
                self.options.clone()
            },
            decode: !forced_only,
            start_frame: window_start,
            reuse,
            keep_window,
            stoppable: matches!(kind, JobKind::Partial { .. })
                && !keep_window
                && self.stopped_in_row < MAX_STOPPED_IN_ROW,
        };
        match kind {
            JobKind::Partial { .. } => self.stats.partial_jobs += 1,
            JobKind::Final { .. } => self.stats.final_jobs += 1,
        }
        match self.handle.submit_window(job) {
            Ok((rx, ticket)) => {
                self.in_flight = Some(InFlight {
                    rx,
                    ticket,
                    kind,
                    start_frame: window_start,
                    content_frames: content,
                    utterance_start: start,
                    context_len,
                    submitted: Instant::now(),
                    keep_window,
                });
                if self.config.pacing == Pacing::Lockstep {
                    self.wait_in_flight();
                }
            }
            Err(e) => self.on_job_failed(kind, e),
        }
    }

    fn wait_in_flight(&mut self) {
        while let Some(job) = &self.in_flight {
            let outcome = job
                .rx
                .recv()
                .unwrap_or_else(|_| Err(Error::Worker("the inference thread stopped".into())));
            self.on_outcome(outcome);
        }
    }

    fn on_outcome(&mut self, outcome: Result<WindowOutcome>) {
        let Some(job) = self.in_flight.take() else { return };
        self.busy_ms += job.submitted.elapsed().as_secs_f64() * 1e3;
        if matches!(job.kind, JobKind::Partial { .. }) {
            if outcome.as_ref().is_ok_and(|o| o.stopped) {
                // Nothing learned; the next hop asks again (the worker serves the more
                // urgent job first). A pending endpoint goes next, as below.
                self.stats.stopped_partials += 1;
                self.stopped_in_row += 1;
                if let Some((endpoint, decided)) = self.endpoint.take() {
                    self.submit_final(endpoint, decided);
                }
                return;
            }
            self.stopped_in_row = 0;
        }
        if let Ok(o) = &outcome {
            self.partial_not_before = self.duty_cycle_rest(o.encode_ms + o.decode_ms);
        }
        let outcome = outcome.and_then(|o| strip_context(o, &job));
        if let Ok(o) = &outcome
            && self.context_swallowed(&job, o)
        {
            // Decode the utterance again on its own: a final at once, a partial at the next
            // chance (now: its hop is not waited for).
            match job.kind {
                JobKind::Final { endpoint, decided, .. } => return self.submit_final(endpoint, decided),
                JobKind::Partial { .. } => {
                    if let Some(u) = self.utterance.as_mut() {
                        u.decoded_to = u.start_frame;
                    }
                }
            }
        }
        match outcome {
            Ok(outcome) => match job.kind {
                JobKind::Partial { prepared } => self.on_partial(&job, outcome, prepared),
                JobKind::Final {
                    end_frame,
                    decided,
                    reason,
                    cut,
                    ..
                } => {
                    self.close_utterance(end_frame, cut, decided, reason, Some(outcome));
                }
            },
            Err(e) => self.on_job_failed(job.kind, e),
        }
        // A pending endpoint goes next; otherwise maybe another partial.
        if self.in_flight.is_none()
            && let Some((endpoint, decided)) = self.endpoint.take()
        {
            self.submit_final(endpoint, decided);
        }
    }

    /// Whether a window led by earlier finals stopped where they did, with nothing for this
    /// utterance (Whisper reads the context's closing sentence as the end of the text; found
    /// on a 1.5 s pause when no partial had committed anything yet). Marks the utterance to be
    /// decoded without context from now on. A final that reused such a window counts too: a
    /// short utterance (LibriSpeech's "Replied he," then a pause) has no partial long enough
    /// to count, and its final used to come out empty, the words lost.
    fn context_swallowed(&mut self, job: &InFlight, outcome: &WindowOutcome) -> bool {
        let Some(u) = self.utterance.as_mut() else { return false };
        if job.context_len == 0 || !outcome.tokens.is_empty() || u.alone {
            return false;
        }
        // A partial with little of the utterance yet often has nothing to say: the next hop
        // will. Only a final, or a partial that has heard enough to say something, counts.
        let heard = (job.start_frame + job.content_frames as u64).saturating_sub(u.start_frame);
        if matches!(job.kind, JobKind::Partial { .. }) && heard < SWALLOWED_AFTER_FRAMES {
            return false;
        }
        tracing::debug!(
            context = job.context_len,
            "nothing decoded after the context: the utterance is decoded without it"
        );
        u.alone = true;
        true
    }

    fn on_job_failed(&mut self, kind: JobKind, error: Error) {
        self.emit(StreamEvent::Error {
            message: format!("stream {}: {error}", self.id),
        });
        if let JobKind::Final {
            end_frame,
            decided,
            reason,
            cut,
            ..
        } = kind
        {
            // Keep what was committed: the final says it.
            self.close_utterance(end_frame, cut, decided, reason, None);
        }
    }

    fn on_partial(&mut self, job: &InFlight, outcome: WindowOutcome, prepared: bool) {
        let tokenizer = self.handle.tokenizer.clone();
        let starts_word = |t: u32| tokenizer.bytes(t).is_some_and(|b| b.first() == Some(&b' '));
        let Some(u) = self.utterance.as_mut() else { return };
        if job.utterance_start != u.start_frame || !outcome.tokens.starts_with(&u.committed) {
            return;
        }
        if outcome.repetitive {
            // A looping decode says nothing reliable about the words.
            return;
        }
        let update = Update {
            tokens: &outcome.tokens,
            committed: u.committed.len(),
            frames: &outcome.new_token_frames,
            content_frames: job.content_frames.div_ceil(2) as u32,
        };
        let commit = if prepared {
            u.committed.len()
        } else {
            self.policy.commit(&update, &starts_word).max(u.committed.len())
        };
        if commit > u.committed.len() {
            let n_new = commit - u.committed.len();
            let scores = outcome
                .token_logprobs
                .get(u.committed.len()..commit)
                .unwrap_or_default();
            u.committed_logprobs.extend_from_slice(scores);
            u.committed_logprobs.resize(commit, 0.0);
            let new = outcome.tokens.get(u.committed.len()..commit).unwrap_or_default();
            u.committed.extend_from_slice(new);
            u.boundary_frame = outcome
                .new_token_frames
                .get(n_new)
                .map(|&f| job.start_frame + u64::from(f) * 2);
        } else if u.committed.is_empty() {
            u.boundary_frame = None;
        }
        u.tentative = outcome.tokens.get(commit..).unwrap_or_default().to_vec();
        u.last_window = Some((job.start_frame, job.content_frames, outcome.tokens.clone()));
        let mut scores = u.committed_logprobs.clone();
        scores.extend(outcome.token_logprobs.iter().skip(u.committed.len()));
        u.last_scores = (
            scores,
            (outcome.avg_logprob, outcome.no_speech_prob, outcome.compression_ratio),
        );
        let end = (job.start_frame + job.content_frames as u64) as f64 / 100.0;
        let state = (u.committed.len(), u.tentative.clone());
        if state == u.last_sent || (u.committed.is_empty() && u.tentative.is_empty()) {
            return;
        }
        u.last_sent = state;
        let id = *u.id.get_or_insert_with(|| {
            let id = self.next_utterance;
            self.next_utterance += 1;
            id
        });
        let committed = tokenizer.decode(&u.committed).trim().to_owned();
        let tentative = tokenizer.decode(&u.tentative);
        let tentative = if committed.is_empty() {
            tentative.trim().to_owned()
        } else {
            tentative.trim_end().to_owned()
        };
        let start = u.start_frame as f64 / 100.0;
        let end = end.max(self.last_end_s);
        self.last_end_s = end;
        self.emit(StreamEvent::Partial {
            utterance: id,
            committed,
            tentative,
            start,
            end,
        });
    }

    /// End the current utterance with `outcome` (or, without one, with what was committed),
    /// emit its final if it has text, and start the next one at `cut` if given.
    fn close_utterance(
        &mut self,
        end_frame: u64,
        cut: Option<u64>,
        decided: Instant,
        reason: EndReason,
        outcome: Option<WindowOutcome>,
    ) {
        let Some(u) = self.utterance.take() else { return };
        let tokenizer = self.handle.tokenizer.clone();
        let (tokens, words, quality) = match outcome {
            Some(o) if o.tokens.starts_with(&u.committed) => {
                let q = if o.reused {
                    self.stats.reused_finals += 1;
                    u.last_scores.1
                } else {
                    (o.avg_logprob, o.no_speech_prob, o.compression_ratio)
                };
                (o.tokens, o.words, Some(q))
            }
            _ => (u.committed.clone(), None, None),
        };
        // Whisper's no-speech rule, for an utterance that never committed a word.
        let silent = u.committed.is_empty()
            && quality.is_some_and(|(lp, ns, _)| {
                let t = &self.options.thresholds;
                t.no_speech.is_some_and(|x| ns > x) && t.logprob.is_some_and(|x| lp < f64::from(x))
            });
        let text = tokenizer.decode(&tokens).trim().to_owned();
        let start = u.start_frame as f64 / 100.0;
        let end = (end_frame.max(u.start_frame) as f64 / 100.0).max(self.last_end_s);
        if (!text.is_empty() && !silent) || u.id.is_some() {
            let text = if silent && u.id.is_some() {
                tokenizer.decode(&u.committed).trim().to_owned()
            } else {
                text
            };
            let tokens = if silent { u.committed.clone() } else { tokens };
            let id = u.id.unwrap_or_else(|| {
                let id = self.next_utterance;
                self.next_utterance += 1;
                id
            });
            let (avg_logprob, no_speech_prob, compression_ratio) = quality.unwrap_or((0.0, 0.0, 0.0));
            let segment = Segment {
                id: 0,
                start,
                end,
                text: format!(" {text}"),
                tokens: tokens.clone(),
                avg_logprob,
                no_speech_prob: f64::from(no_speech_prob),
                temperature: 0.0,
                compression_ratio: f64::from(compression_ratio),
                words: words.clone(),
            };
            self.history.push_back(Heard {
                start_frame: u.start_frame,
                tokens: tokens.clone(),
            });
            // Enough for the context and the prompt; older finals are never read again.
            while self.history.len() > 16 {
                self.history.pop_front();
            }
            self.last_end_s = end;
            let compute_ms = decided.elapsed().as_secs_f64() * 1e3;
            self.emit(StreamEvent::Final {
                utterance: id,
                text,
                start,
                end,
                segments: vec![segment],
                words,
                compute_ms,
                reason,
            });
        }
        match cut {
            Some(frame) => self.open_utterance(frame),
            None => {
                let keep_from = self.oldest_context_frame().min(end_frame);
                self.mel.discard_before(keep_from);
            }
        }
        self.replay_deferred();
        self.maybe_emit_stats();
    }

    /// Input finished: flush the resampler, the VAD and the mel tail, end the utterance, and
    /// wait for its final.
    fn on_end_of_input(&mut self) {
        let mut out = Vec::new();
        if let Some(mut r) = self.resampler.take()
            && let Err(e) = r.finish(&mut out)
        {
            self.emit(StreamEvent::Error { message: e.to_string() });
        }
        self.feed_16k(&out);
        let rest = std::mem::take(&mut self.vad_pending);
        self.mel.push(&rest);
        self.mel.finish();
        self.end_utterances(EndReason::EndOfInput);
        let _ = self.segmenter.finish();
        self.vad.reset();
    }

    /// Finish everything in order: the job in flight, a pending endpoint, the open utterance,
    /// then what the VAD heard meanwhile (bounded: each turn ends an utterance or consumes an
    /// event). Waits for the last final.
    fn end_utterances(&mut self, reason: EndReason) {
        let end_frame = self.mel.frames_end();
        for _ in 0..(4 * self.deferred.len() + 16) {
            self.wait_in_flight();
            if let Some((endpoint, decided)) = self.endpoint.take() {
                self.submit_final(endpoint, decided);
            } else if self.utterance.is_some() {
                self.request_endpoint(Endpoint::Finished { end_frame, reason });
            } else if let Some(event) = self.deferred.pop_front() {
                self.on_vad_event(event);
            } else {
                break;
            }
        }
        self.wait_in_flight();
    }

    /// A flush: end the utterances heard so far and say so with `Flushed`; the stream goes on
    /// (the VAD's state is kept, its segment closed, so the next speech opens an utterance).
    /// `discard`: the audio not yet in an ending utterance is dropped instead.
    fn on_flush(&mut self, discard: bool) {
        if discard {
            // The resampler's tail and the samples short of a VAD window go with the rest.
            self.resampler = None;
            self.vad_pending.clear();
            self.deferred.clear();
            // An utterance whose end was decided is finished; the one in progress is dropped.
            while self.finalizing() {
                self.wait_in_flight();
                if let Some((endpoint, decided)) = self.endpoint.take() {
                    self.submit_final(endpoint, decided);
                }
            }
            self.wait_in_flight();
            self.deferred.clear();
            if self.utterance.take().is_some() {
                let keep_from = self.oldest_context_frame().min(self.mel.frames_end());
                self.mel.discard_before(keep_from);
            }
        } else {
            let mut out = Vec::new();
            if let Some(mut r) = self.resampler.take()
                && let Err(e) = r.finish(&mut out)
            {
                self.emit(StreamEvent::Error { message: e.to_string() });
            }
            self.feed_16k(&out);
            self.end_utterances(EndReason::Flush);
        }
        let _ = self.segmenter.finish();
        let end = (self.mel.frames_end() as f64 / 100.0).max(self.last_end_s);
        self.emit(StreamEvent::Flushed { end });
    }
}

/// Idle time after a job of `busy_ms` that keeps a stream's partials within its share of the
/// worker's time: `max_duty_cycle` split evenly among the `speaking` streams (`None`: no limit,
/// `max_duty_cycle` 1).
fn rest_after_ms(busy_ms: f64, max_duty_cycle: f32, speaking: usize) -> Option<f64> {
    let x = f64::from(max_duty_cycle);
    let share = x / speaking.max(1) as f64;
    (x < 1.0 && x > 0.0 && busy_ms.is_finite()).then(|| busy_ms.max(0.0) * (1.0 / share - 1.0))
}

/// Speech heard at mel frame `heard` is past what a final could reuse a window ending at
/// `window_end` for: `submit` reuses it only when the speech ends within `speech_pad` of it.
fn beyond_reach(window_end: u64, heard: u64, speech_pad: u64) -> bool {
    heard > window_end + speech_pad
}

/// Remove the context's tokens (earlier finals leading the window) and words from an outcome,
/// leaving this utterance's.
fn strip_context(mut outcome: WindowOutcome, job: &InFlight) -> Result<WindowOutcome> {
    let n = job.context_len;
    if n == 0 {
        return Ok(outcome);
    }
    if outcome.tokens.len() < n {
        return Err(Error::Worker(format!(
            "a window's hypothesis lost its forced context ({} < {n} tokens)",
            outcome.tokens.len()
        )));
    }
    outcome.tokens.drain(..n);
    let scores = n.min(outcome.token_logprobs.len());
    outcome.token_logprobs.drain(..scores);
    let utterance_start_s = job.utterance_start as f64 / 100.0;
    if let Some(words) = outcome.words.as_mut() {
        // The context is earlier speech, before this utterance's start (a pause apart).
        words.retain(|w| w.end > utterance_start_s);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::{beyond_reach, rest_after_ms};

    #[test]
    fn a_kept_window_is_stale_once_speech_passes_its_end_and_the_padding() {
        // Window up to frame 1000, 3 frames of speech padding: speech heard up to 1003 could
        // still end within a final's reuse of it, 1004 cannot.
        assert!(!beyond_reach(1000, 990, 3));
        assert!(!beyond_reach(1000, 1003, 3));
        assert!(beyond_reach(1000, 1004, 3));
    }

    #[test]
    fn the_duty_cycle_rest_keeps_partials_to_their_share_of_the_worker() {
        // Half the time: rest as long as the job took; a quarter: three times as long.
        assert_eq!(rest_after_ms(300.0, 0.5, 1), Some(300.0));
        assert_eq!(rest_after_ms(100.0, 0.25, 1), Some(300.0));
        // Busy d, then rest r: the share is d / (d + r), the configured one.
        let r = rest_after_ms(120.0, 0.4, 1).unwrap();
        assert!((120.0 / (120.0 + r) - 0.4).abs() < 1e-6);
        // Four streams in speech share it: each gets a quarter (0.1 of the worker).
        let r = rest_after_ms(120.0, 0.4, 4).unwrap();
        assert!((120.0 / (120.0 + r) - 0.1).abs() < 1e-6);
        // No stream counted (a race with an utterance's end) is one.
        assert_eq!(rest_after_ms(300.0, 0.5, 0), Some(300.0));
        // 1 is no limit, however many streams; a nonsense time gives no rest rather than a
        // stuck stream.
        assert_eq!(rest_after_ms(300.0, 1.0, 8), None);
        assert_eq!(rest_after_ms(f64::NAN, 0.5, 1), None);
        assert_eq!(rest_after_ms(-5.0, 0.5, 1), Some(0.0));
    }
}
