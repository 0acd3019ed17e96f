//! Commit policies: which tokens of a live hypothesis are final. Committed text only grows
//! and is never revised within an utterance; what is not committed is shown as the tentative
//! tail and may still change.
//!
//! In: one [`Update`] per partial decode of the current utterance (the hypothesis, which
//! starts with the tokens already committed, and the most-attended audio frame behind each new
//! token). Out: how many tokens of the hypothesis are committed now.
//!
//! - [`AlignAtt`] (default): ufal/SimulStreaming `simul_whisper.py` (Simul-Whisper's policy).
//!   A token is committed only while the alignment heads' most-attended frame behind it stays
//!   more than `frame_threshold` before the end of the audio; the first token that looks closer
//!   stops the commit (with the tokens after it). A jump back of more than `rewind_threshold`
//!   between consecutive tokens marks a hallucination and the whole update is discarded.
//!   Deviation: SimulStreaming stops *decoding* at that token; steno decodes on, so the rest is
//!   shown as the tentative tail.
//! - [`LocalAgreement`] (LocalAgreement-2, ufal/whisper_streaming `whisper_online.py`
//!   `HypothesisBuffer`): the longest common prefix of the last two hypotheses is committed.
//!   The choice for models without `cross_qk` (sherpa-onnx layout).
//!
//! Both commit whole words only: a commit boundary falls where the next token starts a word
//! (its text begins with a space). The last word of the hypothesis is always held until the
//! final, since more audio may still extend or change it. When the committable run stops
//! inside a word (or where one of the two agreeing decodes goes on with the same word), that
//! word is held as well.
//!
//! Deviation from the first version of this module, which held back the last word of the
//! committable run even when the run ended cleanly before a new word: measured on LibriSpeech
//! as one stream (`steno stream-bench ../shared/eval/librispeech`, lockstep), the committed-word
//! lag went from p50 0.95 / p95 1.77 s to 0.72 / 1.60 s and the WER from 12.60 % to 12.15 %.

/// Which policy a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// AlignAtt when the model has `cross_qk`, else LocalAgreement-2.
    #[default]
    Auto,
    AlignAtt,
    LocalAgreement,
}

impl std::str::FromStr for PolicyKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "auto" => Ok(PolicyKind::Auto),
            "alignatt" | "align_att" => Ok(PolicyKind::AlignAtt),
            "la2" | "local_agreement" | "local-agreement" => Ok(PolicyKind::LocalAgreement),
            other => Err(crate::Error::config(
                "commit_policy",
                format!("`{other}` is not one of auto, alignatt, la2"),
            )),
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicyKind::Auto => "auto",
            PolicyKind::AlignAtt => "alignatt",
            PolicyKind::LocalAgreement => "la2",
        })
    }
}

/// One partial decode of the current utterance.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The hypothesis (text tokens); its first `committed` tokens are the committed ones.
    pub tokens: &'a [u32],
    pub committed: usize,
    /// For each token after the committed ones: the most-attended encoder frame (20 ms) when
    /// it was predicted; may be shorter than the new tokens (or empty without attention).
    pub frames: &'a [u32],
    /// Encoder frames holding audio in the decoded window.
    pub content_frames: u32,
}

/// A commit policy (see the module doc). `starts_word(t)`: the text of token `t` begins a word.
pub trait CommitPolicy: Send {
    /// How many tokens of `update.tokens` are committed after this update (≥ `update.committed`).
    fn commit(&mut self, update: &Update, starts_word: &dyn Fn(u32) -> bool) -> usize;
    /// A new utterance begins.
    fn reset(&mut self);
    fn kind(&self) -> PolicyKind;
}

/// The largest word boundary in `committed+1 ..= limit` before the last word of
/// `tokens[..limit]`: commit `tokens[..boundary]` and hold the word that starts there.
fn hold_last_word(tokens: &[u32], committed: usize, limit: usize, starts_word: &dyn Fn(u32) -> bool) -> usize {
    let limit = limit.min(tokens.len());
    (committed + 1..limit)
        .rev()
        .find(|&i| tokens.get(i).is_some_and(|&t| starts_word(t)))
        .unwrap_or(committed)
}

/// SimulStreaming's AlignAtt (see the module doc).
#[derive(Debug, Clone)]
pub struct AlignAtt {
    /// Tokens attended within this many encoder frames of the audio's end are not committed.
    pub frame_threshold: u32,
    /// A jump back by more than this many frames between tokens discards the update.
    pub rewind_threshold: u32,
    /// Also require the token in the previous hypothesis (LocalAgreement-2 on top): a word
    /// is committed only once two decodes agree on it. Off in SimulStreaming.
    pub agreement: bool,
    previous: Vec<u32>,
}

impl AlignAtt {
    /// `frame_threshold_ms` (SimulStreaming: 25 frames = 500 ms) and `rewind_threshold_ms`
    /// (200 frames = 4 s), in milliseconds of audio.
    pub fn new(frame_threshold_ms: u32, rewind_threshold_ms: u32) -> AlignAtt {
        AlignAtt {
            frame_threshold: frame_threshold_ms / 20,
            rewind_threshold: rewind_threshold_ms / 20,
            agreement: false,
            previous: Vec::new(),
        }
    }

    /// [`AlignAtt::new`] that also waits for two decodes to agree ([`AlignAtt::agreement`]).
    pub fn with_agreement(mut self, agreement: bool) -> AlignAtt {
        self.agreement = agreement;
        self
    }
}

impl CommitPolicy for AlignAtt {
    fn commit(&mut self, update: &Update, starts_word: &dyn Fn(u32) -> bool) -> usize {
        let new = update.tokens.len().saturating_sub(update.committed);
        let mut limit = update.committed;
        let mut previous: Option<u32> = None;
        for &frame in update.frames.iter().take(new) {
            if previous.is_some_and(|p| p > frame + self.rewind_threshold) {
                tracing::debug!(frame, ?previous, "attention jumped back: update discarded");
                return update.committed;
            }
            if frame + self.frame_threshold >= update.content_frames {
                break;
            }
            previous = Some(frame);
            limit += 1;
        }
        let starts_at = |h: &[u32], i: usize| h.get(i).is_some_and(|&t| starts_word(t));
        let mut clean = starts_at(update.tokens, limit);
        if self.agreement {
            let agreed = update
                .tokens
                .iter()
                .zip(&self.previous)
                .take_while(|(a, b)| a == b)
                .count()
                .max(update.committed);
            if agreed < limit {
                limit = agreed;
                clean = starts_at(update.tokens, agreed) && starts_at(&self.previous, agreed);
            }
            self.previous = update.tokens.to_vec();
        }
        // The run ends where a new word starts (in both decodes, when they had to agree): its
        // words are whole and the word being heard lies past it. Otherwise the run may end
        // inside a word, so its last word is held.
        if clean && limit > update.committed {
            return limit;
        }
        hold_last_word(update.tokens, update.committed, limit, starts_word)
    }

    fn reset(&mut self) {
        self.previous.clear();
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::AlignAtt
    }
}

/// whisper_streaming's LocalAgreement-2 (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct LocalAgreement {
    previous: Vec<u32>,
}

impl CommitPolicy for LocalAgreement {
    fn commit(&mut self, update: &Update, starts_word: &dyn Fn(u32) -> bool) -> usize {
        let agreed = update
            .tokens
            .iter()
            .zip(&self.previous)
            .take_while(|(a, b)| a == b)
            .count()
            .max(update.committed);
        let previous = std::mem::replace(&mut self.previous, update.tokens.to_vec());
        if agreed <= update.committed {
            return update.committed;
        }
        // Both hypotheses must continue with a new word right after the agreed run, or the
        // last agreed word may be cut short: then it is held with the rest.
        let clean = |h: &[u32]| h.get(agreed).is_some_and(|&t| starts_word(t));
        if clean(update.tokens) && clean(&previous) {
            agreed
        } else {
            hold_last_word(update.tokens, update.committed, agreed, starts_word)
        }
    }

    fn reset(&mut self) {
        self.previous.clear();
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::LocalAgreement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real tiny.en ids: " And so my fellow Americans, ask not what your country can do"
    const AND: u32 = 843;
    const SO: u32 = 523;
    const MY: u32 = 616;
    const FELLOW: u32 = 5891;
    const AMER: u32 = 33391; // " Amer"
    const ICANS: u32 = 22398; // "icans"
    const AMERICANS: u32 = 3399;
    const COMMA: u32 = 11;
    const ASK: u32 = 1265;
    const NOT: u32 = 407;

    fn starts_word(t: u32) -> bool {
        !matches!(t, ICANS | COMMA)
    }

    fn update<'a>(tokens: &'a [u32], committed: usize, frames: &'a [u32], content: u32) -> Update<'a> {
        Update {
            tokens,
            committed,
            frames,
            content_frames: content,
        }
    }

    #[test]
    fn alignatt_commits_tokens_attended_well_before_the_end_and_holds_the_last_word() {
        let mut p = AlignAtt::new(500, 4000);
        // 200 frames of audio; threshold 25: frames ≥ 175 are too close to the end.
        let tokens = [AND, SO, MY, FELLOW, AMERICANS];
        let c = p.commit(&update(&tokens, 0, &[10, 30, 60, 100, 180], 200), &starts_word);
        // " Americans" is attended too close to the end: held, with it the hypothesis's last
        // word; the run before it ends cleanly where " Americans" starts.
        assert_eq!(c, 4, "And so my fellow");
        // More audio: everything is well before the end, the last word is still held.
        let c = p.commit(&update(&tokens, 3, &[100, 150], 300), &starts_word);
        assert_eq!(c, 4);
    }

    #[test]
    fn alignatt_never_commits_half_a_word() {
        let mut p = AlignAtt::new(500, 4000);
        let tokens = [AND, SO, AMER, ICANS, COMMA, ASK];
        // " Amer" is attended early, "icans" near the end: the commit stops before " Amer".
        let c = p.commit(&update(&tokens, 0, &[5, 20, 40, 190, 191, 192], 200), &starts_word);
        assert_eq!(c, 2, "`And so`: ` Amer` is cut short by the stop and held");
        let c = p.commit(&update(&tokens, 0, &[5, 20, 40, 60, 70, 120], 200), &starts_word);
        assert_eq!(
            c, 5,
            "`And so Americans,` (one word of three tokens); ` ask` is the held last word"
        );
    }

    #[test]
    fn alignatt_discards_an_update_whose_attention_jumps_back() {
        let mut p = AlignAtt::new(500, 4000);
        let tokens = [AND, SO, MY, FELLOW, AMERICANS, ASK];
        let c = p.commit(&update(&tokens, 1, &[250, 40, 60, 70, 80], 400), &starts_word);
        assert_eq!(c, 1, "a 210-frame jump back (> 200) is a hallucination");
    }

    #[test]
    fn alignatt_with_agreement_waits_for_two_decodes() {
        let mut p = AlignAtt::new(500, 4000).with_agreement(true);
        let tokens = [AND, SO, MY, FELLOW, AMERICANS];
        let frames = [10, 30, 60, 100, 120];
        assert_eq!(
            p.commit(&update(&tokens, 0, &frames, 300), &starts_word),
            0,
            "first decode"
        );
        // The second agrees through " my", and both go on with a new word: "And so my".
        let other = [AND, SO, MY, NOT, ASK];
        assert_eq!(p.commit(&update(&other, 0, &frames, 300), &starts_word), 3);
        p.reset();
        assert_eq!(
            p.commit(&update(&tokens, 0, &frames, 300), &starts_word),
            0,
            "reset forgets"
        );
    }

    #[test]
    fn alignatt_with_agreement_holds_a_word_one_decode_continues() {
        let mut p = AlignAtt::new(500, 4000).with_agreement(true);
        let frames = [10, 30, 60, 100];
        p.commit(&update(&[AND, SO, AMER, ICANS], 0, &frames, 300), &starts_word);
        // They agree through " Amer", which the first decode continues with "icans".
        let c = p.commit(&update(&[AND, SO, AMER, NOT], 0, &frames, 300), &starts_word);
        assert_eq!(c, 2, "`And so`: ` Amer` may be cut short");
    }

    #[test]
    fn alignatt_always_holds_the_hypothesis_last_word() {
        let mut p = AlignAtt::new(500, 4000);
        // Everything attended long before the end (the speaker paused): " fellow" is held.
        let c = p.commit(
            &update(&[AND, SO, MY, FELLOW], 0, &[10, 30, 60, 100], 400),
            &starts_word,
        );
        assert_eq!(c, 3);
    }

    #[test]
    fn alignatt_commits_nothing_without_attention() {
        let mut p = AlignAtt::new(500, 4000);
        assert_eq!(p.commit(&update(&[AND, SO, MY], 0, &[], 500), &starts_word), 0);
    }

    #[test]
    fn local_agreement_commits_the_common_prefix_of_two_hypotheses() {
        let mut p = LocalAgreement::default();
        assert_eq!(
            p.commit(&update(&[AND, SO, MY], 0, &[], 0), &starts_word),
            0,
            "needs two"
        );
        // Agree on "And so my", then differ: commit "And so my" (both continue with a word).
        let c = p.commit(&update(&[AND, SO, MY, FELLOW, NOT], 0, &[], 0), &starts_word);
        assert_eq!(
            c, 2,
            "the first hypothesis ends after `my`, so `my` may still grow: held"
        );
        let c = p.commit(&update(&[AND, SO, MY, FELLOW, ASK], 2, &[], 0), &starts_word);
        assert_eq!(c, 4, "agree through `fellow`; both continue with a new word");
    }

    #[test]
    fn local_agreement_holds_a_word_cut_inside() {
        let mut p = LocalAgreement::default();
        p.commit(&update(&[AND, SO, AMER, ICANS], 0, &[], 0), &starts_word);
        // Agree through " Amer", but the first continues it with "icans": hold " Amer".
        let c = p.commit(&update(&[AND, SO, AMER, NOT], 0, &[], 0), &starts_word);
        assert_eq!(
            c, 2,
            "`And so`: the agreed ` Amer` is held, one hypothesis continues it"
        );
    }

    #[test]
    fn policies_never_go_back() {
        let mut a = AlignAtt::new(500, 4000);
        let mut l = LocalAgreement::default();
        let tokens = [AND, SO, MY];
        assert_eq!(a.commit(&update(&tokens, 3, &[], 100), &starts_word), 3);
        l.commit(&update(&[AND, NOT], 0, &[], 0), &starts_word);
        assert_eq!(l.commit(&update(&tokens, 3, &[], 0), &starts_word), 3);
    }

    #[test]
    fn kind_parses_and_prints() {
        for k in [PolicyKind::Auto, PolicyKind::AlignAtt, PolicyKind::LocalAgreement] {
            assert_eq!(k.to_string().parse::<PolicyKind>().unwrap(), k);
        }
        assert!(
            "x".parse::<PolicyKind>()
                .unwrap_err()
                .to_string()
                .contains("commit_policy")
        );
    }
}
