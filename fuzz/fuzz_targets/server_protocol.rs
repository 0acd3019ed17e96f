//! The server's client-input parsers (`steno::server::protocol`), each on the same input:
//! - the input as a `/v1/stream` text message (UTF-8, invalid bytes replaced):
//!   `parse_client_message`, then `StreamRequest::stream_config` over the default
//!   `StreamConfig` for a `config` message;
//! - the input as a binary audio frame in each `Encoding`: `decode_frame`;
//! - the input's lines as multipart form fields of `POST /v1/audio/transcriptions`
//!   (`name=value`, split at the first `=`): `TranscriptionForm::set` until the first error
//!   (as the handler does), then `validate`.
//!
//! Properties: no panic; a config that is accepted is valid and carries the request's
//! options; a frame decodes iff its length is a whole number of samples (and, for f32, every
//! sample is finite), to that many samples in [-1, 1]; a validated form is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steno::StreamConfig;
use steno::server::protocol::{
    ClientMessage, Encoding, ResponseFormat, TranscriptionForm, decode_frame, parse_client_message,
};

fn check_message(text: &str) {
    let Ok(ClientMessage::Config(request)) = parse_client_message(text) else {
        return;
    };
    let defaults = StreamConfig::default();
    let Ok(config) = request.stream_config(&defaults) else {
        return;
    };
    if let Err(e) = config.validate() {
        panic!("accepted config {request:?} is invalid: {e}");
    }
    assert!((steno::audio::MIN_SOURCE_RATE..=steno::audio::MAX_SOURCE_RATE).contains(&request.sample_rate));
    if let Some(hop) = request.hop_ms {
        assert_eq!(config.hop_ms, hop);
    }
    if request.language.is_some() {
        assert_eq!(config.language, request.language);
    }
    if let Some(s) = request.context_s {
        assert_eq!(config.context_s.to_bits(), s.to_bits());
    }
}

fn check_frame(bytes: &[u8], encoding: Encoding, width: usize) {
    let result = decode_frame(bytes, encoding);
    let whole = bytes.len().is_multiple_of(width);
    let finite = encoding != Encoding::F32le || steno_fuzz::f32s(bytes).iter().all(|x| x.is_finite());
    match result {
        Ok(samples) => {
            assert!(whole && finite, "{encoding:?}: {} bytes accepted", bytes.len());
            assert_eq!(samples.len(), bytes.len() / width);
            assert!(
                samples.iter().all(|x| (-1.0..=1.0).contains(x)),
                "{encoding:?}: sample outside [-1, 1]"
            );
        }
        Err(e) => {
            assert!(!(whole && finite), "{encoding:?}: valid frame refused: {e}");
            assert!(!e.message.is_empty());
        }
    }
}

fn check_form(text: &str) {
    let mut form = TranscriptionForm::default();
    for line in text.lines() {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        if let Err(e) = form.set(name, value) {
            assert!(e.param.is_some(), "form error without a param: {e:?}");
            return;
        }
        if let Some(t) = form.temperature {
            assert!((0.0..=1.0).contains(&t), "temperature {t}");
        }
    }
    if form.validate().is_ok() {
        if form.stream {
            assert!(matches!(
                form.response_format,
                ResponseFormat::Json | ResponseFormat::Text
            ));
        }
        if form.words {
            assert_eq!(form.response_format, ResponseFormat::VerboseJson);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_message(&text);
    check_frame(data, Encoding::PcmS16le, 2);
    check_frame(data, Encoding::F32le, 4);
    check_form(&text);
});
