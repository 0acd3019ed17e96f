//! Token search for one audio window: greedy (temperature 0), sampling with best-of (temperature
//! above 0) and beam search, over any [`TokenScorer`] (the real decoder, or a scripted fake in tests).
//! A port of openai/whisper `decoding.py` (release 20250625): `GreedyDecoder`,
//! `BeamSearchDecoder`, `MaximumLikelihoodRanker` and the prefill / no-speech logic of
//! `DecodingTask._main_loop`, plus steno's guards: a token budget per window (rate cap) and a
//! repetition guard that ends a hypothesis stuck in a loop.
//!
//! In: the prompt tokens, the filters, limits. Out: the best [`Hypothesis`] with its quality
//! fields (sum/avg log-prob, no-speech probability, temperature).

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::rules::{LogitFilters, first_not_at_most, log_softmax_in_place, log_sum_exp_with_max, max_value};
use crate::error::{Error, Result};

/// Something that scores the next token: feed tokens, get logits back.
pub trait TokenScorer {
    /// Vocabulary size (length of one logits row).
    fn n_vocab(&self) -> usize;
    /// Forget everything fed so far; the next feed starts a fresh sequence of `batch` rows.
    fn reset(&mut self, batch: usize) -> Result<()>;
    /// Feed `n` tokens to each row (`tokens` is rows × n, row-major) and write the logits that
    /// follow each row's last token into `logits` (rows × n_vocab).
    fn feed(&mut self, tokens: &[u32], n: usize, logits: &mut Vec<f32>) -> Result<()>;
    /// New row `i` continues old row `source[i]`; `source` may repeat rows or change the row count.
    fn reorder(&mut self, source: &[usize]) -> Result<()>;
    /// One row only: feed `tokens` and write the logits after each of the last `rows` of them
    /// (`rows × n_vocab`), for draft verification. `Ok(false)`: not supported (nothing fed).
    fn feed_rows(&mut self, tokens: &[u32], rows: usize, logits: &mut Vec<f32>) -> Result<bool> {
        let _ = (tokens, rows, logits);
        Ok(false)
    }
    /// Forget all but the first `len` tokens fed since the last reset (a rejected draft).
    fn rewind(&mut self, len: usize) -> Result<()> {
        let _ = len;
        Err(Error::config("draft", "this scorer cannot rewind"))
    }
}

/// How to search, chosen once per transcription.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecodeStrategy {
    /// Take the likeliest token at temperature 0; at temperature > 0 sample `best_of` candidates.
    Greedy { best_of: usize },
    /// Beam search at temperature 0; at temperature > 0 sample `best_of` candidates (as Whisper).
    Beam {
        beam_size: usize,
        patience: f32,
        best_of: usize,
    },
}

impl DecodeStrategy {
    /// Check the numbers.
    pub fn validate(&self) -> Result<()> {
        match *self {
            DecodeStrategy::Greedy { best_of } | DecodeStrategy::Beam { best_of, .. }
                if best_of == 0 || best_of > 32 =>
            {
                Err(Error::config("best_of", format!("{best_of} is not in 1..=32")))
            }
            DecodeStrategy::Beam { beam_size, .. } if beam_size == 0 || beam_size > 32 => {
                Err(Error::config("beam_size", format!("{beam_size} is not in 1..=32")))
            }
            DecodeStrategy::Beam { patience, .. } if !(patience.is_finite() && patience > 0.0) => Err(Error::config(
                "patience",
                format!("{patience} must be a positive number"),
            )),
            _ => Ok(()),
        }
    }
}

/// One window's decoding problem.
#[derive(Debug, Clone)]
pub struct DecodeTask<'a> {
    /// Everything before the first sampled token: [<|startofprev|> previous text…] <|startoftranscript|> [language task] [<|notimestamps|>].
    pub prompt: &'a [u32],
    /// Index of <|startoftranscript|> in `prompt` (its logits give the no-speech probability).
    pub sot_index: usize,
    /// Tokens the output must start with (live decoding: the words already committed). They
    /// are fed with the prompt in one call, count as sampled for the filters and the
    /// repetition guard, and lead [`Hypothesis::tokens`] with log-probability 0.
    pub forced: &'a [u32],
    /// Greedy decoding only: tokens expected after the forced ones (the previous hypothesis).
    /// They are checked in the same decoder call as the prompt (speculative verification, as
    /// Moonshine's `decode_full`): the longest prefix the model would have chosen itself is
    /// taken at once, and decoding goes on step by step from the first disagreement. The
    /// output is the plain greedy output; the draft only saves decoder calls.
    pub draft: &'a [u32],
    pub filters: &'a LogitFilters,
    /// Most tokens to sample (context room and rate cap already applied).
    pub max_tokens: usize,
    pub temperature: f64,
    /// Length penalty of the ranker (`None`: divide by length, Whisper's default).
    pub length_penalty: Option<f32>,
    pub eot: u32,
    pub no_speech: u32,
    /// Seed of the sampler (temperature > 0); the same seed gives the same output.
    pub seed: u64,
}

/// The outcome of one window.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hypothesis {
    /// Sampled tokens, without end-of-text.
    pub tokens: Vec<u32>,
    /// Log-probability of each of `tokens` when it was chosen (after the filters).
    pub token_logprobs: Vec<f32>,
    pub sum_logprob: f64,
    /// Sum of log-probs / (tokens + 1), Whisper's `avg_logprob` (end-of-text counted).
    pub avg_logprob: f64,
    /// P(<|nospeech|>) at <|startoftranscript|>.
    pub no_speech_prob: f32,
    pub temperature: f64,
    /// Ended by a repetition loop (the guard stopped it).
    pub repetitive: bool,
}

/// Feed the prompt and the forced tokens; return the logits for the first sample (1 row) and
/// the no-speech probability.
fn prefill(scorer: &mut dyn TokenScorer, task: &DecodeTask) -> Result<(Vec<f32>, f32)> {
    let prompt = task.prompt;
    if task.sot_index >= prompt.len() {
        return Err(Error::config("prompt", "the prompt has no <|startoftranscript|>"));
    }
    scorer.reset(1)?;
    let mut logits = Vec::new();
    let (head, tail) = prompt.split_at(task.sot_index + 1);
    scorer.feed(head, head.len(), &mut logits)?;
    let no_speech_prob = {
        let mut row = logits.clone();
        log_softmax_in_place(&mut row);
        row.get(task.no_speech as usize).map_or(0.0, |lp| lp.exp())
    };
    if !tail.is_empty() || !task.forced.is_empty() {
        let rest: Vec<u32> = tail.iter().chain(task.forced).copied().collect();
        scorer.feed(&rest, rest.len(), &mut logits)?;
    }
    Ok((logits, no_speech_prob))
}

/// Decode one window with `strategy`.
pub fn decode(scorer: &mut dyn TokenScorer, task: &DecodeTask, strategy: DecodeStrategy) -> Result<Hypothesis> {
    strategy.validate()?;
    let _span = tracing::debug_span!("decode", t = task.temperature, ?strategy).entered();
    match strategy {
        DecodeStrategy::Beam {
            beam_size, patience, ..
        } if task.temperature == 0.0 && beam_size > 1 => beam_search(scorer, task, beam_size, patience),
        DecodeStrategy::Greedy { best_of } if task.temperature > 0.0 => sample(scorer, task, best_of),
        DecodeStrategy::Beam { best_of, .. } if task.temperature > 0.0 => sample(scorer, task, best_of),
        _ if !task.draft.is_empty() => match greedy_with_draft(scorer, task)? {
            Some(h) => Ok(h),
            None => sample(scorer, task, 1),
        },
        _ => sample(scorer, task, 1),
    }
}

/// Whisper's `MaximumLikelihoodRanker` score.
fn rank_score(sum_logprob: f64, len: usize, length_penalty: Option<f32>) -> f64 {
    let penalty = match length_penalty {
        None => len as f64,
        Some(alpha) => ((5.0 + len as f64) / 6.0).powf(f64::from(alpha)),
    };
    if penalty > 0.0 {
        sum_logprob / penalty
    } else {
        sum_logprob
    }
}

/// A sequence being searched, or finished.
#[derive(Clone)]
struct Candidate {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    sum_logprob: f64,
    repetitive: bool,
}

fn finish(candidates: Vec<Candidate>, task: &DecodeTask, no_speech_prob: f32) -> Hypothesis {
    let best = candidates
        .into_iter()
        .map(|c| (rank_score(c.sum_logprob, c.tokens.len(), task.length_penalty), c))
        .fold(None::<(f64, Candidate)>, |best, c| match best {
            Some(b) if b.0 >= c.0 => Some(b),
            _ => Some(c),
        })
        .map(|(_, c)| c);
    let Candidate {
        tokens,
        logprobs: token_logprobs,
        sum_logprob,
        repetitive,
    } = best.unwrap_or(Candidate {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        sum_logprob: 0.0,
        repetitive: false,
    });
    Hypothesis {
        avg_logprob: sum_logprob / (tokens.len() + 1) as f64,
        tokens,
        token_logprobs,
        sum_logprob,
        no_speech_prob,
        temperature: task.temperature,
        repetitive,
    }
}

/// Greedy (temperature 0, one row) or sampling (`rows` candidates at temperature > 0).
fn sample(scorer: &mut dyn TokenScorer, task: &DecodeTask, rows: usize) -> Result<Hypothesis> {
    let (candidates, no_speech_prob) = sample_rows(scorer, task, &vec![task.temperature; rows])?;
    Ok(finish(candidates, task, no_speech_prob))
}

/// The hotter steps of a fallback ladder at `best_of` 1, decoded together: one row per
/// temperature in one batch (one decoder call per step for all of them, instead of one
/// decode after another), one hypothesis per temperature, in order. The rows draw from one
/// generator seeded with `task.seed`, in row order, so the output is fixed by the seed (but
/// is not the sample a lone decode at that temperature would draw). Greedy rows (temperature
/// 0) take the argmax. See `transcribe::decode_with_fallback` for when this pays.
pub fn sample_each(scorer: &mut dyn TokenScorer, task: &DecodeTask, temperatures: &[f64]) -> Result<Vec<Hypothesis>> {
    if temperatures.is_empty() || temperatures.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
        return Err(Error::config(
            "temperatures",
            format!("{temperatures:?}: need one or more finite temperatures ≥ 0"),
        ));
    }
    let _span = tracing::debug_span!("decode", ?temperatures).entered();
    let (candidates, no_speech_prob) = sample_rows(scorer, task, temperatures)?;
    Ok(candidates
        .into_iter()
        .zip(temperatures)
        .map(|(c, &temperature)| {
            let task = DecodeTask {
                temperature,
                ..task.clone()
            };
            finish(vec![c], &task, no_speech_prob)
        })
        .collect())
}

/// One candidate per row, row `r` at `temperatures[r]` (argmax at 0); and the no-speech
/// probability.
fn sample_rows(scorer: &mut dyn TokenScorer, task: &DecodeTask, temperatures: &[f64]) -> Result<(Vec<Candidate>, f32)> {
    let rows = temperatures.len();
    let v = scorer.n_vocab();
    let (first, no_speech_prob) = prefill(scorer, task)?;
    let mut logits = Vec::with_capacity(rows * v);
    for _ in 0..rows {
        logits.extend_from_slice(&first);
    }
    if rows > 1 {
        scorer.reorder(&vec![0; rows])?;
    }
    let mut rng = SmallRng::seed_from_u64(task.seed);
    let mut tokens: Vec<Vec<u32>> = vec![task.forced.to_vec(); rows];
    let mut token_lp: Vec<Vec<f32>> = vec![vec![0.0; task.forced.len()]; rows];
    let mut sum_lp = vec![0f64; rows];
    let mut done = vec![false; rows];
    let mut repetitive = vec![false; rows];
    let mut next = vec![task.eot; rows];
    for step in 0..task.max_tokens {
        for r in 0..rows {
            if done[r] {
                next[r] = task.eot;
                continue;
            }
            let row = &mut logits[r * v..(r + 1) * v];
            task.filters.apply(row, &tokens[r]);
            let max = max_value(row);
            let token = if temperatures[r] > 0.0 {
                sample_row(row, temperatures[r], &mut rng)
            } else {
                index_of_max(row, max)
            };
            // The chosen token's log-probability; the rest of the row is overwritten by the
            // next feed, so it is not normalised (the same bits as `log_softmax_in_place`).
            let lp = row[token as usize] - log_sum_exp_with_max(row, max);
            sum_lp[r] += f64::from(lp);
            next[r] = token;
            if token == task.eot {
                done[r] = true;
            } else {
                tokens[r].push(token);
                token_lp[r].push(lp);
                if repeated_tail(&tokens[r]).is_some() {
                    repetitive[r] = true;
                    done[r] = true;
                }
            }
        }
        if done.iter().all(|&d| d) || step + 1 == task.max_tokens {
            break;
        }
        scorer.feed(&next, 1, &mut logits)?;
    }
    let candidates = tokens
        .into_iter()
        .zip(token_lp)
        .zip(sum_lp.into_iter().zip(repetitive))
        .map(|((tokens, logprobs), (sum_logprob, repetitive))| Candidate {
            tokens,
            logprobs,
            sum_logprob,
            repetitive,
        })
        .collect();
    Ok((candidates, no_speech_prob))
}

/// Greedy decoding that verifies `task.draft` in the prefill call (see [`DecodeTask::draft`]).
/// `None` when the scorer cannot verify (nothing was fed; the caller decodes plainly).
fn greedy_with_draft(scorer: &mut dyn TokenScorer, task: &DecodeTask) -> Result<Option<Hypothesis>> {
    let v = scorer.n_vocab();
    let prompt = task.prompt;
    if task.sot_index >= prompt.len() {
        return Err(Error::config("prompt", "the prompt has no <|startoftranscript|>"));
    }
    let (head, tail) = prompt.split_at(task.sot_index + 1);
    let rest: Vec<u32> = tail.iter().chain(task.forced).copied().collect();
    if rest.is_empty() {
        return Ok(None);
    }
    scorer.reset(1)?;
    let mut logits = Vec::new();
    scorer.feed(head, head.len(), &mut logits)?;
    let no_speech_prob = {
        let mut row = logits.clone();
        log_softmax_in_place(&mut row);
        row.get(task.no_speech as usize).map_or(0.0, |lp| lp.exp())
    };
    // Draft tokens beyond the budget would never be sampled: do not verify them.
    let draft = &task.draft[..task.draft.len().min(task.max_tokens.saturating_sub(1))];
    let fed: Vec<u32> = rest.iter().chain(draft).copied().collect();
    let rows = draft.len() + 1;
    if !scorer.feed_rows(&fed, rows, &mut logits)? {
        return Ok(None);
    }
    let base = head.len() + rest.len();
    let mut tokens = task.forced.to_vec();
    let mut token_lp = vec![0.0f32; task.forced.len()];
    let mut sum_lp = 0f64;
    let mut repetitive = false;
    let mut done = false;
    let mut row_logits = vec![0f32; v];
    // Row i follows draft[..i]: accept draft[i] while the model picks it.
    let mut next = task.eot;
    let mut steps = 0;
    for i in 0..rows {
        row_logits.copy_from_slice(&logits[i * v..(i + 1) * v]);
        task.filters.apply(&mut row_logits, &tokens);
        let max = max_value(&row_logits);
        let token = index_of_max(&row_logits, max);
        let lp = row_logits[token as usize] - log_sum_exp_with_max(&row_logits, max);
        sum_lp += f64::from(lp);
        steps += 1;
        if token == task.eot {
            done = true;
            break;
        }
        tokens.push(token);
        token_lp.push(lp);
        if repeated_tail(&tokens).is_some() {
            repetitive = true;
            done = true;
            break;
        }
        if i < draft.len() && token == draft[i] {
            continue;
        }
        // The model disagrees with the draft here (or the draft is used up): drop the rest of
        // the draft from the cache and go on step by step from the model's own token.
        if i < draft.len() {
            scorer.rewind(base + i)?;
        }
        next = token;
        break;
    }
    if !done && steps < task.max_tokens {
        scorer.feed(&[next], 1, &mut logits)?;
        for step in steps..task.max_tokens {
            let row = &mut logits[..v];
            task.filters.apply(row, &tokens);
            let max = max_value(row);
            let token = index_of_max(row, max);
            let lp = row[token as usize] - log_sum_exp_with_max(row, max);
            sum_lp += f64::from(lp);
            if token == task.eot {
                break;
            }
            tokens.push(token);
            token_lp.push(lp);
            if repeated_tail(&tokens).is_some() {
                repetitive = true;
                break;
            }
            if step + 1 == task.max_tokens {
                break;
            }
            scorer.feed(&[token], 1, &mut logits)?;
        }
    }
    let candidate = Candidate {
        tokens,
        logprobs: token_lp,
        sum_logprob: sum_lp,
        repetitive,
    };
    Ok(Some(finish(vec![candidate], task, no_speech_prob)))
}

/// The first index of the row's largest value (0 for an empty or all-NaN row). Found as the
/// vectorised [`max_value`] and then the first entry equal to it: the same index as a scalar
/// scan keeping the first strict maximum, without its compare-and-branch per entry.
fn argmax(row: &[f32]) -> u32 {
    index_of_max(row, max_value(row))
}

/// [`argmax`] for a caller that already holds `max = max_value(row)`.
fn index_of_max(row: &[f32], max: f32) -> u32 {
    row.iter().position(|&x| x == max).unwrap_or(0) as u32
}

/// Sample from softmax(row / temperature).
fn sample_row(row: &[f32], temperature: f64, rng: &mut SmallRng) -> u32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = row.iter().map(|&x| (f64::from(x - max) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return argmax(row);
    }
    let mut pick = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        pick -= w;
        if pick <= 0.0 && *w > 0.0 {
            return i as u32;
        }
    }
    argmax(row)
}

/// Indices of the `k` largest values, best first (ties: the earlier index first; −∞ never).
/// Once `k` are held, [`first_not_at_most`] skips, eight entries at a time, the run of entries
/// the scan would pass over one by one (those at or below the k-th best): the same inserts in
/// the same order as the plain scan, which compared every one of a row's 51,864 entries.
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    let mut i = 0;
    while i < row.len() {
        if best.len() == k {
            match first_not_at_most(&row[i..], best[k - 1].1) {
                Some(skip) => i += skip,
                None => break,
            }
        }
        let x = row[i];
        i += 1;
        if x == f32::NEG_INFINITY || (best.len() == k && x <= best[k - 1].1) {
            continue;
        }
        let pos = best.partition_point(|&(_, y)| y >= x);
        best.insert(pos, (i as u32 - 1, x));
        best.truncate(k);
    }
    best
}

/// Whisper's `BeamSearchDecoder` for one audio: keep `beam_size` live sequences, collect up to
/// `round(beam_size × patience)` finished ones, rank them by length-normalised log-prob.
fn beam_search(scorer: &mut dyn TokenScorer, task: &DecodeTask, beam_size: usize, patience: f32) -> Result<Hypothesis> {
    let v = scorer.n_vocab();
    let max_candidates = ((beam_size as f32 * patience).round() as usize).max(1);
    let (first, no_speech_prob) = prefill(scorer, task)?;
    // One live row after the prefill; it fans out after the first step.
    let mut beams: Vec<Candidate> = vec![Candidate {
        tokens: task.forced.to_vec(),
        logprobs: vec![0.0; task.forced.len()],
        sum_logprob: 0.0,
        repetitive: false,
    }];
    let mut logits = first;
    let mut finished: Vec<Candidate> = Vec::new();
    for step in 0..task.max_tokens {
        // Every extension of every beam by one of its top beam_size + 1 tokens: (beam, token, lp, score).
        let mut extended: Vec<(usize, u32, f32, f64)> = Vec::with_capacity(beams.len() * (beam_size + 1));
        for (j, beam) in beams.iter().enumerate() {
            let row = &mut logits[j * v..(j + 1) * v];
            task.filters.apply(row, &beam.tokens);
            log_softmax_in_place(row);
            for (token, lp) in top_k(row, beam_size + 1) {
                let score = beam.sum_logprob + f64::from(lp);
                // Identical sequences (from identical beams) collapse, as in Whisper's dict.
                let same = |e: &(usize, u32, f32, f64)| e.1 == token && beams[e.0].tokens == beam.tokens;
                match extended.iter_mut().find(|e| same(e)) {
                    Some(e) => *e = (j, token, lp, score),
                    None => extended.push((j, token, lp, score)),
                }
            }
        }
        extended.sort_by(|a, b| b.3.total_cmp(&a.3));
        let mut live: Vec<Candidate> = Vec::with_capacity(beam_size);
        let mut source = Vec::with_capacity(beam_size);
        let mut newly_finished = Vec::new();
        for (j, token, lp, score) in extended {
            let parent = &beams[j];
            if token == task.eot {
                newly_finished.push(Candidate {
                    sum_logprob: score,
                    ..parent.clone()
                });
                continue;
            }
            let mut grown = parent.clone();
            grown.tokens.push(token);
            grown.logprobs.push(lp);
            grown.sum_logprob = score;
            if repeated_tail(&grown.tokens).is_some() {
                // A loop: finish it as it stands, flagged, rather than extend it.
                grown.repetitive = true;
                newly_finished.push(grown);
            } else {
                live.push(grown);
                source.push(j);
                if live.len() == beam_size {
                    break;
                }
            }
        }
        for f in newly_finished {
            if finished.len() >= max_candidates {
                break;
            }
            finished.push(f);
        }
        if finished.len() >= max_candidates || live.is_empty() || step + 1 == task.max_tokens {
            beams = live;
            break;
        }
        scorer.reorder(&source)?;
        let next: Vec<u32> = live
            .iter()
            .map(|b| b.tokens.last().copied().unwrap_or(task.eot))
            .collect();
        scorer.feed(&next, 1, &mut logits)?;
        beams = live;
    }
    // Not enough finished: the live beams count as finished here (Whisper's `finalize`).
    if finished.len() < beam_size {
        beams.sort_by(|a, b| b.sum_logprob.total_cmp(&a.sum_logprob));
        finished.extend(beams.into_iter().take(beam_size - finished.len()));
    }
    Ok(finish(finished, task, no_speech_prob))
}

/// The repetition guard: does `tokens` end with a block of 1..=16 tokens repeated so often that
/// it covers ≥ 24 tokens (and at least 4 times)? Returns (period, repeats). Real speech does
/// repeat words ("no, no, no"), so the bar is a loop no speaker produces; Whisper's failure mode
/// is the same phrase over and over until the token limit.
pub fn repeated_tail(tokens: &[u32]) -> Option<(usize, usize)> {
    const MAX_PERIOD: usize = 16;
    const MIN_SPAN: usize = 24;
    const MIN_REPEATS: usize = 4;
    for period in 1..=MAX_PERIOD.min(tokens.len() / MIN_REPEATS) {
        let tail = &tokens[tokens.len() - period..];
        let mut repeats = 1;
        while (repeats + 1) * period <= tokens.len() {
            let start = tokens.len() - (repeats + 1) * period;
            if &tokens[start..start + period] != tail {
                break;
            }
            repeats += 1;
        }
        if repeats >= MIN_REPEATS && repeats * period >= MIN_SPAN {
            return Some((period, repeats));
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::rules::FilterOptions;
    use crate::model::tiny_en_tokens;

    pub(crate) const V: usize = 51864;

    /// A fake decoder: the logits depend only on the tokens fed so far, through a script
    /// `f(history) -> [(token, logit)]` (all other tokens get −20).
    pub(crate) struct Scripted<F: Fn(&[u32]) -> Vec<(u32, f32)>> {
        pub script: F,
        pub rows: Vec<Vec<u32>>,
        pub feeds: usize,
    }

    impl<F: Fn(&[u32]) -> Vec<(u32, f32)>> TokenScorer for Scripted<F> {
        fn n_vocab(&self) -> usize {
            V
        }
        fn reset(&mut self, batch: usize) -> Result<()> {
            self.rows = vec![Vec::new(); batch];
            Ok(())
        }
        fn feed(&mut self, tokens: &[u32], n: usize, logits: &mut Vec<f32>) -> Result<()> {
            self.feeds += 1;
            logits.clear();
            for (r, row) in self.rows.iter_mut().enumerate() {
                row.extend_from_slice(&tokens[r * n..(r + 1) * n]);
                let mut l = vec![-20.0; V];
                for (t, x) in (self.script)(row) {
                    l[t as usize] = x;
                }
                logits.extend_from_slice(&l);
            }
            Ok(())
        }
        fn reorder(&mut self, source: &[usize]) -> Result<()> {
            self.rows = source.iter().map(|&s| self.rows[s].clone()).collect();
            Ok(())
        }
        fn feed_rows(&mut self, tokens: &[u32], rows: usize, logits: &mut Vec<f32>) -> Result<bool> {
            self.feeds += 1;
            logits.clear();
            let row = &mut self.rows[0];
            let first = tokens.len() - rows;
            for (i, &t) in tokens.iter().enumerate() {
                row.push(t);
                if i >= first {
                    let mut l = vec![-20.0; V];
                    for (t, x) in (self.script)(row) {
                        l[t as usize] = x;
                    }
                    logits.extend_from_slice(&l);
                }
            }
            Ok(true)
        }
        fn rewind(&mut self, len: usize) -> Result<()> {
            self.rows[0].truncate(len);
            Ok(())
        }
    }

    pub(crate) fn scripted<F: Fn(&[u32]) -> Vec<(u32, f32)>>(script: F) -> Scripted<F> {
        Scripted {
            script,
            rows: Vec::new(),
            feeds: 0,
        }
    }

    const SOT: u32 = 50257;
    const NOTS: u32 = 50362;
    const EOT: u32 = 50256;

    fn task<'a>(prompt: &'a [u32], filters: &'a LogitFilters) -> DecodeTask<'a> {
        DecodeTask {
            prompt,
            sot_index: prompt.iter().position(|&t| t == SOT).unwrap(),
            forced: &[],
            draft: &[],
            filters,
            max_tokens: 50,
            temperature: 0.0,
            length_penalty: None,
            eot: EOT,
            no_speech: 50361,
            seed: 0,
        }
    }

    fn no_ts() -> LogitFilters {
        LogitFilters::new(
            &tiny_en_tokens(),
            &FilterOptions {
                timestamps: false,
                ..FilterOptions::default()
            },
            None,
        )
    }

    #[test]
    fn greedy_follows_the_best_path_and_stops_at_eot() {
        // " And so my" then end-of-text.
        let mut s = scripted(|h: &[u32]| match h.len() {
            2 => vec![(843, 5.0)],
            3 => vec![(523, 5.0)],
            4 => vec![(616, 5.0)],
            _ => vec![(EOT, 5.0)],
        });
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let h = decode(&mut s, &task(&prompt, &filters), DecodeStrategy::Greedy { best_of: 1 }).unwrap();
        assert_eq!(h.tokens, vec![843, 523, 616]);
        assert!(h.avg_logprob < 0.0 && h.avg_logprob > -0.01);
        assert!(!h.repetitive);
    }

    #[test]
    fn no_speech_probability_comes_from_the_sot_position() {
        let mut s = scripted(|h: &[u32]| match h.last() {
            Some(&SOT) => vec![(50361, 10.0)],
            _ => vec![(EOT, 5.0), (843, 4.0)],
        });
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let h = decode(&mut s, &task(&prompt, &filters), DecodeStrategy::Greedy { best_of: 1 }).unwrap();
        assert!(h.no_speech_prob > 0.9, "{}", h.no_speech_prob);
        assert_eq!(h.tokens, vec![843], "end-of-text is suppressed as the first token");
    }

    #[test]
    fn beam_search_finds_a_better_sequence_than_greedy() {
        // Greedy takes A (logit 2 vs 1.5) but A leads to a flat, unlikely continuation;
        // B leads to a confident end.
        const A: u32 = 100;
        const B: u32 = 200;
        let script = |h: &[u32]| -> Vec<(u32, f32)> {
            match h.get(2..).unwrap_or(&[]) {
                [] => vec![(A, 2.0), (B, 1.5)],
                [A] => (300..340).map(|t| (t, 0.0)).collect(),
                [A, _] => vec![(EOT, 5.0)],
                [B] => vec![(EOT, 10.0)],
                _ => vec![(EOT, 5.0)],
            }
        };
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let g = decode(
            &mut scripted(script),
            &task(&prompt, &filters),
            DecodeStrategy::Greedy { best_of: 1 },
        )
        .unwrap();
        assert_eq!(g.tokens[0], A);
        let b = decode(
            &mut scripted(script),
            &task(&prompt, &filters),
            DecodeStrategy::Beam {
                beam_size: 5,
                patience: 1.0,
                best_of: 5,
            },
        )
        .unwrap();
        assert_eq!(b.tokens, vec![B]);
        assert!(b.sum_logprob > g.sum_logprob);
    }

    #[test]
    fn sample_each_decodes_one_row_per_temperature_in_one_batch() {
        // " And so my" then end-of-text, sharply peaked: every temperature up to 1 follows it.
        let script = |h: &[u32]| match h.len() {
            2 => vec![(843, 30.0)],
            3 => vec![(523, 30.0)],
            4 => vec![(616, 30.0)],
            _ => vec![(EOT, 30.0)],
        };
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let greedy = decode(
            &mut scripted(script),
            &task(&prompt, &filters),
            DecodeStrategy::Greedy { best_of: 1 },
        )
        .unwrap();
        let mut s = scripted(script);
        let hyps = sample_each(&mut s, &task(&prompt, &filters), &[0.0, 0.4, 1.0]).unwrap();
        assert_eq!(hyps.len(), 3);
        for (h, t) in hyps.iter().zip([0.0, 0.4, 1.0]) {
            assert_eq!(h.tokens, greedy.tokens);
            assert_eq!(h.temperature, t);
            assert!((h.sum_logprob - greedy.sum_logprob).abs() < 1e-9);
        }
        // One prefill, then one call per step for all rows: prompt tail, 3 tokens + end.
        let calls = s.feeds;
        let mut one = scripted(script);
        sample_each(&mut one, &task(&prompt, &filters), &[0.4]).unwrap();
        assert_eq!(calls, one.feeds, "three rows cost the calls of one");
        assert!(sample_each(&mut scripted(script), &task(&prompt, &filters), &[]).is_err());
        assert!(sample_each(&mut scripted(script), &task(&prompt, &filters), &[f64::NAN]).is_err());
    }

    #[test]
    fn sample_each_rows_end_on_their_own_and_repeat_for_a_seed() {
        // Two equally likely tokens at every step, end-of-text once 6 tokens are out: hot rows
        // differ from each other, the same seed gives the same rows.
        let script = |h: &[u32]| {
            if h.len() >= 8 {
                vec![(EOT, 30.0)]
            } else {
                vec![(100, 5.0), (200, 5.0)]
            }
        };
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let temps = [1.0; 6];
        let a = sample_each(&mut scripted(script), &task(&prompt, &filters), &temps).unwrap();
        let b = sample_each(&mut scripted(script), &task(&prompt, &filters), &temps).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|h| h.tokens.len() == 6));
        assert!(a.iter().any(|h| h.tokens != a[0].tokens), "rows draw their own samples");
    }

    #[test]
    fn token_budget_stops_a_runaway_window() {
        let mut s = scripted(|h: &[u32]| vec![(1000 + h.len() as u32, 5.0)]);
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let mut t = task(&prompt, &filters);
        t.max_tokens = 7;
        let h = decode(&mut s, &t, DecodeStrategy::Greedy { best_of: 1 }).unwrap();
        assert_eq!(h.tokens.len(), 7);
    }

    #[test]
    fn repetition_guard_stops_a_loop() {
        // "he could wait no longer." over and over.
        let phrase = [679, 714, 4043, 645, 2392, 13];
        let mut s = scripted(move |h: &[u32]| vec![(phrase[(h.len() - 2) % phrase.len()], 5.0)]);
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let mut t = task(&prompt, &filters);
        t.max_tokens = 200;
        let h = decode(&mut s, &t, DecodeStrategy::Greedy { best_of: 1 }).unwrap();
        assert!(h.repetitive);
        assert!(h.tokens.len() < 40, "{}", h.tokens.len());
    }

    #[test]
    fn sampling_is_reproducible_for_a_seed() {
        let script = |_: &[u32]| (300..310).map(|t| (t, 1.0)).chain([(EOT, 0.5)]).collect();
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let mut t = task(&prompt, &filters);
        t.temperature = 1.0;
        t.seed = 7;
        let a = decode(&mut scripted(script), &t, DecodeStrategy::Greedy { best_of: 3 }).unwrap();
        let b = decode(&mut scripted(script), &t, DecodeStrategy::Greedy { best_of: 3 }).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.temperature, 1.0);
    }

    #[test]
    fn forced_tokens_lead_the_output_and_are_fed_in_one_call() {
        // " And so my fellow": the decoder continues after the forced " And so".
        let mut s = scripted(|h: &[u32]| match h.get(2..).unwrap_or(&[]) {
            [843, 523] => vec![(616, 5.0)],
            [843, 523, 616] => vec![(5891, 5.0)],
            [_, _, _, _] => vec![(EOT, 5.0)],
            _ => vec![(999, 5.0)],
        });
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let mut t = task(&prompt, &filters);
        t.forced = &[843, 523];
        let h = decode(&mut s, &t, DecodeStrategy::Greedy { best_of: 1 }).unwrap();
        assert_eq!(h.tokens, vec![843, 523, 616, 5891]);
        assert_eq!(&h.token_logprobs[..2], &[0.0, 0.0]);
        // SOT alone (no-speech), then <|notimestamps|> + forced in one call, then 2 steps.
        assert_eq!(s.feeds, 4);
    }

    /// " And so my fellow Americans" then end-of-text, after <|sot|> <|notimestamps|>.
    fn jfk_script(h: &[u32]) -> Vec<(u32, f32)> {
        match h.get(2..).unwrap_or(&[]) {
            [] => vec![(843, 5.0)],
            [843] => vec![(523, 5.0)],
            [843, 523] => vec![(616, 5.0)],
            [843, 523, 616] => vec![(5891, 5.0)],
            [843, 523, 616, 5891] => vec![(3399, 5.0)],
            _ => vec![(EOT, 5.0)],
        }
    }

    #[test]
    fn a_right_draft_is_verified_in_one_call_and_changes_nothing() {
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let plain = decode(
            &mut scripted(jfk_script),
            &task(&prompt, &filters),
            DecodeStrategy::Greedy { best_of: 1 },
        )
        .unwrap();
        let mut s = scripted(jfk_script);
        let mut t = task(&prompt, &filters);
        t.forced = &[843];
        t.draft = &[523, 616, 5891, 3399];
        let h = decode(&mut s, &t, DecodeStrategy::Greedy { best_of: 1 }).unwrap();
        assert_eq!(h.tokens, plain.tokens);
        // <|sot|>, then <|notimestamps|> + forced + the whole draft in one call: end-of-text
        // follows the last draft token, so nothing else is fed.
        assert_eq!(s.feeds, 2);
    }

    #[test]
    fn a_wrong_draft_is_cut_where_the_model_disagrees() {
        let filters = no_ts();
        let prompt = [SOT, NOTS];
        let mut s = scripted(jfk_script);
        let mut t = task(&prompt, &filters);
        // " And so my fellow men": the model says " Americans" after " fellow".
        t.draft = &[843, 523, 616, 5891, 1450, 13];
        let h = decode(&mut s, &t, DecodeStrategy::Greedy { best_of: 1 }).unwrap();
        assert_eq!(h.tokens, vec![843, 523, 616, 5891, 3399]);
        // sot; prompt + draft; then " Americans" fed after the rewind; end-of-text.
        assert_eq!(s.feeds, 3);
        assert_eq!(s.rows[0], vec![SOT, NOTS, 843, 523, 616, 5891, 3399]);
    }

    #[test]
    fn repeated_tail_needs_a_real_loop() {
        assert_eq!(repeated_tail(&[5; 30]), Some((1, 30)));
        assert_eq!(
            repeated_tail(&[5; 10]),
            None,
            "ten repeats of a word is still below the span"
        );
        let mut loop6: Vec<u32> = Vec::new();
        for _ in 0..5 {
            loop6.extend([1, 2, 3, 4, 5, 6]);
        }
        assert_eq!(repeated_tail(&loop6), Some((6, 5)));
        assert_eq!(repeated_tail(&[1, 2, 3, 1, 2, 3, 4]), None);
    }

    #[test]
    fn strategy_validation_names_the_field() {
        let e = DecodeStrategy::Beam {
            beam_size: 0,
            patience: 1.0,
            best_of: 5,
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("beam_size"));
    }

    /// The skipping top-k and argmax pick what the plain scans pick (the code they replaced),
    /// on rows with many ties (values on a coarse grid), banned entries and a NaN.
    #[test]
    fn top_k_and_argmax_match_the_plain_scans() {
        fn plain_top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
            let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
            for (i, &x) in row.iter().enumerate() {
                if x == f32::NEG_INFINITY || (best.len() == k && x <= best[k - 1].1) {
                    continue;
                }
                let pos = best.partition_point(|&(_, y)| y >= x);
                best.insert(pos, (i as u32, x));
                best.truncate(k);
            }
            best
        }
        fn plain_argmax(row: &[f32]) -> u32 {
            let mut best = 0;
            for (i, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = i;
                }
            }
            best as u32
        }
        let mut next = crate::decode::rules::tests::uniform(0x2545_f491_4f6c_dd1d);
        for (len, grid) in [(V, 0.5f32), (V, 0.001), (1000, 4.0), (9, 1.0)] {
            let row: Vec<f32> = (0..len)
                .map(|_| {
                    if next() < 0.05 {
                        f32::NEG_INFINITY
                    } else {
                        ((next() * 20.0) / grid).round() * grid
                    }
                })
                .collect();
            for k in [1, 2, 6] {
                assert_eq!(top_k(&row, k), plain_top_k(&row, k), "len {len}, grid {grid}, k {k}");
            }
            assert_eq!(argmax(&row), plain_argmax(&row), "len {len}, grid {grid}");
        }
        let mut with_nan: Vec<f32> = (0..V).map(|i| (i % 97) as f32).collect();
        with_nan[5000] = f32::NAN;
        let (got, want) = (top_k(&with_nan, 6), plain_top_k(&with_nan, 6));
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert_eq!(top_k(&[f32::NEG_INFINITY; 3], 2), vec![]);
    }
}
