//! `steno transcribe`: files and folders in, one transcript per file out (stdout or
//! `--output-dir`), a progress bar on stderr when it is a terminal. A file that fails is
//! reported on stderr and skipped; the exit code is 1 when any file failed.
//!
//! Ends early without a partial output: each output file is written to a temporary file in
//! the output folder, synced, then renamed over `<name>.<format>`, so a reader only ever sees
//! whole transcripts (a failed write, such as a full disk, removes the temporary file and
//! names the output). Ctrl-C (SIGINT) ends the batch at once with exit code 130: the outputs
//! already finished are on disk (or printed), the files in flight are dropped, and an output
//! being written or printed at that moment is completed first. A closed stdout
//! (`steno … | head -1`) ends the batch quietly with 0.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Refuse files longer than this many seconds of audio (reported like any bad file; the
    /// batch goes on). Default: no limit (memory does not grow with a file's length).
    #[arg(long, value_name = "SECONDS")]
    max_duration_s: Option<f64>,
    /// Take only share K of N of the inputs (K from 0), for N workers over one input list
    /// (e.g. a Kubernetes Indexed Job: `--shard $(JOB_COMPLETION_INDEX)/N`). The split hashes
    /// each input's path, so it does not depend on the order or the other inputs: every file
    /// goes to exactly one shard, even if the folder changes between the workers' starts.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
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
                    let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
                    let mut out = std::io::stdout().lock();
                    let written = out.write_all(&bytes).and_then(|_| out.flush());
                    if written.is_ok() {
                        DONE.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Err(e) = written {
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

/// One share of a sharded batch (`--shard K/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shard {
    index: u64,
    count: u64,
}

impl Shard {
    fn parse(s: &str) -> std::result::Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not K/N (e.g. 0/3)"))?;
        let (index, count) = match (k.trim().parse::<u64>(), n.trim().parse::<u64>()) {
            (Ok(k), Ok(n)) => (k, n),
            _ => return Err(format!("`{s}` is not K/N with whole numbers (e.g. 0/3)")),
        };
        if count == 0 || index >= count {
            return Err(format!("`{s}`: K must be in 0..N and N at least 1"));
        }
        Ok(Shard { index, count })
    }

    /// Whether `path` belongs to this share: FNV-1a (64-bit) of the path's bytes, modulo N.
    /// A fixed hash, not std's randomly seeded one, so every worker computes the same split.
    fn takes(&self, path: &Path) -> bool {
        let hash = path
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        hash % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

pub fn run(args: TranscribeArgs) -> Result<ExitCode> {
    let format: Format = args.format.parse()?;
    let mut files = collect_inputs(&args.inputs, args.recursive)?;
    if let Some(shard) = args.shard {
        files.retain(|path| shard.takes(path));
        if files.is_empty() {
            eprintln!("steno: shard {shard} has no files");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let limits = steno::audio::AudioLimits {
        max_duration_s: match args.max_duration_s {
            Some(s) if !(s.is_finite() && s > 0.0) => bail!("--max-duration-s must be a positive number of seconds"),
            other => other,
        },
    };
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

    install_interrupt_handler(bar.clone(), files.len());
    steno::engine::transcribe_files_parallel(&engines, &files, &limits, &mut |event| match event {
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
            // Nobody reads stdout any more: the rest of the batch would be for nothing.
            if printer.broken_pipe {
                bar.finish_and_clear();
                exit_now(0);
            }
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

/// Held while an output is being written (a file under its temporary name, or bytes to
/// stdout): Ctrl-C ends the process only between writes.
static WRITING: Mutex<()> = Mutex::new(());

/// Outputs written or printed whole so far (for the message at Ctrl-C).
static DONE: AtomicUsize = AtomicUsize::new(0);

/// Ctrl-C during the batch: wait for an output being written, then end with 130 (128 +
/// SIGINT, what a shell reports for a process the signal ended). If the handler cannot be
/// installed, Ctrl-C keeps its default (the process ends at once; a partial output can then
/// only be a temporary file).
fn install_interrupt_handler(bar: ProgressBar, total: usize) {
    let installed = ctrlc::set_handler(move || {
        let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        bar.finish_and_clear();
        eprintln!(
            "steno: interrupted: {} of {total} files done",
            DONE.load(Ordering::SeqCst)
        );
        exit_now(130);
    });
    if let Err(e) = installed {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}

/// End the process now; the caller holds [`WRITING`] or knows no output is being written. The
/// engines' workers may be mid-file: they are not waited for (a decode cannot be cancelled).
/// `_exit`, not `exit`: `exit` runs ONNX Runtime's C++ static destructors while a worker may
/// still be inside a session (seen: kernels failing at teardown, and ONNX Runtime logging it).
fn exit_now(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    #[cfg(unix)]
    {
        unsafe extern "C" {
            fn _exit(status: std::ffi::c_int) -> !;
        }
        // SAFETY: `_exit` only ends the process; stdout is flushed above and output files
        // are synced before their rename.
        unsafe { _exit(code) }
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// Write `<dir>/<input stem>.<format>` whole or not at all: into a temporary file beside it,
/// synced (a full disk or I/O error shows here, not as a short file later), then renamed over
/// the target. On failure the temporary file is removed and the error names the target.
fn write_file(dir: &Path, input: &Path, transcript: &steno::Transcript, format: Format) -> Result<()> {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audio".into());
    let name = format!("{stem}.{}", format.extension());
    let target = dir.join(&name);
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let file = std::fs::File::create(&temp).with_context(|| format!("{}: cannot create", target.display()))?;
    let written = (|| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(file);
        output::write(&mut out, transcript, format, Some(&input.display().to_string()))?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temp, &target)
    })();
    match written {
        Ok(()) => {
            DONE.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e).with_context(|| format!("{}: cannot write", target.display()))
        }
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;

    #[test]
    fn every_path_goes_to_exactly_one_shard_and_the_split_is_even() {
        let paths: Vec<PathBuf> = (0..3000)
            .map(|i| PathBuf::from(format!("data/clip-{i:05}.flac")))
            .collect();
        let shards: Vec<Shard> = (0..3).map(|k| Shard::parse(&format!("{k}/3")).unwrap()).collect();
        let mut sizes = [0usize; 3];
        for path in &paths {
            let owners: Vec<usize> = (0..3).filter(|&k| shards[k].takes(path)).collect();
            assert_eq!(owners.len(), 1, "{}", path.display());
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (900..=1100).contains(&n)), "{sizes:?}");
        // A fixed hash, not a seeded one: FNV-1a of "audio-samples/jfk.wav" is
        // 0x5b2013ad6eebbb29 (computed independently in Python), 0 mod 3 and 3 mod 7.
        let jfk = Path::new("audio-samples/jfk.wav");
        assert!(Shard::parse("0/3").unwrap().takes(jfk));
        assert!(Shard::parse("3/7").unwrap().takes(jfk));
    }

    #[test]
    fn bad_shards_are_refused() {
        for bad in ["3/3", "1", "a/3", "0/0", "-1/3", "1/3/5"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shard::parse(" 2 / 5 ").unwrap(), Shard { index: 2, count: 5 });
    }
}
