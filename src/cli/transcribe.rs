//! `steno transcribe`: files and folders in, one transcript per file out (stdout or
//! `--output-dir`), a progress bar on stderr when it is a terminal. A file that fails is
//! reported on stderr and skipped; the exit code is 1 when any file failed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use steno::output::{self, Format};
use steno::{Engine, FileEvent};

use super::{DecodeArgs, ModelArgs, engine_config};

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
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("0/{files} files"));
    bar
}

pub fn run(args: TranscribeArgs) -> Result<ExitCode> {
    let format: Format = args.format.parse()?;
    let files = collect_inputs(&args.inputs, args.recursive)?;
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create output folder", dir.display()))?;
    }
    let engine = Engine::start(engine_config(&args.model, &args.decode)?)?;

    let bar = progress_bar(files.len());
    let started = Instant::now();
    let multiple = files.len() > 1;
    let mut failed = 0usize;
    let mut done = 0usize;
    let mut audio_done = 0.0f64;
    let mut current = 0.0f64;
    let stdout = std::io::stdout();
    let mut broken_pipe = false;

    engine.transcribe_files(&files, &mut |event| match event {
        FileEvent::Started { duration, .. } => {
            bar.inc_length((duration * 100.0) as u64);
            current = 0.0;
        }
        FileEvent::Progress { seconds, .. } => {
            bar.inc(((seconds - current) * 100.0).max(0.0) as u64);
            current = seconds;
            let rtfx = (audio_done + seconds) / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{done}/{} files, {:.0} s audio, {rtfx:.1}x",
                files.len(),
                audio_done + seconds
            ));
        }
        FileEvent::Finished { path, result, .. } => {
            done += 1;
            match result {
                Ok(transcript) => {
                    audio_done += transcript.duration;
                    let written = match &args.output_dir {
                        Some(dir) => write_file(dir, path, &transcript, format),
                        None => {
                            let mut out = stdout.lock();
                            let res = if multiple && format == Format::Txt {
                                writeln!(out, "==> {} <==", path.display())
                                    .and_then(|_| output::write(&mut out, &transcript, format, None))
                            } else {
                                output::write(&mut out, &transcript, format, Some(&path.display().to_string()))
                            };
                            res.and_then(|_| out.flush()).map_err(|e| {
                                if e.kind() == std::io::ErrorKind::BrokenPipe {
                                    broken_pipe = true;
                                }
                                anyhow::Error::new(e).context("writing to stdout")
                            })
                        }
                    };
                    if let Err(e) = written
                        && !broken_pipe
                    {
                        failed += 1;
                        bar.suspend(|| eprintln!("steno: error: {e:#}"));
                    }
                }
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("steno: error: {e}"));
                }
            }
        }
    });
    bar.finish_and_clear();
    if broken_pipe {
        return Ok(ExitCode::SUCCESS);
    }
    if failed > 0 {
        eprintln!("steno: {failed} of {} files failed", files.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
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
