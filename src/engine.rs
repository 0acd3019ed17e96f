//! The one entry to transcription. [`Engine::start`] loads the model on an inference worker
//! thread that owns the ONNX Runtime sessions (no lock around the model); callers send it
//! log-mel spectrograms over a channel and get transcripts and progress back.
//!
//! ```text
//! caller thread(s): audio → 16 kHz → log-mel (Engine::prepare)
//!      └─ bounded(1) channel of jobs ─▶ worker thread: encoder + decoder (owns the sessions)
//!      ◀─ per-job channel of updates (progress, then the transcript) ─┘
//! ```
//!
//! The caller prepares the next clip while the worker decodes the current one, so reading and
//! feature extraction overlap inference ([`Engine::transcribe_files`] does this for a batch).
//! The engine holds the weights; each job's state (caches, mel, transcript) lives and dies
//! with the job.
//!
//! Live streams ([`crate::stream`]) send window jobs on a second, unbounded channel through an
//! [`EngineHandle`] (each stream keeps at most one job queued or running, so the channel stays
//! short). The worker always serves window jobs first, and between the windows of a batch
//! clip, so a long file never holds a live stream back by more than one window. Among window
//! jobs, finals go first (many streams on one worker: an utterance's end never queues behind
//! other streams' partials), then partials heard in a pause (a final of that pause reuses their
//! window), then the rest; a partial its stream has cancelled is dropped unrun. A panic inside
//! any job becomes that job's error ([`Error::Worker`]) and the worker goes on serving.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::audio::AudioLimits;
use crate::error::{Error, Result};
use crate::features::{LogMel, Mel, MelFile, MelSource};
use crate::model::SpecialTokens;
use crate::model::encoder::MelFrames;
use crate::model::{Layout, ModelFiles, ModelSpec, ModelVariant, Stop, WhisperModel};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::stream::window::{WindowCache, WindowJob, WindowOutcome, run_window};
use crate::tokenizer::Tokenizer;
use crate::transcribe::{TranscribeOptions, Transcript, transcribe_interleaved};
use std::sync::Arc;

/// Which model to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Folder of the export (`models/whisper-tiny.en`).
    pub dir: PathBuf,
    pub variant: ModelVariant,
    /// The command that provisions this model, for "model missing" errors.
    pub provision_hint: String,
}

impl ModelConfig {
    /// `name` is a folder path, or a model name provisioned under `models_dir`
    /// (`tiny.en` → `<models_dir>/whisper-tiny.en`).
    pub fn resolve(name: &str, models_dir: &Path, variant: ModelVariant) -> ModelConfig {
        let as_path = Path::new(name);
        if name.contains('/') || as_path.is_dir() {
            return ModelConfig {
                dir: as_path.to_path_buf(),
                variant,
                provision_hint: "models/provision --model tiny.en|base (or point --model at a Whisper export folder)"
                    .into(),
            };
        }
        ModelConfig {
            dir: models_dir.join(format!("whisper-{name}")),
            variant,
            provision_hint: format!("models/provision --model {name}"),
        }
    }
}

/// Everything the engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model: ModelConfig,
    pub runtime: RuntimeConfig,
    pub options: TranscribeOptions,
}

/// What the caller hears about a job.
#[derive(Debug)]
pub enum Update {
    /// Seconds of audio done so far.
    Progress(f64),
    /// A finished segment, in order (the transcript at `Done` holds them all again).
    Segment(crate::transcribe::Segment),
    /// The job is over.
    Done(Result<Transcript>),
}

struct Job {
    mel: Box<dyn MelSource>,
    /// This job's options; `None`: the engine's.
    options: Option<TranscribeOptions>,
    updates: Sender<Update>,
}

/// A live window job and where its outcome goes.
pub(crate) struct LiveJob {
    pub(crate) job: WindowJob,
    pub(crate) reply: Sender<Result<WindowOutcome>>,
    /// Whether the job is queued, started or cancelled (see [`Ticket`]).
    pub(crate) ticket: Ticket,
    /// When the stream queued it (the debug log's `waited_ms`).
    pub(crate) queued: std::time::Instant,
}

/// A live job's state, shared by the stream and the worker: queued, then either started (by
/// the worker) or cancelled (by the stream, when a partial is overtaken by the utterance's
/// end), never both: whoever moves it first wins. A cancelled job is dropped unrun, so the
/// stream can queue its final at once instead of waiting for a partial nobody needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ticket(Arc<AtomicU8>);

impl Ticket {
    const QUEUED: u8 = 0;
    const STARTED: u8 = 1;
    const CANCELLED: u8 = 2;

    /// The worker takes the job; `false`: it was cancelled first.
    fn start(&self) -> bool {
        self.0
            .compare_exchange(Self::QUEUED, Self::STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The stream withdraws the job; `false`: the worker has already started it (its outcome
    /// will come).
    pub(crate) fn cancel(&self) -> bool {
        self.0
            .compare_exchange(Self::QUEUED, Self::CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::CANCELLED
    }
}

/// What streams send the worker.
pub(crate) enum LiveMessage {
    Window(Box<LiveJob>),
    /// The stream has ended, or its kept window can no longer serve a final: drop what the
    /// worker keeps for it (its cached window).
    Forget(u64),
}

/// Live jobs that reached the worker and wait their turn (see [`pick_next`]).
#[derive(Default)]
struct LiveQueue {
    pending: VecDeque<LiveJob>,
}

impl LiveQueue {
    /// Take what has arrived (forgetting ended streams in `cache`); `false` once the channel
    /// is closed and empty.
    fn refill(&mut self, live: &Receiver<LiveMessage>, cache: &mut WindowCache) -> bool {
        loop {
            match live.try_recv() {
                Ok(message) => self.take(message, cache),
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn take(&mut self, message: LiveMessage, cache: &mut WindowCache) {
        match message {
            LiveMessage::Window(job) => self.pending.push_back(*job),
            LiveMessage::Forget(stream) => cache.forget(stream),
        }
    }

    fn pop(&mut self) -> Option<LiveJob> {
        loop {
            let job = pick_next(&mut self.pending, |j| j.job.urgency(), |j| j.ticket.is_cancelled())?;
            // Cancelled between the pick and now: drop it and pick again.
            if job.ticket.start() {
                return Some(job);
            }
        }
    }
}

/// The next job of a live queue: the oldest of the most urgent ([`WindowJob::urgency`]):
/// finals (the end of an utterance is what a speaker waits for), then partials heard in a
/// pause (the final of that pause reuses their window, so they are on its way), then the
/// others (they only refresh text already shown). Cancelled jobs are dropped on the way.
fn pick_next<T>(pending: &mut VecDeque<T>, urgency: impl Fn(&T) -> u8, cancelled: impl Fn(&T) -> bool) -> Option<T> {
    pending.retain(|j| !cancelled(j));
    // `min_by_key` keeps the first of equals: arrival order within a rank.
    let at = pending
        .iter()
        .enumerate()
        .min_by_key(|(_, j)| urgency(j))
        .map(|(at, _)| at)?;
    pending.remove(at)
}

/// The stoppable live partial the worker is running now, if any, and how urgent it is. A job
/// more urgent than it (a final, or a partial heard in a pause, whose window the final
/// reuses) stops it rather than wait for the whole of it: measured with 8 server streams
/// (tiny.en int8, 2 cores), ordinary partials ran 120 ms at the median and up to 290 ms, and a
/// final waited for the running job 200 ms at p95, then ran in 14 ms. The stopped partial's
/// stream hears that it was stopped and asks again at its next hop.
#[derive(Default)]
pub(crate) struct Running(std::sync::Mutex<Option<(u8, Stop)>>);

impl Running {
    fn set(&self, running: Option<(u8, Stop)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = running;
    }

    /// A job of `urgency` was queued: stop the running job if it is less urgent.
    pub(crate) fn overtake(&self, urgency: u8) {
        let running = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((running_urgency, stop)) = running.as_ref()
            && *running_urgency > urgency
        {
            stop.fire();
        }
    }
}

/// What the worker reports once the model is loaded.
struct Loaded {
    spec: ModelSpec,
    files: ModelFiles,
    layout: Layout,
    tokens: SpecialTokens,
    tokenizer: Arc<Tokenizer>,
    has_cross_qk: bool,
    mel_frames: MelFrames,
}

/// A cheap, cloneable way for live streams to reach the worker of an [`Engine`], with what
/// they need to know of the model.
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) live: Sender<LiveMessage>,
    pub(crate) spec: ModelSpec,
    pub(crate) tokens: SpecialTokens,
    pub(crate) tokenizer: Arc<Tokenizer>,
    pub(crate) has_cross_qk: bool,
    /// Mel frames the encoder takes (fixed 3000 for sherpa-onnx exports).
    pub(crate) mel_frames: MelFrames,
    pub(crate) options: TranscribeOptions,
    /// The worker has run the largest live window once ([`crate::stream::window::presize`]).
    pub(crate) presized: Arc<std::sync::atomic::AtomicBool>,
    /// Live streams of this engine in an utterance now ([`Speaking`]): they share the
    /// worker's time for partials (`StreamConfig::max_duty_cycle`).
    pub(crate) speaking: Arc<AtomicUsize>,
    /// The stoppable job the worker is running ([`Running`]).
    pub(crate) running: Arc<Running>,
}

/// One stream's utterance in progress, counted in [`EngineHandle::speaking`] while it lives.
#[derive(Debug)]
pub(crate) struct Speaking(Arc<AtomicUsize>);

impl Speaking {
    pub(crate) fn new(handle: &EngineHandle) -> Speaking {
        handle.speaking.fetch_add(1, Ordering::AcqRel);
        Speaking(handle.speaking.clone())
    }
}

impl Drop for Speaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Queue a window job; its outcome arrives on the returned channel.
    /// The returned ticket cancels the job while the worker has not started it.
    pub(crate) fn submit_window(&self, job: WindowJob) -> Result<(Receiver<Result<WindowOutcome>>, Ticket)> {
        let (reply, rx) = bounded(1);
        let ticket = Ticket::default();
        let urgency = job.urgency();
        self.live
            .send(LiveMessage::Window(Box::new(LiveJob {
                job,
                reply,
                ticket: ticket.clone(),
                queued: std::time::Instant::now(),
            })))
            .map_err(|_| Error::Worker("the inference thread has stopped".into()))?;
        self.running.overtake(urgency);
        Ok((rx, ticket))
    }

    /// The stream `stream` has ended or needs its kept window no more (the worker drops it).
    pub(crate) fn forget(&self, stream: u64) {
        let _ = self.live.send(LiveMessage::Forget(stream));
    }
}

/// Run `f`, turning a panic into an error that names `what`.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(what, message, "a job panicked; the worker goes on");
            Err(Error::Worker(format!("{what} panicked: {message} (an internal bug)")))
        }
    }
}

/// Serve every queued live job.
fn serve_live(
    model: &mut WhisperModel,
    live: &Receiver<LiveMessage>,
    queue: &mut LiveQueue,
    cache: &mut WindowCache,
    running: &Running,
) {
    queue.refill(live, cache);
    while let Some(job) = queue.pop() {
        serve_one(model, job, cache, running);
        queue.refill(live, cache);
    }
}

fn serve_one(
    model: &mut WhisperModel,
    LiveJob { job, reply, queued, .. }: LiveJob,
    cache: &mut WindowCache,
    running: &Running,
) {
    let what = format!("live window of stream {}", job.stream);
    let started = std::time::Instant::now();
    let stop = if job.stoppable {
        Stop::new()
            .inspect_err(|e| tracing::warn!(error = %e, "a partial runs unstoppable"))
            .ok()
    } else {
        None
    };
    running.set(stop.clone().map(|s| (job.urgency(), s)));
    model.set_stop(stop.clone());
    model.decoder.set_whole_feeds(true);
    let result = guarded(&what, || run_window(model, &job, cache));
    model.decoder.set_whole_feeds(false);
    model.set_stop(None);
    running.set(None);
    let stopped = stop.is_some_and(|s| s.fired()) && result.is_err();
    let result = if stopped {
        Ok(WindowOutcome {
            stopped: true,
            ..WindowOutcome::default()
        })
    } else {
        result
    };
    crate::metrics::record_decode(crate::metrics::DecodeKind::LiveWindow, started.elapsed());
    let (encode_ms, decode_ms, reused) = result
        .as_ref()
        .map_or((0.0, 0.0, false), |o| (o.encode_ms, o.decode_ms, o.reused));
    tracing::debug!(
        stream = job.stream,
        is_final = job.is_final,
        urgency = job.urgency(),
        frames = job.frames,
        content_frames = job.content_frames,
        waited_ms = (started - queued).as_secs_f64() * 1e3,
        ms = started.elapsed().as_secs_f64() * 1e3,
        encode_ms,
        decode_ms,
        reused,
        stopped,
        "window job"
    );
    let _ = reply.send(result);
}

/// A model loaded on its worker thread.
pub struct Engine {
    runtime_config: RuntimeConfig,
    jobs: Option<Sender<Job>>,
    handle: Option<EngineHandle>,
    worker: Option<JoinHandle<()>>,
    spec: ModelSpec,
    files: ModelFiles,
    layout: Layout,
    log_mel: LogMel,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Load ONNX Runtime and the model, and start the worker. Fails (with the provisioning
    /// command in the message) when the model or runtime is missing, or the options do not fit
    /// the model (e.g. `--language de` on an English-only model).
    pub fn start(config: EngineConfig) -> Result<Engine> {
        config.options.validate()?;
        let files = ModelFiles::discover(&config.model.dir, config.model.variant, &config.model.provision_hint)?;
        let runtime = Runtime::get(&config.runtime)?;
        let (jobs_tx, jobs_rx) = bounded::<Job>(1);
        let (live_tx, live_rx) = unbounded::<LiveMessage>();
        let (ready_tx, ready_rx) = bounded::<Result<Loaded>>(1);
        let options = config.options;
        let worker_options = options.clone();
        let running = Arc::new(Running::default());
        let worker_running = running.clone();
        let worker = std::thread::Builder::new()
            .name("steno-inference".into())
            .spawn(move || {
                let options = worker_options;
                let model = WhisperModel::load(&runtime, files).and_then(|m| {
                    options.check_model(&m)?;
                    Ok(m)
                });
                let mut model = match model {
                    Ok(m) => {
                        let _ = ready_tx.send(Ok(Loaded {
                            spec: m.spec.clone(),
                            files: m.files.clone(),
                            layout: m.layout,
                            tokens: m.tokens.clone(),
                            tokenizer: m.tokenizer.clone(),
                            has_cross_qk: m.decoder.has_cross_qk(),
                            mel_frames: m.encoder.mel_frames(),
                        }));
                        m
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                worker_loop(&mut model, &options, &jobs_rx, &live_rx, &worker_running);
            })
            .map_err(|e| Error::Worker(format!("cannot start the inference thread: {e}")))?;
        let loaded = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let reason = match worker.join() {
                    Err(_) => "it panicked while loading the model".to_owned(),
                    Ok(()) => "it exited while loading the model".to_owned(),
                };
                return Err(Error::Worker(reason));
            }
        };
        let Loaded {
            spec,
            files,
            layout,
            tokens,
            tokenizer,
            has_cross_qk,
            mel_frames,
        } = loaded;
        let handle = EngineHandle {
            live: live_tx,
            spec: spec.clone(),
            tokens,
            tokenizer,
            has_cross_qk,
            mel_frames,
            options,
            presized: Arc::default(),
            speaking: Arc::default(),
            running,
        };
        let log_mel = LogMel::new(spec.n_mels).map_err(|e| Error::config("n_mels", e.to_string()))?;
        Ok(Engine {
            runtime_config: config.runtime.clone(),
            jobs: Some(jobs_tx),
            handle: Some(handle),
            worker: Some(worker),
            spec,
            files,
            layout,
            log_mel,
        })
    }

    /// A handle for live streams (see [`crate::stream::StreamSession`]).
    pub fn handle(&self) -> Result<EngineHandle> {
        self.handle
            .clone()
            .ok_or_else(|| Error::Worker("engine is shut down".into()))
    }

    /// How ONNX Runtime was set up for this engine (live streams load their VAD with it).
    pub fn runtime_config(&self) -> &RuntimeConfig {
        &self.runtime_config
    }

    /// The options the engine was started with.
    pub fn options(&self) -> Option<&TranscribeOptions> {
        self.handle.as_ref().map(|h| &h.options)
    }

    /// Whether the model reports alignment-head attention (word times, AlignAtt).
    pub fn has_cross_qk(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| h.has_cross_qk)
    }

    /// The model's vocabulary (prompts are encoded with it).
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.handle.as_ref().map(|h| h.tokenizer.as_ref())
    }

    /// The loaded model's dimensions.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The loaded model's tensor contract.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The loaded model's files.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// 16 kHz mono samples → normalised log-mel, on the calling thread.
    pub fn prepare(&self, samples: &[f32]) -> Mel {
        let mut mel = self.log_mel.log10_mel(samples);
        mel.normalize_whisper();
        mel
    }

    /// Queue a job; updates arrive on the returned channel. Blocks while the worker is busy
    /// with an earlier job and one more is already queued.
    pub fn submit(&self, mel: Mel) -> Result<Receiver<Update>> {
        self.submit_job(Box::new(mel), None)
    }

    /// [`Engine::submit`] for any [`MelSource`], e.g. a [`MelFile`] read as the job goes.
    pub fn submit_source(&self, mel: Box<dyn MelSource>) -> Result<Receiver<Update>> {
        self.submit_job(mel, None)
    }

    /// Opens `path` for a job ([`MelFile::open`]: reads it once for its length and loudest
    /// frame, checking it), on the calling thread.
    pub fn open_file(&self, path: &Path, limits: &AudioLimits) -> Result<MelFile> {
        Ok(MelFile::open(path, &self.log_mel, limits)?)
    }

    /// [`Engine::submit`] with options of its own for this job (a server request's language,
    /// prompt, temperature, word times); they are checked against the model when the job runs.
    pub fn submit_with(&self, mel: Mel, options: TranscribeOptions) -> Result<Receiver<Update>> {
        self.submit_job(Box::new(mel), Some(options))
    }

    fn submit_job(&self, mel: Box<dyn MelSource>, options: Option<TranscribeOptions>) -> Result<Receiver<Update>> {
        let (tx, rx) = unbounded();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Worker("engine is shut down".into()))?;
        jobs.send(Job {
            mel,
            options,
            updates: tx,
        })
        .map_err(|_| Error::Worker("the inference thread has stopped".into()))?;
        Ok(rx)
    }

    /// Transcribe samples, blocking; `progress` hears the seconds done.
    pub fn transcribe_samples(&self, samples: &[f32], progress: &mut dyn FnMut(f64)) -> Result<Transcript> {
        let rx = self.submit(self.prepare(samples))?;
        wait(&rx, progress)
    }

    /// Read a file and transcribe it, in memory bounded whatever its length ([`MelFile`]).
    pub fn transcribe_file(&self, path: &Path) -> Result<Transcript> {
        let file = self.open_file(path, &AudioLimits::default())?;
        wait(&self.submit_source(Box::new(file))?, &mut |_| {})
    }

    /// Transcribe many files in order, opening the next file on another thread while the
    /// worker decodes the current one; each is read as its windows are needed ([`MelFile`]),
    /// so memory does not grow with a file's length. `sink` hears every event; a file that
    /// cannot be read or decoded, or breaks `limits`, is reported and the batch goes on.
    pub fn transcribe_files(&self, paths: &[PathBuf], limits: &AudioLimits, sink: &mut dyn FnMut(FileEvent)) {
        let (prepared_tx, prepared_rx) = bounded::<(usize, Result<MelFile>)>(1);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (i, path) in paths.iter().enumerate() {
                    if prepared_tx.send((i, self.open_file(path, limits))).is_err() {
                        return;
                    }
                }
            });
            for (index, prepared) in prepared_rx {
                let path = &paths[index];
                let file = match prepared {
                    Ok(p) => p,
                    Err(error) => {
                        sink(FileEvent::Finished {
                            index,
                            path,
                            result: Err(error),
                        });
                        continue;
                    }
                };
                sink(FileEvent::Started {
                    index,
                    path,
                    duration: file.duration_s(),
                });
                let result = self
                    .submit_source(Box::new(file))
                    .and_then(|rx| wait(&rx, &mut |s| sink(FileEvent::Progress { index, seconds: s })));
                sink(FileEvent::Finished { index, path, result });
            }
        });
    }
}

/// Transcribe `paths` on several engines at once (each its own model copy and worker), one
/// file per engine at a time; `sink` hears every event on the calling thread, in the order
/// they happen. With one engine this is [`Engine::transcribe_files`] (which also overlaps
/// reading the next file with decoding).
pub fn transcribe_files_parallel(
    engines: &[Engine],
    paths: &[PathBuf],
    limits: &AudioLimits,
    sink: &mut dyn FnMut(FileEvent),
) {
    if engines.len() <= 1 {
        if let Some(engine) = engines.first() {
            engine.transcribe_files(paths, limits, sink);
        }
        return;
    }
    enum Owned {
        Started(usize, f64),
        Progress(usize, f64),
        Finished(usize, Result<Transcript>),
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = unbounded::<Owned>();
    std::thread::scope(|scope| {
        for engine in engines {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(index) else { break };
                    let result = engine.open_file(path, limits).and_then(|file| {
                        let _ = tx.send(Owned::Started(index, file.duration_s()));
                        let rx = engine.submit_source(Box::new(file))?;
                        wait(&rx, &mut |s| {
                            let _ = tx.send(Owned::Progress(index, s));
                        })
                    });
                    if tx.send(Owned::Finished(index, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for event in rx {
            sink(match event {
                Owned::Started(index, duration) => FileEvent::Started {
                    index,
                    path: &paths[index],
                    duration,
                },
                Owned::Progress(index, seconds) => FileEvent::Progress { index, seconds },
                Owned::Finished(index, result) => FileEvent::Finished {
                    index,
                    path: &paths[index],
                    result,
                },
            });
        }
    });
}

/// Events of a batch ([`Engine::transcribe_files`]).
#[derive(Debug)]
pub enum FileEvent<'a> {
    /// The file was read; decoding starts.
    Started {
        index: usize,
        path: &'a Path,
        duration: f64,
    },
    /// Seconds of this file done.
    Progress { index: usize, seconds: f64 },
    /// The file is done (or failed).
    Finished {
        index: usize,
        path: &'a Path,
        result: Result<Transcript>,
    },
}

fn wait(rx: &Receiver<Update>, progress: &mut dyn FnMut(f64)) -> Result<Transcript> {
    for update in rx {
        match update {
            Update::Progress(s) => progress(s),
            Update::Segment(_) => {}
            Update::Done(result) => return result,
        }
    }
    Err(Error::Worker("the inference thread stopped during a job".into()))
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing both job channels ends the worker's loop (streams hold their own handles
        // and end before the engine: they borrow it).
        self.jobs.take();
        self.handle.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker: live window jobs first, batch clips otherwise (serving live jobs between the
/// clip's windows); ends when both channels are closed.
fn worker_loop(
    model: &mut WhisperModel,
    options: &TranscribeOptions,
    jobs: &Receiver<Job>,
    live: &Receiver<LiveMessage>,
    running: &Running,
) {
    let (mut jobs_open, mut live_open) = (true, true);
    let mut cache = WindowCache::default();
    let mut queue = LiveQueue::default();
    loop {
        live_open &= queue.refill(live, &mut cache);
        if let Some(job) = queue.pop() {
            serve_one(model, job, &mut cache, running);
            continue;
        }
        if !jobs_open && !live_open {
            break;
        }
        let never_jobs = crossbeam_channel::never();
        let never_live = crossbeam_channel::never();
        crossbeam_channel::select! {
            recv(if live_open { live } else { &never_live }) -> job => match job {
                Ok(message) => queue.take(message, &mut cache),
                Err(_) => live_open = false,
            },
            recv(if jobs_open { jobs } else { &never_jobs }) -> job => match job {
                Ok(Job {
                    mut mel,
                    options: job_options,
                    updates,
                }) => {
                    let mut sent = 0;
                    let what = format!("transcription of {}", mel.label());
                    let started = std::time::Instant::now();
                    let result = guarded(&what, || {
                        transcribe_interleaved(
                            model,
                            &mut *mel,
                            job_options.as_ref().unwrap_or(options),
                            &mut |s, segments| {
                                for segment in segments.get(sent..).unwrap_or_default() {
                                    let _ = updates.send(Update::Segment(segment.clone()));
                                }
                                sent = segments.len();
                                let _ = updates.send(Update::Progress(s));
                            },
                            &mut |model| serve_live(model, live, &mut queue, &mut cache, running),
                        )
                    });
                    crate::metrics::record_decode(crate::metrics::DecodeKind::BatchJob, started.elapsed());
                    if let Ok(transcript) = &result {
                        crate::metrics::add_audio_seconds(transcript.duration);
                    }
                    let _ = updates.send(Update::Done(result));
                }
                Err(_) => jobs_open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, urgency, cancelled)
    fn queue(jobs: &[(&'static str, u8, bool)]) -> VecDeque<(&'static str, u8, bool)> {
        jobs.iter().copied().collect()
    }

    fn drain(mut q: VecDeque<(&'static str, u8, bool)>) -> Vec<&'static str> {
        std::iter::from_fn(|| pick_next(&mut q, |j| j.1, |j| j.2).map(|j| j.0)).collect()
    }

    #[test]
    fn finals_go_before_partials_each_in_arrival_order() {
        let q = queue(&[("p1", 2, false), ("f1", 0, false), ("p2", 2, false), ("f2", 0, false)]);
        assert_eq!(drain(q), ["f1", "f2", "p1", "p2"]);
    }

    #[test]
    fn partials_heard_in_a_pause_go_between_finals_and_the_others() {
        let q = queue(&[
            ("p1", 2, false),
            ("k1", 1, false),
            ("f1", 0, false),
            ("k2", 1, false),
            ("p2", 2, false),
        ]);
        assert_eq!(drain(q), ["f1", "k1", "k2", "p1", "p2"]);
    }

    #[test]
    fn live_jobs_rank_finals_then_partials_in_a_pause_then_others() {
        use crate::stream::window::urgency;
        let (final_job, in_pause, ordinary) = (urgency(true, false), urgency(false, true), urgency(false, false));
        assert!(final_job < in_pause && in_pause < ordinary);
    }

    #[test]
    fn a_ticket_is_started_or_cancelled_never_both() {
        let ticket = Ticket::default();
        assert!(ticket.cancel());
        assert!(!ticket.start());
        assert!(ticket.is_cancelled());
        let ticket = Ticket::default();
        assert!(ticket.start());
        assert!(!ticket.cancel());
        assert!(!ticket.is_cancelled());
    }

    /// A 30 s window of digital silence after a long forced text: a job of a few hundred ms.
    fn long_job(handle: &EngineHandle, stream: u64, is_final: bool, stoppable: bool) -> WindowJob {
        let frames = 3000;
        let text = handle
            .tokenizer
            .encode(" And so, my fellow Americans, ask not what your country can do for you.");
        WindowJob {
            stream,
            mel: vec![-1.5; handle.spec.n_mels * frames],
            frames,
            content_frames: frames,
            prompt: Vec::new(),
            forced: text.iter().copied().cycle().take(150).collect(),
            draft: Vec::new(),
            forced_logprobs: Vec::new(),
            language: None,
            track_attention: false,
            words: false,
            is_final,
            time_offset_s: 0.0,
            options: Arc::new(handle.options.clone()),
            decode: true,
            start_frame: 0,
            reuse: None,
            keep_window: false,
            stoppable,
        }
    }

    fn stops_for_a_final(stoppable: bool) -> (WindowOutcome, WindowOutcome) {
        let models = crate::runtime::default_models_dir();
        let engine = Engine::start(EngineConfig {
            model: ModelConfig::resolve("tiny.en", &models, ModelVariant::Int8),
            runtime: RuntimeConfig::default(),
            options: TranscribeOptions::default(),
        })
        .expect("tiny.en int8 (run `models/provision`)");
        let handle = engine.handle().expect("engine handle");
        let (partial, _) = handle
            .submit_window(long_job(&handle, 1, false, stoppable))
            .expect("queued");
        // Once the worker runs the partial (a stoppable one registers itself; an unstoppable
        // one is given a moment), a final of another stream is queued.
        let waited = std::time::Instant::now();
        while stoppable && handle.running.0.lock().unwrap().is_none() {
            assert!(waited.elapsed().as_secs() < 10, "the partial never started");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if !stoppable {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Only its forced text: a short job.
        let last_job = WindowJob {
            decode: false,
            ..long_job(&handle, 2, true, false)
        };
        let (last, _) = handle.submit_window(last_job).expect("queued");
        let partial = partial.recv().expect("an outcome").expect("the partial's outcome");
        let last = last.recv().expect("an outcome").expect("the final's outcome");
        (partial, last)
    }

    #[test]
    fn a_final_stops_the_running_stoppable_partial() {
        let (partial, last) = stops_for_a_final(true);
        assert!(
            partial.stopped,
            "the partial ran to its end ({} tokens)",
            partial.tokens.len()
        );
        assert!(partial.tokens.is_empty());
        assert!(!last.stopped);
        assert!(
            last.tokens.len() >= 150,
            "the final decoded its forced text: {:?}",
            last.tokens.len()
        );
    }

    #[test]
    fn an_unstoppable_partial_runs_to_its_end() {
        let (partial, last) = stops_for_a_final(false);
        assert!(!partial.stopped);
        assert!(partial.tokens.len() >= 150, "the partial decoded its forced text");
        assert!(!last.stopped && last.tokens.len() >= 150);
    }

    #[test]
    fn cancelled_jobs_are_dropped_unrun() {
        let q = queue(&[("p1", 2, true), ("p2", 2, false), ("f1", 0, true)]);
        assert_eq!(drain(q), ["p2"]);
        assert!(drain(queue(&[])).is_empty());
    }
}
