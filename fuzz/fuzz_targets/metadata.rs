//! Model metadata: `steno::model::parse_metadata` on the encoder's `metadata_props` as a map.
//!
//! Input: UTF-8 text (invalid bytes replaced), one `key=value` per line (split at the first
//! `=`; a line without one is a key with an empty value; a later line for the same key wins).
//! Seeds are the real exports' metadata in that form.
//!
//! Properties: no panic; an error names the file; an `Ok` satisfies what the rest of steno
//! relies on: sizes in range (n_audio_ctx ≥ 1, n_text_ctx ≥ 2, heads dividing the width),
//! every token id inside the vocabulary, alignment heads inside the decoder, Whisper's order
//! of special tokens, 80 or 128 mel bins.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::path::Path;
use steno::model::parse_metadata;

const PATH: &str = "fuzz/tiny.en-encoder.onnx";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let map: HashMap<String, String> = text
        .lines()
        .map(|line| {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let result = parse_metadata(Path::new(PATH), map);
    if steno_fuzz::verbose() {
        eprintln!(
            "{:?}",
            result.as_ref().map(|(spec, _)| spec).map_err(ToString::to_string)
        );
    }
    let (spec, tokens) = match result {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(PATH), "error does not name the file: {message}");
            return;
        }
    };
    assert!(spec.n_audio_ctx >= 1, "n_audio_ctx {}", spec.n_audio_ctx);
    assert!(spec.n_text_ctx >= 2, "n_text_ctx {}", spec.n_text_ctx);
    assert!(spec.n_text_layer >= 1 && spec.n_text_head >= 1 && spec.n_text_state >= 1);
    assert_eq!(
        spec.head_dim() * spec.n_text_head,
        spec.n_text_state,
        "heads divide the width"
    );
    assert!(spec.n_mels == 80 || spec.n_mels == 128, "n_mels {}", spec.n_mels);
    let _ = spec.max_mel_frames();
    let n_vocab = spec.n_vocab;
    assert!(n_vocab >= 1);
    let specials = [
        ("eot", tokens.eot),
        ("sot", tokens.sot),
        ("transcribe", tokens.transcribe),
        ("translate", tokens.translate),
        ("sot_prev", tokens.sot_prev),
        ("sot_lm", tokens.sot_lm),
        ("no_speech", tokens.no_speech),
        ("no_timestamps", tokens.no_timestamps),
        ("timestamp_begin", tokens.timestamp_begin),
        ("blank", tokens.blank),
    ];
    for (name, id) in specials {
        assert!((id as usize) < n_vocab, "{name} {id} outside the vocabulary {n_vocab}");
    }
    for l in &tokens.languages {
        assert!((l.token as usize) < n_vocab, "language {} token {}", l.code, l.token);
        assert!(tokens.language(&l.code).is_some());
    }
    for &t in &tokens.non_speech {
        assert!((t as usize) < n_vocab, "non-speech token {t}");
    }
    for &(layer, head) in &spec.alignment_heads {
        assert!(
            layer < spec.n_text_layer && head < spec.n_text_head,
            "alignment head {layer}:{head}"
        );
    }
    assert!(
        tokens.timestamp_begin > tokens.no_timestamps,
        "timestamp_begin after no_timestamps"
    );
    assert_ne!(tokens.eot, tokens.sot);
    assert!(tokens.is_timestamp(tokens.timestamp_begin) && !tokens.is_timestamp(tokens.no_timestamps));
});
