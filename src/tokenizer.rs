//! Token ids → text. Whisper's vocabulary is byte-level BPE: each text token is a byte string,
//! and a UTF-8 character may be split across tokens, so text is made by joining the bytes of a
//! run of tokens and decoding once (invalid sequences become U+FFFD, as tiktoken's
//! `errors="replace"` does). Special and timestamp tokens (ids ≥ end-of-text) carry no text.
//!
//! Input: `*-tokens.txt`, sherpa-onnx's format: one `<base64 of the token's bytes> <id>` per line
//! for every id below end-of-text.

use std::path::Path;

use base64::Engine as _;

use crate::error::{Error, Result};

/// Byte strings of the text tokens.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pieces: Vec<Vec<u8>>,
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
        Ok(Tokenizer { pieces })
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
