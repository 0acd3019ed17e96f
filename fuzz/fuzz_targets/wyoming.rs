//! The Wyoming server's input path (`steno::server::wyoming`): the byte stream of a TCP
//! connection split into frames by `Decoder` (the input fed in fuzz-chosen pieces, as reads
//! arrive), each frame through `parse_request`, and audio payloads through `pcm_to_mono`.
//!
//! Input: `[k] [piece-size bytes…] [stream bytes…]`: `k % 8` piece sizes (cycled; none: one
//! read of everything).
//!
//! Properties: no panic; frames come out in order and the decoder's buffer only shrinks by
//! whole frames; after an error the connection is done (nothing more is read, as the server
//! closes it); payloads stay within `MAX_PAYLOAD_BYTES`; `pcm_to_mono` gives one finite sample
//! in [-1, 1] per whole frame of the chunk's format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steno::server::wyoming::{Decoder, MAX_PAYLOAD_BYTES, Request, parse_request, pcm_to_mono};

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else { return };
    let k = usize::from(k % 8);
    let Some(sizes) = rest.get(..k) else { return };
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) * 7 + 1).collect();
    let stream = &rest[k..];

    let mut decoder = Decoder::default();
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    'read: while fed < stream.len() {
        let n = if sizes.is_empty() { stream.len() } else { sizes[i % sizes.len()] };
        let end = (fed + n).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        i += 1;
        loop {
            let before = buf.len();
            match decoder.next_frame(&mut buf) {
                Ok(None) => break,
                Err(_) => break 'read,
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a frame consumed no bytes");
                    assert!(frame.payload.len() <= MAX_PAYLOAD_BYTES);
                    assert!(!frame.kind.is_empty());
                    if let Ok(Request::AudioChunk(format, payload)) = parse_request(frame) {
                        let samples = pcm_to_mono(&payload, format.width, format.channels);
                        let frame_bytes = (format.width * format.channels) as usize;
                        assert_eq!(samples.len(), payload.len() / frame_bytes, "{format:?}");
                        assert!(samples.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
                    }
                }
            }
        }
    }
});
