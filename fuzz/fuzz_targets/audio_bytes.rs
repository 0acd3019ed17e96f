//! Audio decoding from bytes through the CLI's and the server's entry point,
//! `steno::audio::read_audio_bytes`, for every container steno sniffs or probes.
//!
//! Input: a whole file. The label's extension (symphonia's probe hint; `.wav` also changes
//! an error) is picked by the input's LAST byte: the first bytes of every container are its
//! magic, so a first-byte selector would tie each container to one hint, while the last byte
//! is sample payload the fuzzer can change without breaking the file. Seeds stay real files.
//!
//! Contract: no panic escapes (errors are fine). A panic steno catches inside (its
//! `no_panic` guard around third-party decoders) is reported and saved, not a crash; see
//! `steno_fuzz::report_caught_panics`. On `Ok`: finite samples, a channel count, a rate in
//! the accepted range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steno::audio::{MAX_SOURCE_RATE, MIN_SOURCE_RATE, read_audio_bytes};

const LABELS: [&str; 8] = [
    "fuzz.wav",
    "fuzz.flac",
    "fuzz.mp3",
    "fuzz.ogg",
    "fuzz.opus",
    "fuzz.m4a",
    "fuzz.aiff",
    "fuzz",
];

fuzz_target!(init: steno_fuzz::report_caught_panics(), |data: &[u8]| {
    let label = data.last().map_or("fuzz", |&b| LABELS[usize::from(b) % LABELS.len()]);
    let result = read_audio_bytes(data, label);
    steno_fuzz::check_caught_panic("audio_bytes", data);
    if steno_fuzz::verbose() {
        match &result {
            Ok(a) => eprintln!(
                "{label}: ok, {} samples at 16 kHz from {} Hz x{}",
                a.samples.len(),
                a.source_rate,
                a.source_channels
            ),
            Err(e) => eprintln!("{label}: error: {e}"),
        }
    }
    if let Ok(audio) = result {
        assert!(audio.source_channels >= 1, "{label}: no channels");
        assert!(
            (MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&audio.source_rate),
            "{label}: source rate {}",
            audio.source_rate
        );
        if let Some(i) = audio.samples.iter().position(|x| !x.is_finite()) {
            panic!("{label}: sample {i} is {}", audio.samples[i]);
        }
    }
});
