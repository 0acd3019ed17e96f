//! `steno eval DIR`: transcribe a folder of audio with `refs.tsv` and report word error rate
//! (Whisper's English normalizer on both sides), speed and peak memory, as a table or JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use steno::Engine;
use steno::eval::normalizer::EnglishTextNormalizer;
use steno::eval::{self, EvalItem};

use super::{DecodeArgs, ModelArgs, engine_config};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder with audio files and refs.tsv (`<id>\t<reference>` per line).
    dir: PathBuf,
    /// Print one JSON document (per-file and total numbers) instead of a table.
    #[arg(long)]
    json: bool,
    /// Files transcribed at once, each by its own model copy (threads are split between them).
    #[arg(long, short = 'j', default_value_t = 1)]
    jobs: usize,
    /// Whisper's spelling map (english.json); default: <models dir>/whisper-assets/english.json.
    #[arg(long)]
    spelling_map: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    decode: DecodeArgs,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let mut config = engine_config(&args.model, &args.decode)?;
    if args.jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    let spelling = args
        .spelling_map
        .clone()
        .unwrap_or_else(|| config.runtime.models_dir.join("whisper-assets/english.json"));
    if !spelling.is_file() {
        anyhow::bail!(
            "{}: Whisper's spelling map is missing; run `models/provision`",
            spelling.display()
        );
    }
    let normalizer = EnglishTextNormalizer::from_spelling_file(&spelling)?;
    let refs = eval::read_references(&args.dir)?;
    let model_desc = format!("{} ({})", config.model.dir.display(), config.model.variant);
    let strategy = config.options.strategy;
    let load_started = Instant::now();
    let jobs = args.jobs.min(refs.len());
    config.runtime.threads = (config.runtime.effective_threads() / jobs).max(1);
    let engines = (0..jobs)
        .map(|_| Engine::start(config.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let load_seconds = load_started.elapsed().as_secs_f64();

    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    if !json {
        writeln!(
            stdout,
            "{:<28} {:>7} {:>7} {:>6}  hypothesis",
            "id", "audio_s", "wer%", "errors"
        )?;
    }
    let mut print_item = |item: &EvalItem| {
        if !json {
            let text = item
                .error
                .as_deref()
                .map(|e| format!("ERROR: {e}"))
                .unwrap_or_else(|| item.hypothesis.clone());
            let _ = writeln!(
                stdout,
                "{:<28} {:>7.2} {:>7.1} {:>6}  {}",
                item.id,
                item.duration,
                100.0 * item.wer,
                item.errors.errors(),
                text
            );
        }
    };
    let report = eval::evaluate(&engines, &refs, &normalizer, &mut print_item);
    if json {
        let doc = serde_json::json!({
            "model": model_desc,
            "strategy": strategy,
            "jobs": jobs,
            "load_seconds": load_seconds,
            "report": report,
        });
        serde_json::to_writer_pretty(&mut stdout, &doc).context("writing JSON")?;
        writeln!(stdout)?;
    } else {
        let e = report.errors;
        writeln!(
            stdout,
            "\nmodel {model_desc}, {strategy:?}\nfiles {} ({} failed), audio {:.1} s, wall {:.1} s (+{load_seconds:.1} s model load), RTFx {:.2}\nWER {:.2} % ({} errors: {} sub, {} del, {} ins / {} words), peak RSS {}",
            report.items.len(),
            report.failed,
            report.audio_seconds,
            report.wall_seconds,
            report.rtfx,
            100.0 * report.wer,
            e.errors(),
            e.substitutions,
            e.deletions,
            e.insertions,
            e.reference_words,
            report
                .peak_rss_bytes
                .map(|b| format!("{:.0} MiB", b as f64 / 1048576.0))
                .unwrap_or_else(|| "n/a".into()),
        )?;
    }
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
