//! The tokenizer with the real tiny.en table: ids → bytes → text (`decode_bytes`, `decode`)
//! on arbitrary ids, in and out of range, and text → ids (`encode`) on arbitrary UTF-8.
//!
//! The table: `$STENO_TOKENS` (default `models/whisper-tiny.en/tiny.en-tokens.txt`, made by
//! `models/provision`), end-of-text `$STENO_EOT` (default tiny.en's 50256).
//!
//! Input, read two ways: as text (UTF-8, invalid bytes replaced) for `encode`; as ids, u16
//! LE each (0..65535: text tokens, specials, timestamps and past the vocabulary), where
//! 0xFFFF takes the next 4 bytes as a raw u32 (up to u32::MAX).
//!
//! Properties: no panic; `decode(encode(text)) == text` (byte-exact); `encode` yields only
//! text tokens; `decode_bytes` is the concatenation of `bytes(id)`, with nothing for ids at
//! or past end-of-text; `decode` is its lossy UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use steno::tokenizer::Tokenizer;

struct Table {
    tokenizer: Tokenizer,
    eot: u32,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let path = std::env::var_os("STENO_TOKENS").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/whisper-tiny.en/tiny.en-tokens.txt"
            ))
        });
        let eot = std::env::var("STENO_EOT")
            .ok()
            .map_or(50256, |s| s.parse().expect("STENO_EOT: a token id"));
        let tokenizer = Tokenizer::load(&path, eot)
            .unwrap_or_else(|e| panic!("cannot load the token table (set STENO_TOKENS, or run models/provision): {e}"));
        Table { tokenizer, eot }
    })
}

fn ids(data: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let id = u16::from_le_bytes([*a, *b]);
        rest = tail;
        if id == u16::MAX
            && let [a, b, c, d, tail @ ..] = rest
        {
            out.push(u32::from_le_bytes([*a, *b, *c, *d]));
            rest = tail;
            continue;
        }
        out.push(u32::from(id));
    }
    out
}

fn check_round_trip(tok: &Tokenizer, eot: u32, text: &str) {
    let encoded = tok.encode(text);
    if let Some(&bad) = encoded.iter().find(|&&t| t >= eot) {
        panic!("encode({text:?}) produced non-text token {bad}");
    }
    assert_eq!(
        tok.decode_bytes(&encoded),
        text.as_bytes(),
        "decode_bytes(encode({text:?}))"
    );
    assert_eq!(tok.decode(&encoded), text, "decode(encode(text))");
}

fuzz_target!(init: { table(); }, |data: &[u8]| {
    let Table { tokenizer: tok, eot } = table();
    let eot = *eot;

    // Text → ids → text.
    let text = String::from_utf8_lossy(data);
    check_round_trip(tok, eot, &text);

    // Ids → bytes → text.
    let ids = ids(data);
    let bytes = tok.decode_bytes(&ids);
    let mut expected = Vec::new();
    for &id in &ids {
        match tok.bytes(id) {
            Some(b) => {
                assert!(id < eot, "bytes({id}) is Some past end-of-text {eot}");
                expected.extend_from_slice(b);
            }
            None => assert!(id >= eot, "text token {id} has no bytes"),
        }
    }
    assert_eq!(bytes, expected, "decode_bytes is the concatenation of bytes(id)");
    let decoded = tok.decode(&ids);
    assert_eq!(decoded, String::from_utf8_lossy(&bytes));
    // What the decoder shows (lossy text, U+FFFD and all) encodes back to itself.
    check_round_trip(tok, eot, &decoded);
});
