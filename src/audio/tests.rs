//! Audio input tests. All inputs are generated here (hound for PCM WAV, hand-built headers
//! for odd WAVs, opus-pure's encoder for Ogg Opus); nothing binary is committed.

use std::io::Cursor;
use std::path::Path;

use super::*;

fn spec(channels: u16, rate: u32, bits: u16, format: hound::SampleFormat) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: format,
    }
}

/// A WAV in memory, written by hound.
fn wav_with<S: hound::Sample + Copy>(spec: hound::WavSpec, samples: &[S]) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("valid spec");
    for &s in samples {
        w.write_sample(s).expect("in-memory write");
    }
    w.finalize().expect("in-memory finalize");
    out.into_inner()
}

fn int_wav(channels: u16, rate: u32, bits: u16, samples: &[i32]) -> Vec<u8> {
    wav_with(spec(channels, rate, bits, hound::SampleFormat::Int), samples)
}

/// A WAV with a hand-written 16-byte (PCM) or 18-byte (other tags) fmt chunk, for
/// headers hound will not write.
fn raw_wav(tag: u16, channels: u16, rate: u32, bits: u16, block_align: u16, data: &[u8]) -> Vec<u8> {
    let fmt_len: u32 = if tag == 1 { 16 } else { 18 };
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(4 + 8 + fmt_len + 8 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&fmt_len.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
    v.extend_from_slice(&block_align.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    if fmt_len == 18 {
        v.extend_from_slice(&0u16.to_le_bytes());
    }
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn sine(freq: f64, rate: u32, seconds: f64, amp: f64) -> Vec<f64> {
    let n = (f64::from(rate) * seconds).round() as usize;
    (0..n)
        .map(|i| amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
        .collect()
}

fn to_i16(x: &[f64]) -> Vec<i32> {
    x.iter().map(|v| (v * 32767.0).round() as i32).collect()
}

/// Upward zero crossings per second over the middle of the clip, away from edge effects.
fn estimated_freq(x: &[f32]) -> f64 {
    let mid = x.get(x.len() / 10..x.len() * 9 / 10).unwrap_or_default();
    let ups = mid.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    ups as f64 * f64::from(SAMPLE_RATE) / mid.len() as f64
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Every error is `<label>: <problem>` on one line.
fn assert_one_line(err: &AudioError, label: &str) {
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{label}: ")), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(err.path(), Path::new(label));
}

#[test]
fn int_depths_scale_to_unit_range() {
    // (bits, full-scale negative, half scale) -> -1.0 and 0.5 exactly.
    for (bits, min, half) in [
        (8u16, -128i32, 64i32),
        (16, -32768, 16384),
        (24, -8_388_608, 4_194_304),
        (32, i32::MIN, 1 << 30),
    ] {
        let bytes = int_wav(1, 16_000, bits, &[0, half, min, -half]);
        let a = read_audio_bytes(&bytes, "t.wav").expect("PCM WAV reads");
        assert_eq!(a.samples, [0.0, 0.5, -1.0, -0.5], "{bits}-bit");
        assert_eq!((a.source_rate, a.source_channels), (16_000, 1));
    }
}

#[test]
fn float_wav_passes_through() {
    let s = spec(1, 16_000, 32, hound::SampleFormat::Float);
    // Slightly past full scale (a hot float master) is left alone.
    let bytes = wav_with(s, &[0.25f32, -0.75, 1.0, -1.5, 3.9]);
    let a = read_audio_bytes(&bytes, "f.wav").expect("float WAV reads");
    assert_eq!(a.samples, [0.25, -0.75, 1.0, -1.5, 3.9]);
}

#[test]
fn non_finite_samples_are_an_error_naming_the_first_one() {
    let s = spec(2, 16_000, 32, hound::SampleFormat::Float);
    let mut samples = vec![0.1f32; 2 * 20_000];
    samples[2 * 16_000 + 1] = f32::NAN; // frame 16000 (1 s), channel 2
    samples[2 * 17_000] = f32::INFINITY;
    let err = read_audio_bytes(&wav_with(s, &samples), "nan.wav").expect_err("NaN refused");
    assert!(
        matches!(
            err,
            AudioError::NonFinite {
                frame: 16_000,
                channel: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "nan.wav: sample 16000 (at 1.000 s, channel 2) is NaN: the file is corrupt"
    );
    let s = spec(1, 8_000, 32, hound::SampleFormat::Float);
    let err = read_audio_bytes(&wav_with(s, &[0.0, 0.5, f32::NEG_INFINITY]), "inf.wav").expect_err("inf");
    assert_eq!(
        err.to_string(),
        "inf.wav: sample 2 (at 0.000 s, channel 1) is -inf: the file is corrupt"
    );
}

#[test]
fn float_samples_far_outside_full_scale_are_refused() {
    // A float WAV holding integer-scaled values (or 1e30s): never a hallucinated transcript.
    let s = spec(1, 16_000, 32, hound::SampleFormat::Float);
    let mut samples = vec![0.0f32; 48_000];
    samples[24_000] = 1e30;
    let err = read_audio_bytes(&wav_with(s, &samples), "loud.wav").expect_err("1e30 refused");
    assert!(matches!(err, AudioError::OutOfRange { frame: 24_000, .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "loud.wav: sample 24000 (at 1.500 s, channel 1) is 1000000000000000000000000000000, far outside [-1, 1]"
        ),
        "{err}"
    );
    let s = spec(1, 16_000, 32, hound::SampleFormat::Float);
    let err = read_audio_bytes(&wav_with(s, &[0.0, 12000.0, -3.0]), "int.wav").expect_err("int-scaled");
    assert!(
        err.to_string().contains("were integer values written as floats?"),
        "{err}"
    );
}

#[test]
fn one_sample_is_empty() {
    let err = read_audio_bytes(&int_wav(1, 16_000, 16, &[1000]), "one.wav").expect_err("one sample");
    assert_eq!(err.to_string(), "one.wav: file is empty (1 samples)");
    // Two are a (very short) file: no error, and no mel frame either.
    let a = read_audio_bytes(&int_wav(1, 16_000, 16, &[1000, -1000]), "two.wav").expect("two samples");
    assert_eq!(a.samples.len(), 2);
}

#[test]
fn duration_cap_is_an_error_and_streaming_matches_the_whole_read() {
    let x = sine(440.0, 44_100, 2.5, 0.5);
    let bytes = int_wav(
        2,
        44_100,
        16,
        &to_i16(&x.iter().flat_map(|&v| [v, -v]).collect::<Vec<_>>()),
    );
    let limits = AudioLimits {
        max_duration_s: Some(2.0),
    };
    let err = stream_audio_bytes(&bytes, "long.wav", &limits, &mut |_| Ok(())).expect_err("over the cap");
    assert_eq!(err.to_string(), "long.wav: audio is longer than the limit of 2 s");

    let whole = read_audio_bytes(&bytes, "long.wav").expect("reads");
    let mut streamed = Vec::new();
    let mut calls = 0;
    let info = stream_audio_bytes(&bytes, "long.wav", &AudioLimits::default(), &mut |chunk| {
        streamed.extend_from_slice(chunk);
        calls += 1;
        Ok(())
    })
    .expect("streams");
    assert!(calls > 5, "{calls} chunks");
    assert_eq!(streamed, whole.samples);
    assert_eq!(info.samples, whole.samples.len() as u64);
    assert_eq!((info.source_rate, info.source_channels), (44_100, 2));
    assert!((info.duration_s() - 2.5).abs() < 1e-3);

    // The consumer can stop the read; its error comes back.
    let err = stream_audio_bytes(&bytes, "long.wav", &AudioLimits::default(), &mut |_| {
        Err(AudioError::Stopped {
            path: "long.wav".into(),
        })
    })
    .expect_err("stopped");
    assert!(matches!(err, AudioError::Stopped { .. }), "{err:?}");
}

#[test]
fn channels_are_averaged() {
    let stereo = int_wav(2, 16_000, 16, &[16384, -8192, 0, 32767]);
    let a = read_audio_bytes(&stereo, "s.wav").expect("stereo reads");
    assert_eq!(a.source_channels, 2);
    assert_eq!(a.samples, [0.125, 32767.0 / 65536.0]);

    // Three channels (hound writes WAVE_FORMAT_EXTENSIBLE for > 2).
    let three = int_wav(3, 16_000, 16, &[3000, 6000, 9000, 0, 0, 0]);
    let a = read_audio_bytes(&three, "3.wav").expect("3-channel reads");
    assert_eq!(a.source_channels, 3);
    assert!((a.samples[0] - 6000.0 / 32768.0).abs() < 1e-7);
}

#[test]
fn resamples_44k1_and_8k_to_16k_keeping_the_pitch() {
    for (rate, freq) in [(44_100u32, 1000.0), (8_000, 440.0), (48_000, 3000.0)] {
        let x = sine(freq, rate, 1.0, 0.5);
        let bytes = int_wav(1, rate, 16, &to_i16(&x));
        let a = read_audio_bytes(&bytes, "r.wav").expect("reads");
        assert_eq!(a.source_rate, rate);
        assert_eq!(a.samples.len(), 16_000, "{rate} Hz: ceil(n * 16000 / rate)");
        assert!((a.duration_s() - 1.0).abs() < 1e-9);
        let f = estimated_freq(&a.samples);
        assert!((f - freq).abs() / freq < 0.01, "{rate} Hz: {freq} Hz came out as {f}");
        // Amplitude survives (0.5 peak -> 0.354 RMS), so nothing is attenuated or clipped.
        let r = rms(&a.samples[1600..14_400]);
        assert!((r - 0.5 / 2f64.sqrt()).abs() < 0.01, "{rate} Hz: rms {r}");
    }
}

#[test]
fn resample_to_16k_edge_cases() {
    let x = [0.1f32, -0.2, 0.3];
    assert_eq!(resample_to_16k(&x, 16_000).expect("passthrough"), x);
    assert!(resample_to_16k(&[], 44_100).expect("empty").is_empty());
    for bad in [0, 999, 768_001, u32::MAX] {
        let err = resample_to_16k(&x, bad).expect_err("out of range");
        assert!(matches!(err, AudioError::UnsupportedRate { rate, .. } if rate == bad));
    }
    let up = resample_to_16k(&[0.5; 800], 8_000).expect("8 kHz");
    assert_eq!(up.len(), 1600);
}

#[test]
fn missing_file_is_not_found() {
    let err = read_audio(Path::new("audio-samples/definitely-missing.wav")).expect_err("missing");
    assert!(matches!(err, AudioError::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "audio-samples/definitely-missing.wav: no such file");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn not_a_wav() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.wav");
    std::fs::write(&path, b"this is plainly a text file, not audio at all\n").expect("write");
    let err = read_audio(&path).expect_err("text is not audio");
    assert!(matches!(err, AudioError::NotWav { .. }), "{err:?}");
    assert!(
        err.to_string().ends_with("x.wav: not a WAV file (no RIFF header)"),
        "{err}"
    );

    let err = read_wav(Cursor::new(b"ID3\x04 not a wav"), "up.wav").expect_err("not WAV");
    assert!(matches!(err, AudioError::NotWav { .. }), "{err:?}");
    assert_one_line(&err, "up.wav");
}

#[test]
fn garbage_with_compressed_extensions_is_a_clean_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for ext in ["mp3", "flac", "ogg", "m4a", "aac", "opus", "webm", "bin"] {
        let path = dir.path().join(format!("junk.{ext}"));
        std::fs::write(&path, &garbage).expect("write");
        let label = path.display().to_string();
        match read_audio(&path) {
            Err(err) => assert_one_line(&err, &label),
            Ok(a) => panic!("{ext}: garbage decoded to {} samples", a.samples.len()),
        }
    }
}

#[test]
fn empty_inputs() {
    // A well-formed WAV with no samples.
    let bytes = int_wav(1, 16_000, 16, &[]);
    let err = read_audio_bytes(&bytes, "e.wav").expect_err("empty WAV");
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
    assert_eq!(err.to_string(), "e.wav: file is empty (0 samples)");
    let err = read_wav(Cursor::new(&bytes), "e.wav").expect_err("empty WAV");
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");

    // A zero-byte file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("zero.wav");
    std::fs::write(&path, b"").expect("write");
    let err = read_audio(&path).expect_err("0 bytes");
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
}

#[test]
fn truncated_header_and_data() {
    let full = int_wav(1, 16_000, 16, &[1000; 100]);
    for cut in 12..44 {
        let err = read_audio_bytes(&full[..cut], "h.wav").expect_err("cut header");
        assert!(matches!(err, AudioError::TruncatedHeader { .. }), "cut {cut}: {err:?}");
        assert_eq!(err.to_string(), "h.wav: truncated WAV header");
    }
    for cut in 0..12 {
        assert!(read_wav(Cursor::new(&full[..cut]), "h.wav").is_err());
        assert!(read_audio_bytes(&full[..cut], "h.wav").is_err());
    }
    let err = read_audio_bytes(&full[..full.len() - 51], "d.wav").expect_err("cut data");
    assert!(
        matches!(
            err,
            AudioError::TruncatedData {
                expected: 100,
                got: 74,
                ..
            }
        ),
        "{err:?}"
    );
    assert_one_line(&err, "d.wav");
}

#[test]
fn odd_headers_are_errors_not_panics() {
    let data = [0u8; 64];
    // Zero channels, zero rate, absurd rate, MP3-in-WAV, unknown tag, 12-bit, 64-bit float.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero channels", raw_wav(1, 0, 16_000, 16, 2, &data)),
        ("zero rate", raw_wav(1, 1, 0, 16, 2, &data)),
        ("absurd rate", raw_wav(1, 1, 4_000_000_000, 16, 2, &data)),
        ("too high a rate", raw_wav(1, 1, 3_000_000, 16, 2, &data)),
        ("mp3 in wav", raw_wav(0x55, 1, 16_000, 0, 1, &data)),
        ("unknown tag", raw_wav(0x1234, 1, 16_000, 16, 2, &data)),
        ("12-bit", raw_wav(1, 1, 16_000, 12, 2, &data)),
        ("64-bit float", raw_wav(3, 1, 16_000, 64, 8, &data)),
    ];
    for (what, bytes) in &cases {
        let r = read_audio_bytes(bytes, "o.wav");
        let r2 = read_wav(Cursor::new(bytes), "o.wav");
        for r in [r, r2] {
            match r {
                Err(e) => assert_one_line(&e, "o.wav"),
                // symphonia may well decode the 12-bit and 64-bit float ones.
                Ok(a) => assert!(
                    matches!(*what, "12-bit" | "64-bit float") && !a.samples.is_empty(),
                    "{what}: unexpectedly decoded"
                ),
            }
        }
    }
    let err = read_audio_bytes(&cases[0].1, "o.wav").expect_err("0 channels");
    assert!(matches!(err, AudioError::MalformedWav { .. }), "{err:?}");
    let err = read_audio_bytes(&cases[1].1, "o.wav").expect_err("0 Hz");
    assert!(matches!(err, AudioError::UnsupportedRate { rate: 0, .. }), "{err:?}");
    // 4 GHz x 2 bytes overflows the header's byte rate, which hound rejects first.
    let err = read_audio_bytes(&cases[2].1, "o.wav").expect_err("4 GHz");
    assert!(matches!(err, AudioError::MalformedWav { .. }), "{err:?}");
    let err = read_audio_bytes(&cases[3].1, "o.wav").expect_err("3 MHz");
    assert!(
        matches!(err, AudioError::UnsupportedRate { rate: 3_000_000, .. }),
        "{err:?}"
    );
    let err = read_audio_bytes(&cases[4].1, "o.wav").expect_err("MP3 in WAV");
    assert_eq!(err.to_string(), "o.wav: unsupported WAV format: MP3 in WAV");
    let err = read_audio_bytes(&cases[5].1, "o.wav").expect_err("tag 0x1234");
    assert_eq!(err.to_string(), "o.wav: unsupported WAV format: format tag 0x1234");
}

#[test]
fn header_lying_about_length_does_not_allocate_it() {
    let mut bytes = int_wav(1, 16_000, 16, &[500; 10]);
    let n = bytes.len();
    // data chunk length field sits 4 bytes before the 20 data bytes.
    bytes[n - 24..n - 20].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let err = read_audio_bytes(&bytes, "lie.wav").expect_err("short data");
    assert!(matches!(err, AudioError::TruncatedData { got: 10, .. }), "{err:?}");
}

/// µ-law is not hound's: this goes through the symphonia fallback (probe, decode loop,
/// downmix, resample), the same path FLAC/MP3/Vorbis/AAC take.
#[test]
fn mulaw_wav_goes_through_symphonia() {
    // 0xFF is µ-law zero; 0x80 / 0x00 are the extremes. 8 kHz stereo, 0.5 s.
    let data: Vec<u8> = (0..8000)
        .flat_map(|i| [if i % 2 == 0 { 0x80 } else { 0x00 }, 0xFF])
        .collect();
    let bytes = raw_wav(7, 2, 8_000, 8, 2, &data);
    let a = read_audio_bytes(&bytes, "mu.wav").expect("µ-law via symphonia");
    assert_eq!((a.source_rate, a.source_channels), (8_000, 2));
    assert_eq!(a.samples.len(), 16_000);
    // Right channel silent, left at ±~0.98: the mean is about ±0.49.
    let peak = a.samples.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    assert!((0.4..0.6).contains(&peak), "peak {peak}");
}

/// Encodes interleaved f32 at 48 kHz to an in-memory Ogg Opus file.
fn ogg_opus(pcm: &[f32], channels: usize) -> Vec<u8> {
    use opus_pure::{Application, MAX_PACKET_BYTES, OggOpusWriter, OpusEncoder, OpusHead};
    let frame = 960; // 20 ms at 48 kHz
    let mut enc = OpusEncoder::new(48_000, channels, Application::Audio).expect("encoder");
    let head = OpusHead::for_encoder(&enc, 48_000);
    let mut w = OggOpusWriter::new(Vec::new(), head).expect("writer");
    let mut packet = vec![0u8; MAX_PACKET_BYTES];
    for block in pcm.chunks_exact(frame * channels) {
        let n = enc.encode(block, frame, &mut packet).expect("encode");
        w.write_packet(&packet[..n]).expect("write");
    }
    w.finish().expect("finish")
}

#[test]
fn ogg_opus_decodes_at_16k() {
    let x: Vec<f32> = sine(440.0, 48_000, 1.0, 0.5)
        .iter()
        .flat_map(|&v| [v as f32, v as f32])
        .collect();
    let bytes = ogg_opus(&x, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    // Sniffed by content: the wrong extension does not matter.
    let path = dir.path().join("speech.ogg");
    std::fs::write(&path, &bytes).expect("write");
    let a = read_audio(&path).expect("Ogg Opus reads");
    assert_eq!((a.source_rate, a.source_channels), (48_000, 2));
    // 50 whole 20 ms frames, less the encoder's pre-skip trimmed at the front.
    assert!((15_500..=16_000).contains(&a.samples.len()), "{}", a.samples.len());
    let f = estimated_freq(&a.samples);
    assert!((f - 440.0).abs() < 5.0, "440 Hz came out as {f}");

    // Damaged Opus: every truncation and a scattering of flipped bytes, no panic.
    for cut in (0..bytes.len()).step_by(7) {
        if let Err(e) = read_audio_bytes(&bytes[..cut], "cut.opus") {
            assert_one_line(&e, "cut.opus");
        }
    }
    for i in (40..bytes.len()).step_by(13) {
        let mut b = bytes.clone();
        b[i] ^= 0x5A;
        if let Err(e) = read_audio_bytes(&b, "flip.opus") {
            assert_one_line(&e, "flip.opus");
        }
    }
}

#[test]
fn damaged_wavs_never_panic() {
    let good = int_wav(
        2,
        22_050,
        24,
        &(0..2000)
            .map(|i| (i * 4001) % 8_000_000 - 4_000_000)
            .collect::<Vec<_>>(),
    );
    let mulaw = raw_wav(7, 1, 8_000, 8, 1, &[0x10; 500]);
    for base in [&good, &mulaw] {
        for cut in (0..base.len()).step_by(11) {
            let _ = read_audio_bytes(&base[..cut], "c.wav");
            let _ = read_wav(Cursor::new(&base[..cut]), "c.wav");
        }
        for i in 0..60.min(base.len()) {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut b = base.clone();
                b[i] ^= flip;
                if let Err(e) = read_audio_bytes(&b, "f.wav") {
                    assert_one_line(&e, "f.wav");
                }
            }
        }
    }
}

#[test]
fn read_wav_matches_read_audio() {
    let x = sine(300.0, 22_050, 0.3, 0.4);
    let bytes = int_wav(1, 22_050, 16, &to_i16(&x));
    let a = read_audio_bytes(&bytes, "a.wav").expect("reads");
    let b = read_wav(Cursor::new(&bytes), "a.wav").expect("reads");
    assert_eq!(a, b);
    assert_eq!(a.samples.len(), 4800);
}

/// symphonia-format-riff 0.6.1 overflows a shift (a panic with overflow checks on, as in
/// test builds) on a WAVE_FORMAT_EXTENSIBLE header whose channel mask is far short of its
/// channel count. Here hound declines the 12-bit samples, symphonia gets the file as the
/// fallback, and its panic must come back as an error.
#[test]
fn decoder_panic_is_contained() {
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&0xFFFEu16.to_le_bytes()); // WAVE_FORMAT_EXTENSIBLE
    fmt.extend_from_slice(&130u16.to_le_bytes()); // channels
    fmt.extend_from_slice(&8_000u32.to_le_bytes());
    fmt.extend_from_slice(&(8_000u32 * 260).to_le_bytes());
    fmt.extend_from_slice(&260u16.to_le_bytes()); // block align
    fmt.extend_from_slice(&16u16.to_le_bytes()); // container bits
    fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
    fmt.extend_from_slice(&12u16.to_le_bytes()); // valid bits
    fmt.extend_from_slice(&3u32.to_le_bytes()); // channel mask: 2 channels of 130
    // KSDATAFORMAT_SUBTYPE_PCM
    fmt.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]);
    let data = [0u8; 2600];
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(4 + 8 + fmt.len() as u32 + 8 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    v.extend_from_slice(&fmt);
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(&data);
    match read_audio_bytes(&v, "mask.wav") {
        Err(err) => {
            assert_one_line(&err, "mask.wav");
            assert_eq!(
                err.to_string(),
                "mask.wav: cannot decode: decoder crashed on malformed data"
            );
        }
        // Without overflow checks (release) the shift wraps and symphonia reads on.
        Ok(a) => {
            if cfg!(debug_assertions) {
                panic!("expected the contained panic, got {} samples", a.samples.len());
            }
        }
    }
}
