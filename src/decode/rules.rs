//! Whisper's logit filters as pure functions over one row of logits: what the model may emit
//! next given what it has emitted in this window. A port of openai/whisper `decoding.py`
//! (release 20250625): `SuppressBlank`, `SuppressTokens`, `ApplyTimestampRules`, applied in
//! that order, plus one steno rule: timestamps past the end of the audio in the window are
//! suppressed (Whisper always sees 30 s, steno's encoder may see less).
//!
//! In: logits `[n_vocab]` (mutated in place, banned tokens set to −∞) and the tokens sampled
//! so far in this window (after the prompt). Out: nothing; the caller samples from the row.

use std::cmp::Ordering;

use crate::model::SpecialTokens;

/// Settings of the filters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FilterOptions {
    /// Predict timestamp tokens (segment times). Default: true.
    pub timestamps: bool,
    /// Suppress " " and end-of-text as the first token (Whisper `suppress_blank`). Default: true.
    pub suppress_blank: bool,
    /// The first timestamp may be at most this late, in seconds (Whisper: 1.0). Default: 1.0.
    pub max_initial_timestamp_s: Option<f32>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions {
            timestamps: true,
            suppress_blank: true,
            max_initial_timestamp_s: Some(1.0),
        }
    }
}

/// Seconds per timestamp token (Whisper's `time_precision`).
pub const SECONDS_PER_TIMESTAMP: f32 = 0.02;

/// The filters for one window of one model.
#[derive(Debug, Clone)]
pub struct LogitFilters {
    /// Never emitted: non-speech symbols and the control tokens (Whisper `suppress_tokens="-1"`).
    suppress: Vec<u32>,
    /// Not emitted as the first token.
    suppress_at_begin: Vec<u32>,
    timestamps: Option<TimestampRules>,
}

#[derive(Debug, Clone)]
struct TimestampRules {
    begin: u32,
    no_timestamps: u32,
    eot: u32,
    max_initial: Option<u32>,
    /// Last timestamp index allowed in this window (its audio length), if limited.
    max_index: Option<u32>,
}

impl LogitFilters {
    /// Filters for `tokens`' model. `window_s` is the audio length the window holds (timestamps
    /// after it are suppressed); `None` leaves them to the model.
    pub fn new(tokens: &SpecialTokens, options: &FilterOptions, window_s: Option<f32>) -> LogitFilters {
        // decoding.py `_get_suppress_tokens`: the non-speech symbols plus these control tokens.
        let mut suppress = tokens.non_speech.clone();
        suppress.extend([
            tokens.transcribe,
            tokens.translate,
            tokens.sot,
            tokens.sot_prev,
            tokens.sot_lm,
            tokens.no_speech,
        ]);
        if !options.timestamps {
            // Without timestamps the prompt ends with <|notimestamps|>; no timestamp may follow.
            suppress.extend(tokens.timestamp_begin..tokens.timestamp_begin.saturating_add(1501));
        }
        suppress.sort_unstable();
        suppress.dedup();
        let suppress_at_begin = if options.suppress_blank {
            vec![tokens.blank, tokens.eot]
        } else {
            Vec::new()
        };
        let timestamps = options.timestamps.then(|| TimestampRules {
            begin: tokens.timestamp_begin,
            no_timestamps: tokens.no_timestamps,
            eot: tokens.eot,
            max_initial: options
                .max_initial_timestamp_s
                .map(|s| (s / SECONDS_PER_TIMESTAMP).round() as u32),
            max_index: window_s.map(|s| (s / SECONDS_PER_TIMESTAMP).ceil() as u32),
        });
        LogitFilters {
            suppress,
            suppress_at_begin,
            timestamps,
        }
    }

    /// Apply every filter to `logits` given the tokens `sampled` so far in this window.
    pub fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let ban = |logits: &mut [f32], t: u32| {
            if let Some(x) = logits.get_mut(t as usize) {
                *x = f32::NEG_INFINITY;
            }
        };
        if sampled.is_empty() {
            for &t in &self.suppress_at_begin {
                ban(logits, t);
            }
        }
        for &t in &self.suppress {
            ban(logits, t);
        }
        if let Some(rules) = &self.timestamps {
            rules.apply(logits, sampled);
        }
    }
}

fn ban_range(logits: &mut [f32], from: usize, to: usize) {
    let to = to.min(logits.len());
    if from < to {
        logits[from..to].fill(f32::NEG_INFINITY);
    }
}

impl TimestampRules {
    /// decoding.py `ApplyTimestampRules.apply`, for one row.
    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let begin = self.begin as usize;
        let is_ts = |t: u32| t >= self.begin;
        ban_range(logits, self.no_timestamps as usize, self.no_timestamps as usize + 1);

        // Timestamps come in pairs, except directly before end-of-text.
        let last_was_ts = sampled.last().is_some_and(|&t| is_ts(t));
        let penultimate_was_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_was_ts {
            if penultimate_was_ts {
                ban_range(logits, begin, logits.len()); // must be text
            } else {
                ban_range(logits, 0, self.eot as usize); // must be a timestamp or end-of-text
            }
        }

        // Timestamps never decrease, and a segment has nonzero length.
        if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            let floor = if last_was_ts && !penultimate_was_ts {
                last_ts
            } else {
                last_ts + 1
            };
            ban_range(logits, begin, floor as usize);
        }

        if sampled.is_empty() {
            ban_range(logits, 0, begin); // the window starts with a timestamp
            if let Some(max) = self.max_initial {
                ban_range(logits, begin + max as usize + 1, logits.len());
            }
        }
        if let Some(max) = self.max_index {
            ban_range(logits, begin + max as usize + 1, logits.len());
        }

        // If the timestamps together are likelier than any single text token, emit a timestamp.
        let ts_mass = log_sum_exp(&logits[begin.min(logits.len())..]);
        let text_max = max_value(&logits[..begin.min(logits.len())]);
        if ts_mass > text_max {
            ban_range(logits, 0, begin);
        }
    }
}

/// `log(sum(exp(x)))`, −∞ for an empty or all −∞ slice.
///
/// This runs over the whole vocabulary for every hypothesis at every step (51,864 entries, five
/// rows in a beam step), where libm's scalar `exp` took about a quarter of a millisecond per
/// row. So the terms use `exp_nonpositive`, summed in blocks of 64 in eight f32 lanes and the
/// blocks in f64: within 1e-6 of the f64 sum of libm `exp`s.
///
/// The compiler did not vectorise that loop after all: 215–250 µs per 51,864-entry row, about
/// as long as libm (a standalone timing loop, 2026-12-03, the 2-core Xeon), which is 0.2–0.3 ms
/// of a ~2 ms greedy step. Where the CPU has AVX2 the blocks go through [`simd`] instead: the
/// same operations in the same order on eight lanes at once, so the result is bit-identical
/// (a unit test checks), in about 55 µs.
pub fn log_sum_exp(x: &[f32]) -> f32 {
    log_sum_exp_with_max(x, max_value(x))
}

/// [`log_sum_exp`] for a caller that already holds `max = max_value(x)` (a greedy step has it
/// from its argmax), so the row is not scanned for it twice.
pub fn log_sum_exp_with_max(x: &[f32], max: f32) -> f32 {
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    let blocks = x.chunks_exact(64);
    let rest = blocks.remainder();
    let mut sum = sum_exp_blocks(blocks, max);
    sum += rest.iter().map(|&v| f64::from(exp_nonpositive(v - max))).sum::<f64>();
    max + sum.ln() as f32
}

/// The largest value of `x` (NaNs ignored), −∞ for an empty slice: `fold(−∞, f32::max)`,
/// eight lanes at a time where the CPU has AVX2 (the fold is scalar, about 20 µs per row).
pub fn max_value(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked on the line above.
        return unsafe { simd::max_value(x) };
    }
    portable_max(x)
}

fn portable_max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Σ over whole blocks of 64 of exp(v − max), each block summed in eight f32 lanes (lane j
/// takes entries j, j + 8, …) and the lanes added in f64 in order.
fn sum_exp_blocks(blocks: std::slice::ChunksExact<'_, f32>, max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked on the line above.
        return unsafe { simd::sum_exp_blocks(blocks, max) };
    }
    portable_sum_exp_blocks(blocks, max)
}

fn portable_sum_exp_blocks(blocks: std::slice::ChunksExact<'_, f32>, max: f32) -> f64 {
    const LANES: usize = 8;
    let mut sum = 0f64;
    for block in blocks {
        let mut lanes = [0f32; LANES];
        for chunk in block.chunks_exact(LANES) {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += exp_nonpositive(v - max);
            }
        }
        sum += lanes.iter().map(|&l| f64::from(l)).sum::<f64>();
    }
    sum
}

/// The index of the first entry of `x` that is not `<= threshold` (above it, or NaN), if any:
/// what a beam's top-k scan looks for once it holds k tokens. Eight entries at a time where the
/// CPU has AVX2.
pub fn first_not_at_most(x: &[f32], threshold: f32) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked on the line above.
        return unsafe { simd::first_not_at_most(x, threshold) };
    }
    portable_first_not_at_most(x, threshold)
}

fn portable_first_not_at_most(x: &[f32], threshold: f32) -> Option<usize> {
    x.iter()
        .position(|&v| !matches!(v.partial_cmp(&threshold), Some(Ordering::Less | Ordering::Equal)))
}

/// AVX2 versions of [`portable_max`], [`portable_sum_exp_blocks`] and
/// [`portable_first_not_at_most`]. Each vector operation is
/// the scalar code's operation on eight lanes, in the scalar code's order, without fused
/// multiply-adds (which round once where the scalar code rounds twice): the results are the
/// same bits. `_mm256_max_ps(v, acc)` returns `acc` where `v` is NaN, so NaNs are skipped as
/// `f32::max` skips them.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_POLY, EXP_ROUND};

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_value(x: &[f32]) -> f32 {
        let mut chunks = x.chunks_exact(8);
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 f32s; loadu takes any alignment.
            acc = _mm256_max_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, acc);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes
            .iter()
            .chain(chunks.remainder())
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn first_not_at_most(x: &[f32], threshold: f32) -> Option<usize> {
        let t = _mm256_set1_ps(threshold);
        let mut chunks = x.chunks_exact(8);
        let mut start = 0;
        for c in &mut chunks {
            // SAFETY: `c` holds 8 f32s; loadu takes any alignment.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            // Not-less-or-equal, unordered: true above the threshold and for NaN.
            let mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(v, t));
            if mask != 0 {
                return Some(start + mask.trailing_zeros() as usize);
            }
            start += 8;
        }
        super::portable_first_not_at_most(chunks.remainder(), threshold).map(|i| start + i)
    }

    /// `exp_nonpositive` on eight lanes.
    #[target_feature(enable = "avx2")]
    fn exp_nonpositive(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_FLOOR));
        let round = _mm256_set1_ps(EXP_ROUND);
        let n = _mm256_sub_ps(
            _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)), round),
            round,
        );
        let r = _mm256_sub_ps(
            _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(EXP_LN2_HI))),
            _mm256_mul_ps(n, _mm256_set1_ps(EXP_LN2_LO)),
        );
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
        }
        let p = _mm256_add_ps(
            _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r),
            _mm256_set1_ps(1.0),
        );
        // n is a whole number in -126..=0: 2^n from the exponent bits.
        let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(p, _mm256_castsi256_ps(two_n))
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_exp_blocks(blocks: std::slice::ChunksExact<'_, f32>, max: f32) -> f64 {
        let max = _mm256_set1_ps(max);
        let mut sum = 0f64;
        for block in blocks {
            let mut acc = _mm256_setzero_ps();
            for c in block.chunks_exact(8) {
                // SAFETY: `c` holds 8 f32s; loadu takes any alignment.
                let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
                acc = _mm256_add_ps(acc, exp_nonpositive(_mm256_sub_ps(v, max)));
            }
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 f32s.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            sum += lanes.iter().map(|&l| f64::from(l)).sum::<f64>();
        }
        sum
    }
}

/// `exp(x)` for `x ≤ 0` (a logit minus the row's maximum), relative error below 2e-7 down to
/// x = −87; below that (and for −∞) it returns about 1e-38 instead of a smaller number or 0,
/// which no sum over a vocabulary with a 1 in it can notice. Cephes' `expf`: x = n·ln 2 + r
/// with |r| ≤ ln 2 / 2, a degree-7 polynomial for e^r, 2^n built in the exponent bits. No
/// branches. [`simd`] computes the same on eight lanes, from the same constants.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(EXP_FLOOR);
    let n = (x * std::f32::consts::LOG2_E + EXP_ROUND) - EXP_ROUND;
    let r = x - n * EXP_LN2_HI - n * EXP_LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let p = p * r * r + r + 1.0;
    // n is in -126..=0 here, so 2^n is a normal float.
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `exp_nonpositive`'s constants: the input floor, 1.5 · 2^23 (adding and subtracting it rounds
/// to the nearest integer in f32 arithmetic), ln 2 in two parts, and the polynomial's
/// coefficients from the highest degree down (e^r ≈ 1 + r + r² · poly(r)).
const EXP_FLOOR: f32 = -87.0;
const EXP_ROUND: f32 = 12_582_912.0;
const EXP_LN2_HI: f32 = 0.693_359_4;
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// Log-softmax of a row, in place.
pub fn log_softmax_in_place(x: &mut [f32]) {
    let lse = log_sum_exp(x);
    for v in x.iter_mut() {
        *v -= lse;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::tiny_en_tokens;

    /// Uniform values in [0, 1) from a xorshift generator: reproducible rows of logits.
    pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// tiny.en's special tokens (shared/facts: end-of-text 50256 … first timestamp 50363).
    const N_VOCAB: usize = 51864;
    const TS: u32 = 50363;
    const EOT: u32 = 50256;
    const THE: u32 = 262; // " the"

    fn flat() -> Vec<f32> {
        vec![0.0; N_VOCAB]
    }

    fn allowed(l: &[f32]) -> impl Fn(u32) -> bool + '_ {
        move |t| l[t as usize] > f32::NEG_INFINITY
    }

    #[test]
    fn first_token_must_be_a_timestamp_within_one_second() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), None);
        let mut l = flat();
        f.apply(&mut l, &[]);
        let ok = allowed(&l);
        assert!(!ok(THE) && !ok(EOT) && !ok(220));
        assert!(ok(TS) && ok(TS + 50));
        assert!(!ok(TS + 51), "max_initial_timestamp 1.0 s = index 50");
    }

    #[test]
    fn control_and_non_speech_tokens_are_always_suppressed() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), None);
        // Text and end-of-text likelier than the timestamps, so only suppression acts.
        let mut l = vec![-10.0; N_VOCAB];
        l[THE as usize] = 5.0;
        l[EOT as usize] = 5.0;
        f.apply(&mut l, &[TS, THE]);
        let ok = allowed(&l);
        for t in [50257, 50357, 50358, 50359, 50360, 50361, 50362, 1, 25] {
            assert!(!ok(t), "token {t} must be suppressed");
        }
        assert!(ok(THE) && ok(EOT));
    }

    #[test]
    fn after_text_then_timestamp_only_timestamp_or_eot() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), None);
        let mut l = vec![-10.0; N_VOCAB];
        l[EOT as usize] = 5.0;
        f.apply(&mut l, &[TS, THE, TS + 40]);
        let ok = allowed(&l);
        assert!(!ok(THE), "a single timestamp after text closes the segment");
        assert!(ok(EOT));
        assert!(ok(TS + 40), "the next segment may start where this one ended");
        assert!(!ok(TS + 39), "timestamps never decrease");
    }

    #[test]
    fn after_a_timestamp_pair_text_must_follow() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), None);
        let mut l = flat();
        f.apply(&mut l, &[TS, THE, TS + 40, TS + 40]);
        let ok = allowed(&l);
        assert!(ok(THE));
        assert!(!ok(TS + 41) && !ok(TS + 40));
    }

    #[test]
    fn segment_cannot_have_zero_length() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), None);
        let mut l = flat();
        f.apply(&mut l, &[TS + 10, THE]);
        let ok = allowed(&l);
        assert!(!ok(TS + 10), "end must be after start");
        assert!(ok(TS + 11));
    }

    #[test]
    fn timestamp_mass_beats_best_text_token_forces_a_timestamp() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), None);
        let mut l = vec![-10.0; N_VOCAB];
        l[THE as usize] = 1.0;
        // 1500 timestamps at 0.0 each: log-sum-exp = ln(1500) ≈ 7.3 > 1.0
        for x in &mut l[TS as usize..] {
            *x = 0.0;
        }
        f.apply(&mut l, &[TS, THE]);
        assert!(!allowed(&l)(THE));
        assert!(!allowed(&l)(EOT));
    }

    #[test]
    fn text_wins_when_it_is_likelier_than_all_timestamps() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), None);
        let mut l = vec![-30.0; N_VOCAB];
        l[THE as usize] = 5.0;
        f.apply(&mut l, &[TS, THE]);
        assert!(allowed(&l)(THE));
    }

    #[test]
    fn window_end_caps_timestamps() {
        let f = LogitFilters::new(&tiny_en_tokens(), &FilterOptions::default(), Some(2.0));
        let mut l = flat();
        f.apply(&mut l, &[TS, THE]);
        let ok = allowed(&l);
        assert!(ok(TS + 100), "2.00 s is index 100");
        assert!(!ok(TS + 101));
    }

    #[test]
    fn blank_and_eot_suppressed_only_at_the_start_without_timestamps() {
        let opts = FilterOptions {
            timestamps: false,
            ..FilterOptions::default()
        };
        let f = LogitFilters::new(&tiny_en_tokens(), &opts, None);
        let mut l = flat();
        f.apply(&mut l, &[]);
        let ok = allowed(&l);
        assert!(!ok(220) && !ok(EOT) && ok(THE) && !ok(TS));
        let mut l = flat();
        f.apply(&mut l, &[THE]);
        assert!(allowed(&l)(220) && allowed(&l)(EOT) && !allowed(&l)(TS + 5));
    }

    #[test]
    fn log_softmax_normalises() {
        let mut x = vec![1.0, 2.0, 3.0, f32::NEG_INFINITY];
        log_softmax_in_place(&mut x);
        let total: f32 = x.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(x[3], f32::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
    }

    /// The vectorised sum against libm's `exp` summed in f64, on rows shaped like real logits
    /// (a spread of values, banned entries at −∞) and lengths that leave a remainder.
    #[test]
    fn log_sum_exp_matches_libm() {
        let reference = |x: &[f32]| {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            max as f64 + x.iter().map(|&v| f64::from(v - max).exp()).sum::<f64>().ln()
        };
        let mut next = uniform(0x2545_f491_4f6c_dd1d);
        for (len, spread, banned) in [
            (N_VOCAB, 30.0, 0.01),
            (N_VOCAB, 200.0, 0.5),
            (1501, 10.0, 0.0),
            (7, 3.0, 0.0),
        ] {
            let row: Vec<f32> = (0..len)
                .map(|_| {
                    let v = (next() - 0.8) * spread;
                    if next() < banned { f32::NEG_INFINITY } else { v }
                })
                .collect();
            let got = f64::from(log_sum_exp(&row));
            let want = reference(&row);
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "len {len}: {got} vs {want}"
            );
        }
        for x in [0.0f32, -1e-3, -0.5, -1.0, -10.0, -50.0, -86.9] {
            let (got, want) = (exp_nonpositive(x) as f64, f64::from(x).exp());
            assert!((got - want).abs() <= 2e-7 * want, "exp({x}): {got} vs {want}");
        }
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }

    /// The AVX2 path gives the portable code's bits, so transcripts do not depend on the CPU:
    /// rows with −∞ (banned tokens), a NaN, signed zeros, and lengths around the 8- and 64-entry
    /// blocks. (On a CPU without AVX2 both sides are the portable code.)
    #[test]
    fn vector_paths_match_the_portable_code_bit_for_bit() {
        let mut next = uniform(0x9e37_79b9_7f4a_7c15);
        let mut row: Vec<f32> = (0..N_VOCAB).map(|_| (next() - 0.7) * 40.0).collect();
        for i in (3..N_VOCAB).step_by(89) {
            row[i] = f32::NEG_INFINITY;
        }
        row[1000] = -0.0;
        row[1001] = 0.0;
        let mut with_nan = row.clone();
        with_nan[77] = f32::NAN;
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 130, 1501, N_VOCAB] {
            for r in [&row[..len], &with_nan[..len]] {
                assert_eq!(max_value(r).to_bits(), portable_max(r).to_bits(), "max, len {len}");
                let max = portable_max(r);
                if max > f32::NEG_INFINITY {
                    let (fast, slow) = (
                        sum_exp_blocks(r.chunks_exact(64), max),
                        portable_sum_exp_blocks(r.chunks_exact(64), max),
                    );
                    assert_eq!(fast.to_bits(), slow.to_bits(), "sum, len {len}");
                }
            }
        }
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1501, N_VOCAB] {
            for threshold in [f32::NEG_INFINITY, -10.0, 0.0, 5.0, 11.9, 12.0, f32::INFINITY] {
                for r in [&row[..len], &with_nan[..len]] {
                    assert_eq!(
                        first_not_at_most(r, threshold),
                        portable_first_not_at_most(r, threshold),
                        "len {len}, threshold {threshold}"
                    );
                }
            }
        }
        // The NaN is skipped, as f32::max skips it, wherever it falls in the lanes.
        assert_eq!(max_value(&with_nan), portable_max(&row));
    }
}
