//! Where the decoder is looking: the alignment heads' most-attended audio frame for each token
//! position, the signal of SimulStreaming's AlignAtt commit policy.
//!
//! Port of the attention step of ufal/SimulStreaming `simul_whisper/simul_whisper.py`
//! (`infer`: softmax over frames per alignment head, median filter of width 7 along frames,
//! mean over heads, argmax), fed by steno's `cross_qk` output (pre-softmax scores of the
//! alignment heads). Deviations, with reasons:
//! - only the frames that hold audio compete (`content_frames`): steno pads windows with
//!   silence, and SimulStreaming's 30 s padding is likewise excluded by its threshold test;
//! - no z-scoring along the token axis: SimulStreaming standardises over the tokens decoded so
//!   far, which shifts every row by a per-frame constant; one row at a time (the incremental
//!   decoder sees one new token per step) that would need the whole history each step, and
//!   the argmax of a single well-peaked row barely moves.
//!
//! In: `[positions, heads, frames]` scores. Out: one frame index (20 ms units) per position.

/// Where a hypothesis restarts: the first token `j` (≥ `from`) at which the decoder's attention
/// jumps back by more than `jump_frames` from the furthest frame it had reached AND the tokens
/// from `j` on repeat a run of at least `min_repeat` tokens already in the hypothesis. That is
/// Whisper's loop on a padded window ("He could wait no longer. He could wait no longer."): the
/// attention goes back to the start and the text comes again. A jump alone is not enough (one
/// punctuation token can glance back), nor is a repeat alone (speakers repeat themselves while
/// the attention moves on). `frames[i]` belongs to `tokens[from + i]`.
pub fn restart_at(tokens: &[u32], from: usize, frames: &[u32], jump_frames: u32, min_repeat: usize) -> Option<usize> {
    let mut furthest = 0u32;
    for (i, &frame) in frames.iter().enumerate() {
        let j = from + i;
        if j >= tokens.len() {
            break;
        }
        if frame + jump_frames < furthest {
            let run = tokens.get(j..j + min_repeat)?;
            if tokens[..j].windows(min_repeat).any(|w| w == run) {
                return Some(j);
            }
        }
        furthest = furthest.max(frame);
    }
    None
}

/// Median-filter width along frames (Whisper's `medfilt_width`).
pub const MEDIAN_WIDTH: usize = 7;

/// The most-attended frame (encoder positions, 20 ms each) of every token position in
/// `scores` (`[positions][heads][frames]`, row-major), over frames `0..content_frames`.
pub fn most_attended_frames(scores: &[f32], heads: usize, frames: usize, content_frames: usize) -> Vec<u32> {
    let content = content_frames.min(frames);
    if heads == 0 || frames == 0 || content == 0 {
        return Vec::new();
    }
    let mut mean = vec![0f32; content];
    let mut row = vec![0f32; content];
    let mut filtered = vec![0f32; content];
    scores
        .chunks_exact(heads * frames)
        .map(|position| {
            mean.iter_mut().for_each(|m| *m = 0.0);
            for head in position.chunks_exact(frames) {
                softmax_into(&head[..content], &mut row);
                median_filter(&row, MEDIAN_WIDTH, &mut filtered);
                for (m, x) in mean.iter_mut().zip(&filtered) {
                    *m += x / heads as f32;
                }
            }
            argmax(&mean) as u32
        })
        .collect()
}

fn softmax_into(x: &[f32], out: &mut [f32]) {
    let max = x
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    let mut total = 0.0;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = if v.is_finite() { (v - max).exp() } else { 0.0 };
        total += *o;
    }
    if total > 0.0 {
        out.iter_mut().for_each(|o| *o /= total);
    }
}

/// Median over a centred window, edges reflected (scipy/whisper `median_filter`, mode reflect).
fn median_filter(x: &[f32], width: usize, out: &mut [f32]) {
    let n = x.len();
    let half = width / 2;
    let mut window = Vec::with_capacity(width);
    for (i, o) in out.iter_mut().enumerate().take(n) {
        window.clear();
        for k in 0..width {
            let j = i as i64 + k as i64 - half as i64;
            // reflect about the edges: -1 → 0, n → n - 1 (scipy's "reflect")
            let n = n as i64;
            let j = if j < 0 {
                -j - 1
            } else if j >= n {
                2 * n - 1 - j
            } else {
                j
            };
            // Windows wider than the signal keep bouncing; clamping is enough there.
            let j = j.clamp(0, n - 1) as usize;
            window.push(x[j]);
        }
        window.sort_by(f32::total_cmp);
        *o = window[half];
    }
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores for one position: every head peaks near `peak`.
    fn position(heads: usize, frames: usize, peak: usize) -> Vec<f32> {
        let mut v = Vec::new();
        for h in 0..heads {
            for f in 0..frames {
                let d = f as f32 - (peak + h % 2) as f32;
                v.push(-d * d / 8.0);
            }
        }
        v
    }

    #[test]
    fn finds_the_peak_of_each_position() {
        let mut scores = position(6, 100, 10);
        scores.extend(position(6, 100, 42));
        scores.extend(position(6, 100, 90));
        let f = most_attended_frames(&scores, 6, 100, 100);
        assert_eq!(f.len(), 3);
        // The median filter flattens a peak's top, so the first frame of the plateau wins:
        // within 3 frames (60 ms) of the peak.
        assert!((7..=11).contains(&f[0]), "{f:?}");
        assert!((39..=43).contains(&f[1]), "{f:?}");
        assert!((87..=91).contains(&f[2]), "{f:?}");
    }

    #[test]
    fn padding_frames_never_win() {
        // The peak sits in the padding (frame 90) but only 50 frames hold audio.
        let f = most_attended_frames(&position(2, 100, 90), 2, 100, 50);
        assert!((45..50).contains(&f[0]), "{f:?}");
    }

    #[test]
    fn a_single_spike_is_filtered_out() {
        // Head attention: a broad bump at 30 and a one-frame spike at 70.
        let mut row: Vec<f32> = (0..100).map(|f| -((f as f32 - 30.0) / 6.0).powi(2)).collect();
        row[70] = 3.0;
        let f = most_attended_frames(&row, 1, 100, 100);
        assert!((27..=31).contains(&f[0]), "{f:?}");
    }

    #[test]
    fn a_restart_is_cut_where_the_repeat_begins() {
        // " He could wait no longer." twice: the attention goes back to 0 for the repeat.
        let tokens = [679, 714, 4043, 645, 2392, 13, 679, 714, 4043, 645, 2392, 13];
        let frames = [0, 21, 25, 42, 56, 62, 0, 21, 25, 42, 55, 62];
        assert_eq!(restart_at(&tokens, 0, &frames, 25, 3), Some(6));
        // The same with two forced tokens in front (frames start at the first new token).
        assert_eq!(restart_at(&tokens, 2, &frames[2..], 25, 3), Some(6));
    }

    #[test]
    fn a_glance_back_or_a_spoken_repeat_is_not_a_restart() {
        // "flower-fattened": one token glances back to frame 0, nothing repeats.
        let tokens = [520, 1648, 1068, 656, 345, 11, 465, 19921, 12, 66, 1501, 13];
        let frames = [10, 20, 30, 40, 42, 63, 70, 72, 87, 101, 101, 0];
        assert_eq!(restart_at(&tokens, 0, &frames, 25, 3), None);
        // "no, no, no, no": the words repeat but the attention moves on.
        let tokens = [645, 11, 645, 11, 645, 11, 645, 13];
        let frames = [5, 10, 20, 25, 35, 40, 50, 55];
        assert_eq!(restart_at(&tokens, 0, &frames, 25, 3), None);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert!(most_attended_frames(&[], 6, 100, 100).is_empty());
        assert!(most_attended_frames(&[1.0; 10], 0, 10, 10).is_empty());
        assert_eq!(most_attended_frames(&[f32::NAN; 20], 2, 10, 10), vec![0]);
        assert_eq!(most_attended_frames(&[1.0; 3], 1, 3, 3).len(), 1);
    }
}
