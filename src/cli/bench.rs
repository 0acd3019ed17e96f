//! `steno stream-bench DIR`: the live engine's benchmark, printing one JSON document.
//!
//! A folder with `refs.tsv` is fed as ONE stream: its utterances in order, joined with
//! `--gap-s` of digital silence (a folder of long recordings is fed the same way), optionally
//! looped. It runs as fast as possible (lockstep: deterministic) or, with `--realtime`, paced
//! at wall-clock speed as a microphone would be. Reported:
//! - `wer`: the joined finals against the joined references (Whisper's normalizer), and with
//!   `--batch` the batch greedy WER on the same joined audio, for comparison;
//! - `final_after_speech_ms` (realtime mode): from each reference utterance's end of speech
//!   (its last 10 ms frame above −45 dBFS, on the audio clock, which is then the wall clock)
//!   to the final that holds it: the last final starting before it. (Until 2026-12-01 it was
//!   the first final whose end reached it; when the VAD ended an utterance on a soft tail,
//!   more than 0.25 s before that point, the next utterance's final was counted, about 10 s
//!   later: that was the p95 of 9.9 s.) A final can come before the −45 dBFS point when the VAD
//!   took a soft tail for silence: such values are small or negative, and counted as they are;
//! - `compute_ms`: from the endpoint decision to the final (queueing, encoder, decoder);
//! - `commit_lag_s`: for each word, from its end (the final's word times) to the event that
//!   committed it: wall-clock seconds in realtime mode, audio seconds of look-ahead otherwise;
//! - `partial_interval_ms`, `cpu_cores` (process CPU time / wall time), peak RSS, RSS after the
//!   first minute of audio and at the end, dropped samples. The peak and the end are read as
//!   the stream ends, before this report's own work (the WER alignment of a 20-minute stream
//!   alone takes tens of MB for a moment, and glibc keeps some of it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use steno::eval::normalizer::EnglishTextNormalizer;
use steno::eval::wer::word_errors;
use steno::stream::{Pacing, StreamEvent, StreamSession, TimedEvent};

use super::live::LiveArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folder with audio files and refs.tsv.
    dir: PathBuf,
    /// Seconds of silence between utterances.
    #[arg(long, default_value_t = 1.5)]
    gap_s: f64,
    /// Feed the audio this many times in a row (memory growth over long streams).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Pace the input at wall-clock speed (latencies are then wall-clock latencies).
    #[arg(long)]
    realtime: bool,
    /// Also transcribe the joined audio in batch (greedy) for the WER comparison.
    #[arg(long)]
    batch: bool,
    /// Include every final (time and text), each utterance's start and end of speech and, with
    /// `--batch`, the batch segments in the JSON.
    #[arg(long)]
    texts: bool,
    #[command(flatten)]
    live: LiveArgs,
}

/// Percentiles of a sample (nearest rank), rounded.
fn summary(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::json!(null);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    serde_json::json!({
        "n": v.len(),
        "p50": round(at(0.5)),
        "p95": round(at(0.95)),
        "max": round(v[v.len() - 1]),
        "mean": round(v.iter().sum::<f64>() / v.len() as f64),
    })
}

fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cpu_seconds() -> f64 {
    // utime + stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The end of speech of a clip: the end of its last 10 ms frame above −45 dBFS.
fn speech_end(samples: &[f32]) -> usize {
    let threshold = 10f32.powf(-45.0 / 20.0);
    samples
        .chunks(160)
        .enumerate()
        .filter(|(_, c)| (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32).sqrt() > threshold)
        .map(|(i, c)| i * 160 + c.len())
        .next_back()
        .unwrap_or(samples.len())
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if args.repeat == 0 || !(args.gap_s.is_finite() && args.gap_s >= 0.0) {
        bail!("--repeat must be at least 1 and --gap-s a non-negative number");
    }
    let refs = steno::eval::read_references(&args.dir)?;
    let engine = args.live.engine()?;
    let spelling = engine.runtime_config().models_dir.join("whisper-assets/english.json");
    if !spelling.is_file() {
        bail!(
            "{}: Whisper's spelling map is missing; run `models/provision`",
            spelling.display()
        );
    }
    let normalizer = EnglishTextNormalizer::from_spelling_file(&spelling)?;

    // The joined stream and where each utterance's speech ends.
    let gap = vec![0f32; (args.gap_s * 16_000.0) as usize];
    let mut audio: Vec<f32> = Vec::new();
    let mut speech_ends_s: Vec<f64> = Vec::new();
    let mut starts_s: Vec<f64> = Vec::new();
    let mut reference = String::new();
    let clips: Vec<Vec<f32>> = refs
        .iter()
        .map(|r| steno::audio::read_audio(&r.audio).map(|a| a.samples))
        .collect::<Result<_, _>>()?;
    for _ in 0..args.repeat {
        for (r, clip) in refs.iter().zip(&clips) {
            starts_s.push(audio.len() as f64 / 16_000.0);
            speech_ends_s.push((audio.len() + speech_end(clip)) as f64 / 16_000.0);
            audio.extend_from_slice(clip);
            audio.extend_from_slice(&gap);
            reference.push_str(&r.text);
            reference.push(' ');
        }
    }
    let audio_s = audio.len() as f64 / 16_000.0;

    let pacing = if args.realtime { Pacing::Live } else { Pacing::Lockstep };
    let config = args.live.config(pacing)?;
    let mut session = StreamSession::start(&engine, config)?;
    let events = session.events().clone();
    // Collect events on another thread so pushing is never held up by reading.
    let collector = std::thread::spawn(move || {
        let mut rss_after_minute = None;
        let mut all = Vec::new();
        for e in events {
            if rss_after_minute.is_none()
                && let StreamEvent::Final { end, .. } = &e.event
                && *end >= 60.0
            {
                rss_after_minute = rss_kib("VmRSS:");
            }
            all.push(e);
        }
        (all, rss_after_minute)
    });
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    // 20 ms chunks, like a capture callback.
    for (i, chunk) in audio.chunks(320).enumerate() {
        if args.realtime {
            let due = Duration::from_secs_f64((i * 320) as f64 / 16_000.0);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        session.push(chunk, 16_000)?;
    }
    session.finish();
    let (events, rss_after_minute) = collector
        .join()
        .map_err(|_| anyhow::anyhow!("the collector panicked"))?;
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu_before;
    let (rss_peak, rss_end) = (rss_kib("VmHWM:"), rss_kib("VmRSS:"));
    drop(session);

    let report = analyse(&events, &speech_ends_s, args.realtime);
    let hypothesis: String = events
        .iter()
        .filter_map(|e| match &e.event {
            StreamEvent::Final { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ");
    let errors = word_errors(&normalizer.normalize(&reference), &normalizer.normalize(&hypothesis));
    let batch = if args.batch {
        let started = Instant::now();
        let transcript = engine.transcribe_samples(&audio, &mut |_| {})?;
        let e = word_errors(
            &normalizer.normalize(&reference),
            &normalizer.normalize(&transcript.text()),
        );
        let mut batch = serde_json::json!({
            "wer": e.rate(),
            "rtfx": audio_s / started.elapsed().as_secs_f64(),
            "note": "batch greedy (beam 1, best-of 5 fallback) on the same joined audio",
        });
        if args.texts {
            batch["texts"] = transcript
                .segments
                .iter()
                .map(|s| serde_json::json!([s.start, s.end, s.text]))
                .collect();
        }
        Some(batch)
    } else {
        None
    };
    let stats = events.iter().rev().find_map(|e| match &e.event {
        StreamEvent::Stats(s) => Some(s.clone()),
        _ => None,
    });
    let out = serde_json::json!({
        "input": args.dir.display().to_string(),
        "utterances": refs.len() * args.repeat,
        "audio_s": audio_s,
        "realtime": args.realtime,
        "wall_s": wall_s,
        "rtfx": audio_s / wall_s,
        "cpu_cores": cpu_s / wall_s,
        "wer": errors.rate(),
        "word_errors": errors,
        "batch": batch,
        "finals": report.finals,
        "final_after_speech_ms": summary(report.after_speech_ms),
        "compute_ms": summary(report.compute_ms),
        "commit_lag_s": summary(report.commit_lag_s),
        "committed_before_final": report.committed_early,
        "partial_interval_ms": summary(report.partial_interval_ms),
        "peak_rss_mib": rss_peak.map(|k| k as f64 / 1024.0),
        "rss_after_first_minute_mib": rss_after_minute.map(|k| k as f64 / 1024.0),
        "rss_end_mib": rss_end.map(|k| k as f64 / 1024.0),
        "dropped_samples": stats.as_ref().map(|s| s.dropped_samples),
        "stream_stats": stats,
        "errors": events.iter().filter(|e| matches!(e.event, StreamEvent::Error { .. })).count(),
    });
    let mut out = out;
    if args.texts {
        out["texts"] = events
            .iter()
            .filter_map(|e| match &e.event {
                StreamEvent::Final { start, end, text, .. } => Some(serde_json::json!([start, end, text])),
                _ => None,
            })
            .collect();
        out["reference_utterance_starts_s"] = serde_json::json!(starts_s);
        out["reference_utterance_ends_s"] = serde_json::json!(speech_ends_s);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Report {
    finals: usize,
    after_speech_ms: Vec<f64>,
    compute_ms: Vec<f64>,
    commit_lag_s: Vec<f64>,
    committed_early: usize,
    partial_interval_ms: Vec<f64>,
}

/// Words of a text as the commit boundary counts them (whitespace-separated).
fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

fn analyse(events: &[TimedEvent], speech_ends_s: &[f64], realtime: bool) -> Report {
    let mut report = Report::default();
    // Per utterance: (wall_ms, audio end s) of the event at which each word count was reached.
    let mut commits: BTreeMap<u64, Vec<(usize, f64, f64)>> = BTreeMap::new();
    let mut last_partial: BTreeMap<u64, f64> = BTreeMap::new();
    // (start s, wall ms) of every final, in order.
    let mut finals: Vec<(f64, f64)> = Vec::new();
    for e in events {
        match &e.event {
            StreamEvent::Partial {
                utterance,
                committed,
                end,
                ..
            } => {
                let n = word_count(committed);
                let list = commits.entry(*utterance).or_default();
                if list.last().is_none_or(|l| l.0 < n) {
                    list.push((n, e.wall_ms, *end));
                }
                if let Some(prev) = last_partial.insert(*utterance, e.wall_ms) {
                    report.partial_interval_ms.push(e.wall_ms - prev);
                }
            }
            StreamEvent::Final {
                utterance,
                start,
                end,
                words,
                compute_ms,
                ..
            } => {
                report.finals += 1;
                report.compute_ms.push(*compute_ms);
                finals.push((*start, e.wall_ms));
                let list = commits.remove(utterance).unwrap_or_default();
                for (i, w) in words.iter().flatten().enumerate() {
                    // The first partial whose committed text had more than i words.
                    let (wall_ms, audio_end) = match list.iter().find(|c| c.0 > i) {
                        Some(c) => {
                            report.committed_early += 1;
                            (c.1, c.2)
                        }
                        None => (e.wall_ms, *end),
                    };
                    report.commit_lag_s.push(if realtime {
                        wall_ms / 1e3 - w.end
                    } else {
                        audio_end - w.end
                    });
                }
            }
            _ => {}
        }
    }
    if realtime {
        // Each reference utterance's end of speech is held by the last final starting before
        // it and after the previous one's (finals of pause-split fragments before that one do
        // not count; an utterance without a final has no value).
        let mut previous_end = f64::NEG_INFINITY;
        for &speech_end in speech_ends_s {
            let holder = finals
                .iter()
                .rev()
                .find(|(start, _)| *start < speech_end && *start > previous_end);
            if let Some(&(_, wall_ms)) = holder {
                report.after_speech_ms.push(wall_ms - speech_end * 1e3);
            }
            previous_end = speech_end;
        }
    }
    report
}
