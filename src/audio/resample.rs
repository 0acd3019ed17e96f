//! Downmixing to mono and sample-rate conversion to 16 kHz (rubato's synchronous FFT resampler).

use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::{AudioError, BoxError, SAMPLE_RATE};

/// Lowest source rate accepted. Below this there is no speech band left to resample.
pub const MIN_SOURCE_RATE: u32 = 1_000;
/// Highest source rate accepted. The FFT resampler's block size grows with
/// `rate / gcd(rate, 16000)`, so an absurd rate from a corrupt header would otherwise
/// ask for gigabytes; 768 kHz is the highest rate real recorders produce.
pub const MAX_SOURCE_RATE: u32 = 768_000;

/// Input frames per resampler call. rubato rounds the FFT block to a multiple of
/// `rate / gcd(rate, 16000)` frames anyway; ~1k keeps its delay and scratch small.
const CHUNK: usize = 1024;

/// Averages `channels` interleaved channels into mono, appending to `mono`.
///
/// Decoded files reach this only after [`super::Intake`] has refused non-finite samples;
/// reading any that still arrive as silence keeps one NaN from poisoning a whole
/// spectrogram's normalisation. A trailing partial frame is dropped.
pub(crate) fn downmix_into(interleaved: &[f32], channels: usize, mono: &mut Vec<f32>) {
    let clean = |x: f32| if x.is_finite() { x } else { 0.0 };
    match channels {
        0 => {}
        1 => mono.extend(interleaved.iter().map(|&x| clean(x))),
        n => {
            let scale = 1.0 / n as f32;
            mono.extend(
                interleaved
                    .chunks_exact(n)
                    .map(|frame| frame.iter().map(|&x| clean(x)).sum::<f32>() * scale),
            );
        }
    }
}

/// Checks that `rate` is one this module will resample, naming `path` otherwise.
pub(crate) fn check_rate(rate: u32, path: &Path) -> Result<(), AudioError> {
    if (MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::UnsupportedRate {
            path: path.to_path_buf(),
            rate,
        })
    }
}

/// Resamples mono `samples` from `from_rate` to 16 kHz; 16 kHz input is returned as is.
pub(crate) fn to_16k_owned(samples: Vec<f32>, from_rate: u32, path: &Path) -> Result<Vec<f32>, AudioError> {
    check_rate(from_rate, path)?;
    if from_rate == SAMPLE_RATE || samples.is_empty() {
        return Ok(samples);
    }
    let resample_err = |source: BoxError| AudioError::Resample {
        path: path.to_path_buf(),
        from_rate,
        source,
    };
    // Fixed-ratio conversion of a whole clip: rubato's synchronous FFT resampler is the
    // high-quality choice for that, and `process_all` trims its start-up delay so the
    // output is aligned with the input and exactly ceil(len * 16000 / from_rate) long.
    let mut resampler = Fft::<f32>::new(from_rate as usize, SAMPLE_RATE as usize, CHUNK, 1, FixedSync::Input)
        .map_err(|e| resample_err(Box::new(e)))?;
    let input = InterleavedSlice::new(&samples[..], 1, samples.len()).map_err(|e| resample_err(Box::new(e)))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| resample_err(Box::new(e)))?;
    Ok(output.take_data())
}

/// Resamples mono samples at `from_rate` Hz to 16 kHz.
///
/// 16 kHz input comes back unchanged (no resampler in the path). Rates outside
/// [`MIN_SOURCE_RATE`]..=[`MAX_SOURCE_RATE`] (including 0) are an error, not a panic.
pub fn resample_to_16k(samples: &[f32], from_rate: u32) -> Result<Vec<f32>, AudioError> {
    to_16k_owned(samples.to_vec(), from_rate, Path::new("<samples>"))
}

/// Resampling of a stream to 16 kHz, chunk by chunk, with state kept between chunks (the
/// live engine's front end). The output lines up with the input: rubato's start-up delay is
/// trimmed, and [`StreamResampler::finish`] flushes the tail, so `n` input samples give
/// about `n × 16000 / from_rate` output samples in all.
pub struct StreamResampler {
    from_rate: u32,
    /// Names the stream in errors.
    label: std::path::PathBuf,
    resampler: Fft<f32>,
    pending: Vec<f32>,
    delay_left: usize,
    /// Input and output sample counts, to size the flushed tail.
    consumed: u64,
    produced: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from_rate", &self.from_rate)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// A resampler from `from_rate` Hz (an error outside the accepted range).
    pub fn new(from_rate: u32, label: &str) -> Result<StreamResampler, AudioError> {
        let path = Path::new(label);
        check_rate(from_rate, path)?;
        let resampler =
            Fft::<f32>::new(from_rate as usize, SAMPLE_RATE as usize, CHUNK, 1, FixedSync::Input).map_err(|e| {
                AudioError::Resample {
                    path: path.to_path_buf(),
                    from_rate,
                    source: Box::new(e),
                }
            })?;
        Ok(StreamResampler {
            from_rate,
            label: path.to_path_buf(),
            delay_left: resampler.output_delay(),
            resampler,
            pending: Vec::new(),
            consumed: 0,
            produced: 0,
        })
    }

    /// The source rate.
    pub fn from_rate(&self) -> u32 {
        self.from_rate
    }

    /// Resample `samples`, appending the 16 kHz output that is ready to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.pending.extend_from_slice(samples);
        self.consumed += samples.len() as u64;
        let mut offset = 0;
        while self.pending.len() - offset >= self.resampler.input_frames_next() {
            let n = self.resampler.input_frames_next();
            self.run(offset, None, out)?;
            offset += n;
        }
        self.pending.drain(..offset);
        Ok(())
    }

    /// End of input: flush what is buffered (and the resampler's delay line) into `out`.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let want = (self.consumed * u64::from(SAMPLE_RATE)).div_ceil(u64::from(self.from_rate));
        let partial = self.pending.len();
        self.pending.resize(self.resampler.input_frames_next(), 0.0);
        self.run(0, Some(partial), out)?;
        // Zeros push the delayed tail out.
        let mut guard = 0;
        while self.produced < want && guard < 64 {
            self.pending.clear();
            self.pending.resize(self.resampler.input_frames_next(), 0.0);
            self.run(0, Some(0), out)?;
            guard += 1;
        }
        if self.produced > want {
            let extra = (self.produced - want) as usize;
            out.truncate(out.len().saturating_sub(extra));
            self.produced = want;
        }
        self.pending.clear();
        Ok(())
    }

    fn run(&mut self, offset: usize, partial: Option<usize>, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let from_rate = self.from_rate;
        let label = &self.label;
        let err = |source: BoxError| AudioError::Resample {
            path: label.clone(),
            from_rate,
            source,
        };
        let input = InterleavedSlice::new(&self.pending[..], 1, self.pending.len()).map_err(|e| err(Box::new(e)))?;
        let indexing = rubato::Indexing {
            input_offset: offset,
            output_offset: 0,
            partial_len: partial,
            active_channels_mask: None,
        };
        let output = self
            .resampler
            .process(&input, Some(&indexing))
            .map_err(|e| err(Box::new(e)))?;
        let data = output.take_data();
        let skip = self.delay_left.min(data.len());
        self.delay_left -= skip;
        out.extend_from_slice(data.get(skip..).unwrap_or_default());
        self.produced += (data.len() - skip) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn streaming_resampler_matches_the_clip_resampler() {
        let n = 48_000 * 2 + 123;
        let samples: Vec<f32> = (0..n).map(|i| (i as f32 * 0.013).sin() * 0.5).collect();
        let whole = resample_to_16k(&samples, 48_000).unwrap();
        let mut streamed = Vec::new();
        let mut r = StreamResampler::new(48_000, "test").unwrap();
        for chunk in samples.chunks(441) {
            r.push(chunk, &mut streamed).unwrap();
        }
        r.finish(&mut streamed).unwrap();
        assert_eq!(streamed.len(), whole.len());
        let worst = streamed
            .iter()
            .zip(&whole)
            .skip(100)
            .take(whole.len() - 200)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{worst}");
    }

    #[test]
    fn streaming_resampler_rejects_absurd_rates() {
        assert!(StreamResampler::new(0, "mic").is_err());
        assert!(StreamResampler::new(10_000_000, "mic").is_err());
    }
}
