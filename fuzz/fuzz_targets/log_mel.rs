//! The log-mel front end on arbitrary sample values (NaN, ±inf, subnormals, huge values):
//! `LogMel::log10_mel` + `normalize_whisper` (batch) against `MelStream` fed in fuzz-chosen
//! chunk sizes (streaming).
//!
//! Input: `[k] [r] [k chunk-size bytes] [f32 LE samples...]`: `k % 8` chunk sizes (cycled;
//! none: one push of everything), the samples repeated `1 + r % 4` times (so that small
//! inputs still reach `MelStream`'s sample trimming past 16 000 samples).
//!
//! Properties: no panic; the streamed frames are bit-identical to the batch spectrogram's
//! (`src/features/stream.rs`), and stay so after `discard_before`; the raw spectrogram has
//! no NaN (the power floor absorbs it); normalised values lie in Whisper's clamp range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use steno::features::{LogMel, MelStream, normalize_whisper};

fn log_mel() -> &'static LogMel {
    static LOG_MEL: OnceLock<LogMel> = OnceLock::new();
    LOG_MEL.get_or_init(|| LogMel::new(80).expect("80 mel bins"))
}

/// A chunk-size byte: 1..=200 samples one by one, then steps of 500 up to 28 000.
fn chunk_size(b: u8) -> usize {
    if b < 200 {
        usize::from(b) + 1
    } else {
        (usize::from(b) - 199) * 500
    }
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

/// After `normalize_whisper`: with a finite maximum, every value is in
/// `[(max − 8 + 4) / 4, (max + 4) / 4]`; otherwise nothing changed.
fn check_normalized(raw: &[f32], normalized: &[f32]) {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        assert!(
            raw.iter().zip(normalized).all(|(a, b)| same(*a, *b)),
            "max {max}: values changed"
        );
        return;
    }
    let (lo, hi) = (((max - 8.0) + 4.0) / 4.0, (max + 4.0) / 4.0);
    for (i, &x) in normalized.iter().enumerate() {
        assert!(
            x >= lo && x <= hi,
            "normalised value {i} = {x} outside [{lo}, {hi}] (max {max})"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let (k, r) = match data {
        [k, r, ..] => (usize::from(*k % 8), 1 + usize::from(*r % 4)),
        _ => return,
    };
    let Some(sizes) = data.get(2..2 + k) else { return };
    let sizes: Vec<usize> = sizes.iter().map(|&b| chunk_size(b)).collect();
    let one = steno_fuzz::f32s(&data[2 + k..]);
    let samples: Vec<f32> = one.iter().copied().cycle().take(one.len() * r).collect();
    let log_mel = log_mel();

    let mel = log_mel.log10_mel(&samples);
    let n_frames = mel.n_frames();
    assert_eq!(n_frames, samples.len() / 160);
    assert_eq!(mel.data().len(), 80 * n_frames);
    if let Some(i) = mel.data().iter().position(|x| x.is_nan()) {
        panic!(
            "raw log-mel value {i} (bin {}, frame {}) is NaN",
            i / n_frames,
            i % n_frames
        );
    }

    let mut stream = MelStream::new(log_mel.clone());
    let mut pushed = 0;
    let mut i = 0;
    while pushed < samples.len() {
        let n = if sizes.is_empty() {
            samples.len()
        } else {
            sizes[i % sizes.len()]
        };
        let end = (pushed + n).min(samples.len());
        let before = stream.frames_end();
        let made = stream.push(&samples[pushed..end]);
        assert_eq!(stream.frames_end(), before + made as u64);
        // Frame t needs samples up to t·160 + 199: all that is computable is computed.
        assert_eq!(
            stream.frames_end(),
            (end as u64).saturating_sub(40) / 160,
            "after {end} samples"
        );
        pushed = end;
        i += 1;
    }
    stream.finish();
    assert_eq!(stream.finish(), 0, "a second finish computes nothing");
    assert_eq!(stream.push(&[0.5]), 0, "push after finish is ignored");
    assert_eq!(stream.frames_end() as usize, n_frames, "streamed frame count");
    for t in 0..n_frames {
        let frame = stream.frame(t as u64).expect("frame held");
        for (m, &x) in frame.iter().enumerate() {
            let y = mel.get(m, t).expect("batch value");
            assert!(
                same(x, y),
                "frame {t} bin {m}: stream {x} ({:#x}) != batch {y} ({:#x})",
                x.to_bits(),
                y.to_bits()
            );
        }
    }

    // Windows of the stream (normalised over themselves) and band peaks: no panic, right sizes.
    let len = n_frames.min(3000) + 7;
    let window = stream.window(0, n_frames, len);
    assert_eq!(window.len(), 80 * len);
    let _ = stream.band_peak_log10(0, n_frames, 200.0, 4000.0);
    let half = (n_frames / 2) as u64;
    stream.discard_before(half);
    assert_eq!(stream.frames_start(), half);
    if n_frames > 0 {
        assert!(stream.frame(half.saturating_sub(1)).is_none() || half == 0);
        let last = (n_frames - 1) as u64;
        let frame = stream.frame(last).expect("last frame held");
        assert!(
            frame
                .iter()
                .enumerate()
                .all(|(m, &x)| same(x, mel.get(m, last as usize).unwrap()))
        );
    }

    // Batch normalisation, over the whole spectrogram and over a slice.
    let mut normalized = mel.clone();
    normalized.normalize_whisper();
    check_normalized(mel.data(), normalized.data());
    let mut window = Vec::new();
    mel.copy_window_into(n_frames / 3, 100, steno::features::LOG10_FLOOR, &mut window);
    assert_eq!(window.len(), 80 * 100);
    let mut raw = samples.clone();
    normalize_whisper(&mut raw);
    check_normalized(&samples, &raw);
});
