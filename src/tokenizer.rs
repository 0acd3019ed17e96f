//! Token ids → text. Whisper's vocabulary is byte-level BPE: each text token is a byte string,
//! and a UTF-8 character may be split across tokens, so text is made by joining the bytes of a
//! run of tokens and decoding once (invalid sequences become U+FFFD, as tiktoken's
//! `errors="replace"` does). Special and timestamp tokens (ids ≥ end-of-text) carry no text.
//!
//! Input: `*-tokens.txt`, sherpa-onnx's format: one `<base64 of the token's bytes> <id>` per line
//! for every id below end-of-text.
//!
//! Text → tokens ([`Tokenizer::encode`], for prompts) ports tiktoken's byte-level BPE
//! (`src/lib.rs`, `byte_pair_encode` / `_byte_pair_merge`, tiktoken 0.9) with the GPT-2
//! pre-tokenizer pattern Whisper's `tokenizer.py` uses. Whisper's vocabularies rank merges by
//! token id (the id *is* the tiktoken rank), so the table above is all BPE needs. Deviations:
//! - the merge loop is the quadratic textbook form (tiktoken's is the same algorithm with a
//!   cached rank per position); prompts are at most a few hundred tokens;
//! - a byte string listed under two ids keeps the lower id (tiktoken's files have no duplicates);
//! - special tokens are never produced from text (tiktoken's `encode_ordinary`).

// Input path: whatever a user or the network feeds steno passes through here, so nothing
// may panic on it (tests are exempt: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;

use crate::error::{Error, Result};

/// GPT-2's pre-tokenizer (Whisper `tokenizer.py`, tiktoken's `gpt2` pattern).
const PRETOKENIZE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Byte strings of the text tokens.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pieces: Vec<Vec<u8>>,
    /// Bytes → id, built on the first [`Tokenizer::encode`].
    ranks: OnceLock<HashMap<Vec<u8>, u32>>,
}

impl Tokenizer {
    /// Read `path`; `eot` is the first special id (the table must cover every id below it).
    pub fn load(path: &Path, eot: u32) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, eot).map_err(|(line, problem)| Error::Format {
            path: path.to_path_buf(),
            line,
            problem,
        })
    }

    fn parse(text: &str, eot: u32) -> std::result::Result<Tokenizer, (usize, String)> {
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; eot as usize];
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            // The base64 field is empty for a token with no bytes, so split at the last space.
            let (b64, id) = line.rsplit_once(' ').unwrap_or(("", line));
            let id: usize = id
                .trim()
                .parse()
                .map_err(|_| (line_no, format!("`{id}` is not a token id")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| (line_no, format!("bad base64: {e}")))?;
            // Ids at or past end-of-text are specials; their text (if a table lists them) is unused.
            if let Some(slot) = pieces.get_mut(id) {
                *slot = Some(bytes);
            }
        }
        let pieces = pieces
            .into_iter()
            .enumerate()
            .map(|(id, p)| p.ok_or((0, format!("token {id} is missing (the table must list 0..{eot})"))))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Tokenizer {
            pieces,
            ranks: OnceLock::new(),
        })
    }

    /// Text → token ids by byte-level BPE (see the module doc). Never yields special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let ranks = self.ranks.get_or_init(|| {
            let mut map = HashMap::with_capacity(self.pieces.len());
            for (id, piece) in self.pieces.iter().enumerate() {
                if !piece.is_empty() {
                    map.entry(piece.clone()).or_insert(id as u32);
                }
            }
            map
        });
        static PATTERN: OnceLock<fancy_regex::Regex> = OnceLock::new();
        let pattern = PATTERN.get_or_init(|| {
            fancy_regex::Regex::new(PRETOKENIZE).unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
        });
        let mut out = Vec::new();
        // A regex that gives up (backtracking limit) leaves the rest as one piece: still exact
        // BPE, only a coarser split.
        let mut rest_from = 0;
        for found in pattern.find_iter(text) {
            let Ok(m) = found else { break };
            byte_pair_encode(m.as_str().as_bytes(), ranks, &mut out);
            rest_from = m.end();
        }
        if rest_from < text.len() {
            byte_pair_encode(text.as_bytes().get(rest_from..).unwrap_or_default(), ranks, &mut out);
        }
        out
    }

    /// The bytes of a text token; `None` for special and timestamp tokens.
    pub fn bytes(&self, token: u32) -> Option<&[u8]> {
        self.pieces.get(token as usize).map(Vec::as_slice)
    }

    /// Text of a token sequence; specials and timestamps are skipped.
    pub fn decode(&self, tokens: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(tokens)).into_owned()
    }

    /// Raw bytes of a token sequence (may end inside a UTF-8 character).
    pub fn decode_bytes(&self, tokens: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &t in tokens {
            if let Some(b) = self.bytes(t) {
                out.extend_from_slice(b);
            }
        }
        out
    }
}

/// tiktoken's `byte_pair_encode`: merge the adjacent pair of parts whose joined bytes have the
/// lowest rank until no joined pair is a token. Every single byte is a token in Whisper's
/// vocabularies; a byte that is not (a damaged table) is skipped.
fn byte_pair_encode(piece: &[u8], ranks: &HashMap<Vec<u8>, u32>, out: &mut Vec<u32>) {
    if piece.is_empty() {
        return;
    }
    if let Some(&id) = ranks.get(piece) {
        out.push(id);
        return;
    }
    // Part i is piece[bounds[i]..bounds[i + 1]].
    let mut bounds: Vec<usize> = (0..=piece.len()).collect();
    loop {
        let best = bounds
            .windows(3)
            .enumerate()
            .filter_map(|(i, w)| match *w {
                [from, _, to] => ranks.get(piece.get(from..to)?).map(|&rank| (rank, i)),
                _ => None,
            })
            .min();
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    out.extend(bounds.windows(2).filter_map(|w| match *w {
        [from, to] => ranks.get(piece.get(from..to)?).copied(),
        _ => None,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn table(pieces: &[&[u8]]) -> Tokenizer {
        let text: String = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} {i}\n", b64(p)))
            .collect();
        Tokenizer::parse(&text, pieces.len() as u32).unwrap()
    }

    #[test]
    fn bpe_merges_lowest_rank_first() {
        // Ranks are ids: "ab" (3) merges before "bc" (4), so "abc" → ["ab", "c"].
        let t = table(&[b"a", b"b", b"c", b"ab", b"bc", b" "]);
        assert_eq!(t.encode("abc"), vec![3, 2]);
        // The pre-tokenizer keeps the leading space with the word: " ab" is " " + "ab".
        assert_eq!(t.encode("ab ab"), vec![3, 5, 3]);
    }

    #[test]
    fn bpe_whole_piece_is_one_token() {
        let t = table(&[b"a", b"b", b"ba", b" ab"]);
        assert_eq!(t.encode(" ab"), vec![3]);
        assert_eq!(t.encode("ba"), vec![2]);
    }

    #[test]
    fn utf8_split_across_tokens_is_joined() {
        // "é" is C3 A9: split over two tokens, it must come out whole.
        let t = table(&[b" caf", b"\xC3", b"\xA9", b"!"]);
        assert_eq!(t.decode(&[0, 1, 2, 3]), " café!");
    }

    #[test]
    fn specials_and_timestamps_carry_no_text() {
        let t = table(&[b"a", b"b"]);
        assert_eq!(t.decode(&[2, 0, 50363, 1, 9999]), "ab");
    }

    #[test]
    fn dangling_partial_character_becomes_replacement() {
        let t = table(&[b"x", b"\xE2\x82"]);
        assert_eq!(t.decode(&[0, 1]), "x\u{FFFD}");
    }

    #[test]
    fn empty_token_line_parses() {
        // base's vocabulary has a token with no bytes: the line is " <id>".
        let tok = Tokenizer::parse(&format!("{} 0\n 1\n", b64(b"hi")), 2).unwrap();
        assert_eq!(tok.decode(&[0, 1]), "hi");
    }

    #[test]
    fn missing_id_is_an_error_naming_it() {
        let err = Tokenizer::parse(&format!("{} 0\n", b64(b"a")), 2).unwrap_err();
        assert!(err.1.contains("token 1 is missing"), "{err:?}");
    }

    #[test]
    fn bad_base64_names_the_line() {
        let err = Tokenizer::parse(&format!("{} 0\n!!! 1\n", b64(b"a")), 2).unwrap_err();
        assert_eq!(err.0, 2);
    }
}
