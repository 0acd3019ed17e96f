//! The `steno` binary on audio-samples/: transcripts, formats, batches, and the bad inputs a
//! user meets (each a one-line error naming the file, a non-zero exit, never a panic).

use super::common::*;

fn normalized(text: &str) -> String {
    normalizer().normalize(text)
}

#[test]
fn transcribes_jfk_as_text() {
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "--beam-size",
        "1",
        "--threads",
        "1",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(normalized(&run.stdout), JFK_NORMALIZED);
    assert_eq!(
        run.stderr, "",
        "nothing on stderr (no progress bar when it is not a terminal)"
    );
}

#[test]
fn json_has_timed_segments_with_quality_fields() {
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
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(normalized(doc["text"].as_str().unwrap()), JFK_NORMALIZED);
    assert_eq!(doc["duration"].as_f64(), Some(11.0));
    let segments = doc["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    let mut last_end = 0.0;
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s["id"].as_u64(), Some(i as u64));
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(start >= last_end && end > start && end <= 11.0, "{s}");
        last_end = end;
        for field in [
            "avg_logprob",
            "no_speech_prob",
            "temperature",
            "compression_ratio",
            "tokens",
            "text",
        ] {
            assert!(!s[field].is_null(), "segment lacks {field}: {s}");
        }
    }
}

/// Write `bytes` as `name` in a temp dir and transcribe it.
fn transcribe_bytes(name: &str, bytes: &[u8]) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (steno(&["transcribe", path.to_str().unwrap(), "--threads", "1"]), dir)
}

fn assert_one_line_error(run: &Run, file: &str, problem: &str) {
    assert_eq!(run.code, Some(1), "exit code; stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stderr);
    assert!(
        lines[0].starts_with("steno: error: ") && lines[0].contains(file),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(problem), "expected `{problem}` in: {}", lines[0]);
}

#[test]
fn missing_file_is_a_one_line_error() {
    let run = steno(&["transcribe", "audio-samples/no-such-file.wav", "--threads", "1"]);
    assert_one_line_error(&run, "no-such-file.wav", "no such file");
}

#[test]
fn not_a_wav_is_a_one_line_error() {
    let (run, _dir) = transcribe_bytes("notes.wav", b"these are not audio samples\n");
    assert_one_line_error(&run, "notes.wav", "not");
}

#[test]
fn empty_wav_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.wav");
    write_wav(&path, &[]);
    let run = steno(&["transcribe", path.to_str().unwrap(), "--threads", "1"]);
    assert_one_line_error(&run, "empty.wav", "empty");
}

#[test]
fn truncated_header_is_a_one_line_error() {
    let wav = std::fs::read(sample("jfk.wav")).unwrap();
    let (run, _dir) = transcribe_bytes("cut.wav", &wav[..30]);
    assert_one_line_error(&run, "cut.wav", "truncated");
}

#[test]
fn a_bad_file_does_not_stop_the_batch() {
    let run = steno(&[
        "transcribe",
        "audio-samples/missing.wav",
        "audio-samples/2830-3980-0043.wav",
        "--beam-size",
        "1",
        "--threads",
        "1",
    ]);
    assert_eq!(run.code, Some(1), "some files failed");
    assert!(run.stderr.contains("missing.wav: no such file"), "{}", run.stderr);
    assert!(run.stderr.contains("1 of 2 files failed"), "{}", run.stderr);
    assert!(
        normalized(&run.stdout).contains("experience proves this"),
        "{}",
        run.stdout
    );
}

/// A 32-bit float WAV of `samples` (mono, 16 kHz).
fn float_wav(path: &std::path::Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &x in samples {
        w.write_sample(x).unwrap();
    }
    w.finalize().unwrap();
}

/// NaN, 1e30-valued and one-sample files each get a one-line error naming the file (and the
/// first bad sample), never a transcript; the batch goes on and the exit code says it failed.
#[test]
fn odd_audio_is_an_error_per_file_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let speech = steno::audio::read_audio(&sample("2830-3980-0043.wav")).unwrap().samples;
    let mut nan = speech.clone();
    nan[8_000] = f32::NAN;
    let loud: Vec<f32> = speech.iter().map(|x| x * 1e30).collect();
    let files = [
        ("nan.wav", nan),
        ("loud.wav", loud),
        ("one.wav", vec![0.25]),
        ("good.wav", speech),
    ];
    let mut args = vec!["transcribe".to_string()];
    for (name, samples) in &files {
        let path = dir.path().join(name);
        float_wav(&path, samples);
        args.push(path.display().to_string());
    }
    args.extend(["--beam-size", "1", "--threads", "1"].map(String::from));
    let run = steno(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    for expected in [
        "nan.wav: sample 8000 (at 0.500 s, channel 1) is NaN: the file is corrupt",
        "loud.wav: sample ",
        "far outside [-1, 1]",
        "one.wav: file is empty (1 samples)",
        "3 of 4 files failed",
    ] {
        assert!(run.stderr.contains(expected), "`{expected}` not in:\n{}", run.stderr);
    }
    assert_eq!(
        normalized(&run.stdout).matches("experience proves this").count(),
        1,
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('!'), "no hallucinated transcript: {}", run.stdout);
}

#[test]
fn max_duration_refuses_longer_files_only() {
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "audio-samples/2830-3980-0043.wav",
        "--max-duration-s",
        "5",
        "--beam-size",
        "1",
        "--threads",
        "1",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("jfk.wav: audio is longer than the limit of 5 s"),
        "{}",
        run.stderr
    );
    assert!(
        normalized(&run.stdout).contains("experience proves this"),
        "{}",
        run.stdout
    );
    let run = steno(&["transcribe", "audio-samples/jfk.wav", "--max-duration-s=0"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("--max-duration-s must be a positive number"),
        "{}",
        run.stderr
    );
}

#[test]
fn folder_input_and_output_dir_write_one_file_per_input() {
    let out = tempfile::tempdir().unwrap();
    let run = steno(&[
        "transcribe",
        "audio-samples",
        "-f",
        "srt",
        "--output-dir",
        out.path().to_str().unwrap(),
        "--beam-size",
        "1",
        "--threads",
        "1",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "", "written to files, not stdout");
    for stem in ["jfk", "1089-134686-0000", "2830-3980-0043"] {
        let srt = std::fs::read_to_string(out.path().join(format!("{stem}.srt"))).expect("srt written");
        assert!(srt.starts_with("1\n00:00:"), "{stem}.srt: {srt}");
        assert!(srt.contains(" --> "));
    }
}

/// Three `--shard K/3` workers started at once over one folder (as an Indexed Job would):
/// every file is transcribed by exactly one of them.
#[test]
fn shards_cover_every_file_exactly_once() {
    let input = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("take-{i:02}.wav")).collect();
    for name in &names {
        std::fs::copy(sample("2830-3980-0043.wav"), input.path().join(name)).unwrap();
    }
    let outputs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let workers: Vec<std::process::Child> = (0..3)
        .map(|k| {
            std::process::Command::new(env!("CARGO_BIN_EXE_steno"))
                .args([
                    "transcribe",
                    input.path().to_str().unwrap(),
                    "--shard",
                    &format!("{k}/3"),
                ])
                .args(["--output-dir", outputs[k].path().to_str().unwrap()])
                .args(["--model-variant", "int8", "--beam-size", "1", "--threads", "1"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("steno starts")
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    for (k, worker) in workers.into_iter().enumerate() {
        let out = worker.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "shard {k}: {stderr}");
        for entry in std::fs::read_dir(outputs[k].path()).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(normalized(&text), "experience proves this", "{}", path.display());
            seen.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    let expected: Vec<String> = names.iter().map(|n| n.trim_end_matches(".wav").to_string()).collect();
    assert_eq!(seen, expected, "each file exactly once across the shards");
    let run = steno(&["transcribe", "audio-samples", "--shard", "3/3"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("K must be in 0..N"), "{}", run.stderr);
}

#[test]
fn missing_onnx_runtime_says_how_to_fix_it() {
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "--ort-library",
        "/nonexistent/libonnxruntime.so",
    ]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("run `models/provision`"), "{}", run.stderr);
}

#[test]
fn cuda_without_a_cuda_runtime_is_an_error_not_a_fallback() {
    let empty_models = tempfile::tempdir().unwrap();
    let cpu_lib = root().join("models/runtime/libonnxruntime.so");
    let model = model_dir("tiny.en");
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cuda",
        "--ort-library",
        cpu_lib.to_str().unwrap(),
        "--models-dir",
        empty_models.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stdout, "", "no transcript from a silent CPU fallback");
    assert!(
        run.stderr.contains("device cuda") && run.stderr.contains("--gpu"),
        "{}",
        run.stderr
    );
}

#[test]
fn device_auto_falls_back_to_the_cpu() {
    let run = steno(&[
        "transcribe",
        "audio-samples/jfk.wav",
        "--device",
        "auto",
        "--beam-size",
        "1",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(normalized(&run.stdout), JFK_NORMALIZED);
}

#[test]
fn ort_dylib_path_wins_over_the_provisioned_runtime() {
    let run = steno_with_env(
        &["transcribe", "audio-samples/jfk.wav"],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")],
    );
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{}",
        run.stderr
    );
}

#[test]
fn english_only_model_rejects_german() {
    let run = steno(&["transcribe", "audio-samples/jfk.wav", "--language", "de"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("English-only"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn unknown_model_names_the_provisioning_command() {
    let run = steno(&["transcribe", "audio-samples/jfk.wav", "--model", "medium"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("models/provision --model medium"), "{}", run.stderr);
}

#[test]
fn eval_reports_wer_rtfx_and_memory_as_json() {
    let run = steno(&["eval", "audio-samples", "--json", "--beam-size", "1", "--threads", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let report = &doc["report"];
    assert_eq!(report["items"].as_array().unwrap().len(), 3);
    assert!(report["wer"].as_f64().unwrap() < 0.1, "{report}");
    assert!(report["rtfx"].as_f64().unwrap() > 0.0);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);
    let jfk = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "jfk")
        .unwrap();
    assert_eq!(jfk["errors"]["reference_words"].as_u64(), Some(22));
}
