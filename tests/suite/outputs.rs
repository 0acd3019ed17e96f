//! Golden files for the writers: a fixed transcript (tests/golden/synthetic.*) exercising
//! hours, `-->` in text and tabs, and a real one (tests/golden/jfk.* from tiny.en greedy; see
//! tests/golden/README.md for the command that made them).

use steno::output::{self, Format};
use steno::{Segment, Transcript};

use super::common::*;

fn synthetic() -> Transcript {
    let segment = |id, start, end, text: &str, temperature| Segment {
        id,
        start,
        end,
        text: text.into(),
        tokens: vec![50364, 15947, 50489],
        avg_logprob: -0.25,
        no_speech_prob: 0.015625,
        temperature,
        compression_ratio: 0.75,
        words: None,
    };
    Transcript {
        segments: vec![
            segment(0, 0.0, 2.5, " Hello world.", 0.0),
            segment(1, 3723.04, 3725.5, " A --> B,\tan hour later.", 0.2),
        ],
        language: Some("en".into()),
        duration: 3725.5,
    }
}

fn render(t: &Transcript, format: Format, path: Option<&str>) -> String {
    let mut out = Vec::new();
    output::write(&mut out, t, format, path).expect("write");
    String::from_utf8(out).expect("utf-8")
}

fn golden(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/golden").join(name)).expect("golden file")
}

#[test]
fn synthetic_transcript_matches_golden_files() {
    let t = synthetic();
    for (format, file) in [
        (Format::Srt, "synthetic.srt"),
        (Format::Vtt, "synthetic.vtt"),
        (Format::Tsv, "synthetic.tsv"),
        (Format::Txt, "synthetic.txt"),
    ] {
        assert_eq!(render(&t, format, None), golden(file), "{file}");
    }
    let json: serde_json::Value = serde_json::from_str(&render(&t, Format::Json, Some("a.wav"))).unwrap();
    let want: serde_json::Value = serde_json::from_str(&golden("synthetic.json")).unwrap();
    assert_eq!(json, want);
}

#[test]
fn jfk_subtitles_match_golden_files() {
    for (format, file) in [("srt", "jfk.srt"), ("vtt", "jfk.vtt")] {
        let run = steno(&[
            "transcribe",
            "audio-samples/jfk.wav",
            "-f",
            format,
            "--beam-size",
            "1",
            "--threads",
            "1",
        ]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(run.stdout, golden(file), "{file}");
    }
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "-f",
        "json",
        "--beam-size",
        "1",
        "--threads",
        "1",
    ]);
    let got: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let want: serde_json::Value = serde_json::from_str(&golden("jfk.json")).unwrap();
    // Times, text and tokens exactly; the float quality fields to 1e-3 (CPU kernels differ in the last bits).
    for key in ["text", "duration", "language", "file"] {
        assert_eq!(got[key], want[key], "{key}");
    }
    let (g, w) = (
        got["segments"].as_array().unwrap(),
        want["segments"].as_array().unwrap(),
    );
    assert_eq!(g.len(), w.len());
    for (gs, ws) in g.iter().zip(w) {
        for key in ["id", "start", "end", "text", "tokens", "temperature"] {
            assert_eq!(gs[key], ws[key], "{key}");
        }
        for key in ["avg_logprob", "no_speech_prob", "compression_ratio"] {
            let (a, b) = (gs[key].as_f64().unwrap(), ws[key].as_f64().unwrap());
            assert!((a - b).abs() < 1e-3, "{key}: {a} vs {b}");
        }
    }
}
