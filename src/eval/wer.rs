//! Word error rate: Levenshtein alignment over words.
//!
//! [`word_errors`] aligns a hypothesis transcript against a reference (both already normalized,
//! see `normalizer`) and counts substitutions, deletions and insertions; [`WordErrors`] sums over
//! a corpus and gives the rate. The total number of errors is the minimal edit distance. How it
//! splits into substitutions, deletions and insertions when several minimal alignments exist
//! follows jiwer (4.0, which uses rapidfuzz's `Levenshtein.opcodes`), so the breakdown matches the
//! numbers people get from jiwer:
//!
//! 1. a common prefix and a common suffix of words are matched first;
//! 2. the rest is aligned from its end back to its start, taking at each step the first of these
//!    that lies on a minimal path: delete the reference word; insert the hypothesis word, when the
//!    cell to the left is cheaper than the one diagonally before it; otherwise pair the two words
//!    (a match or a substitution).
//!
//! (Preferring substitution first, as is sometimes assumed, gives a different breakdown from
//! jiwer in about 5% of random small cases.)

use std::ops::AddAssign;

/// Edit counts of a hypothesis against a reference, or summed over many utterances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WordErrors {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    /// Words in the reference: hits + substitutions + deletions.
    pub reference_words: usize,
}

impl WordErrors {
    /// Substitutions + deletions + insertions: the word-level edit distance.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// `errors / reference_words`; 0 when both are 0, and infinite for insertions against an
    /// empty reference (jiwer refuses empty references instead).
    pub fn rate(&self) -> f64 {
        if self.errors() == 0 {
            0.0
        } else {
            self.errors() as f64 / self.reference_words as f64
        }
    }
}

impl AddAssign for WordErrors {
    fn add_assign(&mut self, other: Self) {
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
        self.reference_words += other.reference_words;
    }
}

/// Align the whitespace-separated words of `hypothesis` against those of `reference` and count
/// the edits. O(n·m) time, and one byte per cell of the part left after matching the common
/// prefix and suffix.
pub fn word_errors(reference: &str, hypothesis: &str) -> WordErrors {
    let reference: Vec<&str> = reference.split_whitespace().collect();
    let hypothesis: Vec<&str> = hypothesis.split_whitespace().collect();
    let mut counts = WordErrors {
        reference_words: reference.len(),
        ..WordErrors::default()
    };

    // Step 1: the common prefix and suffix are hits.
    let prefix = reference.iter().zip(&hypothesis).take_while(|(r, h)| r == h).count();
    let (r, h) = (&reference[prefix..], &hypothesis[prefix..]);
    let suffix = r.iter().rev().zip(h.iter().rev()).take_while(|(r, h)| r == h).count();
    let (r, h) = (&r[..r.len() - suffix], &h[..h.len() - suffix]);
    let (n, m) = (r.len(), h.len());

    // The backtrace only needs the vertical differences dist[i][j] - dist[i-1][j], which are
    // -1, 0 or 1, so those are kept (column j at vertical[j * n + i - 1]) instead of distances.
    let mut vertical = vec![0i8; n * (m + 1)];
    let mut previous: Vec<usize> = (0..=n).collect(); // dist[.][j - 1]
    let mut current = vec![0usize; n + 1];
    vertical[..n].fill(1); // column 0: dist[i][0] = i
    for j in 1..=m {
        current[0] = j;
        for i in 1..=n {
            let pair = previous[i - 1] + usize::from(r[i - 1] != h[j - 1]);
            current[i] = pair.min(previous[i] + 1).min(current[i - 1] + 1);
            // Adjacent cells differ by at most 1, so the difference fits.
            vertical[j * n + i - 1] = if current[i] > current[i - 1] {
                1
            } else if current[i] < current[i - 1] {
                -1
            } else {
                0
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }

    // Step 2: walk back from the end, in rapidfuzz's order of preference.
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        if vertical[j * n + i - 1] == 1 {
            counts.deletions += 1;
            i -= 1;
        } else if vertical[(j - 1) * n + i - 1] == -1 {
            counts.insertions += 1;
            j -= 1;
        } else {
            if r[i - 1] != h[j - 1] {
                counts.substitutions += 1;
            }
            i -= 1;
            j -= 1;
        }
    }
    counts.deletions += i;
    counts.insertions += j;
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: usize, d: usize, i: usize, n: usize) -> WordErrors {
        WordErrors {
            substitutions: s,
            deletions: d,
            insertions: i,
            reference_words: n,
        }
    }

    #[test]
    fn identical_texts_have_no_errors() {
        let e = word_errors("the cat sat", "the  cat\tsat ");
        assert_eq!(e, counts(0, 0, 0, 3));
        assert_eq!(e.rate(), 0.0);
    }

    #[test]
    fn both_empty_is_zero() {
        let e = word_errors("", "  ");
        assert_eq!(e, counts(0, 0, 0, 0));
        assert_eq!(e.rate(), 0.0);
    }

    #[test]
    fn empty_reference_is_all_insertions() {
        let e = word_errors("", "hello there");
        assert_eq!(e, counts(0, 0, 2, 0));
        assert!(e.rate().is_infinite());
    }

    #[test]
    fn empty_hypothesis_is_all_deletions() {
        let e = word_errors("hello there world", "");
        assert_eq!(e, counts(0, 3, 0, 3));
        assert_eq!(e.rate(), 1.0);
    }

    #[test]
    fn all_substitutions() {
        assert_eq!(word_errors("a b c", "x y z"), counts(3, 0, 0, 3));
    }

    #[test]
    fn insertions_at_both_ends() {
        let e = word_errors("b c", "a b c d");
        assert_eq!(e, counts(0, 0, 2, 2));
        assert_eq!(e.rate(), 1.0);
    }

    #[test]
    fn deletions_at_both_ends() {
        assert_eq!(word_errors("a b c d", "b c"), counts(0, 2, 0, 4));
    }

    #[test]
    fn jiwer_readme_example() {
        // jiwer's README: wer("hello world", "hello duck") == 0.5
        let e = word_errors("hello world", "hello duck");
        assert_eq!(e, counts(1, 0, 0, 2));
        assert_eq!(e.rate(), 0.5);
    }

    // The expected counts below are jiwer 4.0.0's `process_words` output for the same pairs.
    #[test]
    fn ties_are_broken_like_jiwer() {
        // Two substitutions, or a deletion and an insertion: jiwer reports substitutions here...
        assert_eq!(word_errors("a b", "b c"), counts(2, 0, 0, 2));
        assert_eq!(word_errors("b a", "a c"), counts(2, 0, 0, 2));
        // ...but a deletion and an insertion here, where a substitution-first rule gives 2/1/0.
        assert_eq!(
            word_errors("this is the reference", "this is a the hypothesis"),
            counts(1, 0, 1, 4)
        );
        assert_eq!(word_errors("a b c a", "c a b"), counts(0, 2, 1, 4));
    }

    #[test]
    fn add_assign_sums_fields_and_rate_uses_totals() {
        let mut total = WordErrors::default();
        total += word_errors("a b c d", "a x c d");
        total += word_errors("e f", "e f g");
        assert_eq!(total, counts(1, 0, 1, 6));
        assert_eq!(total.errors(), 2);
        assert!((total.rate() - 2.0 / 6.0).abs() < 1e-12);
    }
}
