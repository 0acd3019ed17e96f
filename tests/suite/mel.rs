//! The log-Mel front end against a golden fixture computed by Whisper's algorithm
//! (tests/fixtures/make_mel_golden.py made it: the first 3 s of audio-samples/jfk.wav,
//! [n_mels][300] little-endian f32).

use steno::audio::read_audio;
use steno::features::LogMel;

use super::common::{root, sample};

#[test]
fn log_mel_matches_whisper_golden() {
    let audio = read_audio(&sample("jfk.wav")).expect("jfk.wav reads");
    assert_eq!((audio.source_rate, audio.source_channels), (16_000, 1));
    let clip = audio.samples.get(..48_000).expect("jfk.wav is longer than 3 s");
    for n_mels in [80usize, 128] {
        let fixture = root().join(format!("tests/fixtures/jfk_3s_mel{n_mels}.f32"));
        let bytes = std::fs::read(&fixture).expect("golden fixture present");
        let want: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(want.len(), n_mels * 300, "{}", fixture.display());

        let mut mel = LogMel::new(n_mels).expect("supported").log10_mel(clip);
        mel.normalize_whisper();
        assert_eq!((mel.n_mels(), mel.n_frames()), (n_mels, 300));
        let (worst, at) = mel
            .data()
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .fold((0.0f32, 0), |(w, at), (i, d)| if d > w { (d, i) } else { (w, at) });
        assert!(
            worst <= 1e-4,
            "mel{n_mels}: max |diff| {worst} > 1e-4 at bin {} frame {}",
            at / 300,
            at % 300
        );
    }
}
