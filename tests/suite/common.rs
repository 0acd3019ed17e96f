//! Shared helpers: paths, the provisioned models (a missing one fails with the command that
//! provisions it), running the CLI, making WAV files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use steno::eval::normalizer::EnglishTextNormalizer;
use steno::{Engine, EngineConfig, ModelConfig, ModelVariant, RuntimeConfig, TranscribeOptions};

pub const JFK_NORMALIZED: &str =
    "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(name: &str) -> PathBuf {
    root().join("audio-samples").join(name)
}

pub fn shared_eval(rel: &str) -> PathBuf {
    let path = root().join("../shared/eval").join(rel);
    assert!(
        path.exists(),
        "{} is missing: the evaluation data lives in ../shared/eval",
        path.display()
    );
    path
}

/// `models/whisper-<name>`, which must exist.
pub fn model_dir(name: &str) -> PathBuf {
    let dir = root().join("models").join(format!("whisper-{name}"));
    let command = match name.strip_suffix("-sherpa") {
        Some(base) => format!("models/provision --model {base} --sherpa"),
        None => format!("models/provision --model {name}"),
    };
    assert!(dir.is_dir(), "{} is missing: run `{command}`", dir.display());
    dir
}

pub fn normalizer() -> EnglishTextNormalizer {
    let path = root().join("models/whisper-assets/english.json");
    assert!(path.is_file(), "{} is missing: run `models/provision`", path.display());
    EnglishTextNormalizer::from_spelling_file(&path).expect("spelling map loads")
}

/// An engine on a provisioned model (CPU, 1 thread: tests run in parallel).
pub fn engine(model: &str, variant: ModelVariant, options: TranscribeOptions) -> Engine {
    let dir = model_dir(model);
    Engine::start(EngineConfig {
        model: ModelConfig {
            dir,
            variant,
            provision_hint: format!("models/provision --model {model}"),
        },
        runtime: RuntimeConfig {
            threads: 1,
            ..RuntimeConfig::default()
        },
        options,
    })
    .expect("engine starts")
}

/// Greedy decoding (faster for tests; the beam is tested separately).
pub fn greedy() -> TranscribeOptions {
    TranscribeOptions {
        strategy: steno::decode::search::DecodeStrategy::Greedy { best_of: 5 },
        ..TranscribeOptions::default()
    }
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run the `steno` binary.
pub fn steno(args: &[&str]) -> Run {
    steno_with_env(args, &[])
}

/// Run the `steno` binary with extra environment variables.
pub fn steno_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_steno"))
        .args(args)
        .env_remove("STENO_LOG")
        .env_remove("ORT_DYLIB_PATH")
        .envs(env.iter().copied())
        .current_dir(root())
        .output()
        .expect("steno runs");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "steno panicked:\n{}", run.stderr);
    run
}

/// A 16-bit mono 16 kHz WAV of `samples` (in [-1, 1]).
pub fn write_wav(path: &Path, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .expect("write sample");
    }
    w.finalize().expect("finalize wav");
}

/// Deterministic white noise (xorshift) with the given RMS.
pub fn white_noise(rms: f32, n: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0) * rms * 3f32.sqrt()
        })
        .collect()
}
