//! Voice activity detection for live streaming: 16 kHz mono samples in, one speech probability
//! per 512-sample window out ([`SpeechDetector`]), and speech start/end events from those
//! probabilities ([`VadSegmenter`]).
//!
//! Two detectors:
//! - [`SileroVad`]: Silero VAD v6 (`models/silero-vad/silero_vad.onnx`, installed by
//!   `models/provision`) on ONNX Runtime, one intra-op thread, always on the CPU. Its contract:
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | in `input` | f32 | `[1, 576]`: the previous window's last 64 samples (zeros at start), then 512 new ones |
//! | in `state` | f32 | `[2, 1, 128]`: zeros at start, then the previous call's `stateN` |
//! | in `sr` | i64 | scalar 16000 (absent from the static 16 kHz export, which is accepted too) |
//! | out `output` | f32 | `[1, 1]`: speech probability of the 512 new samples |
//! | out `stateN` | f32 | `[2, 1, 128]` |
//!
//! - [`EnergyVad`]: no model; a probability-like score from speech-band energy over an adaptive
//!   noise floor (calibration in its doc). A fallback for when the model is not wanted.
//!
//! [`VadSegmenter`] is the streaming form of the reference post-processing (`silero_vad`'s
//! `get_speech_timestamps` and `VADIterator`): hysteresis between `threshold` and
//! `neg_threshold`, segments shorter than `min_speech_ms` dropped, an end after `min_silence_ms`
//! of silence, `speech_pad_ms` of padding on each side.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use crate::error::{Error, Result};
use crate::model::check_outlet;
use crate::runtime::{Runtime, RuntimeConfig};

/// The only sample rate the detectors take.
pub const VAD_SAMPLE_RATE: u32 = 16_000;
/// Samples per VAD decision (32 ms at 16 kHz).
pub const VAD_WINDOW: usize = 512;
/// Samples of the previous window Silero sees again in front of each new one.
const SILERO_CONTEXT: usize = 64;
/// Length of Silero's recurrent state (`[2, 1, 128]`).
const SILERO_STATE: usize = 2 * 128;
/// Where `models/provision` puts the Silero model, under the models directory.
const SILERO_MODEL: &str = "silero-vad/silero_vad.onnx";

/// Which detector computes the speech probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VadKind {
    /// Silero VAD v6 on ONNX Runtime.
    #[default]
    Silero,
    /// Speech-band energy over an adaptive noise floor; no model.
    Energy,
}

impl std::str::FromStr for VadKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "silero" => Ok(VadKind::Silero),
            "energy" => Ok(VadKind::Energy),
            other => Err(Error::config("vad", format!("`{other}` is not one of silero, energy"))),
        }
    }
}

impl std::fmt::Display for VadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VadKind::Silero => "silero",
            VadKind::Energy => "energy",
        })
    }
}

/// How speech is detected and cut into segments.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VadConfig {
    /// The detector. Default: Silero.
    pub kind: VadKind,
    /// Speech starts at a window with probability ≥ this (and p ≥ this cancels a running silence
    /// timer). Default: 0.5 (the reference's).
    pub threshold: f32,
    /// Inside speech, a window with probability < this starts the silence timer;
    /// `None` = `threshold − 0.15`, at least 0.01 (the reference's). Default: `None`.
    pub neg_threshold: Option<f32>,
    /// A segment is reported once it spans this long; shorter ones are dropped. Default: 250 ms.
    pub min_speech_ms: u32,
    /// Speech ends after this much silence (the endpoint delay). Default: 500 ms
    /// (whisper_streaming's and OpenAI Realtime's; the reference's offline default is 100 ms).
    pub min_silence_ms: u32,
    /// Padding added before each start and after each end. Default: 100 ms.
    pub speech_pad_ms: u32,
    /// The Silero ONNX file; `None` = `<models dir>/silero-vad/silero_vad.onnx`. Default: `None`.
    pub model: Option<PathBuf>,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            kind: VadKind::Silero,
            threshold: 0.5,
            neg_threshold: None,
            min_speech_ms: 250,
            min_silence_ms: 500,
            speech_pad_ms: 100,
            model: None,
        }
    }
}

/// Longest duration any of the `*_ms` settings may take (a minute); longer is a unit mistake.
const MAX_SETTING_MS: u32 = 60_000;

impl VadConfig {
    /// Check the values (the model file is checked when it loads).
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold.is_finite() && self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(Error::config(
                "vad_threshold",
                format!("{} is not a probability in (0, 1]", self.threshold),
            ));
        }
        if let Some(neg) = self.neg_threshold
            && !(neg.is_finite() && (0.0..=self.threshold).contains(&neg))
        {
            return Err(Error::config(
                "vad_neg_threshold",
                format!("{neg} is not in [0, threshold = {}]", self.threshold),
            ));
        }
        for (field, ms) in [
            ("vad_min_speech_ms", self.min_speech_ms),
            ("vad_min_silence_ms", self.min_silence_ms),
            ("vad_speech_pad_ms", self.speech_pad_ms),
        ] {
            if ms > MAX_SETTING_MS {
                return Err(Error::config(
                    field,
                    format!("{ms} ms is longer than {MAX_SETTING_MS} ms"),
                ));
            }
        }
        Ok(())
    }

    /// The silence threshold in effect: the `neg_threshold` field, else `threshold − 0.15`, at least 0.01.
    pub fn neg_threshold(&self) -> f32 {
        self.neg_threshold.unwrap_or((self.threshold - 0.15).max(0.01))
    }

    /// The Silero model file: [`VadConfig::model`], else its place under `models_dir`.
    pub fn model_path(&self, models_dir: &Path) -> PathBuf {
        self.model.clone().unwrap_or_else(|| models_dir.join(SILERO_MODEL))
    }
}

/// Speech probability of consecutive 512-sample windows of 16 kHz mono audio.
pub trait SpeechDetector: Send {
    /// `window` is exactly VAD_WINDOW samples following the previous call's window.
    fn probability(&mut self, window: &[f32]) -> Result<f32>;
    /// Forget the recurrent state (a new stream).
    fn reset(&mut self);
}

/// A window of the wrong length is a caller bug; say what was expected.
fn check_window(window: &[f32]) -> Result<()> {
    if window.len() == VAD_WINDOW {
        Ok(())
    } else {
        Err(Error::config(
            "vad",
            format!("a VAD window is {VAD_WINDOW} samples at 16 kHz, got {}", window.len()),
        ))
    }
}

/// Silero VAD v6 on ONNX Runtime (see the module doc for the tensor contract).
pub struct SileroVad {
    /// Shared by every stream of the process that loaded the same file (see [`shared_session`]).
    session: Arc<Mutex<Session>>,
    path: PathBuf,
    /// The `input` row: `[context (64) | window (512)]`.
    input: Vec<f32>,
    /// The recurrent `state`, `[2, 1, 128]`.
    state: Vec<f32>,
    /// Whether the graph takes `sr` (the static 16 kHz export does not).
    takes_sr: bool,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SileroVad {
    /// Load the model at `path` on the CPU with one intra-op thread (the graph is tiny and runs
    /// every 32 ms; more threads or a GPU only add overhead) and check its contract.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<SileroVad> {
        if !path.is_file() {
            return Err(Error::ModelMissing {
                dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                problem: format!(
                    "the Silero VAD model {} is missing",
                    path.file_name().unwrap_or(path.as_os_str()).to_string_lossy()
                ),
                fix: "run `models/provision`".into(),
            });
        }
        let shared = shared_session(runtime, path)?;
        let session = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        use TensorElementType::{Float32, Int64};
        let input = check_outlet(path, session.inputs(), "input", Float32, 2)?;
        // check_outlet returned exactly 2 dimensions.
        let samples_per_call = input.get(1).copied().unwrap_or(-1);
        if samples_per_call > 0 && samples_per_call as usize != SILERO_CONTEXT + VAD_WINDOW {
            return Err(Error::Contract {
                path: path.to_path_buf(),
                tensor: "input".into(),
                problem: format!(
                    "takes {} samples per call, expected {} (64 context + 512 new at 16 kHz)",
                    samples_per_call,
                    SILERO_CONTEXT + VAD_WINDOW
                ),
            });
        }
        for (outlets, name) in [(session.inputs(), "state"), (session.outputs(), "stateN")] {
            let dims = check_outlet(path, outlets, name, Float32, 3)?;
            let fixed_wrong = |axis: usize, want: i64| dims.get(axis).is_some_and(|&d| d > 0 && d != want);
            if fixed_wrong(0, 2) || fixed_wrong(2, 128) {
                return Err(Error::Contract {
                    path: path.to_path_buf(),
                    tensor: name.into(),
                    problem: format!("shape {dims:?}, expected [2, batch, 128]"),
                });
            }
        }
        let takes_sr = session.inputs().iter().any(|o| o.name() == "sr");
        if takes_sr {
            check_outlet(path, session.inputs(), "sr", Int64, 0)?;
        }
        check_outlet(path, session.outputs(), "output", Float32, 2)?;
        tracing::debug!(path = %path.display(), takes_sr, "Silero VAD loaded");
        Ok(SileroVad {
            session: shared.clone(),
            path: path.to_path_buf(),
            input: vec![0.0; SILERO_CONTEXT + VAD_WINDOW],
            state: vec![0.0; SILERO_STATE],
            takes_sr,
        })
    }
}

impl SpeechDetector for SileroVad {
    fn probability(&mut self, window: &[f32]) -> Result<f32> {
        check_window(window)?;
        // The last 64 samples of the previous input become this call's context.
        self.input.copy_within(VAD_WINDOW.., 0);
        for (dst, &x) in self.input.iter_mut().skip(SILERO_CONTEXT).zip(window) {
            // A NaN or infinity would poison the recurrent state for the rest of the stream;
            // out-of-range values are clipped as a converter to 16-bit would.
            *dst = if x.is_finite() { x.clamp(-1.0, 1.0) } else { 0.0 };
        }
        let context = || format!("running {}", self.path.display());
        let input = TensorRef::from_array_view(([1usize, SILERO_CONTEXT + VAD_WINDOW], &self.input[..]))
            .map_err(Error::ort("creating the VAD input tensor"))?;
        let state = TensorRef::from_array_view(([2usize, 1, 128], &self.state[..]))
            .map_err(Error::ort("creating the VAD state tensor"))?;
        let sample_rate = [i64::from(VAD_SAMPLE_RATE)];
        // The session is shared; the stream's own state goes in and comes out with each call.
        let shared = Arc::clone(&self.session);
        let mut session = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = if self.takes_sr {
            let sr =
                TensorRef::from_array_view(((), &sample_rate[..])).map_err(Error::ort("creating the VAD sr tensor"))?;
            session
                .run(ort::inputs!["input" => input, "state" => state, "sr" => sr])
                .map_err(Error::ort(context()))?
        } else {
            session
                .run(ort::inputs!["input" => input, "state" => state])
                .map_err(Error::ort(context()))?
        };
        let read = |name: &str| -> Result<&[f32]> {
            let value = outputs
                .get(name)
                .ok_or_else(|| contract(&self.path, name, "not produced"))?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(Error::ort(format!("reading `{name}` of {}", self.path.display())))?;
            Ok(data)
        };
        let probability = read("output")?.first().copied();
        let new_state = read("stateN")?;
        if new_state.len() != SILERO_STATE {
            return Err(contract(
                &self.path,
                "stateN",
                format!("{} values, expected {SILERO_STATE}", new_state.len()),
            ));
        }
        let finite = new_state.iter().all(|v| v.is_finite());
        self.state.copy_from_slice(new_state);
        drop(outputs);
        match probability {
            Some(p) if p.is_finite() && finite => Ok(p.clamp(0.0, 1.0)),
            other => {
                // The input is sanitised, so this is a broken model; start the next call clean.
                self.reset();
                Err(contract(
                    &self.path,
                    "output",
                    format!("non-finite or missing result ({other:?})"),
                ))
            }
        }
    }

    fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
    }
}

/// A contract error about `tensor` of the graph at `path`.
fn contract(path: &Path, tensor: &str, problem: impl Into<String>) -> Error {
    Error::Contract {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        problem: problem.into(),
    }
}

/// One biquad section (transposed direct form II), coefficients from the RBJ audio-EQ cookbook.
#[derive(Debug, Clone)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    z: [f64; 2],
}

impl Biquad {
    /// Second-order Butterworth (Q = 1/√2) high-pass (`high`) or low-pass at `cutoff_hz`.
    fn butterworth(cutoff_hz: f64, high: bool) -> Biquad {
        let w0 = 2.0 * std::f64::consts::PI * cutoff_hz / f64::from(VAD_SAMPLE_RATE);
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / std::f64::consts::SQRT_2;
        let a0 = 1.0 + alpha;
        let b = if high {
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0]
        } else {
            [(1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0]
        };
        Biquad {
            b: b.map(|v| v / a0),
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
            z: [0.0; 2],
        }
    }

    fn process(&mut self, x: f64) -> f64 {
        let y = self.b[0] * x + self.z[0];
        self.z[0] = self.b[1] * x - self.a[0] * y + self.z[1];
        self.z[1] = self.b[2] * x - self.a[1] * y;
        y
    }
}

/// A speech score from energy, for when the Silero model is not wanted.
///
/// Each window is band-passed to the speech band (Butterworth high-pass 200 Hz, low-pass
/// 4 kHz; this drops hum, rumble and hiss above the formants), its level taken in dBFS
/// (`10·log10(mean square)`, so a full-scale sine is −3 dBFS), and compared with a noise floor:
/// the quietest window of the last 3 s (including this one), but never below −60 dBFS. The
/// score is a logistic of the level above that floor:
///
/// `p = 1 / (1 + exp(−(level − floor − 18 dB) / 2 dB))`
///
/// so 18 dB above the floor scores 0.5 (the default threshold), 14 dB 0.12, 22 dB 0.88. Steady
/// noise sits at its own floor and scores ≈ 0.0001; speech needs a level of at least −42 dBFS
/// to reach 0.5. The 18 dB was set on `audio-samples/jfk.wav` (a noisy recording with applause
/// and reverberation): 73% of the windows Silero scores above 0.9 reach 0.5, and 1 of the 92 it
/// scores below 0.1; at 10 dB those were 92% and 34 of 92. It reacts to any sound that is loud
/// against the recent quiet (a door, music), which Silero does not.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    high_pass: Biquad,
    low_pass: Biquad,
    /// Levels (dBFS) of the last [`EnergyVad::FLOOR_WINDOWS`] windows, newest last.
    levels: VecDeque<f32>,
}

impl EnergyVad {
    /// Lower edge of the speech band.
    const LOW_HZ: f64 = 200.0;
    /// Upper edge of the speech band.
    const HIGH_HZ: f64 = 4_000.0;
    /// Windows the noise floor looks back over (3 s).
    const FLOOR_WINDOWS: usize = 94;
    /// The floor never goes below this, so faint noise after digital silence is not speech.
    const FLOOR_MIN_DBFS: f32 = -60.0;
    /// Level above the floor that scores 0.5.
    const SNR_MID_DB: f32 = 18.0;
    /// Logistic slope: dB per e-fold of the odds.
    const SNR_SLOPE_DB: f32 = 2.0;
    /// Level of digital silence (the mean square is floored to avoid log(0)).
    const SILENT_DBFS: f32 = -120.0;

    /// A detector at the start of a stream.
    pub fn new() -> EnergyVad {
        EnergyVad {
            high_pass: Biquad::butterworth(Self::LOW_HZ, true),
            low_pass: Biquad::butterworth(Self::HIGH_HZ, false),
            levels: VecDeque::with_capacity(Self::FLOOR_WINDOWS),
        }
    }
}

impl Default for EnergyVad {
    fn default() -> Self {
        EnergyVad::new()
    }
}

impl SpeechDetector for EnergyVad {
    fn probability(&mut self, window: &[f32]) -> Result<f32> {
        check_window(window)?;
        let mut sum_sq = 0.0f64;
        for &x in window {
            // Non-finite samples count as silence rather than poisoning the filter state.
            let x = if x.is_finite() {
                f64::from(x.clamp(-1.0, 1.0))
            } else {
                0.0
            };
            let y = self.low_pass.process(self.high_pass.process(x));
            sum_sq += y * y;
        }
        let mean_sq = sum_sq / VAD_WINDOW as f64;
        let level = ((10.0 * mean_sq.max(1e-12).log10()) as f32).max(Self::SILENT_DBFS);
        if self.levels.len() == Self::FLOOR_WINDOWS {
            self.levels.pop_front();
        }
        self.levels.push_back(level);
        let floor = self
            .levels
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min)
            .max(Self::FLOOR_MIN_DBFS);
        let snr = level - floor;
        Ok(1.0 / (1.0 + (-(snr - Self::SNR_MID_DB) / Self::SNR_SLOPE_DB).exp()))
    }

    fn reset(&mut self) {
        *self = EnergyVad::new();
    }
}

/// One Silero session per model file for the whole process, shared by every stream that is
/// alive (weakly held: the last stream to end frees it). The graph is stateless (the recurrent
/// state is an input), a call takes a fraction of a millisecond, and a session of its own cost
/// each stream several MB: with many streams on a server, sharing is the cheaper way.
fn shared_session(runtime: &Runtime, path: &Path) -> Result<Arc<Mutex<Session>>> {
    static SESSIONS: Mutex<Vec<(PathBuf, std::sync::Weak<Mutex<Session>>)>> = Mutex::new(Vec::new());
    let mut sessions = SESSIONS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    sessions.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(session) = sessions
        .iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, weak)| weak.upgrade())
    {
        return Ok(session);
    }
    let session = Arc::new(Mutex::new(runtime.cpu_session(path, 1)?));
    sessions.push((path.to_path_buf(), Arc::downgrade(&session)));
    Ok(session)
}

/// Build the configured detector (Silero loads through `Runtime::get(runtime_config)`; 1 intra-op thread).
pub fn detector(config: &VadConfig, runtime: &RuntimeConfig) -> Result<Box<dyn SpeechDetector>> {
    config.validate()?;
    match config.kind {
        VadKind::Energy => Ok(Box::new(EnergyVad::new())),
        VadKind::Silero => {
            let rt = Runtime::get(runtime)?;
            let path = config.model_path(&runtime.models_dir);
            Ok(Box::new(SileroVad::load(&rt, &path)?))
        }
    }
}

/// What [`VadSegmenter::push`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech has lasted min_speech_ms; it began at `sample` (already moved back by speech_pad, clamped at 0).
    SpeechStart { sample: u64 },
    /// min_silence_ms of silence followed speech; speech ended at `sample` (moved forward by speech_pad, never past the samples seen).
    SpeechEnd { sample: u64 },
}

/// Pure hysteresis state machine over per-window probabilities (the reference's
/// get_speech_timestamps / VADIterator rules, streaming form). Window i covers samples
/// [i*512, (i+1)*512).
///
/// The rules, as in the reference:
/// - outside speech, a window with p ≥ `threshold` opens a candidate segment at its first sample;
/// - inside, the first window with p < `neg_threshold` starts a silence timer at its first
///   sample; a window with p ≥ `threshold` cancels it; a window in between neither starts nor
///   cancels it (so it counts towards a silence already timed, but never starts one);
/// - a window with p < `neg_threshold` whose end is `min_silence_ms` or more past the timer's
///   start ends the segment there. (The reference ends one window later: it measures from the
///   timer's start to the start of the current window.)
///
/// Streaming adds: a candidate is reported ([`VadEvent::SpeechStart`]) once it spans
/// `min_speech_ms` (up to the timer's start when one runs); a candidate that ends earlier is
/// dropped silently, as the reference drops short segments. Padding cannot split the gap between
/// segments as the offline reference does, so a start is never padded back before the previous end.
#[derive(Debug, Clone)]
pub struct VadSegmenter {
    threshold: f32,
    neg_threshold: f32,
    min_speech: u64,
    min_silence: u64,
    pad: u64,
    /// Samples consumed: the end of the last window.
    samples: u64,
    /// First sample of the open segment (unpadded), candidate or reported.
    start: Option<u64>,
    /// A SpeechStart was returned for the open segment.
    reported: bool,
    /// First sample of the running silence timer.
    silence_from: Option<u64>,
    /// Where the last SpeechEnd put the end.
    last_end: u64,
}

impl VadSegmenter {
    /// A segmenter at sample 0. `config` should be validated; out-of-range values are used as given.
    pub fn new(config: &VadConfig) -> VadSegmenter {
        let samples = |ms: u32| u64::from(ms) * u64::from(VAD_SAMPLE_RATE) / 1000;
        VadSegmenter {
            threshold: config.threshold,
            neg_threshold: config.neg_threshold(),
            min_speech: samples(config.min_speech_ms),
            min_silence: samples(config.min_silence_ms),
            pad: samples(config.speech_pad_ms),
            samples: 0,
            start: None,
            reported: false,
            silence_from: None,
            last_end: 0,
        }
    }

    /// Feed the probability of the next window; returns at most one event. A non-finite
    /// probability counts as 0 (silence).
    pub fn push(&mut self, probability: f32) -> Option<VadEvent> {
        let p = if probability.is_finite() { probability } else { 0.0 };
        let window_start = self.samples;
        self.samples += VAD_WINDOW as u64;
        let Some(start) = self.start else {
            if p >= self.threshold {
                self.start = Some(window_start);
                self.reported = false;
                return self.report_start(window_start);
            }
            return None;
        };
        if p >= self.threshold {
            self.silence_from = None;
        } else if p < self.neg_threshold {
            let from = *self.silence_from.get_or_insert(window_start);
            if self.samples - from >= self.min_silence {
                return self.close(from);
            }
        }
        if self.reported { None } else { self.report_start(start) }
    }

    /// SpeechStart for the open candidate if it now spans min_speech.
    fn report_start(&mut self, start: u64) -> Option<VadEvent> {
        let end = self.silence_from.unwrap_or(self.samples);
        if end - start < self.min_speech {
            return None;
        }
        self.reported = true;
        Some(VadEvent::SpeechStart {
            sample: start.saturating_sub(self.pad).max(self.last_end),
        })
    }

    /// Close the open segment, its speech having ended at `end`; SpeechEnd if it was reported.
    fn close(&mut self, end: u64) -> Option<VadEvent> {
        let reported = self.reported;
        self.start = None;
        self.reported = false;
        self.silence_from = None;
        if !reported {
            return None;
        }
        let sample = (end + self.pad).min(self.samples);
        self.last_end = sample;
        Some(VadEvent::SpeechEnd { sample })
    }

    /// Samples consumed so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Inside a speech segment (a SpeechStart was returned and no SpeechEnd yet).
    pub fn in_speech(&self) -> bool {
        self.reported
    }

    /// Samples of the current run of silence inside speech (p < neg_threshold), 0 when none:
    /// from the first sample of the running silence timer to the last sample seen.
    pub fn silence_run(&self) -> u64 {
        match self.silence_from {
            Some(from) if self.reported => self.samples - from,
            _ => 0,
        }
    }

    /// End of input: if in speech, returns SpeechEnd at the last sample seen (or, when a silence
    /// run is in progress, where a SpeechEnd would put it: its start plus the padding). A
    /// candidate not yet reported is dropped.
    pub fn finish(&mut self) -> Option<VadEvent> {
        self.start?;
        let end = self.silence_from.unwrap_or(self.samples);
        self.close(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = VAD_WINDOW as u64;

    /// Samples in `ms` milliseconds at 16 kHz.
    fn ms(ms: u64) -> u64 {
        ms * 16
    }

    fn config(min_speech_ms: u32, min_silence_ms: u32, speech_pad_ms: u32) -> VadConfig {
        VadConfig {
            min_speech_ms,
            min_silence_ms,
            speech_pad_ms,
            ..VadConfig::default()
        }
    }

    /// Push `probs`, returning (window index, event) for each event.
    fn run(seg: &mut VadSegmenter, probs: &[f32]) -> Vec<(usize, VadEvent)> {
        let first = (seg.samples() / W) as usize;
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| seg.push(p).map(|e| (first + i, e)))
            .collect()
    }

    fn repeat(p: f32, n: usize) -> Vec<f32> {
        vec![p; n]
    }

    fn concat(parts: &[Vec<f32>]) -> Vec<f32> {
        parts.concat()
    }

    #[test]
    fn start_waits_for_min_speech_and_is_back_dated_with_padding() {
        // 250 ms = 4000 samples = 7.8 windows: the 8th window of speech reports it.
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        let events = run(&mut seg, &concat(&[repeat(0.0, 10), repeat(0.9, 20)]));
        assert_eq!(
            events,
            vec![(
                17,
                VadEvent::SpeechStart {
                    sample: 10 * W - ms(100)
                }
            )]
        );
        assert!(seg.in_speech());
    }

    #[test]
    fn start_padding_clamps_at_zero() {
        let mut seg = VadSegmenter::new(&config(0, 500, 100));
        assert_eq!(seg.push(0.9), Some(VadEvent::SpeechStart { sample: 0 }));
    }

    #[test]
    fn short_blips_are_dropped() {
        let mut seg = VadSegmenter::new(&config(250, 100, 30));
        // 3 windows (96 ms) of speech, then silence: never reported, never ended.
        let probs = concat(&[repeat(0.9, 3), repeat(0.0, 30), repeat(0.9, 3), repeat(0.0, 30)]);
        assert_eq!(run(&mut seg, &probs), vec![]);
        assert!(!seg.in_speech());
        assert_eq!(seg.finish(), None);
    }

    #[test]
    fn end_after_min_silence_padded_forward() {
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        let probs = concat(&[repeat(0.9, 20), repeat(0.0, 40)]);
        let events = run(&mut seg, &probs);
        // Silence starts at window 20; 500 ms = 8000 samples = 15.6 windows: window 35 ends it.
        assert_eq!(
            events,
            vec![
                (7, VadEvent::SpeechStart { sample: 0 }),
                (
                    35,
                    VadEvent::SpeechEnd {
                        sample: 20 * W + ms(100)
                    }
                ),
            ]
        );
        assert!(!seg.in_speech());
        assert_eq!(seg.silence_run(), 0);
    }

    #[test]
    fn end_padding_never_passes_the_samples_seen() {
        // Padding longer than the silence that ends the segment.
        let mut seg = VadSegmenter::new(&config(0, 0, 1000));
        assert!(matches!(seg.push(0.9), Some(VadEvent::SpeechStart { .. })));
        assert_eq!(seg.push(0.0), Some(VadEvent::SpeechEnd { sample: 2 * W }));
    }

    #[test]
    fn a_dip_shorter_than_min_silence_does_not_end_speech() {
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        let probs = concat(&[repeat(0.9, 20), repeat(0.0, 10), repeat(0.9, 10)]);
        let events = run(&mut seg, &probs);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(seg.in_speech());
        assert_eq!(seg.silence_run(), 0, "speech cancelled the timer");
        // During the dip the run grew window by window.
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        run(&mut seg, &concat(&[repeat(0.9, 20), repeat(0.0, 10)]));
        assert_eq!(seg.silence_run(), 10 * W);
    }

    #[test]
    fn probabilities_between_the_thresholds_are_not_silence() {
        // threshold 0.5, neg_threshold 0.35: 0.4 is in between.
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        let events = run(&mut seg, &concat(&[repeat(0.9, 10), repeat(0.4, 100)]));
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(seg.in_speech());
        assert_eq!(seg.silence_run(), 0, "an in-between window never starts the timer");
        // In-between windows count towards a timer already running, as in the reference: they
        // neither cancel it nor end speech themselves; the next silent window ends it at the
        // timer's start.
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        let events = run(&mut seg, &concat(&[repeat(0.9, 10), repeat(0.1, 1), repeat(0.4, 30)]));
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(seg.silence_run(), 31 * W);
        assert_eq!(
            seg.push(0.1),
            Some(VadEvent::SpeechEnd {
                sample: 10 * W + ms(100)
            })
        );
        // Only p ≥ threshold cancels it.
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        run(
            &mut seg,
            &concat(&[repeat(0.9, 10), repeat(0.1, 5), repeat(0.4, 5), repeat(0.5, 1)]),
        );
        assert_eq!(seg.silence_run(), 0);
        assert_eq!(run(&mut seg, &repeat(0.1, 10)), vec![]);
    }

    #[test]
    fn min_speech_counts_up_to_the_silence_timer() {
        // 5 windows of speech then silence: the candidate spans 160 ms < 250 ms however long the
        // silence runs before min_silence ends it, so it is never reported.
        let mut seg = VadSegmenter::new(&config(250, 1000, 0));
        assert_eq!(run(&mut seg, &concat(&[repeat(0.9, 5), repeat(0.0, 40)])), vec![]);
    }

    #[test]
    fn next_start_is_not_padded_before_the_previous_end() {
        let mut seg = VadSegmenter::new(&config(0, 64, 200));
        let events = run(&mut seg, &concat(&[repeat(0.9, 10), repeat(0.0, 2), repeat(0.9, 1)]));
        let end = match events[1].1 {
            VadEvent::SpeechEnd { sample } => sample,
            other => panic!("{other:?}"),
        };
        assert_eq!(events[2].1, VadEvent::SpeechStart { sample: end });
    }

    #[test]
    fn finish_ends_open_speech() {
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        run(&mut seg, &repeat(0.9, 20));
        assert_eq!(seg.finish(), Some(VadEvent::SpeechEnd { sample: 20 * W }));
        assert!(!seg.in_speech());
        assert_eq!(seg.finish(), None);
        // With a silence run in progress the end is where SpeechEnd would put it.
        let mut seg = VadSegmenter::new(&config(250, 500, 100));
        run(&mut seg, &concat(&[repeat(0.9, 20), repeat(0.0, 5)]));
        assert_eq!(
            seg.finish(),
            Some(VadEvent::SpeechEnd {
                sample: 20 * W + ms(100)
            })
        );
    }

    #[test]
    fn non_finite_probability_is_silence() {
        let mut seg = VadSegmenter::new(&config(0, 0, 0));
        assert!(seg.push(0.9).is_some());
        assert_eq!(seg.push(f32::NAN), Some(VadEvent::SpeechEnd { sample: W }));
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(VadConfig::default().validate().is_ok());
        assert!((VadConfig::default().neg_threshold() - 0.35).abs() < 1e-6);
        let cases = [
            (
                VadConfig {
                    threshold: 1.5,
                    ..VadConfig::default()
                },
                "vad_threshold",
            ),
            (
                VadConfig {
                    threshold: f32::NAN,
                    ..VadConfig::default()
                },
                "vad_threshold",
            ),
            (
                VadConfig {
                    neg_threshold: Some(0.6),
                    ..VadConfig::default()
                },
                "vad_neg_threshold",
            ),
            (
                VadConfig {
                    min_silence_ms: 3_600_000,
                    ..VadConfig::default()
                },
                "vad_min_silence_ms",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
        let err = "webrtc".parse::<VadKind>().unwrap_err().to_string();
        assert!(err.contains("`vad`") && err.contains("silero, energy"), "{err}");
        assert_eq!("energy".parse::<VadKind>().unwrap(), VadKind::Energy);
        assert_eq!(VadKind::Silero.to_string(), "silero");
    }

    #[test]
    fn wrong_window_length_is_an_error() {
        let mut vad = EnergyVad::new();
        assert!(vad.probability(&[0.0; 100]).is_err());
    }

    // --- detectors on real audio ---

    fn jfk() -> Vec<f32> {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/audio-samples/jfk.wav"));
        crate::audio::read_audio(path).expect("audio-samples/jfk.wav").samples
    }

    /// The provisioned Silero model; a missing one fails the test (never a skip).
    fn silero() -> SileroVad {
        let path = crate::runtime::default_models_dir().join(SILERO_MODEL);
        assert!(
            path.is_file(),
            "{} is missing: run `models/provision` first",
            path.display()
        );
        let runtime = Runtime::get(&RuntimeConfig::default()).expect("ONNX Runtime (run `models/provision`)");
        SileroVad::load(&runtime, &path).expect("loading Silero VAD")
    }

    fn probabilities(vad: &mut dyn SpeechDetector, samples: &[f32]) -> Vec<f32> {
        samples
            .chunks_exact(VAD_WINDOW)
            .map(|w| vad.probability(w).expect("VAD window"))
            .collect()
    }

    fn max(p: &[f32]) -> f32 {
        p.iter().copied().fold(0.0, f32::max)
    }

    /// Deterministic uniform white noise at `dbfs` RMS.
    fn white_noise(dbfs: f32, n: usize) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let amplitude = 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        (0..n).map(|_| rng.random_range(-amplitude..amplitude)).collect()
    }

    #[test]
    fn silero_on_speech_silence_and_noise() {
        let mut vad = silero();
        let samples = jfk();
        let started = std::time::Instant::now();
        let p = probabilities(&mut vad, &samples);
        let per_window = started.elapsed() / p.len() as u32;
        eprintln!("silero: {} windows, {per_window:?} per window", p.len());
        assert!(max(&p) > 0.9, "max speech probability {}", max(&p));
        // Golden values from the wheel's own recipe (OnnxWrapper: 64-sample context, state fed
        // back, sr = 16000) on onnxruntime 1.31.1 (Python, CPU, 1 thread).
        for (i, want) in [
            (0, 0.00167),
            (10, 0.34334),
            (11, 0.946),
            (20, 0.98217),
            (100, 0.01148),
            (200, 0.99985),
        ] {
            assert!((p[i] - want).abs() < 2e-3, "window {i}: {} vs {want}", p[i]);
        }

        vad.reset();
        let silence = probabilities(&mut vad, &vec![0.0; 2 * VAD_SAMPLE_RATE as usize]);
        assert!(max(&silence) < 0.1, "digital silence: {}", max(&silence));

        vad.reset();
        let noise = probabilities(&mut vad, &white_noise(-30.0, VAD_SAMPLE_RATE as usize));
        eprintln!(
            "silero max probability: jfk {:.5}, 2 s of zeros {:.5}, 1 s of white noise at -30 dBFS {:.5}",
            max(&p),
            max(&silence),
            max(&noise)
        );

        // Reset really forgets: the first window of jfk again gives its golden value.
        vad.reset();
        let again = vad.probability(&samples[..VAD_WINDOW]).unwrap();
        assert!((again - p[0]).abs() < 1e-6, "{again} vs {}", p[0]);
    }

    #[test]
    fn silero_load_errors_name_the_file_and_tensor() {
        let runtime = Runtime::get(&RuntimeConfig::default()).expect("ONNX Runtime (run `models/provision`)");
        let missing = Path::new("/nonexistent/silero_vad.onnx");
        let err = SileroVad::load(&runtime, missing).unwrap_err().to_string();
        assert!(
            err.contains("silero_vad.onnx") && err.contains("run `models/provision`"),
            "{err}"
        );
        // Any other graph breaks the contract at its first tensor.
        let other = crate::runtime::default_models_dir().join("whisper-tiny.en/tiny.en-decoder.int8.onnx");
        assert!(
            other.is_file(),
            "{} is missing: run `models/provision` first",
            other.display()
        );
        match SileroVad::load(&runtime, &other) {
            Err(Error::Contract { path, tensor, .. }) => {
                assert_eq!((path.as_path(), tensor.as_str()), (other.as_path(), "input"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn silero_survives_non_finite_samples() {
        let mut vad = silero();
        let mut window = vec![0.01f32; VAD_WINDOW];
        window[3] = f32::NAN;
        window[7] = f32::INFINITY;
        window[9] = f32::NEG_INFINITY;
        let p = vad.probability(&window).expect("sanitised window");
        assert!(p.is_finite());
        let next = vad.probability(&[0.0; VAD_WINDOW]).unwrap();
        assert!(next.is_finite() && next < 0.1, "{next}");
    }

    #[test]
    fn silero_segments_jfk_between_silences() {
        let (events, start, end) = segments(&mut silero(), &padded_jfk());
        eprintln!("silero segments of padded jfk: {events:?}");
        // jfk's speech starts ≈ 0.35 s in (window 11) and runs to ≈ its end (11.0 s); padded by
        // 1 s, less/plus the 100 ms speech padding.
        assert!((1.1..1.5).contains(&start), "start at {start:.3} s");
        assert!((11.7..12.3).contains(&end), "end at {end:.3} s");
    }

    /// jfk with 1 s of digital silence on each side.
    fn padded_jfk() -> Vec<f32> {
        let second = VAD_SAMPLE_RATE as usize;
        let mut samples = vec![0.0; second];
        samples.extend_from_slice(&jfk());
        samples.extend(std::iter::repeat_n(0.0, second));
        samples
    }

    /// Run `vad` and a default segmenter over `samples`; the events, checked to alternate and
    /// to close, and the (first start, last end) in seconds.
    fn segments(vad: &mut dyn SpeechDetector, samples: &[f32]) -> (Vec<VadEvent>, f64, f64) {
        let mut seg = VadSegmenter::new(&VadConfig::default());
        let mut events = Vec::new();
        for window in samples.chunks_exact(VAD_WINDOW) {
            events.extend(seg.push(vad.probability(window).unwrap()));
        }
        assert!(!seg.in_speech(), "speech still open at the end: {events:?}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(matches!(e, VadEvent::SpeechStart { .. }), i % 2 == 0, "{events:?}");
        }
        let (Some(VadEvent::SpeechStart { sample: first }), Some(VadEvent::SpeechEnd { sample: last })) =
            (events.first().copied(), events.last().copied())
        else {
            panic!("no segment: {events:?}");
        };
        let seconds = |s: u64| s as f64 / f64::from(VAD_SAMPLE_RATE);
        (events, seconds(first), seconds(last))
    }

    #[test]
    fn energy_segments_jfk_between_silences() {
        let (events, start, end) = segments(&mut EnergyVad::new(), &padded_jfk());
        eprintln!("energy segments of padded jfk: {events:?}");
        // Speech starts ≈ 1.35 s; the soft end of the last word ("country", ≈ 11.2–11.5 s, at
        // −33…−40 dBFS over a −44 dBFS floor) is below the energy score's 18 dB, so the end is
        // earlier than Silero's.
        assert!((1.0..1.6).contains(&start), "start at {start:.3} s");
        assert!((11.1..12.5).contains(&end), "end at {end:.3} s");
    }

    #[test]
    fn energy_on_speech_and_silence() {
        let mut vad = EnergyVad::new();
        let silence = probabilities(&mut vad, &vec![0.0; 2 * VAD_SAMPLE_RATE as usize]);
        assert!(max(&silence) < 0.1, "digital silence: {}", max(&silence));

        vad.reset();
        let noise = probabilities(&mut vad, &white_noise(-30.0, VAD_SAMPLE_RATE as usize));
        assert!(max(&noise) < 0.1, "steady noise: {}", max(&noise));

        vad.reset();
        let p = probabilities(&mut vad, &jfk());
        let mut silero = silero();
        let reference = probabilities(&mut silero, &jfk());
        let speech: Vec<f32> = p
            .iter()
            .zip(&reference)
            .filter(|(_, r)| **r > 0.9)
            .map(|(p, _)| *p)
            .collect();
        let agree = speech.iter().filter(|&&p| p >= 0.5).count() as f32 / speech.len() as f32;
        let pauses: Vec<f32> = p
            .iter()
            .zip(&reference)
            .filter(|(_, r)| **r < 0.1)
            .map(|(p, _)| *p)
            .collect();
        let false_alarms = pauses.iter().filter(|&&p| p >= 0.5).count();
        eprintln!(
            "energy max probability: jfk {:.3} ({:.0}% of Silero's speech windows ≥ 0.5, {false_alarms} of its {} pause windows), zeros {:.5}, noise {:.5}",
            max(&p),
            agree * 100.0,
            pauses.len(),
            max(&silence),
            max(&noise)
        );
        assert!(max(&p) > 0.9, "max {}", max(&p));
        assert!(agree > 0.6, "only {:.0}% of speech windows score ≥ 0.5", agree * 100.0);
    }
}
