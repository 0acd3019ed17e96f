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
/// Non-finite samples (a corrupt float file) are read as silence so that one NaN cannot
/// poison the whole spectrogram's normalisation. A trailing partial frame is dropped.
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
