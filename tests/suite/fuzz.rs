//! Regressions for the fuzz targets (`fuzz/`), each over its minimised input in
//! `tests/fixtures/fuzz/` (that folder's README says which target found what). No model needed.
//!
//! | test | asserts |
//! |---|---|
//! | `metadata_no_timestamps_at_u32_max_is_an_error` | metadata without `timestamp_begin` and `no_timestamps` = u32::MAX: an error naming the key, not an overflow (a panic in builds with overflow checks) |
//! | `log_mel_stream_equals_batch_with_a_nan_under_a_zero_window_weight` | the streamed log-mel frames are bit-identical to the batch ones when sample 200 (reached by frame 0's left reflection with window weight 0, before it arrives) is NaN and others are huge |
//! | `riff_with_an_overflowing_block_align_is_an_error` | a RIFF header one byte into the data (so symphonia's probe, not hound, reads it) whose channel count overflows symphonia's block-align product: an error naming the file, not a panic |

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `metadata` target's input format: `key=value` lines.
fn metadata_map(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(|line| line.split_once('=').unwrap_or((line, "")))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn metadata_no_timestamps_at_u32_max_is_an_error() {
    let text = String::from_utf8(fixture("metadata-no-timestamps-overflow.txt")).unwrap();
    let err = steno::model::parse_metadata(Path::new("m/enc.onnx"), metadata_map(&text))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("m/enc.onnx: metadata `no_timestamps`: 4294967295"),
        "{err}"
    );
}

/// The `log_mel` target's input: `[k] [r] [k chunk-size bytes] [f32 LE samples]` (see
/// `fuzz/fuzz_targets/log_mel.rs`): the chunk sizes (cycled) and the samples (repeated).
fn log_mel_input(data: &[u8]) -> (Vec<usize>, Vec<f32>) {
    let (k, r) = (usize::from(data[0] % 8), 1 + usize::from(data[1] % 4));
    let sizes = data[2..2 + k]
        .iter()
        .map(|&b| {
            if b < 200 {
                usize::from(b) + 1
            } else {
                (usize::from(b) - 199) * 500
            }
        })
        .collect();
    let one: Vec<f32> = data[2 + k..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (sizes, one.iter().copied().cycle().take(one.len() * r).collect())
}

#[test]
fn log_mel_stream_equals_batch_with_a_nan_under_a_zero_window_weight() {
    use steno::features::{LogMel, MelStream};
    let (sizes, samples) = log_mel_input(&fixture("log_mel-nan-at-sample-200.bin"));
    assert!(samples[200].is_nan());
    let log_mel = LogMel::new(80).unwrap();
    let batch = log_mel.log10_mel(&samples);
    let mut stream = MelStream::new(log_mel);
    let mut pushed = 0;
    for &n in sizes.iter().cycle() {
        if pushed == samples.len() {
            break;
        }
        let end = (pushed + n).min(samples.len());
        stream.push(&samples[pushed..end]);
        pushed = end;
    }
    stream.finish();
    assert_eq!(stream.frames_end() as usize, batch.n_frames());
    for t in 0..batch.n_frames() {
        for (m, &x) in stream.frame(t as u64).unwrap().iter().enumerate() {
            let y = batch.get(m, t).unwrap();
            assert_eq!(x.to_bits(), y.to_bits(), "frame {t} bin {m}: stream {x}, batch {y}");
        }
    }
}

#[test]
fn riff_with_an_overflowing_block_align_is_an_error() {
    // The `audio_bytes` target labels an input by its last byte: 0x00 is `.wav`.
    let bytes = fixture("audio-riff-fmt-block-align-overflow.bin");
    let err = steno::audio::read_audio_bytes(&bytes, "fuzz.wav").unwrap_err();
    assert!(err.to_string().starts_with("fuzz.wav"), "{err}");
}
