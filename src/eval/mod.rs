//! Measuring transcripts against references: Whisper's English text normalizer (applied to
//! both sides), word error rate, speed (RTFx = audio seconds / wall seconds) and peak memory.
//!
//! In: a folder with audio files and `refs.tsv` (`<id>\t<reference text>` per line, the audio
//! being `<id>.<ext>`). Out: an [`EvalReport`] with per-file and total numbers.

pub mod normalizer;
pub mod wer;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::{Engine, FileEvent, transcribe_files_parallel};
use crate::error::{Error, Result};
use normalizer::EnglishTextNormalizer;
use wer::{WordErrors, word_errors};

/// Extensions tried for `<id>.<ext>`, in this order.
const AUDIO_EXTENSIONS: &[&str] = &["wav", "flac", "mp3", "ogg", "opus", "m4a"];

/// One reference utterance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub id: String,
    pub audio: PathBuf,
    pub text: String,
}

/// Read `dir/refs.tsv` and find each id's audio file.
pub fn read_references(dir: &Path) -> Result<Vec<Reference>> {
    let refs_path = dir.join("refs.tsv");
    let text = std::fs::read_to_string(&refs_path).map_err(|source| Error::Io {
        path: refs_path.clone(),
        source,
    })?;
    let mut refs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (id, reference) = line.split_once('\t').ok_or_else(|| Error::Format {
            path: refs_path.clone(),
            line: i + 1,
            problem: "expected `<id><TAB><text>`".into(),
        })?;
        let audio = AUDIO_EXTENSIONS
            .iter()
            .map(|ext| dir.join(format!("{id}.{ext}")))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Format {
                path: refs_path.clone(),
                line: i + 1,
                problem: format!("no audio file {id}.wav (or .flac, .mp3…) in {}", dir.display()),
            })?;
        refs.push(Reference {
            id: id.to_owned(),
            audio,
            text: reference.to_owned(),
        });
    }
    if refs.is_empty() {
        return Err(Error::Format {
            path: refs_path,
            line: 0,
            problem: "lists no utterances".into(),
        });
    }
    Ok(refs)
}

/// The result for one utterance.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalItem {
    pub id: String,
    pub reference: String,
    pub hypothesis: String,
    /// Word errors after normalising both sides.
    pub errors: WordErrors,
    pub wer: f64,
    /// Seconds of audio.
    pub duration: f64,
    /// Seconds from the previous result to this one (with several jobs, results overlap).
    pub seconds: f64,
    /// Set when the file failed; it then counts every reference word as deleted.
    pub error: Option<String>,
}

/// Totals over a folder.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub items: Vec<EvalItem>,
    pub errors: WordErrors,
    pub wer: f64,
    pub audio_seconds: f64,
    /// Wall time of the transcription (model loading excluded).
    pub wall_seconds: f64,
    /// Audio seconds per wall second.
    pub rtfx: f64,
    /// Peak resident memory of the process (VmHWM), bytes; `None` where /proc is not available.
    pub peak_rss_bytes: Option<u64>,
    pub failed: usize,
}

/// Transcribe every reference utterance with `engines` (several = files in parallel) and score
/// it. `on_item` hears each result as it comes.
pub fn evaluate(
    engines: &[Engine],
    refs: &[Reference],
    normalizer: &EnglishTextNormalizer,
    on_item: &mut dyn FnMut(&EvalItem),
) -> EvalReport {
    let paths: Vec<PathBuf> = refs.iter().map(|r| r.audio.clone()).collect();
    let mut items = Vec::with_capacity(refs.len());
    let started = Instant::now();
    let mut last = started;
    transcribe_files_parallel(engines, &paths, &crate::audio::AudioLimits::default(), &mut |event| {
        if let FileEvent::Finished { index, result, .. } = event {
            let reference = &refs[index];
            let now = Instant::now();
            let (hypothesis, duration, error) = match result {
                Ok(t) => (t.text(), t.duration, None),
                Err(e) => (String::new(), 0.0, Some(e.to_string())),
            };
            let errors = word_errors(
                &normalizer.normalize(&reference.text),
                &normalizer.normalize(&hypothesis),
            );
            let item = EvalItem {
                id: reference.id.clone(),
                reference: reference.text.clone(),
                hypothesis,
                wer: errors.rate(),
                errors,
                duration,
                seconds: (now - last).as_secs_f64(),
                error,
            };
            last = now;
            on_item(&item);
            items.push(item);
        }
    });
    let wall_seconds = started.elapsed().as_secs_f64();
    let mut errors = WordErrors::default();
    for item in &items {
        errors += item.errors;
    }
    let audio_seconds: f64 = items.iter().map(|i| i.duration).sum();
    EvalReport {
        wer: errors.rate(),
        failed: items.iter().filter(|i| i.error.is_some()).count(),
        items,
        errors,
        audio_seconds,
        wall_seconds,
        rtfx: if wall_seconds > 0.0 {
            audio_seconds / wall_seconds
        } else {
            0.0
        },
        peak_rss_bytes: peak_rss_bytes(),
    }
}

/// The process's peak resident set size (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_their_audio() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("refs.tsv"), "a\tHELLO WORLD\n").unwrap();
        let err = read_references(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no audio file a.wav"), "{err}");
        std::fs::write(dir.path().join("a.wav"), b"").unwrap();
        let refs = read_references(dir.path()).unwrap();
        assert_eq!(refs[0].text, "HELLO WORLD");
    }

    #[test]
    fn malformed_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("refs.tsv"), "no tab here\n").unwrap();
        let err = read_references(dir.path()).unwrap_err().to_string();
        assert!(err.contains("refs.tsv:1"), "{err}");
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
