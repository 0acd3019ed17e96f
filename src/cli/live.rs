//! `steno stream FILE|-` and `steno listen`: the live streaming engine from a file, stdin or
//! the microphone, printing partials and finals as text (a rewritten line on a terminal) or as
//! JSON lines. Ctrl-C, the end of input and the loss of the device all end the input: the last
//! words are decoded and printed before the process exits.

use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use crossbeam_channel::{Receiver, bounded};
use steno::stream::{Pacing, PolicyKind, StreamConfig, StreamEvent, StreamSession, TimedEvent, VadConfig, VadKind};
use steno::{Engine, EngineConfig, TranscribeOptions};

use super::ModelArgs;

/// Options of the live engine (defaults: `StreamConfig::default()` and `VadConfig::default()`).
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Output: text (finals as lines; on a terminal the partial is rewritten in place) or jsonl
    /// (every event as one JSON object with `type` and `wall_ms`).
    #[arg(long, short = 'f', default_value = "text", value_parser = ["text", "jsonl"])]
    format: String,
    /// Language code (multilingual models); English-only models take only en.
    #[arg(long)]
    language: Option<String>,
    /// Voice activity detector: silero or energy.
    #[arg(long, default_value_t = VadConfig::default().kind.to_string())]
    vad: String,
    /// Speech starts at this VAD probability.
    #[arg(long, default_value_t = VadConfig::default().threshold)]
    vad_threshold: f32,
    /// An utterance ends after this much silence (ms).
    #[arg(long, default_value_t = VadConfig::default().min_silence_ms)]
    min_silence_ms: u32,
    /// Speech shorter than this is ignored (ms).
    #[arg(long, default_value_t = VadConfig::default().min_speech_ms)]
    min_speech_ms: u32,
    /// Audio kept before and after speech (ms).
    #[arg(long, default_value_t = VadConfig::default().speech_pad_ms)]
    speech_pad_ms: u32,
    /// Re-decode the utterance every this many ms of audio (stretched when the machine is slow).
    #[arg(long, default_value_t = StreamConfig::default().hop_ms)]
    hop_ms: u32,
    /// Live input: the largest share of wall time partial decodes may keep the model busy,
    /// split among the streams speaking at once (the hop stretches to stay under it; 1: no limit).
    #[arg(long, default_value_t = StreamConfig::default().max_duty_cycle)]
    max_duty_cycle: f32,
    /// Commit policy: auto, alignatt or la2 (LocalAgreement-2).
    #[arg(long, default_value_t = StreamConfig::default().commit_policy.to_string())]
    commit_policy: String,
    /// AlignAtt: words attended this close to the end of the audio (ms) are not committed yet.
    #[arg(long, default_value_t = StreamConfig::default().frame_threshold_ms)]
    frame_threshold_ms: u32,
    /// AlignAtt: commit a word as soon as the attention allows, without waiting for two
    /// consecutive decodes to agree on it (lower lag, less accurate).
    #[arg(long)]
    no_agreement: bool,
    /// Longest utterance (s); a longer one is cut at its last committed word.
    #[arg(long, default_value_t = StreamConfig::default().max_utterance_s)]
    max_utterance_s: f32,
    /// Tokens of earlier utterances given as the prompt.
    #[arg(long, default_value_t = StreamConfig::default().prompt_max_tokens)]
    prompt_tokens: usize,
    /// Earlier utterances within this many seconds are decoded again as context (0: off).
    #[arg(long, default_value_t = StreamConfig::default().context_s)]
    context_s: f32,
    /// Re-decode the previous hypothesis token by token instead of verifying it in one call.
    #[arg(long)]
    no_draft: bool,
    /// Seconds of padding after a window's audio (dynamic-length encoders).
    #[arg(long, default_value_t = StreamConfig::default().window_pad_s)]
    window_pad_s: f32,
    /// Shortest encoder window in seconds (dynamic-length encoders).
    #[arg(long, default_value_t = StreamConfig::default().min_window_s)]
    min_window_s: f32,
    #[command(flatten)]
    model: ModelArgs,
}

impl LiveArgs {
    pub(super) fn config(&self, pacing: Pacing) -> Result<StreamConfig> {
        let config = StreamConfig {
            vad: VadConfig {
                kind: self.vad.parse::<VadKind>()?,
                threshold: self.vad_threshold,
                min_silence_ms: self.min_silence_ms,
                min_speech_ms: self.min_speech_ms,
                speech_pad_ms: self.speech_pad_ms,
                ..VadConfig::default()
            },
            commit_policy: self.commit_policy.parse::<PolicyKind>()?,
            hop_ms: self.hop_ms,
            max_duty_cycle: self.max_duty_cycle,
            frame_threshold_ms: self.frame_threshold_ms,
            alignatt_agreement: !self.no_agreement,
            max_utterance_s: self.max_utterance_s,
            prompt_max_tokens: self.prompt_tokens,
            context_s: self.context_s,
            verify_draft: !self.no_draft,
            window_pad_s: self.window_pad_s,
            min_window_s: self.min_window_s,
            language: self.language.clone(),
            pacing,
            ..StreamConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    pub(super) fn engine(&self) -> Result<Engine> {
        let runtime = self.model.runtime()?;
        let config = EngineConfig {
            model: self.model.model(&runtime)?,
            // Live windows are always greedy (StreamConfig::decode_options); batch jobs on this
            // engine (stream-bench --batch) are greedy too, for a like-for-like comparison.
            options: TranscribeOptions {
                language: self.language.clone(),
                strategy: steno::decode::search::DecodeStrategy::Greedy { best_of: 5 },
                ..TranscribeOptions::default()
            },
            runtime,
        };
        Ok(Engine::start(config)?)
    }
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// An audio file, or - for stdin (raw s16le 16 kHz mono, or a WAV stream).
    input: PathBuf,
    /// Feed the input at wall-clock speed (as a microphone would) instead of as fast as
    /// possible; without it the output is deterministic.
    #[arg(long)]
    realtime: bool,
    #[command(flatten)]
    live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// List the input devices and exit.
    #[arg(long)]
    list_devices: bool,
    /// Input device name (default: the system's default input).
    #[arg(long)]
    input: Option<String>,
    #[command(flatten)]
    live: LiveArgs,
}

/// Prints events as they come.
struct Printer {
    jsonl: bool,
    tty: bool,
    out: BufWriter<std::io::Stdout>,
    /// A partial line is on screen (tty text mode).
    partial_shown: bool,
    finals: usize,
}

impl Printer {
    fn new(format: &str) -> Printer {
        Printer {
            jsonl: format == "jsonl",
            tty: std::io::stdout().is_terminal(),
            out: BufWriter::new(std::io::stdout()),
            partial_shown: false,
            finals: 0,
        }
    }

    fn print(&mut self, event: &TimedEvent) -> Result<()> {
        if self.jsonl {
            serde_json::to_writer(&mut self.out, event)?;
            writeln!(self.out)?;
            self.out.flush()?;
            return Ok(());
        }
        match &event.event {
            StreamEvent::Partial {
                committed, tentative, ..
            } if self.tty => {
                // Committed text plain, the tentative tail dimmed, the line rewritten in place.
                write!(self.out, "\r\x1b[K{committed} \x1b[2m{tentative}\x1b[0m")?;
                self.partial_shown = true;
            }
            StreamEvent::Final { text, .. } => {
                if self.partial_shown {
                    write!(self.out, "\r\x1b[K")?;
                    self.partial_shown = false;
                }
                writeln!(self.out, "{text}")?;
                self.finals += 1;
            }
            StreamEvent::Warning { message } => tracing::warn!("{message}"),
            StreamEvent::Error { message } => eprintln!("steno: error: {message}"),
            _ => {}
        }
        self.out.flush()?;
        Ok(())
    }
}

/// Ctrl-C as a channel message (the handler only sends; the main loop decides).
fn interrupts() -> Result<Receiver<()>> {
    let (tx, rx) = bounded(4);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(rx)
}

/// Read everything left on the session's event channel (after `finish`).
fn drain(session: &StreamSession, printer: &mut Printer) -> Result<bool> {
    let mut errors = false;
    for event in session.events() {
        errors |= matches!(event.event, StreamEvent::Error { .. });
        printer.print(&event)?;
    }
    Ok(errors)
}

/// Chunks of this many samples go into the stream (100 ms at 16 kHz).
const CHUNK: usize = 1_600;

pub fn run_stream(args: StreamArgs) -> Result<ExitCode> {
    let pacing = if args.realtime { Pacing::Live } else { Pacing::Lockstep };
    let config = args.live.config(pacing)?;
    let engine = args.live.engine()?;
    let interrupted = interrupts()?;
    let mut printer = Printer::new(&args.live.format);
    let mut session = StreamSession::start(&engine, config)?;
    let source = if args.input.as_os_str() == "-" {
        Source::stdin()?
    } else {
        let audio = steno::audio::read_audio(&args.input)?;
        Source::Samples {
            samples: audio.samples,
            at: 0,
        }
    };
    let started = Instant::now();
    let mut pushed: u64 = 0;
    let mut source = source;
    let mut input_error = None;
    loop {
        if interrupted.try_recv().is_ok() {
            break;
        }
        // Print what is ready without waiting.
        while let Ok(event) = session.events().try_recv() {
            printer.print(&event)?;
        }
        let chunk = match source.next_chunk() {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                input_error = Some(e);
                break;
            }
        };
        if args.realtime {
            let due = Duration::from_secs_f64(pushed as f64 / 16_000.0);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        pushed += chunk.len() as u64;
        session.push(&chunk, 16_000)?;
    }
    session.finish();
    let errors = drain(&session, &mut printer)?;
    drop(session);
    if let Some(e) = input_error {
        return Err(e.context(format!("{}: reading the input", args.input.display())));
    }
    Ok(if errors { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Where `steno stream` reads samples from.
enum Source {
    Samples { samples: Vec<f32>, at: usize },
    Raw(Box<dyn Read>),
    Wav(Box<hound::WavReader<Box<dyn Read>>>),
}

impl Source {
    /// stdin: a WAV stream when it starts with `RIFF`, else raw s16le 16 kHz mono.
    fn stdin() -> Result<Source> {
        let mut stdin = std::io::stdin();
        let mut head = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match stdin.read(&mut head[got..])? {
                0 => break,
                n => got += n,
            }
        }
        let reader: Box<dyn Read> = Box::new(std::io::Cursor::new(head[..got].to_vec()).chain(stdin));
        if &head[..got] == b"RIFF" {
            let wav = hound::WavReader::new(reader).context("stdin: not a readable WAV stream")?;
            let spec = wav.spec();
            if spec.sample_rate != 16_000 || spec.channels != 1 {
                bail!(
                    "stdin: WAV at {} Hz with {} channels; steno stream - takes 16 kHz mono (convert the file, or give its path instead of -)",
                    spec.sample_rate,
                    spec.channels
                );
            }
            Ok(Source::Wav(Box::new(wav)))
        } else {
            Ok(Source::Raw(reader))
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<f32>>> {
        match self {
            Source::Samples { samples, at } => {
                let end = (*at + CHUNK).min(samples.len());
                if *at >= end {
                    return Ok(None);
                }
                let chunk = samples[*at..end].to_vec();
                *at = end;
                Ok(Some(chunk))
            }
            Source::Raw(reader) => {
                let mut bytes = vec![0u8; CHUNK * 2];
                let mut got = 0;
                while got < bytes.len() {
                    match reader.read(&mut bytes[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                if got == 0 {
                    return Ok(None);
                }
                Ok(Some(
                    bytes[..got - got % 2]
                        .chunks_exact(2)
                        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
                        .collect(),
                ))
            }
            Source::Wav(wav) => {
                let spec = wav.spec();
                let chunk: Vec<f32> = match spec.sample_format {
                    hound::SampleFormat::Float => wav.samples::<f32>().take(CHUNK).collect::<Result<_, _>>()?,
                    hound::SampleFormat::Int => {
                        let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                        wav.samples::<i32>()
                            .take(CHUNK)
                            .map(|s| s.map(|s| s as f32 * scale))
                            .collect::<Result<_, _>>()?
                    }
                };
                Ok((!chunk.is_empty()).then_some(chunk))
            }
        }
    }
}

#[cfg(feature = "mic")]
pub fn run_listen(args: ListenArgs) -> Result<ExitCode> {
    use steno::stream::capture::{Capture, input_devices};
    if args.list_devices {
        for name in input_devices()? {
            println!("{name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = args.live.config(Pacing::Live)?;
    let engine = args.live.engine()?;
    let interrupted = interrupts()?;
    let mut printer = Printer::new(&args.live.format);
    let mut session = StreamSession::start(&engine, config)?;
    let sender = session.sender()?;
    let (lost_tx, lost_rx) = bounded::<String>(1);
    let capture = Capture::start(
        args.input.as_deref(),
        move |samples, rate| {
            sender.try_push(samples, rate);
        },
        move |message| {
            let _ = lost_tx.try_send(message);
        },
    )?;
    tracing::info!(
        device = capture.device_name(),
        rate = capture.sample_rate(),
        channels = capture.channels(),
        "listening"
    );
    let mut lost = None;
    loop {
        crossbeam_channel::select! {
            recv(session.events()) -> event => match event {
                Ok(event) => printer.print(&event)?,
                Err(_) => break,
            },
            recv(interrupted) -> _ => break,
            recv(lost_rx) -> message => {
                lost = message.ok();
                break;
            }
        }
    }
    // Stop capturing, then flush: the last words become a final.
    drop(capture);
    session.finish();
    let errors = drain(&session, &mut printer)?;
    if let Some(message) = lost {
        eprintln!("steno: the input device stopped: {message}");
        return Ok(ExitCode::from(1));
    }
    Ok(if errors { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[cfg(not(feature = "mic"))]
pub fn run_listen(_args: ListenArgs) -> Result<ExitCode> {
    bail!("this steno was built without the `mic` feature (cargo build --features mic)")
}
