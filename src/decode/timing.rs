//! Word-level timestamps from cross-attention, as pure functions over slices and closures. A port
//! of openai/whisper `timing.py` (release 20250625) with the word splitting of `tokenizer.py`.
//!
//! The pipeline, as Whisper runs it after a window is decoded:
//! 1. the caller runs the decoder once more over `[sot_sequence…, no_timestamps, text…, eot]`
//!    and keeps the pre-softmax cross-attention scores of the model's alignment heads;
//! 2. [`find_alignment`] turns them into words with window-relative times: softmax over the
//!    audio frames, normalisation over the tokens, a median filter along time, the mean over
//!    heads, then dynamic time warping of tokens against frames; words start where the path
//!    first reaches their first token ([`split_to_word_tokens`] decides the words);
//! 3. [`assign_words`] (the rest of `add_word_timestamps`) clips overlong words, glues
//!    punctuation to its word ([`merge_punctuations`]), hands the words back to the window's
//!    segments in token order and nudges the segment bounds; its times are on the clip clock.
//!
//! Ported: `median_filter`, `dtw_cpu` and `backtrace`, `find_alignment`, `merge_punctuations`,
//! `add_word_timestamps`, and `Tokenizer.split_to_word_tokens` / `split_tokens_on_unicode` /
//! `split_tokens_on_spaces`; [`last_word_end`] is `utils.get_end`.
//!
//! Deviations from Whisper:
//! 1. Token probabilities come from the caller (steno keeps them from decoding); Whisper
//!    recomputes them from the alignment pass's logits. A word's probability is still the mean
//!    of its tokens' probabilities.
//! 2. Softmax, normalisation, median filter and head mean run in `f64` (Whisper: `f32` torch
//!    ops, summed in another order); the DTW is `f64` in both. Paths can only differ where two
//!    path costs tie to within `f32` rounding.
//! 3. Degenerate inputs do not produce NaN or errors. A frame whose attention is the same for
//!    every token has zero standard deviation; Whisper divides by it (NaN, which then poisons
//!    the DTW costs); here such normalised weights are 0, "no information". A path step outside
//!    the matrix (only when no audio frame is kept, `num_frames < 2`) counts as frame 0, where
//!    Whisper reports −0.02 s. An even median width (Whisper asserts odd) is bumped to the next
//!    odd one. Scores whose length does not match the shape give no words.
//! 4. Special tokens other than end-of-text have no text here (the closure only gives bytes of
//!    text tokens); Whisper would decode them as `<|…|>`. They still form words of their own.
//! 5. [`assign_words`] does not return `last_speech_timestamp`: Whisper updates its own copy
//!    only inside `add_word_timestamps`; `transcribe()` then sets it from the last word's end
//!    ([`last_word_end`]), after it may have dropped hallucinated segments.
//! 6. Only the CPU implementations are ported (Whisper's Triton kernels are the GPU path).

/// Whisper's default `prepend_punctuations`: glued to the word that follows.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";

/// Whisper's default `append_punctuations`: glued to the word before.
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";

/// Languages written without spaces between words (`split_to_word_tokens`): their words are
/// split at every complete UTF-8 character instead.
pub const SPACELESS_LANGUAGES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];

/// Whisper's median filter width over the attention weights (`medfilt_width`).
pub const MEDFILT_WIDTH: usize = 7;

/// DTW steps per second: one per audio encoder frame (two mel frames, 20 ms).
const TOKENS_PER_SECOND: f64 = 50.0;

/// Words at sentence ends may not be stretched past twice the median word length.
const SENTENCE_END_MARKS: &str = ".。!！?？";

/// Python's `string.punctuation`.
const ASCII_PUNCTUATION: &str = r##"!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"##;

/// What `decode_with_timestamps` gives the end-of-text token.
const EOT_TEXT: &[u8] = b"<|endoftext|>";

/// One word with its time span and probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WordTiming {
    /// The word's text, with its leading space as the tokenizer has it (" Hello").
    pub word: String,
    pub tokens: Vec<u32>,
    /// Seconds: from the window start out of [`find_alignment`], on the clip clock out of
    /// [`assign_words`].
    pub start: f64,
    pub end: f64,
    /// Mean probability of the word's tokens.
    pub probability: f32,
}

/// How the tokenizer spells tokens, for splitting them into words.
#[derive(Clone, Copy)]
pub struct WordSplitter<'a> {
    /// The end-of-text id: it and all larger ids are special.
    pub eot: u32,
    /// The language writes without spaces ([`SPACELESS_LANGUAGES`]): split on characters only.
    pub spaceless: bool,
    /// A text token's bytes; `None` for special and timestamp tokens.
    pub token_bytes: &'a dyn Fn(u32) -> Option<&'a [u8]>,
}

impl WordSplitter<'_> {
    fn is_special(&self, token: u32) -> bool {
        token >= self.eot || (self.token_bytes)(token).is_none()
    }

    fn bytes(&self, token: u32) -> &[u8] {
        match (self.token_bytes)(token) {
            Some(b) => b,
            None if token == self.eot => EOT_TEXT,
            None => &[],
        }
    }

    /// split_tokens_on_unicode: close a subword as soon as its bytes decode to whole
    /// characters. A replacement character closes it too when the whole sequence has one at
    /// the same place (the bytes are invalid, not cut short).
    fn split_on_unicode(&self, tokens: &[u32]) -> (Vec<String>, Vec<Vec<u32>>) {
        let all: Vec<u8> = tokens.iter().flat_map(|&t| self.bytes(t).iter().copied()).collect();
        let decoded_full: Vec<char> = String::from_utf8_lossy(&all).chars().collect();

        let mut words = Vec::new();
        let mut word_tokens = Vec::new();
        let mut current_tokens = Vec::new();
        let mut current_bytes = Vec::new();
        let mut unicode_offset = 0;
        for &token in tokens {
            current_tokens.push(token);
            current_bytes.extend_from_slice(self.bytes(token));
            let decoded = String::from_utf8_lossy(&current_bytes);
            let complete = match decoded.chars().position(|c| c == char::REPLACEMENT_CHARACTER) {
                None => true,
                // Whisper would raise IndexError past the end; closing the subword keeps the tokens.
                Some(i) => decoded_full
                    .get(unicode_offset + i)
                    .is_none_or(|&c| c == char::REPLACEMENT_CHARACTER),
            };
            if complete {
                unicode_offset += decoded.chars().count();
                words.push(decoded.into_owned());
                word_tokens.push(std::mem::take(&mut current_tokens));
                current_bytes.clear();
            }
        }
        // Like Whisper, trailing tokens that never complete a character are dropped.
        (words, word_tokens)
    }
}

/// `Tokenizer.split_to_word_tokens`: words and the tokens of each. The tokens are text
/// tokens, possibly followed by end-of-text, which then forms the last word. Words keep their
/// leading space; a character cut across tokens stays in one word.
pub fn split_to_word_tokens(tokens: &[u32], splitter: &WordSplitter) -> (Vec<String>, Vec<Vec<u32>>) {
    let (subwords, subword_tokens) = splitter.split_on_unicode(tokens);
    if splitter.spaceless {
        return (subwords, subword_tokens);
    }
    // split_tokens_on_spaces: a subword starts a new word when it is special, starts with a
    // space or is punctuation; otherwise it continues the previous word.
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<u32>> = Vec::new();
    for (subword, toks) in subwords.into_iter().zip(subword_tokens) {
        let special = toks.first().is_some_and(|&t| splitter.is_special(t));
        let with_space = subword.starts_with(' ');
        // `in string.punctuation` is a substring test: "" and runs like "()" count too.
        let punctuation = ASCII_PUNCTUATION.contains(py_strip(&subword));
        match (words.last_mut(), word_tokens.last_mut()) {
            (Some(word), Some(last_tokens)) if !(special || with_space || punctuation) => {
                word.push_str(&subword);
                last_tokens.extend(toks);
            }
            _ => {
                words.push(subword);
                word_tokens.push(toks);
            }
        }
    }
    (words, word_tokens)
}

/// Cross-attention scores of the alignment heads from the alignment pass, row-major
/// `[n_tokens][n_heads][n_frames]`, before softmax.
#[derive(Debug, Clone, Copy)]
pub struct CrossQk<'a> {
    pub scores: &'a [f32],
    pub n_tokens: usize,
    pub n_heads: usize,
    /// Encoder frames in the scores (1500 for a full window), audio or padding.
    pub n_frames: usize,
}

/// `find_alignment`: words of `text_tokens` with times in seconds from the window start.
///
/// `qk` covers the token sequence `[sot_sequence…, no_timestamps, text_tokens…, eot]`, so
/// `qk.n_tokens = sot_len + text_tokens.len() + 2`. `num_frames` is the number of mel frames of
/// real audio in the window; frames from `num_frames / 2` on are ignored, as in Whisper.
/// `token_probs[i]` is the probability of `text_tokens[i]` (deviation 1). A shape mismatch, no
/// text tokens, or text that makes no word give an empty list.
pub fn find_alignment(
    qk: CrossQk,
    sot_len: usize,
    text_tokens: &[u32],
    token_probs: &[f32],
    num_frames: usize,
    splitter: &WordSplitter,
    medfilt_width: usize,
) -> Vec<WordTiming> {
    let n_tokens = sot_len.saturating_add(text_tokens.len() + 2);
    if text_tokens.is_empty()
        || qk.n_tokens != n_tokens
        || qk.n_heads == 0
        || qk
            .n_tokens
            .checked_mul(qk.n_heads)
            .and_then(|n| n.checked_mul(qk.n_frames))
            != Some(qk.scores.len())
    {
        return Vec::new();
    }
    let matrix = alignment_matrix(qk, sot_len, num_frames, medfilt_width);
    let n_rows = text_tokens.len() + 1;
    let n_cols = matrix.len() / n_rows;
    let cost: Vec<f64> = matrix.iter().map(|&w| -w).collect();
    let path = dtw(&cost, n_rows, n_cols);

    let mut tokens = text_tokens.to_vec();
    tokens.push(splitter.eot);
    let (words, word_tokens) = split_to_word_tokens(&tokens, splitter);
    // Whisper returns early on end-of-text alone (an empty cumsum would crash its indexing).
    if word_tokens.len() <= 1 {
        return Vec::new();
    }

    // The time of the first step on each token row: a new row starts where the path moves down.
    let jump_times: Vec<f64> = path
        .iter()
        .enumerate()
        .filter(|&(k, &(row, _))| k == 0 || path.get(k - 1).is_some_and(|&(prev, _)| prev != row))
        .map(|(_, &(_, col))| col.max(0) as f64 / TOKENS_PER_SECOND)
        .collect();

    let mut boundaries = vec![0];
    for toks in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries.last().copied().unwrap_or(0) + toks.len());
    }
    // The last word (end-of-text) has no own entry: it only ends the word before.
    words
        .into_iter()
        .zip(word_tokens)
        .zip(boundaries.windows(2))
        .map(|((word, tokens), bounds)| {
            let (i, j) = (bounds[0], bounds[1]);
            // The path visits every row, so jump_times has an entry per token; 0 is never used.
            let time = |k: usize| jump_times.get(k).copied().unwrap_or(0.0);
            let probs = token_probs
                .get(i.min(token_probs.len())..j.min(token_probs.len()))
                .unwrap_or(&[]);
            let probability = if probs.is_empty() {
                0.0
            } else {
                (probs.iter().map(|&p| f64::from(p)).sum::<f64>() / probs.len() as f64) as f32
            };
            WordTiming {
                word,
                tokens,
                start: time(i),
                end: time(j),
                probability,
            }
        })
        .collect()
}

/// The token × frame matrix that the DTW follows, rows `sot_len..n_tokens - 1` (the
/// no-timestamps token, whose query predicts the first text token, through the last text
/// token), row-major with `min(num_frames / 2, n_frames)` columns. One head at a time: every
/// step before the head mean is per head.
fn alignment_matrix(qk: CrossQk, sot_len: usize, num_frames: usize, medfilt_width: usize) -> Vec<f64> {
    let CrossQk {
        scores,
        n_tokens,
        n_heads,
        n_frames,
    } = qk;
    let kept = (num_frames / 2).min(n_frames);
    let n_rows = n_tokens.saturating_sub(sot_len + 1);
    let mut matrix = vec![0.0f64; n_rows * kept];
    if kept == 0 {
        return matrix;
    }
    let mut weights = vec![0.0f64; n_tokens * kept];
    let mut mean = vec![0.0f64; kept];
    let mut var = vec![0.0f64; kept];
    for h in 0..n_heads {
        // Softmax over the kept frames.
        for (t, row) in weights.chunks_exact_mut(kept).enumerate() {
            let start = (t * n_heads + h) * n_frames;
            softmax_into(scores.get(start..start + kept).unwrap_or(&[]), row);
        }

        // Normalise each frame over all tokens; the deviation has no Bessel's correction
        // (torch.std_mean(unbiased=False)).
        mean.fill(0.0);
        var.fill(0.0);
        for row in weights.chunks_exact(kept) {
            mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x);
        }
        mean.iter_mut().for_each(|m| *m /= n_tokens as f64);
        for row in weights.chunks_exact(kept) {
            var.iter_mut()
                .zip(row)
                .zip(&mean)
                .for_each(|((v, &x), &m)| *v += (x - m).powi(2));
        }
        for row in weights.chunks_exact_mut(kept) {
            for ((x, &m), &v) in row.iter_mut().zip(&mean).zip(&var) {
                let z = (*x - m) / (v / n_tokens as f64).sqrt();
                // Zero deviation (or non-finite scores): Whisper's NaN becomes "no information".
                *x = if z.is_finite() { z } else { 0.0 };
            }
        }

        // Median filter along time and the mean over heads, for the rows the DTW uses.
        for (out, row) in matrix
            .chunks_exact_mut(kept)
            .zip(weights.chunks_exact(kept).skip(sot_len))
        {
            for (o, v) in out.iter_mut().zip(median_filter(row, medfilt_width)) {
                *o += v / n_heads as f64;
            }
        }
    }
    matrix
}

/// Numerically stable softmax of `src` into `dst` (same length).
fn softmax_into(src: &[f32], dst: &mut [f64]) {
    let max = src.iter().map(|&x| f64::from(x)).fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = (f64::from(x) - max).exp();
        sum += *d;
    }
    for d in dst.iter_mut() {
        *d /= sum;
    }
}

/// `median_filter` along one row: reflect padding (`F.pad(mode="reflect")`, the edge sample
/// not repeated), then the middle of each sorted window. Rows no longer than half the width are
/// returned as they are, as in Whisper (reflect padding needs the row longer than the pad).
fn median_filter(x: &[f64], filter_width: usize) -> Vec<f64> {
    let width = filter_width | 1; // Whisper asserts an odd width; 0 becomes 1, no filtering
    let pad = width / 2;
    if x.len() <= pad {
        return x.to_vec();
    }
    let last = x.len() - 1;
    let padded: Vec<f64> = (0..x.len() + 2 * pad)
        .map(|k| {
            // pad < len, so a reflected index stays inside the row.
            let i = match k.checked_sub(pad) {
                None => pad - k,
                Some(i) if i > last => 2 * last - i,
                Some(i) => i,
            };
            x.get(i).copied().unwrap_or(0.0)
        })
        .collect();
    let mut window = vec![0.0; width];
    padded
        .windows(width)
        .map(|w| {
            window.copy_from_slice(w);
            // total_cmp puts NaN last, as torch's sort does.
            window.sort_unstable_by(f64::total_cmp);
            window[pad]
        })
        .collect()
}

/// `dtw_cpu` + `backtrace`: the cheapest monotonic path through the `n × m` row-major cost
/// matrix `x`, as (row, column) steps from (0, 0) to (n − 1, m − 1). Steps on the virtual
/// border have index −1; with `n, m ≥ 1` and finite costs the path has none.
///
/// Ties go to the horizontal step (time advances, same token), as in Whisper. The costs are
/// `f64`: Whisper allocates them as `np.float32 * np.inf`, which numba types as `float64`.
fn dtw(x: &[f64], n: usize, m: usize) -> Vec<(isize, isize)> {
    let w = m + 1;
    let mut cost = vec![f64::INFINITY; (n + 1) * w];
    // 0: diagonal, 1: up (previous token), 2: left (previous frame).
    let mut trace = vec![0u8; (n + 1) * w];
    cost[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let c0 = cost[(i - 1) * w + j - 1];
            let c1 = cost[(i - 1) * w + j];
            let c2 = cost[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            let xv = x.get((i - 1) * m + j - 1).copied().unwrap_or(f64::INFINITY);
            cost[i * w + j] = xv + c;
            trace[i * w + j] = t;
        }
    }

    // backtrace: the first row moves left, the first column moves up.
    let (mut i, mut j) = (n, m);
    let mut path = Vec::with_capacity(n + m);
    while i > 0 || j > 0 {
        path.push((i as isize - 1, j as isize - 1));
        let t = if i == 0 {
            2
        } else if j == 0 {
            1
        } else {
            trace[i * w + j]
        };
        match t {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path
}

/// `merge_punctuations`: glue prepended punctuation (" (") to the word after it and appended
/// punctuation (",") to the word before it. Emptied entries stay in place with no text and no
/// tokens, as in Whisper (their slot still counts when words go back to segments).
pub fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    if alignment.len() < 2 {
        return;
    }
    // Prepended, from the end: `j` is the word that receives, `i` walks back.
    let mut j = alignment.len() - 1;
    for i in (0..alignment.len() - 1).rev() {
        let (head, tail) = alignment.split_at_mut(j);
        let (Some(previous), Some(following)) = (head.get_mut(i), tail.first_mut()) else {
            break;
        };
        // `in prepended` is a substring test, as in Python.
        if previous.word.starts_with(' ') && prepended.contains(py_strip(&previous.word)) {
            let word = std::mem::take(&mut previous.word);
            let tokens = std::mem::take(&mut previous.tokens);
            following.word.insert_str(0, &word);
            following.tokens.splice(0..0, tokens);
        } else {
            j = i;
        }
    }
    // Appended, from the start: `i` is the word that receives, `j` walks on.
    let mut i = 0;
    for j in 1..alignment.len() {
        let (head, tail) = alignment.split_at_mut(j);
        let (Some(previous), Some(following)) = (head.get_mut(i), tail.first_mut()) else {
            break;
        };
        if !previous.word.ends_with(' ') && appended.contains(following.word.as_str()) {
            previous.word.push_str(&std::mem::take(&mut following.word));
            previous.tokens.append(&mut following.tokens);
        } else {
            i = j;
        }
    }
}

/// One decoded segment of the window, as `add_word_timestamps` reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentSpan {
    /// Seconds on the clip clock.
    pub start: f64,
    pub end: f64,
    /// How many of the segment's tokens are text tokens (below end-of-text).
    pub text_tokens: usize,
}

/// A segment with its words, and its bounds as `add_word_timestamps` leaves them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SegmentWords {
    pub start: f64,
    pub end: f64,
    pub words: Vec<WordTiming>,
}

/// The part of `add_word_timestamps` after `find_alignment`.
///
/// `alignment` is [`find_alignment`]'s output for the text tokens of all `segments` of one
/// window, in order; `time_offset` is the window start on the clip clock (Whisper:
/// `seek * HOP_LENGTH / SAMPLE_RATE`); `last_speech_timestamp` the end of the last word before
/// this window. It clips words longer than twice the median word duration at sentence ends,
/// merges punctuation, gives each segment the words covering its text tokens (times shifted by
/// `time_offset` and rounded to 0.01 s as Python's `round(x, 2)`), shortens long words after a
/// pause, and lets each segment and its first/last word agree on where it starts and ends.
/// Returns one entry per segment, in order; words emptied by merging are left out.
pub fn assign_words(
    mut alignment: Vec<WordTiming>,
    segments: &[SegmentSpan],
    time_offset: f64,
    mut last_speech_timestamp: f64,
    prepend_punctuations: &str,
    append_punctuations: &str,
) -> Vec<SegmentWords> {
    let mut durations: Vec<f64> = alignment
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d != 0.0)
        .collect();
    durations.sort_unstable_by(f64::total_cmp);
    let median_duration = median_of_sorted(&durations).unwrap_or(0.0).min(0.7);
    let max_duration = median_duration * 2.0;

    // Hack (Whisper's): truncate long words at sentence boundaries. `in` is a substring test.
    if !durations.is_empty() {
        for i in 1..alignment.len() {
            let (head, tail) = alignment.split_at_mut(i);
            let (Some(previous), Some(word)) = (head.last(), tail.first_mut()) else {
                continue;
            };
            if word.end - word.start > max_duration {
                if SENTENCE_END_MARKS.contains(word.word.as_str()) {
                    word.end = word.start + max_duration;
                } else if SENTENCE_END_MARKS.contains(previous.word.as_str()) {
                    word.start = word.end - max_duration;
                }
            }
        }
    }

    merge_punctuations(&mut alignment, prepend_punctuations, append_punctuations);

    let mut timings = alignment.into_iter();
    let mut out = Vec::with_capacity(segments.len());
    for segment in segments {
        let (mut seg_start, mut seg_end) = (segment.start, segment.end);
        let mut saved_tokens = 0;
        let mut words: Vec<WordTiming> = Vec::new();
        while saved_tokens < segment.text_tokens {
            let Some(timing) = timings.next() else { break };
            saved_tokens += timing.tokens.len();
            if !timing.word.is_empty() {
                words.push(WordTiming {
                    start: round2(time_offset + timing.start),
                    end: round2(time_offset + timing.end),
                    ..timing
                });
            }
        }

        // Hack (Whisper's): after a pause, the first and second word may not be longer than
        // twice the median word duration.
        if let Some((first, rest)) = words.split_first_mut() {
            let mut second = rest.first_mut();
            let long_first = first.end - first.start > max_duration
                || second
                    .as_ref()
                    .is_some_and(|s| s.end - first.start > max_duration * 2.0);
            if first.end - last_speech_timestamp > median_duration * 4.0 && long_first {
                if let Some(s) = second.as_mut().filter(|s| s.end - s.start > max_duration) {
                    let boundary = (s.end / 2.0).max(s.end - max_duration);
                    first.end = boundary;
                    s.start = boundary;
                }
                first.start = (first.end - max_duration).max(0.0);
            }

            // Prefer the segment's own start if the first word is too long.
            if seg_start < first.end && seg_start - 0.5 > first.start {
                first.start = (first.end - median_duration).min(seg_start).max(0.0);
            } else {
                seg_start = first.start;
            }
        }
        if let Some(last) = words.last_mut() {
            // Prefer the segment's own end if the last word is too long.
            if seg_end > last.start && seg_end + 0.5 < last.end {
                last.end = (last.start + median_duration).max(seg_end);
            } else {
                seg_end = last.end;
            }
            last_speech_timestamp = seg_end;
        }
        out.push(SegmentWords {
            start: seg_start,
            end: seg_end,
            words,
        });
    }
    out
}

/// `utils.get_end`: the end of the last word, else the end of the last segment.
pub fn last_word_end(segments: &[SegmentWords]) -> Option<f64> {
    segments
        .iter()
        .rev()
        .find_map(|s| s.words.last().map(|w| w.end))
        .or_else(|| segments.last().map(|s| s.end))
}

/// `np.median` of an already sorted slice.
fn median_of_sorted(x: &[f64]) -> Option<f64> {
    let mid = x.len() / 2;
    match x.len() {
        0 => None,
        n if n % 2 == 1 => x.get(mid).copied(),
        _ => Some((x.get(mid - 1)? + x.get(mid)?) / 2.0),
    }
}

/// Python's `round(x, 2)`: the decimal nearest to the exact binary value, ties to even.
/// Rust's `{:.2}` formats with the same rule, so the round trip through text is exact.
fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().unwrap_or(x)
}

/// Python's `str.strip()`: Unicode whitespace plus the ASCII separators U+001C–U+001F.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    //! Expected values come from Whisper's own code (release 20250625): `dtw_cpu` under numba,
    //! `tokenizer.py` over tiktoken's gpt2/multilingual tables, `merge_punctuations` and
    //! `add_word_timestamps` as they are, and the torch steps of `find_alignment` redone in numpy.

    use std::collections::HashMap;

    use super::*;

    const EOT_EN: u32 = 50256;

    /// Byte pieces of real gpt2 (tiny.en) and multilingual tokens.
    fn pieces() -> HashMap<u32, &'static [u8]> {
        HashMap::from([
            (843, &b" And"[..]),
            (523, b" so"),
            (616, b" my"),
            (5891, b" fellow"),
            (3399, b" Americans"),
            (11, b","),
            (314, b" I"),
            (1101, b"'m"),
            (994, b" here"),
            (960, b"\xe2\x80\x94"),
            (27485, b"really"),
            (12248, b"?!"),
            (220, b" "),
            (19526, b"\xe4\xbd"),
            (254, b"\xa0"),
            (25001, b"\xe5\xa5"),
            (121, b"\xbd"),
            (18435, b" Hello"),
            (30325, b" \xf0\x9f\x98"),
            (222, b"\x80"),
            (995, b" world"),
        ])
    }

    fn split(tokens: &[u32], eot: u32, spaceless: bool, map: &HashMap<u32, &'static [u8]>) -> Vec<(String, Vec<u32>)> {
        let token_bytes = |t: u32| map.get(&t).copied();
        let splitter = WordSplitter {
            eot,
            spaceless,
            token_bytes: &token_bytes,
        };
        let (words, tokens) = split_to_word_tokens(tokens, &splitter);
        words.into_iter().zip(tokens).collect()
    }

    fn owned(expected: &[(&str, &[u32])]) -> Vec<(String, Vec<u32>)> {
        expected.iter().map(|(w, t)| (w.to_string(), t.to_vec())).collect()
    }

    #[test]
    fn split_on_spaces_real_pieces() {
        let map = pieces();
        let words = split(&[843, 523, 616, 5891, 3399, 11, EOT_EN], EOT_EN, false, &map);
        let expected: &[(&str, &[u32])] = &[
            (" And", &[843]),
            (" so", &[523]),
            (" my", &[616]),
            (" fellow", &[5891]),
            (" Americans", &[3399]),
            (",", &[11]),
            ("<|endoftext|>", &[EOT_EN]),
        ];
        assert_eq!(words, owned(expected));

        // "'m" continues " I"; "?!" is no substring of string.punctuation, so it continues too.
        let words = split(&[314, 1101, 994, 960, 27485, 12248, EOT_EN], EOT_EN, false, &map);
        let expected: &[(&str, &[u32])] = &[
            (" I'm", &[314, 1101]),
            (" here—really?!", &[994, 960, 27485, 12248]),
            ("<|endoftext|>", &[EOT_EN]),
        ];
        assert_eq!(words, owned(expected));
    }

    #[test]
    fn split_keeps_a_character_cut_across_tokens() {
        let map = pieces();
        // " 😀" is " \xf0\x9f\x98" + "\x80".
        let words = split(&[18435, 30325, 222, 995, EOT_EN], EOT_EN, false, &map);
        let expected: &[(&str, &[u32])] = &[
            (" Hello", &[18435]),
            (" 😀", &[30325, 222]),
            (" world", &[995]),
            ("<|endoftext|>", &[EOT_EN]),
        ];
        assert_eq!(words, owned(expected));
        // " 你好": a lone space (strip → "", which Python finds in string.punctuation) then
        // two characters cut in two tokens each.
        let words = split(&[220, 19526, 254, 25001, 121, EOT_EN], EOT_EN, false, &map);
        let expected: &[(&str, &[u32])] = &[(" 你好", &[220, 19526, 254, 25001, 121]), ("<|endoftext|>", &[EOT_EN])];
        assert_eq!(words, owned(expected));
    }

    #[test]
    fn split_spaceless_on_characters() {
        // Multilingual table: "我是😀人" with end-of-text 50257.
        let map = HashMap::from([
            (15914, &b"\xe6\x88\x91\xe6\x98\xaf"[..]),
            (13125, b"\xf0\x9f\x98"),
            (222, b"\x80"),
            (4035, b"\xe4\xba\xba"),
        ]);
        let tokens = [15914, 13125, 222, 4035, 50257];
        let expected: &[(&str, &[u32])] = &[
            ("我是", &[15914]),
            ("😀", &[13125, 222]),
            ("人", &[4035]),
            ("<|endoftext|>", &[50257]),
        ];
        assert_eq!(split(&tokens, 50257, true, &map), owned(expected));
        let expected: &[(&str, &[u32])] = &[("我是😀人", &[15914, 13125, 222, 4035]), ("<|endoftext|>", &[50257])];
        assert_eq!(split(&tokens, 50257, false, &map), owned(expected));
    }

    #[test]
    fn dtw_matches_whisper() {
        type Case<'a> = (&'a [f64], usize, usize, &'a [(isize, isize)]);
        let cases: [Case; 5] = [
            (&[1., 2., 3., 4., 0., 1.], 2, 3, &[(0, 0), (1, 1), (1, 2)]),
            // All ties: Whisper goes down the first column first (a left step wins ties).
            (&[0.; 12], 3, 4, &[(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]),
            (
                &[5., 1., 1., 9., 1., 5., 9., 1., 9., 9., 1., 1.],
                3,
                4,
                &[(0, 0), (0, 1), (0, 2), (1, 3), (2, 3)],
            ),
            (&[1., 2., 3.], 3, 1, &[(0, 0), (1, 0), (2, 0)]),
            (&[1., 2., 3.], 1, 3, &[(0, 0), (0, 1), (0, 2)]),
        ];
        for (x, n, m, expected) in cases {
            assert_eq!(dtw(x, n, m), expected, "{x:?}");
        }
        // No columns: backtrace walks up the virtual column −1.
        assert_eq!(dtw(&[], 2, 0), [(0, -1), (1, -1)]);
        assert!(dtw(&[], 0, 0).is_empty());
    }

    #[test]
    fn median_filter_matches_whisper() {
        let cases: [(&[f64], usize, &[f64]); 5] = [
            (&[1., 9., 2., 8., 3., 7., 4.], 7, &[8., 3., 7., 4., 7., 4., 7.]),
            (&[3., 1., 2., 5., 4.], 3, &[1., 2., 2., 4., 5.]),
            (&[5., 1.], 7, &[5., 1.]),
            (&[5., 1., 4., 2.], 7, &[2., 4., 2., 4.]),
            (&[2., 7., 1.], 5, &[2., 7., 2.]),
        ];
        for (x, width, expected) in cases {
            assert_eq!(median_filter(x, width), expected, "{x:?} width {width}");
        }
        assert_eq!(median_filter(&[3., 1., 2.], 0), [3., 1., 2.]);
        assert!(median_filter(&[], 7).is_empty());
    }

    fn timings(words: &[(&str, &[u32])]) -> Vec<WordTiming> {
        words
            .iter()
            .enumerate()
            .map(|(i, (w, t))| WordTiming {
                word: w.to_string(),
                tokens: t.to_vec(),
                start: i as f64,
                end: i as f64 + 0.5,
                probability: 0.5,
            })
            .collect()
    }

    fn merged(words: &[(&str, &[u32])]) -> Vec<(String, Vec<u32>)> {
        let mut al = timings(words);
        merge_punctuations(&mut al, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        al.into_iter().map(|w| (w.word, w.tokens)).collect()
    }

    #[test]
    fn merge_punctuations_matches_whisper() {
        assert_eq!(
            merged(&[("Hello", &[1]), (",", &[2])]),
            owned(&[("Hello,", &[1, 2]), ("", &[])])
        );
        assert_eq!(
            merged(&[(" “", &[1]), ("Hi", &[2])]),
            owned(&[("", &[]), (" “Hi", &[1, 2])])
        );
        let words: &[(&str, &[u32])] = &[
            (" “", &[1]),
            (" Hi", &[2]),
            ("!", &[3]),
            ("”", &[4]),
            (" he", &[5]),
            (" said", &[6]),
            (".", &[7]),
        ];
        let expected: &[(&str, &[u32])] = &[
            ("", &[]),
            (" “ Hi!”", &[1, 2, 3, 4]),
            ("", &[]),
            ("", &[]),
            (" he", &[5]),
            (" said.", &[6, 7]),
            ("", &[]),
        ];
        assert_eq!(merged(words), owned(expected));
        // Prepended runs chain; " ." is not appended (it has a space).
        let words: &[(&str, &[u32])] = &[(" (", &[1]), (" “", &[2]), (" a", &[3]), (")", &[4]), (" .", &[5])];
        let expected: &[(&str, &[u32])] = &[
            ("", &[]),
            ("", &[]),
            (" ( “ a)", &[1, 2, 3, 4]),
            ("", &[]),
            (" .", &[5]),
        ];
        assert_eq!(merged(words), owned(expected));
        // Python's substring tests: " " strips to "", which is "in" any string.
        let words: &[(&str, &[u32])] = &[(" -", &[1]), (" ", &[2]), (" x", &[3]), ("", &[]), (",", &[4])];
        let expected: &[(&str, &[u32])] = &[("", &[]), ("", &[]), (" -  x,", &[1, 2, 3, 4]), ("", &[]), ("", &[])];
        assert_eq!(merged(words), owned(expected));
        // A word ending in a space takes nothing; a trailing prepended mark stays.
        let words: &[(&str, &[u32])] = &[("a ", &[1]), (",", &[2]), (" ¿", &[3])];
        assert_eq!(merged(words), owned(words));
        assert!(merged(&[]).is_empty());
    }

    /// splitmix64; `value()` is the top 24 bits as k / 2^20 − 8, exact in f32 (the Python
    /// reference draws the same numbers).
    struct SplitMix(u64);

    impl SplitMix {
        fn value(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f64 / f64::from(1u32 << 20) - 8.0) as f32
        }
    }

    const AMERICANS: [u32; 6] = [843, 523, 616, 5891, 3399, 11];
    const PROBS: [f32; 6] = [0.5, 0.25, 0.75, 1.0, 0.125, 0.875];

    fn align(scores: &[f32], sot_len: usize, n_heads: usize, n_frames: usize, num_frames: usize) -> Vec<WordTiming> {
        let map = pieces();
        let token_bytes = |t: u32| map.get(&t).copied();
        let splitter = WordSplitter {
            eot: EOT_EN,
            spaceless: false,
            token_bytes: &token_bytes,
        };
        let n_tokens = sot_len + AMERICANS.len() + 2;
        let qk = CrossQk {
            scores,
            n_tokens,
            n_heads,
            n_frames,
        };
        find_alignment(qk, sot_len, &AMERICANS, &PROBS, num_frames, &splitter, MEDFILT_WIDTH)
    }

    fn spans(words: &[WordTiming]) -> Vec<(&str, f64, f64)> {
        words.iter().map(|w| (w.word.as_str(), w.start, w.end)).collect()
    }

    #[test]
    fn alignment_follows_a_diagonal() {
        // Row sot_len + r (the query that predicts text token r; r = 6 predicts end-of-text)
        // attends to frames [10r, 10r + 10): word r spans 0.2 s from 0.2 r.
        let (sot_len, n_heads, n_frames) = (3, 3, 100);
        let n_tokens = sot_len + AMERICANS.len() + 2;
        let mut scores = vec![0.0f32; n_tokens * n_heads * n_frames];
        for r in 0..=AMERICANS.len() {
            for h in 0..n_heads {
                let row = ((sot_len + r) * n_heads + h) * n_frames;
                scores[row + 10 * r..row + 10 * r + 10].fill(10.0);
            }
        }
        let words = align(&scores, sot_len, n_heads, n_frames, 200);
        let expected = [
            (" And", 0.0, 0.2),
            (" so", 0.2, 0.4),
            (" my", 0.4, 0.6),
            (" fellow", 0.6, 0.8),
            (" Americans", 0.8, 1.0),
            (",", 1.0, 1.2),
        ];
        assert_eq!(spans(&words), expected);
        let probs: Vec<f32> = words.iter().map(|w| w.probability).collect();
        assert_eq!(probs, PROBS);
    }

    #[test]
    fn alignment_of_random_scores_matches_whisper() {
        let (sot_len, n_heads, n_frames) = (1, 2, 40);
        let mut rng = SplitMix(42);
        let scores: Vec<f32> = (0..(sot_len + 8) * n_heads * n_frames).map(|_| rng.value()).collect();
        let expected = [
            (" And", 0.0, 0.0),
            (" so", 0.0, 0.0),
            (" my", 0.0, 0.72),
            (" fellow", 0.72, 0.74),
            (" Americans", 0.74, 0.76),
            (",", 0.76, 0.78),
        ];
        assert_eq!(spans(&align(&scores, sot_len, n_heads, n_frames, 80)), expected);
        // 27 mel frames of audio: only 13 encoder frames count.
        let expected = [
            (" And", 0.0, 0.0),
            (" so", 0.0, 0.0),
            (" my", 0.0, 0.14),
            (" fellow", 0.14, 0.16),
            (" Americans", 0.16, 0.18),
            (",", 0.18, 0.24),
        ];
        assert_eq!(spans(&align(&scores, sot_len, n_heads, n_frames, 27)), expected);
    }

    #[test]
    fn alignment_degenerate_inputs() {
        let (sot_len, n_heads, n_frames) = (1, 2, 40);
        let scores = vec![0.0f32; (sot_len + 8) * n_heads * n_frames];
        // Constant scores: every deviation is zero; Whisper would align on NaN.
        let words = align(&scores, sot_len, n_heads, n_frames, 80);
        assert_eq!(words.len(), 6);
        assert!(words.iter().all(|w| w.start.is_finite() && w.end.is_finite()));
        // No audio frame kept (Whisper: −0.02 s), or one (zero deviation everywhere).
        for num_frames in [0, 1, 2, 3] {
            let words = align(&scores, sot_len, n_heads, n_frames, num_frames);
            assert_eq!(words.len(), 6);
            assert!(words.iter().all(|w| w.start == 0.0 && w.end == 0.0), "{num_frames}");
        }
        // Shape mismatches and no text give no words.
        assert!(align(&scores[1..], sot_len, n_heads, n_frames, 80).is_empty());
        assert!(align(&scores, sot_len, 0, n_frames, 80).is_empty());
        let map = pieces();
        let token_bytes = |t: u32| map.get(&t).copied();
        let splitter = WordSplitter {
            eot: EOT_EN,
            spaceless: false,
            token_bytes: &token_bytes,
        };
        let qk = CrossQk {
            scores: &scores[..2 * n_heads * n_frames],
            n_tokens: 2,
            n_heads,
            n_frames,
        };
        assert!(find_alignment(qk, 0, &[], &[], 80, &splitter, MEDFILT_WIDTH).is_empty());
        // Missing probabilities: the word's mean is over the ones given, else 0.
        let qk = CrossQk {
            scores: &scores,
            n_tokens: sot_len + 8,
            n_heads,
            n_frames,
        };
        let words = find_alignment(qk, sot_len, &AMERICANS, &[1.0], 80, &splitter, MEDFILT_WIDTH);
        let probs: Vec<f32> = words.iter().map(|w| w.probability).collect();
        assert_eq!(probs, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    fn word(word: &str, token: u32, start: f64, end: f64) -> WordTiming {
        WordTiming {
            word: word.into(),
            tokens: vec![token],
            start,
            end,
            probability: 0.5,
        }
    }

    #[test]
    fn assign_words_matches_whisper() {
        let alignment = vec![
            word(" Hello", 100, 0.0, 0.2),
            word(" world", 101, 0.2, 0.4),
            word(".", 102, 0.4, 3.0),
            word(" After", 103, 5.0, 6.0),
            word(" a", 104, 6.0, 7.5),
            word(" b", 105, 7.5, 7.7),
            word(" c", 106, 7.7, 7.9),
            word(" pause", 107, 7.9, 9.0),
        ];
        let segments = [
            SegmentSpan {
                start: 10.0,
                end: 11.0,
                text_tokens: 3,
            },
            SegmentSpan {
                start: 15.8,
                end: 18.2,
                text_tokens: 5,
            },
        ];
        let out = assign_words(
            alignment,
            &segments,
            10.0,
            9.0,
            PREPEND_PUNCTUATIONS,
            APPEND_PUNCTUATIONS,
        );
        let got: Vec<_> = out.iter().map(|s| (s.start, s.end, spans(&s.words))).collect();
        // Median word 0.6 s: "." is cut to 1.2 s and merged into " world". After the pause,
        // " After" and " a" meet at 16.3; the segment starts 0.5 s after " After", so the word
        // starts at min(16.3 − median, 15.8). " pause" overruns the segment end by more than
        // 0.5 s: it ends at max(start + median, 18.2).
        let expected = vec![
            (10.0, 10.4, vec![(" Hello", 10.0, 10.2), (" world.", 10.2, 10.4)]),
            (
                15.8,
                18.2,
                vec![
                    (" After", 15.700000000000001, 16.3),
                    (" a", 16.3, 17.5),
                    (" b", 17.5, 17.7),
                    (" c", 17.7, 17.9),
                    (" pause", 17.9, 18.5),
                ],
            ),
        ];
        assert_eq!(got, expected);
        assert_eq!(out[0].words[1].tokens, [101, 102]);
        assert_eq!(last_word_end(&out), Some(18.5));
    }

    #[test]
    fn assign_words_without_words() {
        let segments = [SegmentSpan {
            start: 1.0,
            end: 2.0,
            text_tokens: 0,
        }];
        let out = assign_words(
            Vec::new(),
            &segments,
            0.0,
            0.0,
            PREPEND_PUNCTUATIONS,
            APPEND_PUNCTUATIONS,
        );
        assert_eq!(
            out,
            [SegmentWords {
                start: 1.0,
                end: 2.0,
                words: Vec::new()
            }]
        );
        assert_eq!(last_word_end(&out), Some(2.0));
        assert_eq!(last_word_end(&[]), None);
        assert!(assign_words(Vec::new(), &[], 0.0, 0.0, "", "").is_empty());
    }

    #[test]
    fn round2_is_pythons_round() {
        for (x, r) in [
            (2.675, 2.67),
            (0.125, 0.12),
            (0.375, 0.38),
            (1.005, 1.0),
            (30.015, 30.02),
            (-0.125, -0.12),
        ] {
            assert_eq!(round2(x), r, "{x}");
        }
    }
}
