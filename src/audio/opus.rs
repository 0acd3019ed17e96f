//! Ogg Opus (`.opus`) through opus-pure, a pure-Rust port of libopus (symphonia 0.6 has
//! an Ogg demuxer but no Opus decoder).
//!
//! Opus decodes natively at any of 8/12/16/24/48 kHz, so the stream is decoded straight
//! to 16 kHz and needs no resampling. Pre-skip and end trimming follow RFC 7845 (opus-pure's
//! `Trim`), and the header's output gain is applied, as a player would.

use std::io::{self, Read};
use std::path::Path;

use opus_pure::{MAX_PACKET_SAMPLES, OggOpusReader, Trim};

use super::{AudioError, Intake, SAMPLE_RATE};

/// True when `head` (the first bytes of a file) is the first page of an Ogg Opus stream:
/// an Ogg page (`OggS`) whose first packet starts with `OpusHead` (RFC 7845 §5.1).
pub(crate) fn sniff(head: &[u8]) -> bool {
    // Page header is 27 bytes plus one lacing byte per segment; the ID header is a
    // single small packet, so it starts right after a one-entry segment table.
    head.starts_with(b"OggS")
        && head
            .get(26)
            .and_then(|&segments| head.get(27 + usize::from(segments)..))
            .is_some_and(|packet| packet.starts_with(b"OpusHead"))
}

/// Decodes an Ogg Opus stream into `intake` at 16 kHz.
pub(crate) fn decode<R: Read>(reader: R, path: &Path, intake: &mut Intake) -> Result<(), AudioError> {
    let p = || path.to_path_buf();
    let decode_err = |source: opus_pure::Error| AudioError::Decode {
        path: p(),
        detail: "invalid Ogg Opus stream".to_string(),
        source: Some(Box::new(source)),
    };
    let mut ogg = OggOpusReader::new(reader).map_err(|e| match e {
        opus_pure::Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => AudioError::TruncatedHeader {
            path: p(),
            format: "Ogg Opus",
        },
        other => decode_err(other),
    })?;
    let channels = usize::from(ogg.head().channel_count);
    if channels == 0 {
        return Err(AudioError::NoChannels { path: p() });
    }
    // Mapping family 0 covers mono and stereo; surround Opus (family 1+) needs the
    // multistream decoder, which speech recordings do not call for.
    let mut decoder = ogg
        .head()
        .decoder(SAMPLE_RATE as i32)
        .map_err(|e| AudioError::UnsupportedCodec {
            path: p(),
            codec: format!(
                "Opus with {channels} channels (channel mapping family {})",
                ogg.head().mapping_family
            ),
            source: Box::new(e),
        })?;
    let mut trim = Trim::new(ogg.head(), SAMPLE_RATE as i32, channels).map_err(decode_err)?;
    // Opus always runs at 48 kHz (the header's input rate is only a note about the original
    // recording); it is decoded straight to 16 kHz.
    intake.set_format(SAMPLE_RATE, 48_000, channels)?;
    let mut block = vec![0.0f32; MAX_PACKET_SAMPLES * channels];
    for packet in ogg.packets() {
        let packet = match packet {
            Ok(packet) => packet,
            // A file cut short: keep what was decoded.
            Err(opus_pure::Error::Io(io)) if io.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(decode_err(e)),
        };
        let n = decoder
            .decode(&packet.data, MAX_PACKET_SAMPLES, &mut block)
            .map_err(decode_err)?;
        let decoded = block.get(..n * channels).unwrap_or(&block);
        intake.push(trim.keep(&packet, decoded))?;
    }
    Ok(())
}
