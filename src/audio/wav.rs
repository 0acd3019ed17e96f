//! PCM WAV through hound: 8/16/24/32-bit integer and 32-bit float, any channel count.
//!
//! Integer samples are scaled by 2^(bits-1), so full scale maps to [-1, 1) exactly as
//! whisper's `load_audio` does for 16-bit (`int16 / 32768`). Formats hound cannot read
//! (A-law, µ-law, ADPCM, 64-bit float, odd bit depths) are reported as [`WavRead::NotForHound`]
//! so that the caller can hand the file to symphonia instead.

use std::io::{self, Read};
use std::path::Path;

use hound::{SampleFormat, WavReader};

use super::{AudioError, Intake};

/// What reading a RIFF/WAVE stream with hound gave.
pub(crate) enum WavRead {
    /// Every sample went to the intake.
    Done,
    /// hound cannot read this encoding; the error is the one to report if no other
    /// decoder can either.
    NotForHound(AudioError),
}

/// Interleaved samples converted per batch before they go to the intake (bounded memory).
const BATCH: usize = 16 * 1024;

/// Reads a WAV stream into `intake`, batch by batch.
pub(crate) fn decode<R: Read>(reader: R, path: &Path, intake: &mut Intake) -> Result<WavRead, AudioError> {
    let reader = match WavReader::new(reader) {
        Ok(r) => r,
        Err(e) => return open_error(e, path),
    };
    let spec = reader.spec();
    let supported = match spec.sample_format {
        SampleFormat::Int => matches!(spec.bits_per_sample, 8 | 16 | 24 | 32),
        SampleFormat::Float => spec.bits_per_sample == 32,
    };
    if !supported {
        return Ok(WavRead::NotForHound(AudioError::UnsupportedWav {
            path: path.to_path_buf(),
            format: describe(spec.sample_format, spec.bits_per_sample),
        }));
    }
    let channels = usize::from(spec.channels);
    intake.set_format(spec.sample_rate, spec.sample_rate, channels)?;
    let expected = u64::from(reader.len());

    let read = match spec.sample_format {
        SampleFormat::Float => read_all(reader.into_samples::<f32>(), channels, intake, |x| x),
        SampleFormat::Int => {
            // 2^(bits-1): 128, 32768, 8388608, 2147483648. hound hands back 8-bit
            // (unsigned on disk) already centred on zero, so one rule fits all depths.
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            read_all(reader.into_samples::<i32>(), channels, intake, |x| {
                (f64::from(x) * scale) as f32
            })
        }
    };
    if let Err(fail) = read {
        let (e, got) = match fail {
            ReadFail::Intake(e) => return Err(e),
            ReadFail::Hound(e, got) => (e, got),
        };
        return Err(match e {
            hound::Error::IoError(io) if is_short_read(&io) => AudioError::TruncatedData {
                path: path.to_path_buf(),
                expected,
                got,
            },
            hound::Error::IoError(io) => AudioError::Io {
                path: path.to_path_buf(),
                source: io,
            },
            other => AudioError::MalformedWav {
                path: path.to_path_buf(),
                detail: detail(&other),
            },
        });
    }
    Ok(WavRead::Done)
}

/// Why [`read_all`] stopped early.
enum ReadFail {
    /// hound failed after this many interleaved samples.
    Hound(hound::Error, u64),
    /// The intake refused the samples.
    Intake(AudioError),
}

/// Converts every sample and hands them to `intake` in batches of whole frames.
fn read_all<S, I>(samples: I, channels: usize, intake: &mut Intake, convert: impl Fn(S) -> f32) -> Result<(), ReadFail>
where
    I: Iterator<Item = hound::Result<S>>,
{
    // Batch a multiple of `channels` so frames never straddle two batches.
    let batch_len = (BATCH / channels).max(1) * channels;
    let mut batch = Vec::with_capacity(batch_len);
    for (got, s) in samples.enumerate() {
        match s {
            Ok(s) => batch.push(convert(s)),
            Err(e) => return Err(ReadFail::Hound(e, got as u64)),
        }
        if batch.len() == batch_len {
            intake.push(&batch).map_err(ReadFail::Intake)?;
            batch.clear();
        }
    }
    // A trailing partial frame (a truncated last frame) is dropped.
    let whole = batch.len() - batch.len() % channels;
    intake
        .push(batch.get(..whole).unwrap_or_default())
        .map_err(ReadFail::Intake)
}

/// The stream ended early. hound reports this either as `UnexpectedEof` (`read_exact`) or,
/// from its own `read_into`, as `Other` with this message (hound 3.5).
fn is_short_read(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
        || (e.kind() == io::ErrorKind::Other && e.to_string() == "Failed to read enough bytes.")
}

fn open_error(e: hound::Error, path: &Path) -> Result<WavRead, AudioError> {
    let path = path.to_path_buf();
    Err(match e {
        hound::Error::IoError(io) if is_short_read(&io) => AudioError::TruncatedHeader { path, format: "WAV" },
        hound::Error::IoError(io) => AudioError::Io { path, source: io },
        hound::Error::FormatError("no RIFF tag found" | "no WAVE tag found") => AudioError::NotWav { path },
        // Not PCM/float at all (A-law, µ-law, ADPCM, MP3-in-WAV, ...).
        hound::Error::Unsupported => {
            return Ok(WavRead::NotForHound(AudioError::UnsupportedWav {
                path,
                format: "compressed or unknown encoding".to_string(),
            }));
        }
        // hound checks depths before the format tag, so compressed WAVs (bits 0 or 4) and
        // depths it does not handle (64-bit float, 12-bit) land here too: let the caller
        // try symphonia, and keep hound's reason in case nothing can read the file.
        e @ hound::Error::FormatError(_) => {
            return Ok(WavRead::NotForHound(AudioError::MalformedWav {
                path,
                detail: detail(&e),
            }));
        }
        other => AudioError::MalformedWav {
            path,
            detail: detail(&other),
        },
    })
}

/// hound's reason without its "Ill-formed WAVE file:" prefix.
fn detail(e: &hound::Error) -> String {
    match e {
        hound::Error::FormatError(msg) => (*msg).to_string(),
        other => other.to_string(),
    }
}

fn describe(format: SampleFormat, bits: u16) -> String {
    match format {
        SampleFormat::Int => format!("{bits}-bit integer PCM"),
        SampleFormat::Float => format!("{bits}-bit float"),
    }
}

/// The encoding a WAV header declares, for error messages.
pub(crate) struct HeaderFormat {
    /// e.g. "12-bit integer PCM", "µ-law", "format tag 0x1234".
    pub(crate) description: String,
    /// Whether hound reads this encoding (8/16/24/32-bit integer, 32-bit float).
    pub(crate) hound_reads: bool,
}

/// Scans the chunks in `head` (the first bytes of a WAV file) for `fmt ` and describes
/// the encoding. Best effort: `None` when the fmt chunk is not within `head`.
pub(crate) fn describe_header(head: &[u8]) -> Option<HeaderFormat> {
    let mut pos: usize = 12; // after "RIFF" <len> "WAVE"
    // Little-endian integers at `at` in `head`, None past its end.
    let u16_at = |at: usize| {
        head.get(at..at.checked_add(2)?)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let u32_at = |at: usize| {
        head.get(at..at.checked_add(4)?)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    loop {
        let id = head.get(pos..pos.checked_add(4)?)?;
        let len = u32_at(pos + 4)? as usize;
        if id == b"fmt " {
            let tag = u16_at(pos + 8)?;
            let bits = u16_at(pos + 22)?;
            // WAVE_FORMAT_EXTENSIBLE keeps the real tag in the first two bytes of the
            // SubFormat GUID and the meaningful depth in wValidBitsPerSample.
            let (tag, bits) = match (u16_at(pos + 26), u16_at(pos + 32)) {
                (Some(valid), Some(sub)) if tag == 0xFFFE => (sub, if valid > 0 { valid } else { bits }),
                _ => (tag, bits),
            };
            let hound_reads = matches!((tag, bits), (1, 8 | 16 | 24 | 32) | (3, 32));
            let description = match tag {
                0x0001 => format!("{bits}-bit integer PCM"),
                0x0003 => format!("{bits}-bit float"),
                0x0002 => "MS ADPCM".to_string(),
                0x0006 => "A-law".to_string(),
                0x0007 => "µ-law".to_string(),
                0x0011 => "IMA ADPCM".to_string(),
                0x0055 => "MP3 in WAV".to_string(),
                other => format!("format tag {other:#06x}"),
            };
            return Some(HeaderFormat {
                description,
                hound_reads,
            });
        }
        // Chunks are word aligned: an odd length is followed by a pad byte.
        pos = pos.checked_add(8)?.checked_add(len)?.checked_add(len & 1)?;
    }
}
