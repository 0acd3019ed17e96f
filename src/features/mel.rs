//! Whisper's log-Mel spectrogram, ported step for step.
//!
//! In: mono f32 samples at 16 kHz. Out: [`Mel`], `log10` Mel power laid out
//! `[n_mels][n_frames]` (mel bin outer, frame inner) — the `[1, n_mels, T]` layout the
//! Whisper encoder takes, minus the batch axis.
//!
//! Reproduces `log_mel_spectrogram` in openai/whisper `whisper/audio.py` (release 20250625):
//! - `torch.stft(n_fft=400, hop_length=160, window=torch.hann_window(400), center=True)`:
//!   a periodic Hann window, frames centred by reflect-padding 200 samples at both ends
//!   (numpy/torch `reflect`: the edge sample is not repeated);
//! - `stft[..., :-1]`: the last frame is dropped, so `n` samples give `n / 160` frames;
//! - `|X|^2`, then the Mel filterbank of `librosa.filters.mel(sr=16000, n_fft=400,
//!   n_mels=80|128)` (defaults: `fmin=0`, `fmax=sr/2`, `htk=False` i.e. Slaney's mel scale,
//!   `norm='slaney'` i.e. each triangle scaled to unit area). Whisper loads that matrix from
//!   `assets/mel_filters.npz`; here it is computed in code ([`slaney_filterbank`]) and
//!   matches the file to ~2e-9;
//! - `log10(max(x, 1e-10))`, and, in [`normalize_whisper`], `max(x, x.max() - 8)` then
//!   `(x + 4) / 4`.
//!
//! The FFT runs in f32 (realfft over rustfft), as `torch.stft` does in whisper itself. Against
//! the float64 NumPy reference (`tests/fixtures/whisper_mel.py`) the normalised output is off
//! by at most ~1.5e-5 on the JFK golden clip, inside the 1e-4 the golden test allows (an f64
//! FFT, tried, gives ~1.2e-7).

use std::fmt;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use super::FeatureError;

/// FFT size and window length (25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// Hop between frames (10 ms at 16 kHz).
pub const HOP_LENGTH: usize = 160;
/// Frequency bins of a real FFT of [`N_FFT`] points.
pub const N_FREQS: usize = N_FFT / 2 + 1;
/// `log10` of the power floor (1e-10): the value of digital silence before normalisation,
/// and the right padding value for raw (un-normalised) windows.
pub const LOG10_FLOOR: f32 = -10.0;

const POWER_FLOOR: f32 = 1e-10;
const SAMPLE_RATE: f64 = 16_000.0;

/// One triangular filter: its weights over FFT bins `first_bin..first_bin + weights.len()`
/// (all other bins are exactly zero, so they are not stored or multiplied).
#[derive(Debug, Clone)]
struct Filter {
    first_bin: usize,
    weights: Vec<f32>,
}

/// The log-Mel front end for one mel-bin count. Build once, reuse: the FFT plan, window
/// and filterbank are made in [`LogMel::new`]. `Send + Sync`, so it can be shared.
#[derive(Clone)]
pub struct LogMel {
    n_mels: usize,
    filters: Vec<Filter>,
    /// The largest weight of any filter ([`LogMel::frame_bound`]).
    max_weight: f32,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl fmt::Debug for LogMel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogMel")
            .field("n_mels", &self.n_mels)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    /// A front end with `n_mels` bins: 80 (Whisper tiny..large-v2) or 128 (large-v3).
    pub fn new(n_mels: usize) -> Result<Self, FeatureError> {
        if n_mels != 80 && n_mels != 128 {
            return Err(FeatureError::UnsupportedMelCount(n_mels));
        }
        let filters: Vec<Filter> = slaney_filterbank(n_mels)
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
                Filter {
                    first_bin: first,
                    weights: row.get(first..last).unwrap_or_default().to_vec(),
                }
            })
            .collect();
        // torch.hann_window(400) is periodic: 0.5 - 0.5 cos(2 pi n / N), N (not N - 1).
        let window = (0..N_FFT)
            .map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        let max_weight = filters
            .iter()
            .flat_map(|f| f.weights.iter().copied())
            .fold(0.0f32, f32::max);
        Ok(Self {
            n_mels,
            filters,
            max_weight,
            window,
            fft,
        })
    }

    /// Number of mel bins.
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// `log10` Mel power, floored at 1e-10 and NOT yet normalised, for `samples` (16 kHz
    /// mono). `n` samples give `n / 160` frames (whisper drops the STFT's last frame); fewer
    /// than 160 samples give an empty [`Mel`].
    pub fn log10_mel(&self, samples: &[f32]) -> Mel {
        let n = samples.len();
        let n_frames = n / HOP_LENGTH;
        let mut data = vec![LOG10_FLOOR; self.n_mels * n_frames];
        if n_frames == 0 {
            return Mel {
                n_mels: self.n_mels,
                n_frames,
                data,
            };
        }

        // center=True: reflect-pad N_FFT/2 on both sides, so frame t is centred on
        // sample t * HOP_LENGTH.
        let pad = N_FFT / 2;
        let mut padded = Vec::with_capacity(n + 2 * pad);
        // `reflect` returns an index in 0..n; the 0.0 fallback is never read.
        let at = |i: isize| samples.get(reflect(i, n)).copied().unwrap_or(0.0);
        padded.extend((0..pad).map(|i| at(i as isize - pad as isize)));
        padded.extend_from_slice(samples);
        padded.extend((0..pad).map(|i| at((n + i) as isize)));

        // Buffers reused across frames: no allocation inside the loop.
        let mut scratch = self.scratch();
        let mut column = vec![0.0f32; self.n_mels];
        for (t, chunk) in padded.windows(N_FFT).step_by(HOP_LENGTH).take(n_frames).enumerate() {
            self.frame_into(chunk, &mut scratch, &mut column);
            // Column t of each row: [n_mels][n_frames] row-major.
            for (row, &x) in data.chunks_exact_mut(n_frames).zip(&column) {
                if let Some(dst) = row.get_mut(t) {
                    *dst = x;
                }
            }
        }
        Mel {
            n_mels: self.n_mels,
            n_frames,
            data,
        }
    }
}

impl LogMel {
    /// Buffers for [`LogMel::frame_into`], made once per caller.
    pub fn scratch(&self) -> FrameScratch {
        FrameScratch {
            frame: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            fft: self.fft.make_scratch_vec(),
            power: vec![0.0f32; N_FREQS],
        }
    }

    /// One frame: `chunk` is the [`N_FFT`] samples centred on the frame (already reflect-padded
    /// at the clip's edges); `out` (`n_mels` long) gets its floored `log10` Mel power, not
    /// normalised. The batch spectrogram and the streaming front end both call this, so a
    /// frame is the same number whichever way it was computed.
    pub fn frame_into(&self, chunk: &[f32], scratch: &mut FrameScratch, out: &mut [f32]) {
        // A zero window weight (the periodic Hann window's first) gives exactly 0, even for a
        // non-finite sample: the frame then does not depend on that sample at all, which is
        // what lets the streaming front end compute frame 0 before the one sample its left
        // reflection reaches with weight 0 has arrived (x · 0 is NaN for x = ±inf or NaN).
        for ((dst, &x), &w) in scratch.frame.iter_mut().zip(chunk).zip(&self.window) {
            *dst = if w == 0.0 { 0.0 } else { x * w };
        }
        // The buffers come from the plan itself, so the lengths always match and the FFT
        // cannot fail; a failure would leave the power at its last value, never panic.
        if self
            .fft
            .process_with_scratch(&mut scratch.frame, &mut scratch.spectrum, &mut scratch.fft)
            .is_err()
        {
            tracing::error!("FFT buffer length mismatch (internal bug)");
        }
        for (p, c) in scratch.power.iter_mut().zip(&scratch.spectrum) {
            *p = c.norm_sqr();
        }
        for (filter, dst) in self.filters.iter().zip(out.iter_mut()) {
            let bins = scratch.power.iter().skip(filter.first_bin);
            let energy: f32 = filter.weights.iter().zip(bins).map(|(w, p)| w * p).sum();
            *dst = energy.max(POWER_FLOOR).log10();
        }
    }

    /// An upper bound on every value [`LogMel::frame_into`] writes for `chunk`, in its units
    /// (floored `log10` Mel power), from the windowed frame's energy alone: no FFT. A scan for
    /// a clip's maximum skips the frames whose bound is below the maximum so far
    /// ([`super::MelStream::peak_scan`]).
    ///
    /// Each Mel value is `Σ_k f_k·P_k ≤ f_max·Σ_k P_k` over the one-sided power spectrum
    /// `P_k = |Y_k|²`, k = 0..=200, and by Parseval `Σ_{k=0}^{N−1} |Y_k|² = N·Σ_n y_n²` over the
    /// two-sided one, which holds every one-sided term at least once: so every value is at most
    /// `f_max·N·Σ_n y_n²`, with `y` the windowed samples. The sum runs in f64 and the bound is
    /// widened by 1 % for the f32 rounding of the FFT and of the filter sums (relative errors of
    /// order 1e−6). Non-finite samples give a non-finite or NaN bound, which skips nothing.
    pub fn frame_bound(&self, chunk: &[f32]) -> f32 {
        let energy: f64 = chunk
            .iter()
            .zip(&self.window)
            // As frame_into: a zero window weight contributes exactly nothing.
            .filter(|&(_, &w)| w != 0.0)
            .map(|(&x, &w)| {
                let y = f64::from(x * w);
                y * y
            })
            .sum();
        let bound = 1.01 * f64::from(self.max_weight) * N_FFT as f64 * energy;
        if bound.is_nan() {
            return f32::NAN;
        }
        bound.max(f64::from(POWER_FLOOR)).log10() as f32
    }
}

/// Reusable FFT buffers of one thread ([`LogMel::scratch`]).
pub struct FrameScratch {
    frame: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    fft: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
}

/// Index into a signal of length `n` (> 0) for any position, mirrored about the end
/// samples without repeating them (numpy/torch `reflect`): -1 -> 1, n -> n - 2.
/// Positions further out keep bouncing, which is what numpy does for pads longer than
/// the signal (torch refuses those); it only matters for clips under 201 samples.
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// Slaney-style mel filterbank, as `librosa.filters.mel(sr=16000, n_fft=400, n_mels,
/// fmin=0, fmax=8000, htk=False, norm='slaney')` computes it (librosa/filters.py `mel`,
/// with `mel_frequencies`, `hz_to_mel` and `mel_to_hz` from librosa/core/convert.py):
/// `n_mels` triangles over the 201 FFT bins, centred on points equally spaced on the Slaney
/// mel scale, each scaled by 2 / (upper edge - lower edge) in Hz. Computed in f64 and
/// rounded once to f32 (librosa's default dtype). Returns `[n_mels][N_FREQS]`.
pub fn slaney_filterbank(n_mels: usize) -> Vec<Vec<f32>> {
    let fft_freqs: Vec<f64> = (0..N_FREQS).map(|k| k as f64 * SAMPLE_RATE / N_FFT as f64).collect();
    let max_mel = hz_to_mel(SAMPLE_RATE / 2.0);
    // n_mels + 2 edges: filter i rises from edge i, peaks at i + 1, falls to i + 2.
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect();
    edges
        .windows(3)
        .filter_map(|e| match *e {
            [lo, mid, hi] => Some((lo, mid, hi)),
            _ => None,
        })
        .map(|(lo, mid, hi)| {
            let enorm = 2.0 / (hi - lo);
            fft_freqs
                .iter()
                .map(|&f| {
                    let rising = (f - lo) / (mid - lo);
                    let falling = (hi - f) / (hi - mid);
                    (rising.min(falling).max(0.0) * enorm) as f32
                })
                .collect()
        })
        .collect()
}

/// Centre frequency of each mel filter in Hz (the peaks of [`slaney_filterbank`]).
pub fn mel_centres_hz(n_mels: usize) -> Vec<f64> {
    let max_mel = hz_to_mel(SAMPLE_RATE / 2.0);
    (1..=n_mels)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect()
}

// Slaney's Auditory Toolbox mel scale (librosa `htk=False`): linear below 1 kHz at
// 200/3 Hz per mel, logarithmic above with 27 mels per factor 6.4.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        mel * F_SP
    }
}

/// Whisper's normalisation over `values` (log10 Mel power): clamp to `max - 8` (80 dB
/// below the loudest value), then `(x + 4) / 4`. Empty input is left alone.
pub fn normalize_whisper(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let floor = max - 8.0;
    for x in values {
        *x = (x.max(floor) + 4.0) / 4.0;
    }
}

/// The mel bins centred in `lo_hz..=hi_hz` (the energy gate's band).
pub(crate) fn band_bins(n_mels: usize, lo_hz: f64, hi_hz: f64) -> Vec<usize> {
    mel_centres_hz(n_mels)
        .iter()
        .enumerate()
        .filter(|(_, hz)| (lo_hz..=hi_hz).contains(*hz))
        .map(|(m, _)| m)
        .collect()
}

/// Mel power of a Whisper-normalised value `x` (log10 power = 4x − 4).
pub(crate) fn normalised_power(x: f32) -> f64 {
    10f64.powf(f64::from(4.0 * x - 4.0))
}

/// log10 of the largest of the frames' band powers; −∞ when none is positive.
pub(crate) fn peak_log10(frame_powers: impl Iterator<Item = f64>) -> f32 {
    let peak = frame_powers.fold(0.0, f64::max);
    if peak > 0.0 {
        peak.log10() as f32
    } else {
        f32::NEG_INFINITY
    }
}

/// [`Mel::silence_value`] for a spectrogram whose largest normalised value is `max`.
pub(crate) fn silence_value_for(max: f32) -> f32 {
    let floor = (LOG10_FLOOR + 4.0) / 4.0;
    if max.is_finite() { (max - 2.0).max(floor) } else { floor }
}

/// A log-Mel spectrogram, `[n_mels][n_frames]` row-major (mel bin outer, frame inner):
/// `data()[m * n_frames() + t]` is bin `m` of frame `t`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mel {
    n_mels: usize,
    n_frames: usize,
    data: Vec<f32>,
}

impl Mel {
    /// Number of mel bins (rows).
    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Number of frames (columns), 100 per second.
    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// All values, `[n_mels][n_frames]` row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Takes the values out, `[n_mels][n_frames]` row-major.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Mel bin `mel` across all frames, or `None` past the last bin.
    pub fn row(&self, mel: usize) -> Option<&[f32]> {
        self.data
            .get(mel.checked_mul(self.n_frames)?..mel.checked_add(1)?.checked_mul(self.n_frames)?)
    }

    /// Bin `mel` of frame `frame`, or `None` out of range.
    pub fn get(&self, mel: usize, frame: usize) -> Option<f32> {
        (frame < self.n_frames)
            .then(|| self.row(mel)?.get(frame).copied())
            .flatten()
    }

    /// Whisper's normalisation over the whole spectrogram (see [`normalize_whisper`]):
    /// what `log_mel_spectrogram` does to a whole (padded) file.
    pub fn normalize_whisper(&mut self) {
        normalize_whisper(&mut self.data);
    }

    /// Copies frames `start..start + len` into `out` as `[n_mels][len]` row-major,
    /// filling frames past the end with `pad` (use [`LOG10_FLOOR`] before normalisation;
    /// after it, whisper's 30 s zero padding has been clamped to `max - 8`, i.e. the
    /// normalised value `(max - 4) / 4`). `out` is resized to `n_mels * len`.
    pub fn copy_window_into(&self, start: usize, len: usize, pad: f32, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.n_mels * len, pad);
        let available = self.n_frames.saturating_sub(start).min(len);
        if available == 0 {
            return;
        }
        for (m, dst) in out.chunks_exact_mut(len).enumerate() {
            let src = self.row(m).and_then(|row| row.get(start..start + available));
            if let (Some(src), Some(dst)) = (src, dst.get_mut(..available)) {
                dst.copy_from_slice(src);
            }
        }
    }

    /// Loudness of the loudest frame in `start..start + len`, counting only the bins centred in
    /// `lo_hz..=hi_hz`: log10 of their summed mel power. Reads a Whisper-normalised spectrogram
    /// (log10 power = 4x − 4, clamped at the clip's max − 8). For calibration: broadband white
    /// noise at −40 / −60 dBFS RMS reads about −1.5 / −3.5 over 200–4000 Hz; speech at −55 dBFS
    /// RMS peaks near −1.7. −∞ for an empty range.
    pub fn band_peak_log10(&self, start: usize, len: usize, lo_hz: f64, hi_hz: f64) -> f32 {
        let end = start.saturating_add(len).min(self.n_frames);
        if start >= end {
            return f32::NEG_INFINITY;
        }
        let mut frame_power = vec![0f64; end - start];
        for m in band_bins(self.n_mels, lo_hz, hi_hz) {
            if let Some(row) = self.row(m).and_then(|r| r.get(start..end)) {
                for (acc, &x) in frame_power.iter_mut().zip(row) {
                    *acc += normalised_power(x);
                }
            }
        }
        peak_log10(frame_power.into_iter())
    }

    /// Mel value of digital silence in a spectrogram normalised by [`Mel::normalize_whisper`]:
    /// its floor, `max(x) − 8` in log10 units, i.e. `max(normalised) − 2` (and never below
    /// log10(1e-10)). Padding with it is what Whisper's 30 s of appended zero samples look like
    /// to the encoder.
    pub fn silence_value(&self) -> f32 {
        silence_value_for(self.data.iter().copied().fold(f32::NEG_INFINITY, f32::max))
    }

    /// [`Mel::copy_window_into`] into a new buffer.
    pub fn window(&self, start: usize, len: usize, pad: f32) -> Vec<f32> {
        let mut out = Vec::new();
        self.copy_window_into(start, len, pad, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(rms: f32, n: usize) -> Vec<f32> {
        // Deterministic uniform noise (xorshift), scaled to the RMS asked for.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
                u * rms * 3f32.sqrt()
            })
            .collect()
    }

    #[test]
    fn band_peak_reads_absolute_loudness() {
        let front = LogMel::new(80).unwrap();
        let level = |samples: &[f32]| {
            let mut mel = front.log10_mel(samples);
            mel.normalize_whisper();
            mel.band_peak_log10(0, mel.n_frames(), 200.0, 4000.0)
        };
        let minus_40_dbfs = level(&noise(0.01, 16_000));
        let minus_60_dbfs = level(&noise(0.001, 16_000));
        assert!((-1.8..-1.2).contains(&minus_40_dbfs), "{minus_40_dbfs}");
        assert!((-3.8..-3.2).contains(&minus_60_dbfs), "{minus_60_dbfs}");
        assert!(level(&vec![0.0; 16_000]) < -5.0, "digital silence");
        // A 50 Hz hum has no energy in the speech band.
        let hum: Vec<f32> = (0..16_000)
            .map(|i| 0.01 * (2.0 * std::f32::consts::PI * 50.0 * i as f32 / 16_000.0).sin())
            .collect();
        assert!(level(&hum) < -3.0, "{}", level(&hum));
    }

    #[test]
    fn mel_centres_rise_to_nyquist() {
        let c = mel_centres_hz(80);
        assert_eq!(c.len(), 80);
        assert!(c.windows(2).all(|w| w[0] < w[1]));
        assert!(c[0] > 0.0 && c[79] < 8000.0);
    }

    #[test]
    fn rejects_other_mel_counts() {
        for n in [0, 40, 81, 127, 129] {
            let err = LogMel::new(n).expect_err("only 80 and 128 exist");
            assert!(err.to_string().contains(&n.to_string()), "{err}");
        }
        assert_eq!(LogMel::new(80).map(|m| m.n_mels()).ok(), Some(80));
        assert_eq!(LogMel::new(128).map(|m| m.n_mels()).ok(), Some(128));
    }

    /// Weights read out of whisper's `assets/mel_filters.npz` (openai-whisper 20250625,
    /// saved from librosa.filters.mel) with NumPy: `repr(float(npz["mel_80"][i, k]))`.
    #[test]
    fn filterbank_matches_whisper_mel_filters_npz() {
        let cases_80: &[(usize, usize, f64)] = &[
            (0, 1, 0.024_862_594_902_515_41),
            (0, 2, 0.0),
            (1, 1, 0.001_990_821_911_022_067),
            (1, 2, 0.022_871_771_827_340_126),
            (10, 10, 0.019_908_217_713_236_81),
            (10, 11, 0.004_954_374_860_972_166),
            (10, 14, 0.0),
            (40, 42, 0.005_411_104_764_789_343),
            (40, 43, 0.014_735_566_452_145_576),
            (40, 44, 0.006_518_189_795_315_266),
            (79, 186, 0.000_366_741_674_952_209),
            (79, 190, 0.002_232_054_946_944_117_5),
            (79, 199, 0.000_448_759_004_939_347_5),
            (79, 200, 0.0),
        ];
        let cases_128: &[(usize, usize, f64)] = &[
            (0, 1, 0.012_373_986_653_983_593),
            (1, 1, 0.030_392_564_833_164_215),
            (10, 6, 0.011_289_183_981_716_633),
            (10, 7, 0.001_084_801_973_775_029_2),
            (40, 24, 0.040_376_365_184_783_936),
            (127, 191, 0.000_475_695_094_792_172_3),
            (127, 195, 0.005_041_601_601_988_077),
            (127, 199, 0.001_114_280_195_906_758_3),
        ];
        for (n_mels, cases) in [(80, cases_80), (128, cases_128)] {
            let fb = slaney_filterbank(n_mels);
            assert_eq!(fb.len(), n_mels);
            assert!(fb.iter().all(|row| row.len() == N_FREQS));
            for &(i, k, want) in cases {
                let got = f64::from(fb[i][k]);
                assert!(
                    (got - want).abs() <= 1e-6,
                    "mel_{n_mels}[{i}][{k}] = {got}, npz has {want}"
                );
            }
        }
        // Nonzero support of a few filters, as in the npz.
        let lm = LogMel::new(80).expect("80 is supported");
        let span = |f: &Filter| (f.first_bin, f.first_bin + f.weights.len() - 1);
        assert_eq!(span(&lm.filters[0]), (1, 1));
        assert_eq!(span(&lm.filters[40]), (42, 44));
        assert_eq!(span(&lm.filters[79]), (186, 199));
    }

    fn sine(freq: f32, seconds: f32) -> Vec<f32> {
        let n = (16_000.0 * seconds) as usize;
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / 16_000.0).sin())
            .collect()
    }

    fn loudest_bin(mel: &Mel, frame: usize) -> usize {
        (0..mel.n_mels())
            .max_by(|&a, &b| {
                let (x, y) = (mel.get(a, frame), mel.get(b, frame));
                x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
            })
            .unwrap_or(usize::MAX)
    }

    /// Expected bins from whisper_mel.log_mel on the same sines (NumPy reference):
    /// 440 Hz -> 11 / 18, 1 kHz -> 26 / 42, 3 kHz -> 54 / 87 for 80 / 128 bins.
    #[test]
    fn sine_lands_in_expected_mel_bin() {
        for (freq, bin80, bin128) in [(440.0, 11, 18), (1000.0, 26, 42), (3000.0, 54, 87)] {
            let x = sine(freq, 1.0);
            for (n_mels, want) in [(80, bin80), (128, bin128)] {
                let mel = LogMel::new(n_mels).expect("supported").log10_mel(&x);
                assert_eq!(mel.n_frames(), 100);
                assert_eq!(loudest_bin(&mel, 50), want, "{freq} Hz, {n_mels} bins");
            }
        }
    }

    #[test]
    fn frame_count_and_short_inputs() {
        let lm = LogMel::new(80).expect("supported");
        for (n, frames) in [(0, 0), (1, 0), (159, 0), (160, 1), (161, 1), (200, 1), (48_000, 300)] {
            let x = vec![0.1f32; n];
            let mel = lm.log10_mel(&x);
            assert_eq!(mel.n_frames(), frames, "{n} samples");
            assert_eq!(mel.data().len(), 80 * frames);
            assert!(mel.data().iter().all(|v| v.is_finite()));
        }
        // Silence is the floor everywhere.
        let mel = lm.log10_mel(&[0.0; 1600]);
        assert!(mel.data().iter().all(|&v| v == LOG10_FLOOR));
    }

    #[test]
    fn reflect_matches_numpy() {
        // np.pad(np.arange(5), 3, mode="reflect") = [3 2 1 0 1 2 3 4 3 2 1]
        let got: Vec<usize> = (-3..8).map(|i| reflect(i, 5)).collect();
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect(-7, 1), 0);
    }

    #[test]
    fn normalisation_clamps_and_scales() {
        let mut v = vec![2.0, -7.0, 1.0, LOG10_FLOOR];
        normalize_whisper(&mut v);
        // max 2 -> floor -6; (x + 4) / 4.
        assert_eq!(v, [1.5, -0.5, 1.25, -0.5]);
        let mut empty: Vec<f32> = Vec::new();
        normalize_whisper(&mut empty);
    }

    #[test]
    fn window_copy_pads_past_the_end() {
        let mel = Mel {
            n_mels: 2,
            n_frames: 3,
            data: vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0],
        };
        assert_eq!(mel.window(1, 4, -1.0), [1.0, 2.0, -1.0, -1.0, 11.0, 12.0, -1.0, -1.0]);
        assert_eq!(mel.window(5, 2, -1.0), [-1.0; 4]);
        assert_eq!(mel.window(0, 0, -1.0), Vec::<f32>::new());
        assert_eq!(mel.row(1), Some(&[10.0, 11.0, 12.0][..]));
        assert_eq!(mel.row(2), None);
        assert_eq!(mel.get(1, 3), None);
    }
}
