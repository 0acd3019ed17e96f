//! The streaming log-mel front end: 16 kHz samples arrive in chunks of any size, and each
//! frame is computed once, as soon as the samples it covers exist.
//!
//! In: mono f32 samples at 16 kHz, pushed in order. Out: raw (un-normalised) `log10` Mel
//! frames, frame-major (`[frame][mel]`), indexed on the stream's clock (frame `t` is centred on
//! sample `t × 160`), and windows copied out of them with Whisper's normalisation applied
//! over the window ([`MelStream::window`]).
//!
//! The frames are bit-identical to [`LogMel::log10_mel`] over the same samples (the same
//! [`LogMel::frame_into`] computes both): frame `t` needs samples up to `t × 160 + 199`
//! (the STFT is centred), the first frames reflect the clip's start as `torch.stft` does, and
//! [`MelStream::finish`] computes the last ones reflecting its end. Old frames and samples are
//! dropped with [`MelStream::discard_before`], so memory follows the caller's window, not the
//! stream's length.

use super::mel::{FrameScratch, HOP_LENGTH, LogMel, N_FFT, mel_centres_hz, reflect};

/// Incremental log-mel over one stream (see the module doc).
pub struct MelStream {
    log_mel: LogMel,
    scratch: FrameScratch,
    /// Samples from `samples_start` on (what frames not yet computed may still read).
    samples: Vec<f32>,
    samples_start: u64,
    samples_seen: u64,
    /// Raw frames `frames_start..next_frame`, `[frame][mel]`.
    frames: Vec<f32>,
    frames_start: u64,
    next_frame: u64,
    finished: bool,
    chunk: Vec<f32>,
    column: Vec<f32>,
    /// `Some(max)` for a [`MelStream::peak_scan`]: frames are not kept, only the largest value
    /// of those computed so far (−∞ before the first).
    peak: Option<f32>,
    /// Frames a peak scan computed (the others were skipped by their bound).
    scanned: u64,
}

impl std::fmt::Debug for MelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelStream")
            .field("samples_seen", &self.samples_seen)
            .field("frames", &(self.frames_start..self.next_frame))
            .finish_non_exhaustive()
    }
}

impl MelStream {
    pub fn new(log_mel: LogMel) -> MelStream {
        let n_mels = log_mel.n_mels();
        MelStream {
            scratch: log_mel.scratch(),
            log_mel,
            samples: Vec::new(),
            samples_start: 0,
            samples_seen: 0,
            frames: Vec::new(),
            frames_start: 0,
            next_frame: 0,
            finished: false,
            chunk: vec![0.0; N_FFT],
            column: vec![0.0; n_mels],
            peak: None,
            scanned: 0,
        }
    }

    /// A stream that keeps no frames, only the largest raw value of the clip ([`MelStream::peak`]),
    /// which Whisper's normalisation clamps to (a file's first read, `features/source.rs`).
    /// A frame whose [`LogMel::frame_bound`] is below the largest value seen so far cannot
    /// change it, so its FFT is skipped: the peak is the one every frame would give.
    pub fn peak_scan(log_mel: LogMel) -> MelStream {
        MelStream {
            peak: Some(f32::NEG_INFINITY),
            ..MelStream::new(log_mel)
        }
    }

    /// The largest raw value of the frames so far, for a [`MelStream::peak_scan`] (−∞ before
    /// the first frame); `None` for a stream that keeps its frames.
    pub fn peak(&self) -> Option<f32> {
        self.peak
    }

    /// Mel bins per frame.
    pub fn n_mels(&self) -> usize {
        self.log_mel.n_mels()
    }

    /// Samples pushed so far.
    pub fn samples_seen(&self) -> u64 {
        self.samples_seen
    }

    /// One past the last computed frame.
    pub fn frames_end(&self) -> u64 {
        self.next_frame
    }

    /// The oldest frame still held.
    pub fn frames_start(&self) -> u64 {
        self.frames_start
    }

    /// Append samples and compute every frame they complete; returns how many.
    pub fn push(&mut self, samples: &[f32]) -> usize {
        if self.finished {
            return 0;
        }
        self.samples.extend_from_slice(samples);
        self.samples_seen += samples.len() as u64;
        let before = self.next_frame;
        let half = (N_FFT / 2) as u64;
        // Frame t reads samples t·160 − 200 ..= t·160 + 199 (reflected below 0).
        while self.next_frame * HOP_LENGTH as u64 + half <= self.samples_seen {
            self.compute_frame(None);
        }
        self.trim_samples();
        (self.next_frame - before) as usize
    }

    /// End of input: compute the frames that reach past the last sample (reflecting the end,
    /// as the batch spectrogram does). `n` samples give `n / 160` frames in all.
    pub fn finish(&mut self) -> usize {
        if self.finished {
            return 0;
        }
        self.finished = true;
        let before = self.next_frame;
        let total = self.samples_seen / HOP_LENGTH as u64;
        while self.next_frame < total {
            self.compute_frame(Some(self.samples_seen));
        }
        (self.next_frame - before) as usize
    }

    fn compute_frame(&mut self, clip_len: Option<u64>) {
        let t = self.next_frame;
        let first = (t * HOP_LENGTH as u64) as i64 - (N_FFT / 2) as i64;
        let start = first - self.samples_start as i64;
        let contiguous = first >= 0 && clip_len.is_none_or(|n| first as u64 + N_FFT as u64 <= n);
        let held = match (contiguous, usize::try_from(start)) {
            (true, Ok(s)) => self.samples.get(s..s + N_FFT),
            _ => None,
        };
        match held {
            Some(src) => self.chunk.copy_from_slice(src),
            None => {
                // An edge frame: reflect about the clip's first (and, at the end, last) sample.
                let n = clip_len.unwrap_or(u64::MAX / 4) as usize;
                for (i, dst) in self.chunk.iter_mut().enumerate() {
                    let index = reflect((first + i as i64) as isize, n) as u64;
                    *dst = index
                        .checked_sub(self.samples_start)
                        .and_then(|j| self.samples.get(j as usize))
                        .copied()
                        .unwrap_or(0.0);
                }
            }
        }
        self.next_frame += 1;
        if let Some(peak) = self.peak {
            // `<` is false for a NaN bound: such a frame is computed.
            if self.log_mel.frame_bound(&self.chunk) < peak {
                return;
            }
            self.log_mel
                .frame_into(&self.chunk, &mut self.scratch, &mut self.column);
            self.peak = Some(self.column.iter().copied().fold(peak, f32::max));
            self.scanned += 1;
            return;
        }
        self.log_mel
            .frame_into(&self.chunk, &mut self.scratch, &mut self.column);
        self.frames.extend_from_slice(&self.column);
    }

    /// Keep only the samples a frame not yet computed can read.
    fn trim_samples(&mut self) {
        // The left edge reflects up to sample 200, so keep everything until frame 2.
        let keep_from = (self.next_frame * HOP_LENGTH as u64).saturating_sub(N_FFT as u64);
        if keep_from > self.samples_start + 16_000 {
            let drop = (keep_from - self.samples_start) as usize;
            self.samples.drain(..drop.min(self.samples.len()));
            self.samples_start += drop as u64;
        }
    }

    /// Forget frames before `frame` (they will not be asked for again).
    pub fn discard_before(&mut self, frame: u64) {
        let frame = frame.min(self.next_frame);
        if frame > self.frames_start {
            let n = (frame - self.frames_start) as usize * self.n_mels();
            self.frames.drain(..n.min(self.frames.len()));
            self.frames_start = frame;
        }
    }

    /// Every held frame (`frames_start()..frames_end()`), raw, `[frame][mel]`.
    pub fn held(&self) -> &[f32] {
        &self.frames
    }

    /// Raw frame `t`, if held.
    pub fn frame(&self, t: u64) -> Option<&[f32]> {
        let i = t.checked_sub(self.frames_start)? as usize;
        let m = self.n_mels();
        self.frames.get(i * m..(i + 1) * m)
    }

    /// The held frames of `start..start + len` (clamped to what is held), `[frame][mel]`.
    fn frames_of(&self, start: u64, len: usize) -> &[f32] {
        let m = self.n_mels();
        let from = start
            .saturating_sub(self.frames_start)
            .min(self.next_frame - self.frames_start) as usize;
        let to = (start + len as u64)
            .saturating_sub(self.frames_start)
            .min(self.next_frame - self.frames_start) as usize;
        self.frames.get(from * m..to.max(from) * m).unwrap_or_default()
    }

    /// A window for the encoder: frames `start..start + content` normalised as Whisper does
    /// over this window (clamp to its max − 8, then `(x + 4) / 4`), followed by padding up to
    /// `len` frames at the clamp floor (what Whisper's zero-sample padding becomes). Out:
    /// `[n_mels][len]` row-major, the encoder's layout. `content` is clamped to the held frames.
    pub fn window(&self, start: u64, content: usize, len: usize) -> Vec<f32> {
        let m = self.n_mels();
        let frames = self.frames_of(start, content.min(len));
        let content = frames.len() / m;
        let max = frames.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = if max.is_finite() { max - 8.0 } else { super::LOG10_FLOOR };
        let pad = (floor + 4.0) / 4.0;
        let mut out = vec![pad; m * len];
        for (t, column) in frames.chunks_exact(m).enumerate() {
            for (row, &x) in out.chunks_exact_mut(len).zip(column) {
                if let Some(dst) = row.get_mut(t) {
                    *dst = (x.max(floor) + 4.0) / 4.0;
                }
            }
        }
        debug_assert!(content <= len);
        out
    }

    /// Loudness of the loudest frame in `start..start + len` over the bins centred in
    /// `lo_hz..=hi_hz`: log10 of their summed Mel power, read from the raw frames (the same
    /// measure as [`super::Mel::band_peak_log10`]). −∞ when no frame is held there.
    pub fn band_peak_log10(&self, start: u64, len: usize, lo_hz: f64, hi_hz: f64) -> f32 {
        let m = self.n_mels();
        let bins: Vec<usize> = mel_centres_hz(m)
            .iter()
            .enumerate()
            .filter(|(_, hz)| (lo_hz..=hi_hz).contains(*hz))
            .map(|(i, _)| i)
            .collect();
        self.frames_of(start, len)
            .chunks_exact(m)
            .map(|column| {
                let power: f32 = bins.iter().filter_map(|&b| column.get(b)).map(|&x| 10f32.powf(x)).sum();
                power.log10()
            })
            .fold(f32::NEG_INFINITY, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speechlike(n: usize) -> Vec<f32> {
        // A deterministic chirp with an envelope: non-trivial spectra in every frame.
        (0..n)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                (0.3 + 0.2 * (t * 3.0).sin()) * (2.0 * std::f32::consts::PI * (200.0 + 900.0 * t) * t).sin()
            })
            .collect()
    }

    #[test]
    fn frames_equal_the_batch_spectrogram_for_any_chunking() {
        let log_mel = LogMel::new(80).unwrap();
        for n in [16_000 * 3 + 77, 1_000, 161, 450] {
            let samples = speechlike(n);
            let batch = log_mel.log10_mel(&samples);
            for chunk in [1usize, 37, 160, 512, 4_000] {
                let mut stream = MelStream::new(log_mel.clone());
                for piece in samples.chunks(chunk) {
                    stream.push(piece);
                }
                stream.finish();
                assert_eq!(stream.frames_end() as usize, batch.n_frames(), "n {n} chunk {chunk}");
                for t in 0..batch.n_frames() {
                    let frame = stream.frame(t as u64).unwrap();
                    for (m, &x) in frame.iter().enumerate() {
                        assert_eq!(x, batch.get(m, t).unwrap(), "n {n} chunk {chunk} frame {t} bin {m}");
                    }
                }
            }
        }
    }

    /// Found by fuzzing (fuzz/, target log_mel; inputs in fuzz/artifacts were minimised to
    /// this): frame 0's left reflection reaches sample 200 with window weight 0, and the stream
    /// computes frame 0 before that sample exists. A non-finite value there made the batch
    /// frame differ (inf · 0 = NaN) from the streamed one.
    #[test]
    fn a_non_finite_sample_under_a_zero_window_weight_changes_nothing() {
        let log_mel = LogMel::new(80).unwrap();
        let mut samples = speechlike(1_000);
        for bad in [f32::INFINITY, f32::NAN, f32::NEG_INFINITY, 1e30] {
            samples[200] = bad;
            let batch = log_mel.log10_mel(&samples);
            let mut stream = MelStream::new(log_mel.clone());
            for sample in samples.chunks(1) {
                stream.push(sample);
            }
            stream.finish();
            for (m, &x) in stream.frame(0).unwrap().iter().enumerate() {
                let y = batch.get(m, 0).unwrap();
                assert_eq!(x.to_bits(), y.to_bits(), "{bad}: bin {m}: stream {x}, batch {y}");
            }
        }
    }

    /// Signals whose frames range from digital silence to full scale, with spectra from one
    /// narrow line (a tone at the narrowest filter's peak, the tightest case of the bound) to
    /// flat (noise, an impulse).
    fn varied(n: usize) -> Vec<f32> {
        let mut state = 0x9e37_79b9_u32;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / u32::MAX as f32 - 0.5
        };
        (0..n)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let tone = (2.0 * std::f32::consts::PI * 40.0 * t).sin();
                match (i / 4_000) % 6 {
                    0 => 0.0,
                    1 => 1e-4 * noise(),
                    2 => 0.9 * tone,
                    3 => 0.5 * noise(),
                    4 => {
                        if i % 4_000 == 2_000 {
                            1.0
                        } else {
                            0.0
                        }
                    }
                    _ => 0.02 * tone + 0.01 * noise(),
                }
            })
            .collect()
    }

    #[test]
    fn the_frame_bound_is_above_every_value_of_the_frame() {
        let log_mel = LogMel::new(80).unwrap();
        let samples: Vec<f32> = varied(48_000).into_iter().chain(speechlike(16_000)).collect();
        let mut chunks = 0;
        let mut slack = f32::INFINITY;
        for (t, chunk) in samples.windows(N_FFT).step_by(HOP_LENGTH).enumerate() {
            let bound = log_mel.frame_bound(chunk);
            let mut scratch = log_mel.scratch();
            let mut column = vec![0.0; 80];
            log_mel.frame_into(chunk, &mut scratch, &mut column);
            let max = column.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!(bound >= max, "frame {t}: bound {bound} < value {max}");
            if max > -9.0 {
                slack = slack.min(bound - max);
            }
            chunks += 1;
        }
        assert!(chunks > 300);
        // The tone at 40 Hz sits on the narrowest filters: the bound comes within 0.42 of its
        // frames there (a bound loose everywhere would skip nothing).
        assert!(
            slack < 0.6,
            "the bound is never within 0.6 of a frame's maximum ({slack})"
        );
    }

    #[test]
    fn a_peak_scan_finds_the_maximum_of_every_frame() {
        let log_mel = LogMel::new(80).unwrap();
        let late_peak = {
            // Quiet until the last 5,000 samples: the running maximum keeps rising.
            let mut s = speechlike(30_000);
            s.iter_mut().take(25_000).for_each(|x| *x *= 1e-3);
            s
        };
        let mut skipped = 0;
        for samples in [varied(100_000), speechlike(50_000), vec![0.0; 10_000], late_peak] {
            let batch = log_mel.log10_mel(&samples);
            let want = batch.data().iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for chunk in [1usize, 160, 4_096] {
                let mut stream = MelStream::peak_scan(log_mel.clone());
                for piece in samples.chunks(chunk) {
                    stream.push(piece);
                }
                stream.finish();
                assert_eq!(stream.frames_end() as usize, batch.n_frames());
                assert!(stream.held().is_empty());
                let got = stream.peak().unwrap();
                assert_eq!(got.to_bits(), want.to_bits(), "chunk {chunk}: {got} against {want}");
                skipped += stream.frames_end() - stream.scanned;
            }
        }
        // The quiet stretches of `varied` (silence, noise 80 dB down, an impulse's empty
        // frames) come after its full-scale tone and are skipped.
        assert!(skipped > 1_000, "{skipped} of 3,558 frames skipped");
        assert_eq!(MelStream::new(log_mel).peak(), None);
    }

    #[test]
    fn frames_appear_as_soon_as_their_samples_exist() {
        let mut stream = MelStream::new(LogMel::new(80).unwrap());
        assert_eq!(stream.push(&speechlike(199)), 0);
        assert_eq!(stream.push(&[0.0]), 1, "frame 0 needs samples 0..=199");
        assert_eq!(stream.push(&speechlike(160)), 1);
        assert_eq!(stream.frames_end(), 2);
    }

    #[test]
    fn window_normalises_over_itself_and_pads_at_the_floor() {
        let log_mel = LogMel::new(80).unwrap();
        let samples = speechlike(16_000);
        let mut stream = MelStream::new(log_mel.clone());
        stream.push(&samples);
        stream.finish();
        let mut batch = log_mel.log10_mel(&samples);
        batch.normalize_whisper();
        let w = stream.window(0, 100, 120);
        assert_eq!(w.len(), 80 * 120);
        for m in [0, 40, 79] {
            for t in 0..100 {
                assert!((w[m * 120 + t] - batch.get(m, t).unwrap()).abs() < 1e-6);
            }
        }
        let max = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (w[5 * 120 + 110] - (max - 2.0)).abs() < 1e-5,
            "padding is the clamp floor"
        );
    }

    #[test]
    fn discarding_keeps_memory_bounded_and_indices_absolute() {
        let mut stream = MelStream::new(LogMel::new(80).unwrap());
        let chunk = speechlike(1_600);
        for i in 0..600 {
            stream.push(&chunk);
            stream.discard_before(stream.frames_end().saturating_sub(300));
            assert!(stream.frames.len() <= 310 * 80, "step {i}");
            assert!(
                stream.samples.len() <= 16_000 + 2_000,
                "step {i}: {}",
                stream.samples.len()
            );
        }
        assert!(stream.frame(stream.frames_end() - 1).is_some());
        assert!(stream.frame(0).is_none());
        assert!(
            stream
                .band_peak_log10(stream.frames_end() - 100, 100, 200.0, 4000.0)
                .is_finite()
        );
    }
}
