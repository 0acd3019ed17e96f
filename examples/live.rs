//! Live dictation from the default microphone: the committed text and the tentative tail of
//! the current utterance, and each final on its own line. Ctrl-C ends it (the last words are
//! still decoded and printed).
//!
//! ```sh
//! cargo run --release --example live
//! ```

use std::io::Write;

use steno::stream::capture::Capture;
use steno::stream::{StreamConfig, StreamEvent, StreamSession};
use steno::{Engine, EngineConfig, ModelConfig, ModelVariant, RuntimeConfig, TranscribeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = RuntimeConfig::default();
    let engine = Engine::start(EngineConfig {
        model: ModelConfig::resolve("tiny.en", &runtime.models_dir, ModelVariant::Fp32),
        runtime,
        options: TranscribeOptions::default(),
    })?;
    // Live pacing (the default): pushing never blocks; audio that finds the queue full is
    // dropped, counted and reported as a Warning event.
    let mut session = StreamSession::start(&engine, StreamConfig::default())?;
    let sender = session.sender()?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(2);
    let on_lost = stop_tx.clone();
    let capture = Capture::start(
        None,
        move |samples, rate| {
            sender.try_push(samples, rate);
        },
        move |message| {
            eprintln!("input device lost: {message}");
            let _ = on_lost.try_send(());
        },
    )?;
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })?;
    eprintln!(
        "listening on {} ({} Hz); Ctrl-C to stop",
        capture.device_name(),
        capture.sample_rate()
    );
    let mut out = std::io::stdout();
    loop {
        crossbeam_channel::select! {
            recv(session.events()) -> event => match event.map(|e| e.event) {
                Ok(StreamEvent::Partial { committed, tentative, .. }) => {
                    write!(out, "\r\x1b[K{committed} \x1b[2m{tentative}\x1b[0m")?;
                    out.flush()?;
                }
                Ok(StreamEvent::Final { text, .. }) => writeln!(out, "\r\x1b[K{text}")?,
                Ok(_) => {}
                Err(_) => break,
            },
            recv(stop_rx) -> _ => break,
        }
    }
    drop(capture);
    session.finish();
    for event in session.events() {
        if let StreamEvent::Final { text, .. } = event.event {
            writeln!(out, "\r\x1b[K{text}")?;
        }
    }
    Ok(())
}
