//! Transcript writers: txt, json, srt, vtt, tsv over one [`Transcript`] type. The subtitle and
//! table layouts follow openai/whisper `utils.py` (release 20250625): `WriteTXT`, `WriteVTT`,
//! `WriteSRT`, `WriteTSV`, `format_timestamp`.

use std::io::{self, Write};

use crate::error::Error;
use crate::transcribe::Transcript;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One segment per line.
    #[default]
    Txt,
    /// The transcript with segments and their quality fields.
    Json,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// `start<TAB>end<TAB>text`, times in integer milliseconds.
    Tsv,
}

impl Format {
    /// File extension (`srt`, …).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Json => "json",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Tsv => "tsv",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "txt" | "text" => Ok(Format::Txt),
            "json" => Ok(Format::Json),
            "srt" => Ok(Format::Srt),
            "vtt" => Ok(Format::Vtt),
            "tsv" => Ok(Format::Tsv),
            other => Err(Error::config(
                "format",
                format!("`{other}` is not one of txt, json, srt, vtt, tsv"),
            )),
        }
    }
}

/// `HH:MM:SS.mmm` (hours only when needed or asked), Whisper's `format_timestamp`.
pub fn format_timestamp(seconds: f64, always_include_hours: bool, decimal_marker: char) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (hours, rest) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (secs, ms) = (rest / 1000, rest % 1000);
    let hours_part = if always_include_hours || hours > 0 {
        format!("{hours:02}:")
    } else {
        String::new()
    };
    format!("{hours_part}{minutes:02}:{secs:02}{decimal_marker}{ms:03}")
}

fn cue_text(text: &str) -> String {
    text.trim().replace("-->", "->")
}

/// The JSON document of a transcript (`path` is included when given).
pub fn to_json(transcript: &Transcript, path: Option<&str>) -> serde_json::Value {
    let mut value = serde_json::json!({
        "text": transcript.text(),
        "language": transcript.language,
        "duration": transcript.duration,
        "segments": transcript.segments,
    });
    if let (Some(p), Some(obj)) = (path, value.as_object_mut()) {
        obj.insert("file".into(), serde_json::Value::String(p.to_owned()));
    }
    value
}

/// Write `transcript` as `format`.
pub fn write(out: &mut dyn Write, transcript: &Transcript, format: Format, path: Option<&str>) -> io::Result<()> {
    match format {
        Format::Txt => {
            for s in &transcript.segments {
                writeln!(out, "{}", s.text.trim())?;
            }
        }
        Format::Json => {
            serde_json::to_writer(&mut *out, &to_json(transcript, path))?;
            writeln!(out)?;
        }
        Format::Srt => {
            for (i, s) in transcript.segments.iter().enumerate() {
                writeln!(
                    out,
                    "{}\n{} --> {}\n{}\n",
                    i + 1,
                    format_timestamp(s.start, true, ','),
                    format_timestamp(s.end, true, ','),
                    cue_text(&s.text)
                )?;
            }
        }
        Format::Vtt => {
            writeln!(out, "WEBVTT\n")?;
            for s in &transcript.segments {
                writeln!(
                    out,
                    "{} --> {}\n{}\n",
                    format_timestamp(s.start, false, '.'),
                    format_timestamp(s.end, false, '.'),
                    cue_text(&s.text)
                )?;
            }
        }
        Format::Tsv => {
            writeln!(out, "start\tend\ttext")?;
            for s in &transcript.segments {
                writeln!(
                    out,
                    "{}\t{}\t{}",
                    (s.start * 1000.0).round() as u64,
                    (s.end * 1000.0).round() as u64,
                    s.text.trim().replace('\t', " ")
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_whisper() {
        assert_eq!(format_timestamp(0.0, false, '.'), "00:00.000");
        assert_eq!(format_timestamp(61.5, true, ','), "00:01:01,500");
        assert_eq!(format_timestamp(3725.0126, false, '.'), "01:02:05.013");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("srt".parse::<Format>().unwrap(), Format::Srt);
        assert!("docx".parse::<Format>().unwrap_err().to_string().contains("`format`"));
    }
}
