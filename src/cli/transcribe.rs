//! `steno transcribe`: files and folders in, one transcript per file out (stdout or
//! `--output-dir`), a progress bar on stderr when it is a terminal. A file that fails is
//! reported on stderr and skipped; the exit code is 1 when any file failed.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use steno::output::{self, Format};
use steno::{Engine, FileEvent};

use super::engine_config as config_for;

use super::{DecodeArgs, ModelArgs};

/// Extensions picked up when a folder is given.
const AUDIO_EXTENSIONS: &[&str] = &["wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "aac"];

#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// Audio files, or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output format: txt, json, srt, vtt or tsv.
    #[arg(long, short = 'f', default_value = "txt", value_parser = ["txt", "text", "json", "srt", "vtt", "tsv"])]
    format: String,
    /// Write <name>.<format> per input into this folder instead of printing.
    #[arg(long, short = 'o')]
    output_dir: Option<PathBuf>,
    /// Descend into sub-folders of folder inputs.
    #[arg(long, short = 'r')]
    recursive: bool,
    /// Files transcribed at once, each by its own model copy (threads are split between them).
    #[arg(long, short = 'j', default_value_t = 1)]
    jobs: usize,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    decode: DecodeArgs,
}

/// Expand folders into their audio files (sorted); files are taken as given.
fn collect_inputs(inputs: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot read folder", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if recursive {
                    walk(&path, recursive, out)?;
                }
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let before = files.len();
            walk(input, recursive, &mut files)?;
            if files.len() == before {
                bail!(
                    "{}: no audio files in this folder{}",
                    input.display(),
                    if recursive {
                        ""
                    } else {
                        " (use --recursive for sub-folders)"
                    }
                );
            }
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

fn progress_bar(files: usize) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    // Progress is in thousandths of a file: done files plus the decoded fraction of those in flight.
    let bar = ProgressBar::with_draw_target(Some(files as u64 * 1000), target);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("0/{files} files"));
    bar
}

/// Prints each file's output in input order (parallel jobs finish out of order) and counts
/// failures; a closed stdout (`steno … | head`) stops printing quietly.
struct OrderedPrinter {
    next: usize,
    ready: BTreeMap<usize, Result<Vec<u8>>>,
    failed: usize,
    broken_pipe: bool,
}

impl OrderedPrinter {
    fn finish(&mut self, index: usize, outcome: Result<Vec<u8>>, bar: &ProgressBar) {
        self.ready.insert(index, outcome);
        while let Some(outcome) = self.ready.remove(&self.next) {
            self.next += 1;
            match outcome {
                Err(e) => {
                    self.failed += 1;
                    bar.suspend(|| eprintln!("steno: error: {e:#}"));
                }
                Ok(bytes) if !bytes.is_empty() && !self.broken_pipe => {
                    let mut out = std::io::stdout().lock();
                    if let Err(e) = out.write_all(&bytes).and_then(|_| out.flush()) {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            self.broken_pipe = true;
                        } else {
                            self.failed += 1;
                            bar.suspend(|| eprintln!("steno: error: writing to stdout: {e}"));
                        }
                    }
                }
                Ok(_) => {}
            }
        }
    }
}

pub fn run(args: TranscribeArgs) -> Result<ExitCode> {
    let format: Format = args.format.parse()?;
    let files = collect_inputs(&args.inputs, args.recursive)?;
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create output folder", dir.display()))?;
    }
    let engines = start_engines(&args.model, &args.decode, args.jobs, files.len())?;

    let bar = progress_bar(files.len());
    let started = Instant::now();
    let multiple = files.len() > 1;
    let mut printer = OrderedPrinter {
        next: 0,
        ready: BTreeMap::new(),
        failed: 0,
        broken_pipe: false,
    };
    let mut done = 0usize;
    let mut audio_done = 0.0f64;
    // (duration, seconds decoded) of each file in flight.
    let mut in_flight: HashMap<usize, (f64, f64)> = HashMap::new();
    let position = |done: usize, in_flight: &HashMap<usize, (f64, f64)>| {
        let partial: f64 = in_flight
            .values()
            .map(|(d, s)| if *d > 0.0 { s / d } else { 0.0 })
            .sum();
        ((done as f64 + partial) * 1000.0) as u64
    };

    steno::engine::transcribe_files_parallel(&engines, &files, &mut |event| match event {
        FileEvent::Started { index, duration, .. } => {
            in_flight.insert(index, (duration, 0.0));
        }
        FileEvent::Progress { index, seconds } => {
            if let Some(entry) = in_flight.get_mut(&index) {
                entry.1 = seconds;
            }
            bar.set_position(position(done, &in_flight));
            let audio = audio_done + in_flight.values().map(|(_, s)| s).sum::<f64>();
            let rtfx = audio / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{done}/{} files, {audio:.0} s audio, {rtfx:.1}x", files.len()));
        }
        FileEvent::Finished { index, path, result } => {
            done += 1;
            in_flight.remove(&index);
            bar.set_position(position(done, &in_flight));
            let outcome = result.map_err(anyhow::Error::from).and_then(|transcript| {
                audio_done += transcript.duration;
                render(&transcript, path, format, args.output_dir.as_deref(), multiple)
            });
            printer.finish(index, outcome, &bar);
        }
    });
    bar.finish_and_clear();
    if printer.broken_pipe {
        return Ok(ExitCode::SUCCESS);
    }
    if printer.failed > 0 {
        if multiple {
            eprintln!("steno: {} of {} files failed", printer.failed, files.len());
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The bytes to print for one file, or nothing when it goes to `--output-dir`.
fn render(
    transcript: &steno::Transcript,
    path: &Path,
    format: Format,
    output_dir: Option<&Path>,
    multiple: bool,
) -> Result<Vec<u8>> {
    if let Some(dir) = output_dir {
        write_file(dir, path, transcript, format)?;
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    if multiple && format == Format::Txt {
        writeln!(buf, "==> {} <==", path.display())?;
        output::write(&mut buf, transcript, format, None)?;
    } else {
        output::write(&mut buf, transcript, format, Some(&path.display().to_string()))?;
    }
    Ok(buf)
}

/// `jobs` engines (at most one per file), the session threads split between them.
fn start_engines(model: &ModelArgs, decode: &DecodeArgs, jobs: usize, files: usize) -> Result<Vec<Engine>> {
    if jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let jobs = jobs.min(files.max(1));
    let mut config = config_for(model, decode)?;
    let cores = config.runtime.effective_threads();
    config.runtime.threads = (cores / jobs).max(1);
    (0..jobs)
        .map(|_| Engine::start(config.clone()).map_err(anyhow::Error::from))
        .collect()
}

fn write_file(dir: &Path, input: &Path, transcript: &steno::Transcript, format: Format) -> Result<()> {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audio".into());
    let target = dir.join(format!("{stem}.{}", format.extension()));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&target).with_context(|| format!("{}: cannot create", target.display()))?,
    );
    output::write(&mut file, transcript, format, Some(&input.display().to_string()))
        .and_then(|_| file.flush())
        .with_context(|| format!("{}: cannot write", target.display()))
}
