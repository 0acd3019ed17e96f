//! Parsers of what clients send, kept free of I/O so they are tested (and fuzzed) on plain
//! bytes: the WebSocket text messages of `/v1/stream`, its binary audio frames, and the form
//! fields of `POST /v1/audio/transcriptions`.
//!
//! Every error names the field it is about, so the server can answer with OpenAI's `param` or
//! a WebSocket `error` event that tells the client what to fix.

use serde::Deserialize;

use crate::audio::{MAX_SOURCE_RATE, MIN_SOURCE_RATE};
use crate::stream::{PolicyKind, StreamConfig};

/// A client mistake: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    /// The field or parameter at fault (`None`: the message as a whole).
    pub param: Option<String>,
    pub message: String,
}

impl BadRequest {
    pub fn new(param: impl Into<Option<String>>, message: impl Into<String>) -> BadRequest {
        BadRequest {
            param: param.into(),
            message: message.into(),
        }
    }

    fn field(param: &str, message: impl Into<String>) -> BadRequest {
        BadRequest::new(Some(param.to_owned()), message)
    }
}

/// How binary audio frames encode samples (mono, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Signed 16-bit integers.
    PcmS16le,
    /// 32-bit floats in [-1, 1].
    F32le,
}

impl Encoding {
    fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::PcmS16le => 2,
            Encoding::F32le => 4,
        }
    }
}

/// The first message of a `/v1/stream` connection: the audio's format and per-stream options
/// (each optional one falls back to the server's stream defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    /// Hz of the audio frames that follow.
    pub sample_rate: u32,
    /// Default: `pcm_s16le`.
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
    pub language: Option<String>,
    pub hop_ms: Option<u32>,
    pub commit_policy: Option<String>,
    pub min_silence_ms: Option<u32>,
    pub vad_threshold: Option<f32>,
    pub max_utterance_s: Option<f32>,
    pub context_s: Option<f32>,
}

fn default_encoding() -> Encoding {
    Encoding::PcmS16le
}

impl StreamRequest {
    /// The stream's configuration: `defaults` with this request's options over them, checked.
    pub fn stream_config(&self, defaults: &StreamConfig) -> Result<StreamConfig, BadRequest> {
        if !(MIN_SOURCE_RATE..=MAX_SOURCE_RATE).contains(&self.sample_rate) {
            return Err(BadRequest::field(
                "sample_rate",
                format!(
                    "sample_rate {} is not in {MIN_SOURCE_RATE}..={MAX_SOURCE_RATE} Hz",
                    self.sample_rate
                ),
            ));
        }
        let mut config = defaults.clone();
        if let Some(language) = &self.language {
            config.language = Some(language.clone());
        }
        if let Some(hop) = self.hop_ms {
            config.hop_ms = hop;
        }
        if let Some(policy) = &self.commit_policy {
            config.commit_policy = policy
                .parse::<PolicyKind>()
                .map_err(|e| BadRequest::field("commit_policy", e.to_string()))?;
        }
        if let Some(ms) = self.min_silence_ms {
            config.vad.min_silence_ms = ms;
        }
        if let Some(threshold) = self.vad_threshold {
            config.vad.threshold = threshold;
        }
        if let Some(s) = self.max_utterance_s {
            config.max_utterance_s = s;
        }
        if let Some(s) = self.context_s {
            config.context_s = s;
        }
        config.validate().map_err(|e| match e {
            crate::Error::Config { field, problem } => BadRequest::field(field, format!("{field}: {problem}")),
            other => BadRequest::new(None, other.to_string()),
        })?;
        Ok(config)
    }
}

/// A text message from a `/v1/stream` client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Config(StreamRequest),
    End,
}

/// Parse a text message: a JSON object whose `type` is `config` or `end`; unknown types and
/// fields are errors.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, BadRequest> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| BadRequest::new(None, format!("message is not JSON: {e}")))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(BadRequest::new(None, "message is not a JSON object"));
    };
    let kind = match object.remove("type") {
        Some(serde_json::Value::String(kind)) => kind,
        Some(_) => return Err(BadRequest::field("type", "`type` must be a string")),
        None => return Err(BadRequest::field("type", "message has no `type`")),
    };
    match kind.as_str() {
        "config" => serde_json::from_value::<StreamRequest>(serde_json::Value::Object(object))
            .map(ClientMessage::Config)
            .map_err(|e| BadRequest::new(None, format!("config: {e}"))),
        "end" if object.is_empty() => Ok(ClientMessage::End),
        "end" => Err(BadRequest::new(None, "end: takes no fields")),
        other => Err(BadRequest::field(
            "type",
            format!("unknown message type `{other}` (expected config or end)"),
        )),
    }
}

/// Samples of one binary frame. A byte count that is not a whole number of samples, or a
/// float that is not finite, is an error (the frame is rejected whole).
pub fn decode_frame(bytes: &[u8], encoding: Encoding) -> Result<Vec<f32>, BadRequest> {
    let width = encoding.bytes_per_sample();
    if !bytes.len().is_multiple_of(width) {
        return Err(BadRequest::new(
            None,
            format!(
                "binary frame of {} bytes is not a whole number of {}-byte {encoding:?} samples",
                bytes.len(),
                width
            ),
        ));
    }
    match encoding {
        Encoding::PcmS16le => Ok(bytes
            .chunks_exact(2)
            .filter_map(|b| b.try_into().ok())
            .map(|b| f32::from(i16::from_le_bytes(b)) / 32768.0)
            .collect()),
        Encoding::F32le => {
            let samples: Vec<f32> = bytes
                .chunks_exact(4)
                .filter_map(|b| b.try_into().ok())
                .map(f32::from_le_bytes)
                .collect();
            if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
                return Err(BadRequest::new(
                    None,
                    format!("binary frame: sample {i} is not a finite number"),
                ));
            }
            // Far outside [-1, 1] is not audio a microphone makes; clip rather than feed the
            // model values it never saw.
            Ok(samples.into_iter().map(|x| x.clamp(-1.0, 1.0)).collect())
        }
    }
}

/// `response_format` of a transcription request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// The fields of `POST /v1/audio/transcriptions` other than the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionForm {
    pub model: Option<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub response_format: ResponseFormat,
    pub temperature: Option<f64>,
    pub stream: bool,
    /// `timestamp_granularities[]` includes `word`.
    pub words: bool,
}

impl Default for TranscriptionForm {
    fn default() -> Self {
        TranscriptionForm {
            model: None,
            language: None,
            prompt: None,
            response_format: ResponseFormat::Json,
            temperature: None,
            stream: false,
            words: false,
        }
    }
}

impl TranscriptionForm {
    /// Take one text field. Keys are accepted with and without `[]`; fields OpenAI defines that
    /// steno does not use (`include`, `chunking_strategy`) are accepted and ignored; anything
    /// else is an error naming it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), BadRequest> {
        let key = name.strip_suffix("[]").unwrap_or(name);
        let value = value.trim();
        match key {
            "model" => self.model = Some(value.to_owned()),
            "language" => self.language = (!value.is_empty()).then(|| value.to_owned()),
            "prompt" => self.prompt = (!value.is_empty()).then(|| value.to_owned()),
            "response_format" => {
                self.response_format = match value {
                    "json" => ResponseFormat::Json,
                    "text" => ResponseFormat::Text,
                    "srt" => ResponseFormat::Srt,
                    "vtt" => ResponseFormat::Vtt,
                    "verbose_json" => ResponseFormat::VerboseJson,
                    other => {
                        return Err(BadRequest::field(
                            "response_format",
                            format!("`{other}` is not one of json, text, srt, vtt, verbose_json"),
                        ));
                    }
                }
            }
            "temperature" => {
                let t: f64 = value
                    .parse()
                    .map_err(|_| BadRequest::field("temperature", format!("`{value}` is not a number")))?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(BadRequest::field("temperature", format!("{t} is not in 0..=1")));
                }
                self.temperature = Some(t);
            }
            "stream" => {
                self.stream = match value {
                    "true" | "True" | "1" => true,
                    "false" | "False" | "0" | "" => false,
                    other => return Err(BadRequest::field("stream", format!("`{other}` is not true or false"))),
                }
            }
            "timestamp_granularities" => match value {
                "word" => self.words = true,
                "segment" => {}
                other => {
                    return Err(BadRequest::field(
                        "timestamp_granularities[]",
                        format!("`{other}` is not word or segment"),
                    ));
                }
            },
            "include" | "chunking_strategy" => {}
            other => return Err(BadRequest::field(other, format!("unknown parameter `{name}`"))),
        }
        Ok(())
    }

    /// Checks across fields, once all are in.
    pub fn validate(&self) -> Result<(), BadRequest> {
        if self.stream && self.response_format != ResponseFormat::Json && self.response_format != ResponseFormat::Text {
            return Err(BadRequest::field(
                "stream",
                "stream=true answers with server-sent events; response_format must be json or text",
            ));
        }
        if self.words && self.response_format != ResponseFormat::VerboseJson {
            return Err(BadRequest::field(
                "timestamp_granularities[]",
                "word timestamps need response_format=verbose_json",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_with_options_parses() {
        let m = parse_client_message(
            r#"{"type":"config","sample_rate":48000,"encoding":"f32le","language":"en","hop_ms":300}"#,
        )
        .unwrap();
        let ClientMessage::Config(request) = m else {
            panic!("{m:?}")
        };
        assert_eq!(request.sample_rate, 48000);
        assert_eq!(request.encoding, Encoding::F32le);
        let config = request.stream_config(&StreamConfig::default()).unwrap();
        assert_eq!(config.hop_ms, 300);
        assert_eq!(config.language.as_deref(), Some("en"));
    }

    #[test]
    fn encoding_defaults_to_s16() {
        let m = parse_client_message(r#"{"type":"config","sample_rate":16000}"#).unwrap();
        assert!(matches!(
            m,
            ClientMessage::Config(StreamRequest {
                encoding: Encoding::PcmS16le,
                ..
            })
        ));
    }

    #[test]
    fn end_parses_and_takes_no_fields() {
        assert_eq!(parse_client_message(r#"{"type":"end"}"#).unwrap(), ClientMessage::End);
        assert!(parse_client_message(r#"{"type":"end","x":1}"#).is_err());
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        let cases = [
            ("{", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"sample_rate":16000}"#, "no `type`"),
            (r#"{"type":3}"#, "must be a string"),
            (r#"{"type":"start"}"#, "unknown message type `start`"),
            (
                r#"{"type":"config","sample_rate":16000,"volume":3}"#,
                "unknown field `volume`",
            ),
            (r#"{"type":"config"}"#, "missing field `sample_rate`"),
            (
                r#"{"type":"config","sample_rate":16000,"encoding":"mulaw"}"#,
                "unknown variant `mulaw`",
            ),
            (r#"{"type":"config","sample_rate":-1}"#, "invalid value"),
        ];
        for (text, expected) in cases {
            let err = parse_client_message(text).unwrap_err();
            assert!(err.message.contains(expected), "{text}: {err:?}");
        }
    }

    #[test]
    fn out_of_range_options_name_the_field() {
        let defaults = StreamConfig::default();
        let request = |json: &str| match parse_client_message(json).unwrap() {
            ClientMessage::Config(r) => r,
            ClientMessage::End => unreachable!(),
        };
        let err = request(r#"{"type":"config","sample_rate":0}"#)
            .stream_config(&defaults)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("sample_rate"));
        let err = request(r#"{"type":"config","sample_rate":16000,"hop_ms":5}"#)
            .stream_config(&defaults)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("hop_ms"));
        let err = request(r#"{"type":"config","sample_rate":16000,"commit_policy":"eager"}"#)
            .stream_config(&defaults)
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("commit_policy"));
    }

    #[test]
    fn frames_decode_and_odd_sizes_are_rejected() {
        let s16 = [0x00, 0x40, 0x00, 0xC0]; // 16384, -16384
        assert_eq!(decode_frame(&s16, Encoding::PcmS16le).unwrap(), vec![0.5, -0.5]);
        assert!(
            decode_frame(&s16[..3], Encoding::PcmS16le)
                .unwrap_err()
                .message
                .contains("3 bytes")
        );
        let f32s: Vec<u8> = [0.25f32, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(decode_frame(&f32s, Encoding::F32le).unwrap(), vec![0.25, 1.0]);
        assert!(decode_frame(&f32s[..6], Encoding::F32le).is_err());
        let nan: Vec<u8> = [0.0f32, f32::NAN].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert!(
            decode_frame(&nan, Encoding::F32le)
                .unwrap_err()
                .message
                .contains("sample 1")
        );
        assert!(decode_frame(&[], Encoding::F32le).unwrap().is_empty());
    }

    #[test]
    fn form_fields_with_and_without_brackets() {
        let mut form = TranscriptionForm::default();
        form.set("response_format", "verbose_json").unwrap();
        form.set("timestamp_granularities[]", "word").unwrap();
        form.set("timestamp_granularities", "segment").unwrap();
        form.set("temperature", "0.2").unwrap();
        form.set("include[]", "logprobs").unwrap();
        form.set("stream", "false").unwrap();
        assert!(form.words);
        assert_eq!(form.temperature, Some(0.2));
        form.validate().unwrap();
    }

    #[test]
    fn bad_form_fields_name_the_param() {
        let mut form = TranscriptionForm::default();
        assert_eq!(
            form.set("response_format", "xml").unwrap_err().param.as_deref(),
            Some("response_format")
        );
        assert_eq!(
            form.set("temperature", "hot").unwrap_err().param.as_deref(),
            Some("temperature")
        );
        assert_eq!(
            form.set("temperature", "2").unwrap_err().param.as_deref(),
            Some("temperature")
        );
        assert_eq!(
            form.set("stream", "maybe").unwrap_err().param.as_deref(),
            Some("stream")
        );
        assert_eq!(form.set("colour", "red").unwrap_err().param.as_deref(), Some("colour"));
        form.set("stream", "true").unwrap();
        form.set("response_format", "srt").unwrap();
        assert_eq!(form.validate().unwrap_err().param.as_deref(), Some("stream"));
    }
}
