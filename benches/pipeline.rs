//! Pipeline benchmarks on tiny.en (needs `models/provision`): the log-mel front end on 30 s,
//! one encoder window, one decoder step (greedy and 5 beams), and whole-clip transcription of
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
    let files = ModelFiles::discover(&model_dir(), ModelVariant::Fp32, "models/provision").expect("model");
    let mut model = WhisperModel::load(&runtime, files).expect("load");
    let mut mel = LogMel::new(80).unwrap().log10_mel(&jfk());
    mel.normalize_whisper();
    let window = mel.window(0, 1000, mel.data()[0]);
    c.bench_function("encoder_10s", |b| {
        b.iter(|| model.encoder.encode(&window, 1000).unwrap())
    });

    let cross = model.encoder.encode(&window, 1000).unwrap();
    let prompt: Vec<u32> = vec![model.tokens.sot, 843, 523, 616, 5891, 3399];
    for rows in [1usize, 5] {
        c.bench_function(&format!("decoder_step_{rows}_rows_at_offset_{}", prompt.len()), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let mut cache = model.decoder.new_cache(1).unwrap();
                    model
                        .decoder
                        .forward(&prompt, prompt.len(), &mut cache, &cross, false)
                        .unwrap();
                    model.decoder.reorder(&mut cache, &vec![0; rows]).unwrap();
                    let started = std::time::Instant::now();
                    model
                        .decoder
                        .forward(&vec![1265; rows], 1, &mut cache, &cross, false)
                        .unwrap();
                    total += started.elapsed();
                }
                total
            })
        });
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
