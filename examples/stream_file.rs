//! Stream a file through the live engine as fast as possible and print every event.
//!
//! ```sh
//! cargo run --release --example stream_file -- audio-samples/jfk.wav
//! ```

use steno::stream::{Pacing, StreamConfig, StreamEvent, StreamSession};
use steno::{Engine, EngineConfig, ModelConfig, ModelVariant, RuntimeConfig, TranscribeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "audio-samples/jfk.wav".into());
    let runtime = RuntimeConfig::default();
    let engine = Engine::start(EngineConfig {
        model: ModelConfig::resolve("tiny.en", &runtime.models_dir, ModelVariant::Fp32),
        runtime,
        options: TranscribeOptions::default(),
    })?;
    let audio = steno::audio::read_audio(path.as_ref())?;
    let config = StreamConfig {
        // Push blocks while the stream works: deterministic, as fast as the machine goes.
        pacing: Pacing::Lockstep,
        ..StreamConfig::default()
    };
    let mut session = StreamSession::start(&engine, config)?;
    let events = session.events().clone();
    let printer = std::thread::spawn(move || {
        for event in events {
            match event.event {
                StreamEvent::Partial {
                    committed, tentative, ..
                } => println!("[{:7.0} ms] partial: {committed} | {tentative}", event.wall_ms),
                StreamEvent::Final { text, start, end, .. } => {
                    println!("[{:7.0} ms] final {start:.2}-{end:.2} s: {text}", event.wall_ms)
                }
                other => println!("[{:7.0} ms] {other:?}", event.wall_ms),
            }
        }
    });
    // 100 ms at a time, as a network client would send it.
    for chunk in audio.samples.chunks(1_600) {
        session.push(chunk, 16_000)?;
    }
    session.finish();
    printer.join().expect("printer thread");
    Ok(())
}
