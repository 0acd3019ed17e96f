//! Everything but PCM WAV and Ogg Opus, through symphonia: FLAC, MP3, Ogg Vorbis, M4A (AAC,
//! ALAC), AIFF, and the WAV encodings hound does not read (A-law, µ-law, ADPCM, 64-bit float).
//! Gapless trimming is on (symphonia's default) wherever symphonia understands the encoder
//! delay (e.g. the LAME header of an MP3); AAC in MP4 as ffmpeg writes it (an edit list)
//! keeps its ~23 ms of encoder priming at the start.

use std::io;
use std::path::Path;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use super::{AudioError, BoxError, Intake};

/// Decodes the default audio track of `source` into `intake`, packet by packet, at the
/// stream's own rate.
///
/// `extension` is only a hint for the probe; the container is recognised by content.
pub(crate) fn decode<'s>(
    source: Box<dyn MediaSource + 's>,
    extension: Option<&str>,
    path: &Path,
    intake: &mut Intake,
) -> Result<(), AudioError> {
    let p = || path.to_path_buf();
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let mss = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(|source| match source {
            // A container was recognised but the file ends inside its headers.
            SymError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => AudioError::TruncatedHeader {
                path: p(),
                format: "audio",
            },
            source => AudioError::UnknownFormat { path: p(), source },
        })?;

    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::NoAudioTrack { path: p() })?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|c| c.audio())
        .ok_or_else(|| AudioError::NoAudioTrack { path: p() })?
        .clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|source| AudioError::UnsupportedCodec {
            path: p(),
            codec: if params.codec == CODEC_ID_OPUS {
                "Opus outside an Ogg file (only .opus/Ogg Opus is supported)".to_string()
            } else {
                format!("codec id {}", params.codec)
            },
            source: Box::new(source),
        })?;

    let mut interleaved: Vec<f32> = Vec::new();
    let mut bad_packets = 0usize;
    let mut last_decode_error = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A file cut short mid-packet: keep what was decoded, as players do.
            Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            // A chained Ogg stream starts a new logical stream; speech files do not do
            // this in practice, so the first stream is the recording.
            Err(SymError::ResetRequired) => break,
            Err(source) => {
                return Err(AudioError::Decode {
                    path: p(),
                    detail: "reading the stream failed".to_string(),
                    source: Some(Box::new(source)),
                });
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // One corrupt packet (bit errors in an MP3, say) costs a few milliseconds of
            // audio; skipping it is what every player does.
            Err(e @ SymError::DecodeError(_)) => {
                bad_packets += 1;
                last_decode_error = Some(e);
                continue;
            }
            Err(source) => {
                return Err(AudioError::Decode {
                    path: p(),
                    detail: "decoding a packet failed".to_string(),
                    source: Some(Box::new(source)),
                });
            }
        };
        let spec = buf.spec();
        let (rate, channels) = (spec.rate(), spec.channels().count());
        intake.set_format(rate, rate, channels)?;
        buf.copy_to_vec_interleaved(&mut interleaved);
        intake.push(&interleaved)?;
    }

    if intake.frames() == 0 && bad_packets > 0 {
        // Nothing decoded at all: the stream is broken, not merely scratched.
        return Err(AudioError::Decode {
            path: p(),
            detail: format!("all {bad_packets} packets failed to decode"),
            source: last_decode_error.map(|e| Box::new(e) as BoxError),
        });
    }
    Ok(())
}
