//! The library on the real models: accuracy on the samples, long-form, silence, languages,
//! both model layouts, and the errors a user meets first.

use std::time::Duration;

use steno::decode::search::DecodeStrategy;
use steno::eval::wer::word_errors;
use steno::model::Layout;
use steno::{Engine, EngineConfig, ModelConfig, ModelVariant, RuntimeConfig, Task, TranscribeOptions, Transcript};

use super::common::*;

fn transcribe(engine: &Engine, samples: &[f32]) -> Transcript {
    engine.transcribe_samples(samples, &mut |_| {}).expect("transcribes")
}

fn read(path: &std::path::Path) -> Vec<f32> {
    steno::audio::read_audio(path).expect("audio reads").samples
}

/// Segments are in order, do not overlap and stay inside the audio.
fn assert_monotonic(t: &Transcript) {
    let mut last_end = 0.0;
    for s in &t.segments {
        assert!(
            s.start >= last_end - 1e-9,
            "segment {} starts at {} before {last_end}",
            s.id,
            s.start
        );
        assert!(s.end >= s.start, "segment {} ends before it starts", s.id);
        assert!(s.end <= t.duration + 1e-9, "segment {} ends after the audio", s.id);
        last_end = s.end;
    }
}

#[test]
fn jfk_greedy_fp32_is_exact() {
    let engine = engine("tiny.en", ModelVariant::Fp32, greedy());
    assert_eq!(engine.layout(), Layout::Steno);
    let t = transcribe(&engine, &read(&sample("jfk.wav")));
    assert_eq!(normalizer().normalize(&t.text()), JFK_NORMALIZED);
    assert_monotonic(&t);
    assert!(t.segments[0].start < 0.5 && t.segments.last().unwrap().end > 10.0);
    assert_eq!(t.language, None, "English-only models report no language");
}

#[test]
fn jfk_beam_int8_is_exact() {
    let engine = engine("tiny.en", ModelVariant::Int8, TranscribeOptions::default());
    let t = transcribe(&engine, &read(&sample("jfk.wav")));
    assert!(matches!(
        TranscribeOptions::default().strategy,
        DecodeStrategy::Beam { beam_size: 5, .. }
    ));
    assert_eq!(normalizer().normalize(&t.text()), JFK_NORMALIZED);
}

#[test]
fn silence_hum_and_noise_produce_no_text() {
    let engine = engine("tiny.en", ModelVariant::Fp32, greedy());
    let hum: Vec<f32> = (0..160_000)
        .map(|i| 0.01 * (2.0 * std::f32::consts::PI * 50.0 * i as f32 / 16_000.0).sin())
        .collect();
    let cases: [(&str, Vec<f32>); 4] = [
        ("digital silence", vec![0.0; 160_000]),
        ("white noise at -20 dBFS", white_noise(0.1, 160_000)),
        ("room noise at -60 dBFS", white_noise(0.001, 160_000)),
        ("50 Hz hum at -40 dBFS", hum),
    ];
    for (what, samples) in cases {
        let t = transcribe(&engine, &samples);
        assert_eq!(t.text(), "", "{what} gave text");
        assert!(t.segments.is_empty(), "{what} gave segments");
    }
}

#[test]
fn speech_then_silence_has_no_hallucinated_tail() {
    let engine = engine("tiny.en", ModelVariant::Fp32, greedy());
    let mut samples = read(&sample("jfk.wav"));
    samples.extend(std::iter::repeat_n(0.0, 16_000 * 40));
    let t = transcribe(&engine, &samples);
    assert_eq!(normalizer().normalize(&t.text()), JFK_NORMALIZED);
    assert!(t.segments.iter().all(|s| s.end <= 11.5), "{:?}", t.segments);
}

#[test]
fn long_form_is_transcribed_completely_with_monotonic_times() {
    let engine = engine("tiny.en", ModelVariant::Fp32, greedy());
    let dir = shared_eval("longform");
    let id = "tale-of-two-cities-ch1-opening";
    let reference = std::fs::read_to_string(dir.join("refs.tsv"))
        .expect("refs.tsv")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{id}\t")).map(str::to_owned))
        .expect("reference");
    let t = transcribe(&engine, &read(&dir.join(format!("{id}.wav"))));
    assert_monotonic(&t);
    assert!(t.duration > 86.0);
    assert!(t.segments.len() >= 5, "{} segments", t.segments.len());
    assert!(t.segments[0].start < 2.0 && t.segments.last().unwrap().end > t.duration - 5.0);
    assert!(
        t.segments.windows(2).all(|w| w[1].start - w[0].end < 5.0),
        "no gap of 5 s in continuous speech"
    );
    let n = normalizer();
    let errors = word_errors(&n.normalize(&reference), &n.normalize(&t.text()));
    assert!(errors.rate() < 0.08, "WER {:.3} ({errors:?})", errors.rate());
}

#[test]
fn english_only_model_rejects_other_languages() {
    let err = Engine::start(EngineConfig {
        model: ModelConfig::resolve("tiny.en", &root().join("models"), ModelVariant::Fp32),
        runtime: RuntimeConfig::default(),
        options: TranscribeOptions {
            language: Some("de".into()),
            ..greedy()
        },
    })
    .expect_err("de on tiny.en");
    let msg = err.to_string();
    assert!(msg.contains("`language`") && msg.contains("English-only"), "{msg}");
}

#[test]
fn multilingual_base_detects_english_and_translates() {
    let _ = model_dir("base");
    let jfk = read(&sample("jfk.wav"));
    let detect = engine("base", ModelVariant::Fp32, greedy());
    let t = transcribe(&detect, &jfk);
    assert_eq!(t.language.as_deref(), Some("en"));
    assert_eq!(normalizer().normalize(&t.text()), JFK_NORMALIZED);
    assert_eq!(transcribe(&detect, &vec![0.0; 80_000]).text(), "", "silence on base");
    drop(detect);

    let translate = engine(
        "base",
        ModelVariant::Fp32,
        TranscribeOptions {
            task: Task::Translate,
            language: Some("de".into()),
            ..greedy()
        },
    );
    let t = transcribe(&translate, &jfk);
    assert_eq!(t.language.as_deref(), Some("de"));
    let n = normalizer();
    let errors = word_errors(JFK_NORMALIZED, &n.normalize(&t.text()));
    assert!(
        errors.rate() < 0.5,
        "translation output far from English: {:?}",
        t.text()
    );
}

#[test]
fn sherpa_onnx_layout_loads_and_transcribes() {
    let engine = engine("tiny.en-sherpa", ModelVariant::Fp32, greedy());
    assert_eq!(engine.layout(), Layout::Sherpa);
    let t = transcribe(&engine, &read(&sample("jfk.wav")));
    assert_eq!(normalizer().normalize(&t.text()), JFK_NORMALIZED);
    assert_monotonic(&t);
    // Beam search tiles the cross K/V for this layout.
    drop(engine);
    let beam = super::common::engine("tiny.en-sherpa", ModelVariant::Fp32, TranscribeOptions::default());
    let t = transcribe(&beam, &read(&sample("2830-3980-0043.wav")));
    assert_eq!(normalizer().normalize(&t.text()), "experience proves this");
}

#[test]
fn mixed_layouts_are_a_contract_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let steno = model_dir("tiny.en");
    let sherpa = model_dir("tiny.en-sherpa");
    for (from, name) in [
        (steno.join("tiny.en-encoder.onnx"), "tiny.en-encoder.onnx"),
        (steno.join("tiny.en-encoder.onnx.data"), "tiny.en-encoder.onnx.data"),
        (sherpa.join("tiny.en-decoder.onnx"), "tiny.en-decoder.onnx"),
        (steno.join("tiny.en-tokens.txt"), "tiny.en-tokens.txt"),
    ] {
        std::os::unix::fs::symlink(from, dir.path().join(name)).unwrap();
    }
    let err = Engine::start(EngineConfig {
        model: ModelConfig {
            dir: dir.path().to_path_buf(),
            variant: ModelVariant::Fp32,
            provision_hint: "n/a".into(),
        },
        runtime: RuntimeConfig::default(),
        options: greedy(),
    })
    .expect_err("steno encoder with a sherpa decoder");
    let msg = err.to_string();
    assert!(
        msg.contains("tiny.en-decoder.onnx") && msg.contains("tensor `past_k_0`: missing"),
        "{msg}"
    );
}

#[test]
fn missing_model_names_the_provisioning_command() {
    let err = Engine::start(EngineConfig {
        model: ModelConfig::resolve("small", &root().join("models"), ModelVariant::Fp32),
        runtime: RuntimeConfig::default(),
        options: greedy(),
    })
    .expect_err("no such model");
    assert!(
        err.to_string().contains("run `models/provision --model small`"),
        "{err}"
    );
}

#[test]
fn engine_survives_many_jobs_and_shuts_down() {
    let engine = engine("tiny.en", ModelVariant::Int8, greedy());
    let clip = read(&sample("2830-3980-0043.wav"));
    let receivers: Vec<_> = (0..3)
        .map(|_| engine.submit(engine.prepare(&clip)).expect("queued"))
        .collect();
    for rx in receivers {
        let done = rx
            .iter()
            .find_map(|u| match u {
                steno::engine::Update::Done(r) => Some(r),
                _ => None,
            })
            .expect("a result");
        assert_eq!(
            normalizer().normalize(&done.expect("ok").text()),
            "experience proves this"
        );
    }
    let started = std::time::Instant::now();
    drop(engine);
    assert!(started.elapsed() < Duration::from_secs(5), "worker joins promptly");
}

#[test]
fn word_timestamps_cover_every_word_in_order() {
    let engine = engine(
        "tiny.en",
        ModelVariant::Fp32,
        TranscribeOptions {
            word_timestamps: true,
            ..greedy()
        },
    );
    let t = transcribe(&engine, &read(&sample("jfk.wav")));
    assert_eq!(normalizer().normalize(&t.text()), JFK_NORMALIZED);
    let mut last = 0.0;
    let mut count = 0;
    for s in &t.segments {
        let words = s.words.as_ref().expect("words asked for");
        let joined: String = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(joined, s.text, "words spell the segment");
        for w in words {
            assert!(w.start >= last - 1e-9 && w.end >= w.start, "{w:?} after {last}");
            assert!(
                w.start >= s.start - 1e-9 && w.end <= s.end + 1e-9,
                "{w:?} outside {}..{}",
                s.start,
                s.end
            );
            assert!((0.0..=1.0).contains(&w.probability));
            last = w.end;
            count += 1;
        }
    }
    assert_eq!(count, 22, "JFK's sentence has 22 words");
    let first = &t.segments[0].words.as_ref().unwrap()[0];
    assert!(first.word.trim() == "And" && first.start < 0.5, "{first:?}");
    assert!((10.0..=11.0).contains(&last), "the last word ends at {last}");
}

#[test]
fn bpe_encodes_text_to_the_tokens_the_model_itself_emits() {
    // tiny.en's own tokens for the first JFK segment (greedy, `transcribe -f json`).
    let tokenizer = steno::tokenizer::Tokenizer::load(&model_dir("tiny.en").join("tiny.en-tokens.txt"), 50256)
        .expect("tiny.en vocabulary loads");
    let text = " And so my fellow Americans ask not what your country can do for you";
    assert_eq!(
        tokenizer.encode(text),
        [843, 523, 616, 5891, 3399, 1265, 407, 644, 534, 1499, 460, 466, 329, 345]
    );
    // The multilingual vocabulary: byte-level BPE gives back the exact text, whatever script.
    let base = steno::tokenizer::Tokenizer::load(&model_dir("base").join("base-tokens.txt"), 50257)
        .expect("base vocabulary loads");
    for text in [
        " Grüße aus Köln, ça va?",
        " 日本語のテキスト。",
        "  two  spaces\n\tand a tab",
        " émoji 🎙️!",
    ] {
        let tokens = base.encode(text);
        assert!(
            !tokens.is_empty() && tokens.iter().all(|&t| t < 50257),
            "{text}: {tokens:?}"
        );
        assert_eq!(base.decode(&tokens), text);
    }
}

#[test]
fn an_initial_prompt_steers_the_spelling() {
    // Whisper's initial_prompt: a prompt written with commas makes tiny.en punctuate JFK's
    // sentence the same way (without it the first segment has no comma).
    let engine = engine("tiny.en", ModelVariant::Fp32, greedy());
    let plain = transcribe(&engine, &read(&sample("jfk.wav"))).text();
    let tokenizer = engine.tokenizer().expect("engine has a tokenizer");
    let options = TranscribeOptions {
        initial_prompt: tokenizer.encode(" Kennedy speech, fellow Americans."),
        ..greedy()
    };
    let rx = engine
        .submit_with(engine.prepare(&read(&sample("jfk.wav"))), options)
        .expect("job queued");
    let prompted = loop {
        match rx.recv().expect("job runs") {
            steno::engine::Update::Done(result) => break result.expect("job succeeds").text(),
            _ => continue,
        }
    };
    assert!(!plain.contains("you,"), "{plain}");
    assert!(prompted.contains("can do for you, ask"), "{prompted}");
}

/// A source that panics when the seek loop asks for its first window: a stand-in for a bug
/// inside a job.
struct PanickingSource;

impl steno::features::MelSource for PanickingSource {
    fn n_mels(&self) -> usize {
        80
    }
    fn n_frames(&self) -> usize {
        1000
    }
    fn silence_value(&self) -> f32 {
        0.0
    }
    fn window(&mut self, _: usize, _: usize, _: f32) -> steno::Result<Vec<f32>> {
        panic!("scripted failure")
    }
    fn band_peak_log10(&mut self, _: usize, _: usize, _: f64, _: f64) -> steno::Result<f32> {
        Ok(0.0)
    }
    fn label(&self) -> String {
        "scripted.wav".into()
    }
}

#[test]
fn a_panic_inside_a_job_is_that_jobs_error_and_the_worker_goes_on() {
    let engine = engine("tiny.en", ModelVariant::Int8, greedy());
    let done = |rx: crossbeam_channel::Receiver<steno::engine::Update>| {
        rx.iter()
            .find_map(|u| match u {
                steno::engine::Update::Done(r) => Some(r),
                _ => None,
            })
            .expect("a result")
    };
    let err = done(engine.submit_source(Box::new(PanickingSource)).expect("queued")).expect_err("panicked");
    let message = err.to_string();
    assert!(
        message.contains("transcription of scripted.wav panicked: scripted failure"),
        "{message}"
    );
    // The same worker serves the next job, and a file job names its file.
    let text = engine
        .transcribe_file(&sample("2830-3980-0043.wav"))
        .expect("ok")
        .text();
    assert_eq!(normalizer().normalize(&text), "experience proves this");
}

/// The tiny.en fp32 model loaded on its own (no engine) and jfk.wav's normalised log-mel.
fn tiny_fp32_and_jfk_mel() -> (steno::model::WhisperModel, steno::features::Mel) {
    use steno::model::{ModelFiles, WhisperModel};
    let runtime = steno::runtime::Runtime::get(&RuntimeConfig::default()).expect("runtime");
    let files = ModelFiles::discover(&model_dir("tiny.en"), ModelVariant::Fp32, "models/provision").expect("model");
    let model = WhisperModel::load(&runtime, files).expect("load");
    let mut mel = steno::features::LogMel::new(80)
        .unwrap()
        .log10_mel(&read(&sample("jfk.wav")));
    mel.normalize_whisper();
    (model, mel)
}

/// CPU sessions share one process-wide arena (`runtime::shared_arena`); sessions built without
/// an arena (`--no-memory-arena`) allocate on their own. Both give bit-identical logits, and
/// two models on the shared arena decoding at once on two threads still do.
#[test]
fn the_shared_arena_decodes_like_no_arena_even_from_two_threads() {
    use steno::model::{ModelFiles, WhisperModel};
    let logits_of = |memory_arena: bool| {
        let runtime = steno::runtime::Runtime::get(&RuntimeConfig {
            memory_arena,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let files = ModelFiles::discover(&model_dir("tiny.en"), ModelVariant::Int8, "models/provision").expect("model");
        let mut model = WhisperModel::load(&runtime, files).expect("load");
        let mut mel = steno::features::LogMel::new(80)
            .unwrap()
            .log10_mel(&read(&sample("jfk.wav")));
        mel.normalize_whisper();
        let window = mel.window(0, 1100, mel.data()[0]);
        let cross = model.encoder.encode(&window, 1100).expect("encodes");
        // " And so my fellow Americans"
        let tokens = [model.tokens.sot, model.tokens.no_timestamps, 843, 523, 616, 7306, 4290];
        let mut cache = model.decoder.new_cache(1).unwrap();
        let mut out = Vec::new();
        for &token in &tokens {
            out.extend(model.decoder.forward(&[token], 1, &mut cache, &cross, false).unwrap().0);
        }
        out
    };
    let alone = logits_of(false);
    let shared: Vec<Vec<f32>> = std::thread::scope(|s| {
        let a = s.spawn(|| logits_of(true));
        let b = s.spawn(|| logits_of(true));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for logits in shared {
        assert_eq!(logits.len(), alone.len());
        assert!(logits == alone, "logits differ with the shared arena");
    }
}

/// Two windows in one encoder call give two rows; a window of the wrong size is a contract
/// error naming the tensor.
#[test]
fn encoder_batches_equal_windows_and_names_a_wrong_one() {
    let (mut model, mel) = tiny_fp32_and_jfk_mel();
    let (a, b) = (mel.window(0, 500, mel.data()[0]), mel.window(300, 500, mel.data()[0]));
    let both = model
        .encoder
        .encode_batch(&[&a, &b], 500)
        .expect("two windows in one call");
    assert_eq!((both.batch, both.frames), (2, 250));
    let error = model
        .encoder
        .encode_batch(&[&a, &b[..100]], 500)
        .err()
        .expect("a short window is refused");
    assert!(error.to_string().contains("mel"), "{error}");
}

/// A rejected draft is forgotten and decoding goes on as if it had never been fed; a beam
/// reorder in place moves whole rows; rows that outgrow the cache's buffers keep their
/// positions. All against plain decoding of the same tokens on the real decoder.
#[test]
fn rewound_and_reordered_caches_decode_like_fresh_ones() {
    use steno::model::WhisperModel;
    let (mut model, mel) = tiny_fp32_and_jfk_mel();
    let window = mel.window(0, 1000, mel.data()[0]);
    let cross = model.encoder.encode(&window, 1000).expect("encodes");
    let sot = model.tokens.sot;
    let fresh = |model: &mut WhisperModel, tokens: &[u32]| {
        let mut cache = model.decoder.new_cache(1).unwrap();
        model
            .decoder
            .forward(tokens, tokens.len(), &mut cache, &cross, false)
            .unwrap()
            .0
    };
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-3, "{what}: logits differ by {worst}");
    };
    // " And so my" then a rejected draft " fellow citizens", then " country" instead.
    let prefix = [sot, model.tokens.no_timestamps, 843, 523, 616];
    let mut cache = model.decoder.new_cache(1).unwrap();
    let mut fed = prefix.to_vec();
    fed.extend([7306, 4290]);
    model
        .decoder
        .forward(&fed, fed.len(), &mut cache, &cross, false)
        .unwrap();
    model.decoder.rewind(&mut cache, prefix.len()).unwrap();
    assert_eq!(cache.len(), prefix.len());
    let (after_rewind, _) = model.decoder.forward(&[1499], 1, &mut cache, &cross, false).unwrap();
    let mut plain = prefix.to_vec();
    plain.push(1499);
    close(&after_rewind, &fresh(&mut model, &plain), "after a rewind");

    // Three rows fed different tokens, then permuted in place (row 0 <- 2, 1 stays, 2 <- 0)
    // and one more token each: row i must match plain decoding of its own history.
    let mut cache = model.decoder.new_cache(1).unwrap();
    model
        .decoder
        .forward(&prefix, prefix.len(), &mut cache, &cross, false)
        .unwrap();
    model.decoder.reorder(&mut cache, &[0, 0, 0]).unwrap();
    // The prompt is now shared by the three rows (a graph with a prefix input): it cannot be
    // rewound, and the error says so instead of corrupting the rows.
    let error = model.decoder.rewind(&mut cache, 2).unwrap_err();
    assert!(error.to_string().contains("shared by every row"), "{error}");
    let firsts = [7306u32, 1499, 4290];
    model.decoder.forward(&firsts, 1, &mut cache, &cross, false).unwrap();
    model.decoder.reorder(&mut cache, &[2, 1, 0]).unwrap();
    let (logits, _) = model
        .decoder
        .forward(&[13, 13, 13], 1, &mut cache, &cross, false)
        .unwrap();
    let v = model.decoder.n_vocab();
    for (row, first) in [firsts[2], firsts[1], firsts[0]].into_iter().enumerate() {
        let mut history = prefix.to_vec();
        history.extend([first, 13]);
        close(
            &logits[row * v..(row + 1) * v],
            &fresh(&mut model, &history),
            &format!("row {row} after reorder"),
        );
    }

    // Seventy more tokens a row, one call each: the rows outgrow the cache's first buffers (64
    // positions in a shared-buffer graph), whose filled positions move to larger ones.
    let words = [843u32, 523, 616, 5891, 3399, 11, 1265, 407, 644, 534];
    let mut histories: Vec<Vec<u32>> = [firsts[2], firsts[1], firsts[0]]
        .into_iter()
        .map(|first| [&prefix[..], &[first, 13]].concat())
        .collect();
    // Two tokens a row in one call after the shared prompt: the graph's mask keeps each row's
    // second token from seeing past its first.
    let (two, _) = model
        .decoder
        .forward(&[843, 523, 616, 5891, 3399, 11], 2, &mut cache, &cross, false)
        .unwrap();
    for (row, pair) in [[843u32, 523], [616, 5891], [3399, 11]].iter().enumerate() {
        histories[row].extend(pair);
        close(
            &two[row * v..(row + 1) * v],
            &fresh(&mut model, &histories[row]),
            &format!("row {row} after a two-token feed"),
        );
    }
    let mut logits = Vec::new();
    for step in 0..70 {
        let next: Vec<u32> = (0..3).map(|row| words[(step + 3 * row) % words.len()]).collect();
        logits = model.decoder.forward(&next, 1, &mut cache, &cross, false).unwrap().0;
        for (history, token) in histories.iter_mut().zip(next) {
            history.push(token);
        }
    }
    assert_eq!(cache.len(), histories[0].len());
    for (row, history) in histories.iter().enumerate() {
        close(
            &logits[row * v..(row + 1) * v],
            &fresh(&mut model, history),
            &format!("row {row} after 70 more tokens"),
        );
    }
}

/// A feed longer than one decoder call's piece (the decoder splits it into calls of 32 tokens)
/// gives, for each row, the logits and alignment-head scores of feeding one token at a time.
#[test]
fn a_long_feed_split_into_pieces_decodes_like_single_steps() {
    let (mut model, mel) = tiny_fp32_and_jfk_mel();
    let window = mel.window(0, 1000, mel.data()[0]);
    let cross = model.encoder.encode(&window, 1000).expect("encodes");
    let (sot, no_ts) = (model.tokens.sot, model.tokens.no_timestamps);
    // " And so my fellow Americans, ask not what your country can do for you." in a loop.
    let text = [
        843u32, 523, 616, 5891, 3399, 11, 1265, 407, 644, 534, 1499, 460, 466, 329, 345, 13,
    ];
    let n = 80;
    let rows: Vec<Vec<u32>> = (0..2)
        .map(|r| {
            [sot, no_ts]
                .into_iter()
                .chain(text.iter().copied().cycle().skip(3 * r).take(n - 2))
                .collect()
        })
        .collect();
    let mut cache = model.decoder.new_cache(2).unwrap();
    let mut logits = Vec::new();
    let qk = model
        .decoder
        .forward_rows(&rows.concat(), n, &mut cache, &cross, true, 3, &mut logits)
        .unwrap()
        .expect("alignment-head scores");
    assert_eq!((cache.len(), qk.tokens), (n, n));

    let mut steps = model.decoder.new_cache(2).unwrap();
    let fed: Vec<_> = (0..n)
        .map(|i| {
            let (l, q) = model
                .decoder
                .forward(&[rows[0][i], rows[1][i]], 1, &mut steps, &cross, true)
                .unwrap();
            (l, q.expect("alignment-head scores"))
        })
        .collect();
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{what}: differs by {worst}");
    };
    let v = model.decoder.n_vocab();
    let row = qk.heads * qk.frames;
    for b in 0..2 {
        for j in 0..3 {
            let at = (b * 3 + j) * v;
            let step = &fed[n - 3 + j].0;
            close(
                &logits[at..at + v],
                &step[b * v..(b + 1) * v],
                &format!("row {b}, logits {j}"),
            );
        }
        for i in [0, 31, 32, 63, 64, n - 1] {
            let at = (b * n + i) * row;
            let step = &fed[i].1.data;
            close(
                &qk.data[at..at + row],
                &step[b * row..(b + 1) * row],
                &format!("row {b}, scores of token {i}"),
            );
        }
    }
}
