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
//! - Every decoder hands its samples to one `Intake`, which refuses what cannot be audio
//!   (a non-finite sample, a float sample far outside [-1, 1], input past
//!   [`AudioLimits::max_duration_s`]) naming the file and the first bad sample, downmixes,
//!   and passes mono chunks on. [`stream_audio`] resamples those chunks to 16 kHz as they come
//!   ([`StreamResampler`]), so reading a file of any length takes memory for a chunk, not for
//!   the file; [`read_audio`] is the same path collecting the samples.
//! - Every error names the file and the problem on one line ([`AudioError`]); the
//!   underlying library error, where there is one, is kept as its `source()`. No input,
//!   however malformed, panics.

// Input path: whatever a user or the network feeds steno passes through here, so nothing
// may panic on it (tests are exempt: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

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

/// Float samples whose magnitude passes this are refused ([`AudioError::OutOfRange`]): that is
/// not a hot recording (codec ringing and float masters stray a little past ±1, which is left
/// alone as whisper does) but a file scaled wrongly, e.g. integer values written as floats,
/// whose spectrogram would only make the model hallucinate. 4.0 is 12 dB over full scale.
pub const FLOAT_SAMPLE_LIMIT: f32 = 4.0;

/// Limits on what a read accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AudioLimits {
    /// The longest input accepted, in seconds of audio; `None` (the default): any length.
    pub max_duration_s: Option<f64>,
}

/// What a streamed read ([`stream_audio`]) went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioInfo {
    /// 16 kHz mono samples produced.
    pub samples: u64,
    /// The file's own sample rate in Hz (48000 for Opus).
    pub source_rate: u32,
    /// The file's channel count before downmixing.
    pub source_channels: u16,
}

impl AudioInfo {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples as f64 / f64::from(SAMPLE_RATE)
    }
}

/// The stream format a decoder announced: (decoded rate, source rate, channels).
type Format = (u32, u32, usize);

/// Where an [`Intake`] sends mono chunks, with their rate.
type MonoOut<'a> = dyn FnMut(&[f32], u32) -> Result<(), AudioError> + 'a;

/// Where every decoder puts its samples (the one gate audio passes into steno): the format
/// first ([`Intake::set_format`]), then interleaved chunks ([`Intake::push`]). It refuses
/// non-finite and far-out-of-range samples and input past the duration cap, naming the file
/// and the first bad sample; downmixes; and hands mono chunks at the decoded rate to `out`.
pub(crate) struct Intake<'a> {
    path: &'a Path,
    limits: AudioLimits,
    format: Option<Format>,
    /// Frames (samples per channel) taken so far.
    frames: u64,
    mono: Vec<f32>,
    out: &'a mut MonoOut<'a>,
}

impl<'a> Intake<'a> {
    fn new(path: &'a Path, limits: AudioLimits, out: &'a mut MonoOut<'a>) -> Self {
        Intake {
            path,
            limits,
            format: None,
            frames: 0,
            mono: Vec::new(),
            out,
        }
    }

    /// The stream's format: `rate` is what the samples are decoded at, `source_rate` what the
    /// file says (they differ for Opus, decoded straight to 16 kHz). Decoders that learn it
    /// from each decoded buffer call it every time: a change mid-file is an error.
    pub(crate) fn set_format(&mut self, rate: u32, source_rate: u32, channels: usize) -> Result<(), AudioError> {
        let path = || self.path.to_path_buf();
        if channels == 0 {
            return Err(AudioError::NoChannels { path: path() });
        }
        match self.format {
            None => {
                resample::check_rate(rate, self.path)?;
                self.format = Some((rate, source_rate, channels));
                Ok(())
            }
            Some((r, _, c)) if r != rate || c != channels => Err(AudioError::Decode {
                path: path(),
                detail: format!("stream changes format mid-file ({r} Hz x{c} to {rate} Hz x{channels})"),
                source: None,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Frames taken so far.
    pub(crate) fn frames(&self) -> u64 {
        self.frames
    }

    /// Check, downmix and pass on a chunk of interleaved samples (whole frames).
    pub(crate) fn push(&mut self, interleaved: &[f32]) -> Result<(), AudioError> {
        let Some((rate, _, channels)) = self.format else {
            return Err(AudioError::Decode {
                path: self.path.to_path_buf(),
                detail: "samples before the stream format".into(),
                source: None,
            });
        };
        // `<=` is false for NaN, so one comparison catches both kinds of bad sample.
        if !interleaved.iter().all(|x| x.abs() <= FLOAT_SAMPLE_LIMIT) {
            return Err(self.bad_sample(interleaved, rate, channels));
        }
        self.frames += (interleaved.len() / channels) as u64;
        if let Some(limit_s) = self.limits.max_duration_s
            && self.frames as f64 > limit_s * f64::from(rate)
        {
            return Err(AudioError::TooLong {
                path: self.path.to_path_buf(),
                limit_s,
            });
        }
        self.mono.clear();
        resample::downmix_into(interleaved, channels, &mut self.mono);
        (self.out)(&self.mono, rate)
    }

    /// The error for the first sample of `interleaved` that [`Intake::push`] refuses.
    fn bad_sample(&self, interleaved: &[f32], rate: u32, channels: usize) -> AudioError {
        let (i, value) = interleaved
            .iter()
            .copied()
            .enumerate()
            .find(|(_, x)| !x.is_finite() || x.abs() > FLOAT_SAMPLE_LIMIT)
            .unwrap_or((0, f32::NAN));
        let frame = self.frames + (i / channels) as u64;
        let (path, channel, at_s) = (
            self.path.to_path_buf(),
            i % channels + 1,
            frame as f64 / f64::from(rate),
        );
        if value.is_finite() {
            AudioError::OutOfRange {
                path,
                frame,
                channel,
                at_s,
                value,
            }
        } else {
            AudioError::NonFinite {
                path,
                frame,
                channel,
                at_s,
                value,
            }
        }
    }

    /// End of the stream: the format, or [`AudioError::Empty`] for fewer than two frames.
    fn finish(&self) -> Result<Format, AudioError> {
        match self.format {
            Some(format) if self.frames >= 2 => Ok(format),
            _ => Err(AudioError::Empty {
                path: self.path.to_path_buf(),
                samples: self.frames,
            }),
        }
    }
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
    /// Zero or one sample: nothing to transcribe.
    #[error("{}: file is empty ({samples} samples)", .path.display())]
    Empty { path: PathBuf, samples: u64 },
    /// A NaN or infinite sample: the file is corrupt (`frame` counts from 0; `channel` from 1).
    #[error("{}: sample {frame} (at {at_s:.3} s, channel {channel}) is {value}: the file is corrupt", .path.display())]
    NonFinite {
        path: PathBuf,
        frame: u64,
        channel: usize,
        at_s: f64,
        value: f32,
    },
    /// A float sample beyond [`FLOAT_SAMPLE_LIMIT`].
    #[error(
        "{}: sample {frame} (at {at_s:.3} s, channel {channel}) is {value}, far outside [-1, 1]: float audio must be scaled to ±1 (were integer values written as floats?)",
        .path.display()
    )]
    OutOfRange {
        path: PathBuf,
        frame: u64,
        channel: usize,
        at_s: f64,
        value: f32,
    },
    /// More audio than [`AudioLimits::max_duration_s`] allows.
    #[error("{}: audio is longer than the limit of {limit_s} s", .path.display())]
    TooLong { path: PathBuf, limit_s: f64 },
    /// The consumer of a [`stream_audio`] asked to stop.
    #[error("{}: reading stopped", .path.display())]
    Stopped { path: PathBuf },
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
            | Self::Empty { path, .. }
            | Self::NonFinite { path, .. }
            | Self::OutOfRange { path, .. }
            | Self::TooLong { path, .. }
            | Self::Stopped { path }
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

/// Reads any supported audio file into 16 kHz mono (the whole file in memory; see
/// [`stream_audio`] for a read whose memory does not grow with the file).
pub fn read_audio(path: &Path) -> Result<Audio, AudioError> {
    collect(|on| stream_audio(path, &AudioLimits::default(), on))
}

/// Reads audio held in memory (an upload, a test fixture) into 16 kHz mono. Any supported
/// format; `label` names the data in error messages.
pub fn read_audio_bytes(bytes: &[u8], label: &str) -> Result<Audio, AudioError> {
    collect(|on| stream_audio_bytes(bytes, label, &AudioLimits::default(), on))
}

/// Decodes `path` chunk by chunk, handing 16 kHz mono samples to `on_samples` as they are
/// decoded and resampled: memory stays that of a chunk whatever the file's length. Every
/// check of [`read_audio`] applies (the same decoders, through the same `Intake`), plus
/// `limits`. `on_samples` may stop the read by returning an error (e.g.
/// [`AudioError::Stopped`]), which is passed back.
pub fn stream_audio(
    path: &Path,
    limits: &AudioLimits,
    on_samples: &mut dyn FnMut(&[f32]) -> Result<(), AudioError>,
) -> Result<AudioInfo, AudioError> {
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
    to_16k(path, limits, on_samples, |intake| decode_source(file, path, intake))
}

/// [`stream_audio`] over bytes in memory; `label` names them in errors.
pub fn stream_audio_bytes(
    bytes: &[u8],
    label: &str,
    limits: &AudioLimits,
    on_samples: &mut dyn FnMut(&[f32]) -> Result<(), AudioError>,
) -> Result<AudioInfo, AudioError> {
    let path = Path::new(label);
    to_16k(path, limits, on_samples, |intake| {
        decode_source(Cursor::new(bytes), path, intake)
    })
}

/// Reads a WAV stream into 16 kHz mono; `label` names it in error messages.
///
/// Unlike [`read_audio_bytes`] this does not sniff the format: non-WAV data is
/// [`AudioError::NotWav`]. The rare WAV encodings hound cannot read are buffered into
/// memory and handed to symphonia.
pub fn read_wav<R: Read + Seek>(mut reader: R, label: &str) -> Result<Audio, AudioError> {
    let path = Path::new(label);
    collect(|on| {
        to_16k(path, &AudioLimits::default(), on, |intake| {
            let io_err = |source| AudioError::Io {
                path: path.to_path_buf(),
                source,
            };
            let start = reader.stream_position().map_err(io_err)?;
            match wav::decode(BufReader::new(&mut reader), path, intake)? {
                wav::WavRead::Done => Ok(()),
                wav::WavRead::NotForHound(err) => {
                    reader.seek(SeekFrom::Start(start)).map_err(io_err)?;
                    let mut bytes = Vec::new();
                    reader.read_to_end(&mut bytes).map_err(io_err)?;
                    let head = bytes.get(..HEAD_LEN).unwrap_or(&bytes);
                    hound_refused(Cursor::new(&bytes[..]), head, path, err, intake)
                }
            }
        })
    })
}

/// Runs a streamed read, keeping every sample: the in-memory [`Audio`].
fn collect(
    read: impl FnOnce(&mut dyn FnMut(&[f32]) -> Result<(), AudioError>) -> Result<AudioInfo, AudioError>,
) -> Result<Audio, AudioError> {
    let mut samples = Vec::new();
    let info = read(&mut |chunk| {
        samples.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(Audio {
        samples,
        source_rate: info.source_rate,
        source_channels: info.source_channels,
    })
}

/// Runs `decode` into an `Intake` whose mono chunks are resampled to 16 kHz (by one
/// [`StreamResampler`] made when the rate is known; 16 kHz passes through) and handed to
/// `on_samples`; flushes the resampler at the end.
fn to_16k(
    path: &Path,
    limits: &AudioLimits,
    on_samples: &mut dyn FnMut(&[f32]) -> Result<(), AudioError>,
    decode: impl FnOnce(&mut Intake) -> Result<(), AudioError>,
) -> Result<AudioInfo, AudioError> {
    let label = path.display().to_string();
    let mut resampler: Option<StreamResampler> = None;
    let mut buf = Vec::new();
    let mut produced = 0u64;
    let (_, source_rate, channels) = {
        let mut out = |mono: &[f32], rate: u32| -> Result<(), AudioError> {
            if rate == SAMPLE_RATE {
                produced += mono.len() as u64;
                return on_samples(mono);
            }
            let r = match &mut resampler {
                Some(r) => r,
                None => resampler.insert(StreamResampler::new(rate, &label)?),
            };
            buf.clear();
            r.push(mono, &mut buf)?;
            produced += buf.len() as u64;
            on_samples(&buf)
        };
        let mut intake = Intake::new(path, *limits, &mut out);
        decode(&mut intake)?;
        intake.finish()?
    };
    if let Some(r) = &mut resampler {
        buf.clear();
        r.finish(&mut buf)?;
        produced += buf.len() as u64;
        on_samples(&buf)?;
    }
    Ok(AudioInfo {
        samples: produced,
        source_rate,
        source_channels: u16::try_from(channels).unwrap_or(u16::MAX),
    })
}

/// What the first bytes of a source say it is.
enum Sniffed {
    Wav,
    OggOpus,
    Other,
}

fn sniff(head: &[u8]) -> Sniffed {
    if head.get(..4) == Some(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
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

fn decode_source<S: MediaSource>(mut src: S, path: &Path, intake: &mut Intake) -> Result<(), AudioError> {
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
            samples: 0,
        });
    }
    src.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);

    match sniff(&head) {
        Sniffed::Wav => match wav::decode(BufReader::new(&mut src), path, intake)? {
            wav::WavRead::Done => Ok(()),
            wav::WavRead::NotForHound(err) => {
                src.seek(SeekFrom::Start(0)).map_err(io_err)?;
                hound_refused(src, &head, path, err, intake)
            }
        },
        Sniffed::OggOpus => no_panic(path, || opus::decode(BufReader::new(src), path, intake)),
        Sniffed::Other => match no_panic(path, || {
            decode::decode(Box::new(src), extension.as_deref(), path, intake)
        }) {
            // Named .wav but neither RIFF nor anything symphonia knows: say so plainly.
            Err(AudioError::UnknownFormat { .. }) if matches!(extension.as_deref(), Some("wav" | "wave")) => {
                Err(AudioError::NotWav {
                    path: path.to_path_buf(),
                })
            }
            other => other,
        },
    }
}

/// hound could not read a RIFF/WAVE file. If its header declares an encoding hound does not
/// handle (A-law, µ-law, ADPCM, 64-bit float, odd depths), symphonia gets a try; a PCM/float
/// header hound rejected is malformed, and hound's verdict stands. (hound refuses before it
/// reads a sample, so `intake` is still fresh.)
fn hound_refused<'s, S: MediaSource + 's>(
    src: S,
    head: &[u8],
    path: &Path,
    err: AudioError,
    intake: &mut Intake,
) -> Result<(), AudioError> {
    let unsupported = match wav::describe_header(head) {
        Some(f) if f.hound_reads => return Err(err),
        Some(f) => AudioError::UnsupportedWav {
            path: path.to_path_buf(),
            format: f.description,
        },
        // fmt chunk not in the first bytes we looked at: let symphonia judge.
        None => err,
    };
    match no_panic(path, || decode::decode(Box::new(src), Some("wav"), path, intake)) {
        // symphonia cannot handle the encoding either: the hound-side error says why.
        Err(
            AudioError::UnknownFormat { .. } | AudioError::UnsupportedCodec { .. } | AudioError::NoAudioTrack { .. },
        ) => Err(unsupported),
        other => other,
    }
}

/// Runs a third-party decoder so that a panic inside it (they are fuzzed less than one
/// would like; symphonia 0.6.1 overflows a shift on some damaged WAVE_FORMAT_EXTENSIBLE
/// headers) becomes an error for this file instead of taking the process down. What the
/// closure touched outside itself is the [`Intake`], whose worst state after a panic is a
/// partly read file, and the read ends with this error.
fn no_panic<T>(path: &Path, decode: impl FnOnce() -> Result<T, AudioError>) -> Result<T, AudioError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|_| {
        Err(AudioError::Decode {
            path: path.to_path_buf(),
            detail: "decoder crashed on malformed data".to_string(),
            source: None,
        })
    })
}

#[cfg(test)]
mod tests;
