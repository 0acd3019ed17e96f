//! Where a batch job's log-mel comes from, as the seek loop asks for it window by window.
//!
//! In: a whole [`Mel`] in memory (a server upload, samples handed over by a library caller),
//! or an audio file ([`MelFile`]). Out: Whisper-normalised `[n_mels][len]` windows, the
//! silence padding value and the speech-band energy gate's measure, for frames asked for in
//! increasing order (the seek loop never goes back).
//!
//! [`MelFile`] reads its file twice, so that memory does not grow with the file's length
//! while every window stays bit-identical to the whole-file path ([`Mel::normalize_whisper`]
//! over the clip, then [`Mel::window`]):
//! 1. [`MelFile::open`], on the caller's thread: decode → 16 kHz → the frames' count and
//!    largest raw log-mel value ([`MelStream::peak_scan`]: the live engine's front end, which
//!    skips the FFT of every frame whose energy bound is below the largest value so far).
//!    Whisper normalises over the whole clip (each value clamped to max − 8), so the max must
//!    be known before the first window. Every input error (corrupt data, a NaN sample, the
//!    duration cap) surfaces here, before any model work.
//! 2. A producer thread does the same again and sends the raw frames in chunks over a bounded
//!    channel; the seek loop pulls them as it moves forward and drops those behind it.
//!
//! The price is decoding the file twice; decoding, resampling and log-mel are a few percent of
//! a transcription, and the second pass runs beside the model, not before it. The first pass
//! does hold up the first window, which is why it skips what it can.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::mel::{band_bins, normalised_power, peak_log10, silence_value_for};
use super::{LogMel, Mel, MelStream};
use crate::audio::{self, AudioError, AudioInfo, AudioLimits};
use crate::error::Result;

/// The log-mel a batch job reads, whole or pulled from a file (see the module doc). Frames
/// are asked for in increasing order: after `window(start, …)`, frames before `start` are
/// not asked for again.
pub trait MelSource: Send {
    /// Mel bins per frame.
    fn n_mels(&self) -> usize;
    /// Frames in the clip (100 per second).
    fn n_frames(&self) -> usize;
    /// The normalised value of digital silence in this clip ([`Mel::silence_value`]).
    fn silence_value(&self) -> f32;
    /// Frames `start..start + len`, normalised over the clip, `[n_mels][len]` row-major;
    /// frames past the clip's end are `pad`.
    fn window(&mut self, start: usize, len: usize, pad: f32) -> Result<Vec<f32>>;
    /// [`Mel::band_peak_log10`] over `start..start + len`.
    fn band_peak_log10(&mut self, start: usize, len: usize, lo_hz: f64, hi_hz: f64) -> Result<f32>;
    /// What the clip is, for messages (a file's path).
    fn label(&self) -> String {
        "audio clip".into()
    }
}

/// A whole spectrogram, owned (a job's) or borrowed ([`crate::transcribe::transcribe`]'s).
impl<T: std::borrow::Borrow<Mel> + Send> MelSource for T {
    fn n_mels(&self) -> usize {
        self.borrow().n_mels()
    }

    fn n_frames(&self) -> usize {
        self.borrow().n_frames()
    }

    fn silence_value(&self) -> f32 {
        self.borrow().silence_value()
    }

    fn window(&mut self, start: usize, len: usize, pad: f32) -> Result<Vec<f32>> {
        Ok(self.borrow().window(start, len, pad))
    }

    fn band_peak_log10(&mut self, start: usize, len: usize, lo_hz: f64, hi_hz: f64) -> Result<f32> {
        Ok(self.borrow().band_peak_log10(start, len, lo_hz, hi_hz))
    }
}

/// Frames per chunk the producer sends (5 s).
const CHUNK_FRAMES: usize = 500;
/// Chunks in flight: how far (20 s) the producer may run ahead of the seek loop.
const CHUNKS_AHEAD: usize = 4;

/// An audio file's log-mel, read in memory bounded by a window and a few chunks, whatever
/// the file's length (see the module doc).
pub struct MelFile {
    path: PathBuf,
    n_mels: usize,
    n_frames: usize,
    /// The clip's largest raw log10 value (−∞ when it has no frame).
    max: f32,
    info: AudioInfo,
    frames: Receiver<std::result::Result<Vec<f32>, AudioError>>,
    /// Raw frames `held_start..held_start + held.len() / n_mels`, `[frame][mel]`.
    held: Vec<f32>,
    held_start: usize,
    producer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MelFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFile")
            .field("path", &self.path)
            .field("n_frames", &self.n_frames)
            .field("held_start", &self.held_start)
            .finish_non_exhaustive()
    }
}

impl MelFile {
    /// Reads `path` once for the clip's frame count and maximum (checking everything
    /// [`audio::stream_audio`] checks, and `limits`), then starts the thread that reads it
    /// again for the frames themselves.
    pub fn open(path: &Path, log_mel: &LogMel, limits: &AudioLimits) -> std::result::Result<MelFile, AudioError> {
        let _span = tracing::debug_span!("mel_file_scan", path = %path.display()).entered();
        let mut stream = MelStream::peak_scan(log_mel.clone());
        let info = audio::stream_audio(path, limits, &mut |samples| {
            stream.push(samples);
            Ok(())
        })?;
        stream.finish();
        let max = stream.peak().unwrap_or(f32::NEG_INFINITY);
        let n_frames = usize::try_from(stream.frames_end()).unwrap_or(usize::MAX);

        let (tx, rx) = bounded(CHUNKS_AHEAD);
        let (owned, log_mel, limits) = (path.to_path_buf(), log_mel.clone(), *limits);
        let producer = std::thread::Builder::new()
            .name("steno-mel-file".into())
            .spawn(move || produce(&owned, log_mel, &limits, &tx))
            .map_err(|source| AudioError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(MelFile {
            path: path.to_path_buf(),
            n_mels: stream.n_mels(),
            n_frames,
            max,
            info,
            frames: rx,
            held: Vec::new(),
            held_start: 0,
            producer: Some(producer),
        })
    }

    /// The file's length and format.
    pub fn info(&self) -> AudioInfo {
        self.info
    }

    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.info.duration_s()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn held_end(&self) -> usize {
        self.held_start + self.held.len() / self.n_mels.max(1)
    }

    /// Drops the frames before `frame`.
    fn discard_before(&mut self, frame: usize) {
        let n = frame.min(self.held_end()).saturating_sub(self.held_start);
        if n > 0 {
            self.held.drain(..n * self.n_mels);
            self.held_start += n;
        }
    }

    /// Receives frames until `end` (or the clip's end) is held.
    fn fill_to(&mut self, end: usize) -> Result<()> {
        let end = end.min(self.n_frames);
        while self.held_end() < end {
            match self.frames.recv() {
                Ok(Ok(chunk)) => self.held.extend_from_slice(&chunk),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(AudioError::Decode {
                        path: self.path.clone(),
                        detail: format!(
                            "the second read ended at frame {} of {}: the file changed while it was being transcribed",
                            self.held_end(),
                            self.n_frames
                        ),
                        source: None,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Held raw frames `start..end` (clamped to what is held), `[frame][mel]`.
    fn frames(&self, start: usize, end: usize) -> &[f32] {
        let m = self.n_mels;
        let from = start.saturating_sub(self.held_start).min(self.held.len() / m.max(1));
        let to = end.saturating_sub(self.held_start).min(self.held.len() / m.max(1));
        self.held.get(from * m..to.max(from) * m).unwrap_or_default()
    }

    /// The clamp floor of Whisper's normalisation over this clip (raw log10 units).
    fn floor(&self) -> f32 {
        self.max - 8.0
    }
}

impl MelSource for MelFile {
    fn n_mels(&self) -> usize {
        self.n_mels
    }

    fn n_frames(&self) -> usize {
        self.n_frames
    }

    fn silence_value(&self) -> f32 {
        // The largest normalised value is (max + 4) / 4, as normalize_whisper computes it.
        silence_value_for((self.max.max(self.floor()) + 4.0) / 4.0)
    }

    fn window(&mut self, start: usize, len: usize, pad: f32) -> Result<Vec<f32>> {
        self.discard_before(start);
        self.fill_to(start.saturating_add(len))?;
        let (m, floor) = (self.n_mels, self.floor());
        let end = start.saturating_add(len).min(self.n_frames);
        let mut out = vec![pad; m * len];
        // `start` is never behind the held frames: the seek loop only moves forward.
        debug_assert!(start >= self.held_start);
        let skip = self.held_start.saturating_sub(start);
        for (t, column) in self.frames(start, end).chunks_exact(m).enumerate() {
            for (bin, &x) in column.iter().enumerate() {
                if let Some(dst) = out.get_mut(bin * len + skip + t) {
                    // Exactly normalize_whisper's arithmetic.
                    *dst = (x.max(floor) + 4.0) / 4.0;
                }
            }
        }
        Ok(out)
    }

    fn band_peak_log10(&mut self, start: usize, len: usize, lo_hz: f64, hi_hz: f64) -> Result<f32> {
        self.discard_before(start);
        self.fill_to(start.saturating_add(len))?;
        let end = start.saturating_add(len).min(self.n_frames);
        let floor = self.floor();
        let bins = band_bins(self.n_mels, lo_hz, hi_hz);
        // Mel::band_peak_log10's measure, on the values it would read after normalisation.
        let powers = self.frames(start, end).chunks_exact(self.n_mels.max(1)).map(|column| {
            bins.iter()
                .filter_map(|&b| column.get(b))
                .map(|&x| normalised_power((x.max(floor) + 4.0) / 4.0))
                .sum::<f64>()
        });
        Ok(peak_log10(powers))
    }

    fn label(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for MelFile {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail, which ends its read.
        self.frames = crossbeam_channel::never();
        if let Some(producer) = self.producer.take() {
            let _ = producer.join();
        }
    }
}

/// The second read: raw frames in chunks of [`CHUNK_FRAMES`] to `tx`, then an error if the
/// read failed. Ends early (quietly) when the receiver is gone.
fn produce(path: &Path, log_mel: LogMel, limits: &AudioLimits, tx: &Sender<std::result::Result<Vec<f32>, AudioError>>) {
    let _span = tracing::debug_span!("mel_file_frames", path = %path.display()).entered();
    let mut stream = MelStream::new(log_mel);
    let send = |stream: &mut MelStream| -> std::result::Result<(), AudioError> {
        let chunk = stream.held().to_vec();
        stream.discard_before(stream.frames_end());
        if chunk.is_empty() {
            return Ok(());
        }
        tx.send(Ok(chunk)).map_err(|_| AudioError::Stopped {
            path: path.to_path_buf(),
        })
    };
    let read = audio::stream_audio(path, limits, &mut |samples| {
        stream.push(samples);
        if (stream.frames_end() - stream.frames_start()) as usize >= CHUNK_FRAMES {
            send(&mut stream)?;
        }
        Ok(())
    })
    .and_then(|_| {
        stream.finish();
        send(&mut stream)
    });
    match read {
        Ok(()) | Err(AudioError::Stopped { .. }) => {}
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speechlike(n: usize, rate: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / rate;
                (0.3 + 0.2 * (t * 3.0).sin()) * (2.0 * std::f32::consts::PI * (200.0 + 300.0 * (t % 7.0)) * t).sin()
            })
            .collect()
    }

    fn write_wav(path: &Path, rate: u32, samples: &[f32]) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &x in samples {
            w.write_sample((x * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }

    /// Windows, padding and the energy gate read from a file equal those of the whole
    /// normalised spectrogram, bit for bit, at 16 kHz and through the resampler.
    #[test]
    fn file_windows_equal_the_whole_spectrogram() {
        let log_mel = LogMel::new(80).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (rate, seconds) in [(16_000u32, 47.3f32), (22_050, 12.0)] {
            let path = dir.path().join(format!("{rate}.wav"));
            write_wav(&path, rate, &speechlike((seconds * rate as f32) as usize, rate as f32));
            let audio = audio::read_audio(&path).unwrap();
            let mut whole = log_mel.log10_mel(&audio.samples);
            whole.normalize_whisper();
            let mut file = MelFile::open(&path, &log_mel, &AudioLimits::default()).unwrap();
            assert_eq!(file.n_frames(), whole.n_frames());
            assert_eq!(file.duration_s(), audio.duration_s());
            assert_eq!(MelSource::silence_value(&file), whole.silence_value());
            let pad = whole.silence_value();
            let mut seek = 0;
            while seek < whole.n_frames() {
                let len = 3000.min(whole.n_frames() - seek + 300);
                assert_eq!(
                    MelSource::band_peak_log10(&mut file, seek, len, 200.0, 4000.0).unwrap(),
                    whole.band_peak_log10(seek, len, 200.0, 4000.0),
                    "{rate} Hz, seek {seek}"
                );
                let w = MelSource::window(&mut file, seek, len, pad).unwrap();
                assert!(w == whole.window(seek, len, pad), "{rate} Hz: window at {seek} differs");
                // The held frames follow the window, not the file.
                assert!(file.held.len() <= (len + CHUNK_FRAMES * 2) * 80);
                seek += 2_345;
            }
        }
    }

    #[test]
    fn open_reports_input_errors_before_any_window() {
        let log_mel = LogMel::new(80).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.wav");
        write_wav(&path, 16_000, &speechlike(16_000 * 3, 16_000.0));
        let limits = AudioLimits {
            max_duration_s: Some(2.5),
        };
        let err = MelFile::open(&path, &log_mel, &limits).unwrap_err();
        assert!(matches!(err, AudioError::TooLong { .. }), "{err}");
        let err = MelFile::open(&dir.path().join("absent.wav"), &log_mel, &limits).unwrap_err();
        assert!(matches!(err, AudioError::NotFound { .. }), "{err}");
    }

    #[test]
    fn a_file_cut_short_after_opening_is_an_error_not_padding() {
        let log_mel = LogMel::new(80).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shrinks.wav");
        write_wav(&path, 16_000, &speechlike(16_000 * 60, 16_000.0));
        let mut file = MelFile::open(&path, &log_mel, &AudioLimits::default()).unwrap();
        // Replace it with a shorter file before the frames are read.
        write_wav(&path, 16_000, &speechlike(16_000 * 10, 16_000.0));
        let mut failed = None;
        for seek in (0..file.n_frames()).step_by(3000) {
            if let Err(e) = MelSource::window(&mut file, seek, 3000, 0.0) {
                failed = Some(e.to_string());
                break;
            }
        }
        // Either the producer runs out of file mid-read (a truncated WAV) or it ends early
        // (the file changed): an error naming the file, never silent padding.
        let message = failed.expect("the shortened file is noticed");
        assert!(message.starts_with(&path.display().to_string()), "{message}");
    }
}
