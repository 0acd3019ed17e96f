//! Pipeline benchmarks on tiny.en (needs `models/provision`): the log-mel front end on 30 s,
//! encoder windows of 10 s and 30 s, two 15 s windows in one call and in two, decoder steps
//! against a 30 s window (greedy and 5 beams, steady state) and a 224-token prompt fed in
//! pieces and in one call, for fp32 and int8, and whole-clip transcription of
//! audio-samples/jfk.wav. Corpus-level speed and accuracy are measured with
//! `steno eval <dir> --json` (RTFx, WER, peak RSS).

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use steno::decode::search::DecodeStrategy;
use steno::features::LogMel;
use steno::model::{ModelFiles, ModelVariant, WhisperModel};
use steno::runtime::{Runtime, RuntimeConfig};
use steno::{Engine, EngineConfig, ModelConfig, TranscribeOptions};

fn model_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/whisper-tiny.en");
    assert!(dir.is_dir(), "{} is missing: run `models/provision`", dir.display());
    dir
}

fn jfk() -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("audio-samples/jfk.wav");
    steno::audio::read_audio(&path).expect("jfk.wav").samples
}

fn front_end(c: &mut Criterion) {
    let mel = LogMel::new(80).unwrap();
    let mut audio = jfk();
    audio.resize(16_000 * 30, 0.0);
    c.bench_function("log_mel_30s", |b| b.iter(|| mel.log10_mel(&audio)));
}

fn model_steps(c: &mut Criterion) {
    let runtime = Runtime::get(&RuntimeConfig::default()).expect("runtime");
    for variant in [ModelVariant::Fp32, ModelVariant::Int8] {
        let files = ModelFiles::discover(&model_dir(), variant, "models/provision").expect("model");
        let mut model = WhisperModel::load(&runtime, files).expect("load");
        let mut mel = LogMel::new(80).unwrap().log10_mel(&jfk());
        mel.normalize_whisper();
        // A 10 s window (the shortest steno decodes) and a full 30 s one (jfk padded with the
        // mel floor), where attention over 1,500 positions dominates.
        let mut cross = None;
        for (seconds, frames) in [(10, 1000), (30, 3000)] {
            let window = mel.window(0, frames, mel.data()[0]);
            c.bench_function(&format!("encoder_{seconds}s_{variant:?}"), |b| {
                b.iter(|| model.encoder.encode(&window, frames).unwrap())
            });
            cross = Some(model.encoder.encode(&window, frames).unwrap());
        }
        // Two streams' 15 s windows: one call with 2 rows against two calls (does batching
        // encoder windows across streams raise throughput?).
        let window = mel.window(0, 1500, mel.data()[0]);
        c.bench_function(&format!("encoder_15s_two_windows_one_call_{variant:?}"), |b| {
            b.iter(|| model.encoder.encode_batch(&[&window, &window], 1500).unwrap())
        });
        c.bench_function(&format!("encoder_15s_two_windows_two_calls_{variant:?}"), |b| {
            b.iter(|| {
                model.encoder.encode(&window, 1500).unwrap();
                model.encoder.encode(&window, 1500).unwrap()
            })
        });
        // Decoder steps against the 30 s window's cross K/V: greedy (1 row) and beam search (5).
        // Steady state, as a window's search runs them: each sequence feeds the prompt (and, at
        // 5 rows, reorders the cache to the beams) untimed, then times its next STEPS steps one
        // by one, cache growth included where it falls; a fresh sequence follows.
        let cross = cross.expect("30 s window");
        let prompt: Vec<u32> = vec![model.tokens.sot, 843, 523, 616, 5891, 3399];
        const STEPS: usize = 64;
        for rows in [1usize, 5] {
            let name = format!(
                "decoder_step_30s_{rows}_rows_offsets_{}_to_{}_{variant:?}",
                prompt.len(),
                prompt.len() + STEPS - 1
            );
            let mut sequence: Option<(steno::model::KvCache, usize)> = None;
            c.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let mut total = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        let (cache, fed) = match &mut sequence {
                            Some((cache, fed)) if *fed < STEPS => (cache, fed),
                            slot => {
                                let mut cache = model.decoder.new_cache(1).unwrap();
                                model
                                    .decoder
                                    .forward(&prompt, prompt.len(), &mut cache, &cross, false)
                                    .unwrap();
                                model.decoder.reorder(&mut cache, &vec![0; rows]).unwrap();
                                let (cache, fed) = slot.insert((cache, 0));
                                (cache, fed)
                            }
                        };
                        // Tokens of ordinary text, a different one each step.
                        let tokens = vec![1265 + *fed as u32; rows];
                        let started = std::time::Instant::now();
                        model.decoder.forward(&tokens, 1, cache, &cross, false).unwrap();
                        total += started.elapsed();
                        *fed += 1;
                    }
                    total
                })
            });
        }
        // A 30 s window's longest prompt (223 tokens of earlier text and <|startoftranscript|>),
        // fed in pieces of 32 tokens (what batch transcription does, for memory) and in one call.
        let prompt: Vec<u32> = (0..223).map(|i| 400 + i).chain([model.tokens.sot]).collect();
        for whole in [false, true] {
            let how = if whole { "one_call" } else { "pieces" };
            model.decoder.set_whole_feeds(whole);
            c.bench_function(&format!("decoder_prompt_224_tokens_{how}_{variant:?}"), |b| {
                b.iter(|| {
                    let mut cache = model.decoder.new_cache(1).unwrap();
                    model
                        .decoder
                        .forward(&prompt, prompt.len(), &mut cache, &cross, false)
                        .unwrap()
                })
            });
        }
        model.decoder.set_whole_feeds(false);
    }
}

fn transcription(c: &mut Criterion) {
    let audio = jfk();
    for (name, strategy) in [
        ("transcribe_jfk_greedy", DecodeStrategy::Greedy { best_of: 5 }),
        (
            "transcribe_jfk_beam5",
            DecodeStrategy::Beam {
                beam_size: 5,
                patience: 1.0,
                best_of: 5,
            },
        ),
    ] {
        let engine = Engine::start(EngineConfig {
            model: ModelConfig::resolve("tiny.en", &steno::runtime::default_models_dir(), ModelVariant::Fp32),
            runtime: RuntimeConfig::default(),
            options: TranscribeOptions {
                strategy,
                ..TranscribeOptions::default()
            },
        })
        .expect("engine");
        let mut group = c.benchmark_group("transcription");
        group.sample_size(10);
        group.bench_function(name, |b| {
            b.iter(|| engine.transcribe_samples(&audio, &mut |_| {}).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, front_end, model_steps, transcription);
criterion_main!(benches);
