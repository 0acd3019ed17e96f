//! Audio input: turns an audio file (or in-memory bytes) into what Whisper consumes,
//! mono `f32` samples at 16 kHz.
//!
//! In: a path or a byte buffer holding WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus, M4A (AAC/ALAC)
//! or AIFF. Out: [`Audio`], the 16 kHz mono samples plus the source's rate and channel
//! count.
//!
//! - The container is recognised by content, not by name: a RIFF/WAVE header goes to
//!   hound (all PCM integer depths and 32-bit float), an Ogg page carrying `OpusHead` to
//!   opus-pure, and everything else to symphonia with the file extension as a hint. WAV
//!   encodings hound cannot read (A-law, µ-law, ADPCM, 64-bit float) fall back to symphonia.
//! - Channels are averaged into mono; the sample rate is converted with rubato's FFT
//!   resampler (16 kHz input passes through untouched). Integer PCM is scaled by
//!   2^(bits-1), matching whisper's `load_audio` (`int16 / 32768`) for 16-bit files.
//! - Every error names the file and the problem on one line ([`AudioError`]); the
//!   underlying library error, where there is one, is kept as its `source()`. No input,
//!   however malformed, panics.

mod decode;
mod opus;
mod resample;
mod wav;

use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use symphonia::core::io::MediaSource;

pub use resample::{MAX_SOURCE_RATE, MIN_SOURCE_RATE, StreamResampler, resample_to_16k};

/// The sample rate every Whisper model expects, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Mono f32 samples at 16 kHz, plus what the file was.
///
/// Integer sources land in [-1, 1); float and lossy sources can stray slightly past ±1
/// (codec ringing, hot masters), which is left alone as whisper does.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Mono samples at [`SAMPLE_RATE`].
    pub samples: Vec<f32>,
    /// The file's own sample rate in Hz (48000 for Opus, which always runs at 48 kHz).
    pub source_rate: u32,
    /// The file's channel count before downmixing.
    pub source_channels: u16,
}

impl Audio {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(SAMPLE_RATE)
    }
}

/// A decoder's output before resampling: mono samples at `rate`.
pub(crate) struct Decoded {
    pub(crate) mono: Vec<f32>,
    pub(crate) rate: u32,
    pub(crate) source_rate: u32,
    pub(crate) channels: u16,
}

/// Why an audio file could not be read.
///
/// Each message is `<file>: <problem>` on one line. The library error underneath, where
/// there is one, is the `source()` and is not repeated in the message, so print the chain
/// (`{:#}` with anyhow) to see e.g. the OS error or symphonia's reason.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{}: no such file", .path.display())]
    NotFound {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot read file", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: file is empty (0 samples)", .path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a WAV file (no RIFF header)", .path.display())]
    NotWav { path: PathBuf },
    /// `format` is "WAV", "Ogg Opus" or, when symphonia ran out of file while probing, "audio".
    #[error("{}: truncated {format} header", .path.display())]
    TruncatedHeader { path: PathBuf, format: &'static str },
    #[error("{}: truncated WAV data: header promises {expected} samples, file holds {got}", .path.display())]
    TruncatedData { path: PathBuf, expected: u64, got: u64 },
    /// `detail` is hound's own description of the defect.
    #[error("{}: malformed WAV: {detail}", .path.display())]
    MalformedWav { path: PathBuf, detail: String },
    #[error("{}: unsupported WAV format: {format}", .path.display())]
    UnsupportedWav { path: PathBuf, format: String },
    #[error("{}: file has no audio channels", .path.display())]
    NoChannels { path: PathBuf },
    #[error("{}: unsupported sample rate {rate} Hz (accepted: {MIN_SOURCE_RATE}..={MAX_SOURCE_RATE})", .path.display())]
    UnsupportedRate { path: PathBuf, rate: u32 },
    #[error("{}: unrecognised audio format (supported: WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus, M4A/AAC/ALAC, AIFF)", .path.display())]
    UnknownFormat {
        path: PathBuf,
        #[source]
        source: symphonia::core::errors::Error,
    },
    #[error("{}: no audio track", .path.display())]
    NoAudioTrack { path: PathBuf },
    #[error("{}: unsupported codec: {codec}", .path.display())]
    UnsupportedCodec {
        path: PathBuf,
        codec: String,
        #[source]
        source: BoxError,
    },
    #[error("{}: cannot decode: {detail}", .path.display())]
    Decode {
        path: PathBuf,
        detail: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("{}: resampling {from_rate} Hz to 16 kHz failed", .path.display())]
    Resample {
        path: PathBuf,
        from_rate: u32,
        #[source]
        source: BoxError,
    },
}

impl AudioError {
    /// The file (or label) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path, .. }
            | Self::Io { path, .. }
            | Self::Empty { path }
            | Self::NotWav { path }
            | Self::TruncatedHeader { path, .. }
            | Self::TruncatedData { path, .. }
            | Self::MalformedWav { path, .. }
            | Self::UnsupportedWav { path, .. }
            | Self::NoChannels { path }
            | Self::UnsupportedRate { path, .. }
            | Self::UnknownFormat { path, .. }
            | Self::NoAudioTrack { path }
            | Self::UnsupportedCodec { path, .. }
            | Self::Decode { path, .. }
            | Self::Resample { path, .. } => path,
        }
    }
}

/// Reads any supported audio file into 16 kHz mono.
pub fn read_audio(path: &Path) -> Result<Audio, AudioError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => AudioError::NotFound {
            path: path.to_path_buf(),
            source,
        },
        _ => AudioError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let file = File::open(path).map_err(io_err)?;
    read_source(file, path)
}

/// Reads audio held in memory (an upload, a test fixture) into 16 kHz mono. Any supported
/// format; `label` names the data in error messages.
pub fn read_audio_bytes(bytes: &[u8], label: &str) -> Result<Audio, AudioError> {
    read_source(Cursor::new(bytes), Path::new(label))
}

/// Reads a WAV stream into 16 kHz mono; `label` names it in error messages.
///
/// Unlike [`read_audio_bytes`] this does not sniff the format: non-WAV data is
/// [`AudioError::NotWav`]. The rare WAV encodings hound cannot read are buffered into
/// memory and handed to symphonia.
pub fn read_wav<R: Read + Seek>(mut reader: R, label: &str) -> Result<Audio, AudioError> {
    let path = Path::new(label);
    let io_err = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let start = reader.stream_position().map_err(io_err)?;
    match wav::decode(BufReader::new(&mut reader), path)? {
        wav::WavRead::Decoded(d) => finish(d, path),
        wav::WavRead::NotForHound(err) => {
            reader.seek(SeekFrom::Start(start)).map_err(io_err)?;
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).map_err(io_err)?;
            let head = bytes.get(..HEAD_LEN).unwrap_or(&bytes);
            hound_refused(Cursor::new(&bytes[..]), head, path, err)
        }
    }
}

/// What the first bytes of a source say it is.
enum Sniffed {
    Wav,
    OggOpus,
    Other,
}

fn sniff(head: &[u8]) -> Sniffed {
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        Sniffed::Wav
    } else if opus::sniff(head) {
        Sniffed::OggOpus
    } else {
        Sniffed::Other
    }
}

/// Bytes read for sniffing; also enough to find the fmt chunk of most WAV files for
/// error messages.
const HEAD_LEN: usize = 512;

fn read_source<S: MediaSource>(mut src: S, path: &Path) -> Result<Audio, AudioError> {
    let io_err = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(HEAD_LEN);
    (&mut src)
        .take(HEAD_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    if head.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    src.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);

    match sniff(&head) {
        Sniffed::Wav => match wav::decode(BufReader::new(&mut src), path)? {
            wav::WavRead::Decoded(d) => finish(d, path),
            wav::WavRead::NotForHound(err) => {
                src.seek(SeekFrom::Start(0)).map_err(io_err)?;
                hound_refused(src, &head, path, err)
            }
        },
        Sniffed::OggOpus => {
            let d = no_panic(path, || opus::decode(BufReader::new(src), path))?;
            finish(d, path)
        }
        Sniffed::Other => match no_panic(path, || decode::decode(Box::new(src), extension.as_deref(), path)) {
            Ok(d) => finish(d, path),
            // Named .wav but neither RIFF nor anything symphonia knows: say so plainly.
            Err(AudioError::UnknownFormat { .. }) if matches!(extension.as_deref(), Some("wav" | "wave")) => {
                Err(AudioError::NotWav {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => Err(e),
        },
    }
}

/// hound could not read a RIFF/WAVE file. If its header declares an encoding hound does not
/// handle (A-law, µ-law, ADPCM, 64-bit float, odd depths), symphonia gets a try; a PCM/float
/// header hound rejected is malformed, and hound's verdict stands.
fn hound_refused<'s, S: MediaSource + 's>(
    src: S,
    head: &[u8],
    path: &Path,
    err: AudioError,
) -> Result<Audio, AudioError> {
    let unsupported = match wav::describe_header(head) {
        Some(f) if f.hound_reads => return Err(err),
        Some(f) => AudioError::UnsupportedWav {
            path: path.to_path_buf(),
            format: f.description,
        },
        // fmt chunk not in the first bytes we looked at: let symphonia judge.
        None => err,
    };
    match no_panic(path, || decode::decode(Box::new(src), Some("wav"), path)) {
        Ok(d) => finish(d, path),
        // symphonia cannot handle the encoding either: the hound-side error says why.
        Err(
            AudioError::UnknownFormat { .. } | AudioError::UnsupportedCodec { .. } | AudioError::NoAudioTrack { .. },
        ) => Err(unsupported),
        Err(e) => Err(e),
    }
}

/// Runs a third-party decoder so that a panic inside it (they are fuzzed less than one
/// would like; symphonia 0.6.1 overflows a shift on some damaged WAVE_FORMAT_EXTENSIBLE
/// headers) becomes an error for this file instead of taking the process down. Nothing
/// the closure touched outlives it, so unwind safety is not a concern.
fn no_panic<T>(path: &Path, decode: impl FnOnce() -> Result<T, AudioError>) -> Result<T, AudioError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|_| {
        Err(AudioError::Decode {
            path: path.to_path_buf(),
            detail: "decoder crashed on malformed data".to_string(),
            source: None,
        })
    })
}

fn finish(d: Decoded, path: &Path) -> Result<Audio, AudioError> {
    if d.mono.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    let samples = resample::to_16k_owned(d.mono, d.rate, path)?;
    Ok(Audio {
        samples,
        source_rate: d.source_rate,
        source_channels: d.channels,
    })
}

#[cfg(test)]
mod tests;
