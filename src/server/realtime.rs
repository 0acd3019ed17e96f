//! WebSocket `/v1/realtime?intent=transcription`: OpenAI's Realtime API in transcription mode,
//! over one [`StreamSession`] per connection (with its turn events, `StreamConfig::turn_events`).
//!
//! ```text
//! client: GET /v1/realtime?intent=transcription        (Authorization: Bearer <key> if one is set)
//! server: session.created                              (the defaults: server_vad, audio/pcm 24 kHz)
//! client: session.update {session:{type:"transcription",audio:{input:{format,transcription,turn_detection}}}}
//!         or (beta) transcription_session.update {session:{input_audio_format,input_audio_transcription,turn_detection}}
//! server: session.updated                              (beta: transcription_session.updated)
//! client: input_audio_buffer.append {audio: base64 pcm16 LE mono 24 kHz} …  .commit  .clear
//! server: input_audio_buffer.speech_started {audio_start_ms,item_id}     (server_vad)
//!         conversation.item.input_audio_transcription.delta {item_id,delta} …
//!         input_audio_buffer.speech_stopped {audio_end_ms,item_id}       (server_vad)
//!         input_audio_buffer.committed {item_id,previous_item_id}
//!         conversation.item.input_audio_transcription.completed {item_id,transcript,usage}
//!         input_audio_buffer.cleared, error {error:{type,code,message,param,event_id}}
//! ```
//!
//! Turns: with `server_vad` steno's VAD and endpointing decide them (`threshold` → the VAD
//! threshold, `prefix_padding_ms` → its speech padding, `silence_duration_ms` → its minimum
//! silence), one item per utterance, and its deltas stream while it is spoken (the item is named
//! by `speech_started`). With `turn_detection: null` the audio accumulates until
//! `input_audio_buffer.commit`, which ends the turn ([`StreamSession::flush`]): one item, whose
//! deltas follow `committed`. A commit in `server_vad` mode ends the turn in progress the same
//! way; `clear` drops the audio not yet committed ([`StreamSession::discard`]). Deltas are
//! append-only, taken from committed text (never revised); `completed` has the final transcript.
//! Audio is resampled from 24 kHz by the stream; times are milliseconds on the audio clock (all
//! audio appended on the connection). A `session.update` that changes the stream's settings
//! after audio came ends the stream (committing the turn in progress) and starts a new one.
//!
//! Every client mistake is an `error` event and the connection goes on. It closes when the
//! server is full (1013, after an `error`), the client is idle for `idle_timeout_s` (1008) or
//! the stream fails (1011). The pure half, the parser ([`parse_client_event`]), the session
//! ([`Session`]) and the item bookkeeping ([`Turns`]), is tested on scripted inputs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until, timeout};

use super::ws::close;
use super::{ApiError, AppState, Slot};
use crate::stream::{AudioSender, Pacing, StreamEvent, TimedEvent};
use crate::{Engine, StreamConfig, StreamSession};

/// The only input rate of the Realtime API (pcm16 at 24 kHz).
pub const INPUT_RATE: u32 = 24_000;

/// Close codes (RFC 6455 §7.4.1).
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const INTERNAL: u16 = 1011;
const TRY_AGAIN_LATER: u16 = 1013;

/// Largest client message: OpenAI takes appends of up to 15 MiB of audio.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Longest `silence_duration_ms` / `prefix_padding_ms` (the VAD's own limit).
const MAX_MS: u32 = 60_000;

/// A client mistake or a stream failure, as OpenAI's `error` event carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// The `event_id` of the client event at fault.
    pub event_id: Option<String>,
}

impl Problem {
    fn invalid(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: param.map(str::to_owned),
            event_id: None,
        }
    }

    fn server(code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            kind: "server_error",
            code,
            message: message.into(),
            param: None,
            event_id: None,
        }
    }

    fn for_event(mut self, event_id: Option<&str>) -> Problem {
        self.event_id = event_id.map(str::to_owned);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Client events

/// A client event, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientEvent {
    /// The client's optional `event_id` (echoed in errors about it).
    pub event_id: Option<String>,
    pub kind: ClientKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientKind {
    /// `session.update` (`beta: false`) or `transcription_session.update` (`beta: true`).
    SessionUpdate {
        patch: SessionPatch,
        beta: bool,
    },
    /// `input_audio_buffer.append`: the decoded samples (24 kHz mono, f32).
    Append(Vec<f32>),
    Commit,
    Clear,
}

/// The fields a session update sets (absent: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPatch {
    pub model: Option<String>,
    /// `Some(None)`: detect (multilingual models).
    pub language: Option<Option<String>>,
    pub prompt: Option<String>,
    /// `Some(None)`: `turn_detection: null` (manual commits).
    pub turn_detection: Option<Option<TurnPatch>>,
    pub include: Option<Vec<String>>,
}

/// The fields of a `server_vad` turn detection (absent: the current value or the default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnPatch {
    pub threshold: Option<f32>,
    pub prefix_padding_ms: Option<u32>,
    pub silence_duration_ms: Option<u32>,
}

/// `Option<Option<T>>` for a field that may be absent (`None`), `null` (`Some(None)`) or set.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaSession {
    #[serde(rename = "type")]
    kind: Option<String>,
    audio: Option<GaAudio>,
    include: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaAudio {
    input: Option<GaInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaInput {
    format: Option<GaFormat>,
    transcription: Option<WireTranscription>,
    #[serde(default, deserialize_with = "nullable")]
    turn_detection: Option<Option<WireTurn>>,
    /// Accepted; steno does no noise reduction.
    #[serde(default, rename = "noise_reduction")]
    _noise_reduction: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaFormat {
    #[serde(rename = "type")]
    kind: Option<String>,
    rate: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTranscription {
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    /// Options of OpenAI's own models; accepted and unused.
    #[serde(default, rename = "delay")]
    _delay: Option<IgnoredAny>,
    #[serde(default, rename = "keywords")]
    _keywords: Option<IgnoredAny>,
    #[serde(default, rename = "languages")]
    _languages: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTurn {
    #[serde(rename = "type")]
    kind: Option<String>,
    threshold: Option<f32>,
    prefix_padding_ms: Option<u32>,
    silence_duration_ms: Option<u32>,
    /// About responses, which transcription sessions do not make; accepted and unused.
    #[serde(default, rename = "create_response")]
    _create_response: Option<IgnoredAny>,
    #[serde(default, rename = "interrupt_response")]
    _interrupt_response: Option<IgnoredAny>,
    #[serde(default, rename = "idle_timeout_ms")]
    _idle_timeout_ms: Option<IgnoredAny>,
    #[serde(default, rename = "eagerness")]
    _eagerness: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BetaSession {
    input_audio_format: Option<String>,
    input_audio_transcription: Option<WireTranscription>,
    #[serde(default, deserialize_with = "nullable")]
    turn_detection: Option<Option<WireTurn>>,
    include: Option<Vec<String>>,
    /// Accepted and unused.
    #[serde(default, rename = "input_audio_noise_reduction")]
    _input_audio_noise_reduction: Option<IgnoredAny>,
    #[serde(default, rename = "modalities")]
    _modalities: Option<IgnoredAny>,
    #[serde(default, rename = "client_secret")]
    _client_secret: Option<IgnoredAny>,
}

/// The client events steno takes.
const TAKES: &str = "session.update, transcription_session.update, input_audio_buffer.append, \
                     input_audio_buffer.commit, input_audio_buffer.clear";

/// Parse one text message. Errors say which parameter is wrong and carry the client's
/// `event_id` when it could be read.
pub fn parse_client_event(text: &str) -> Result<ClientEvent, Problem> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Problem::invalid("invalid_json", None, format!("the event is not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(Problem::invalid("invalid_json", None, "the event is not a JSON object"));
    };
    let event_id = match object.remove("event_id") {
        Some(Value::String(id)) => Some(id),
        Some(Value::Null) | None => None,
        Some(_) => {
            return Err(Problem::invalid(
                "invalid_type",
                Some("event_id"),
                "`event_id` must be a string",
            ));
        }
    };
    let id = event_id.as_deref();
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(Problem::invalid("invalid_type", Some("type"), "`type` must be a string").for_event(id)),
        None => {
            return Err(
                Problem::invalid("missing_required_parameter", Some("type"), "the event has no `type`").for_event(id),
            );
        }
    };
    let parsed = match kind.as_str() {
        "session.update" | "transcription_session.update" => {
            let beta = kind == "transcription_session.update";
            let session = match object.remove("session") {
                Some(session) => session,
                None => {
                    return Err(Problem::invalid(
                        "missing_required_parameter",
                        Some("session"),
                        format!("{kind} needs a `session`"),
                    )
                    .for_event(id));
                }
            };
            no_more_fields(&kind, &object).map_err(|e| e.for_event(id))?;
            let patch = if beta { beta_patch(session) } else { ga_patch(session) };
            ClientKind::SessionUpdate {
                patch: patch.map_err(|e| e.for_event(id))?,
                beta,
            }
        }
        "input_audio_buffer.append" => {
            let audio = match object.remove("audio") {
                Some(Value::String(audio)) => audio,
                Some(_) => {
                    return Err(
                        Problem::invalid("invalid_type", Some("audio"), "`audio` must be a base64 string")
                            .for_event(id),
                    );
                }
                None => {
                    return Err(Problem::invalid(
                        "missing_required_parameter",
                        Some("audio"),
                        "input_audio_buffer.append needs `audio` (base64 pcm16)",
                    )
                    .for_event(id));
                }
            };
            no_more_fields(&kind, &object).map_err(|e| e.for_event(id))?;
            ClientKind::Append(decode_pcm16(&audio).map_err(|e| e.for_event(id))?)
        }
        "input_audio_buffer.commit" => {
            no_more_fields(&kind, &object).map_err(|e| e.for_event(id))?;
            ClientKind::Commit
        }
        "input_audio_buffer.clear" => {
            no_more_fields(&kind, &object).map_err(|e| e.for_event(id))?;
            ClientKind::Clear
        }
        other => {
            return Err(Problem::invalid(
                "invalid_value",
                Some("type"),
                format!("`{other}` is not an event of steno's transcription sessions (it takes {TAKES})"),
            )
            .for_event(id));
        }
    };
    Ok(ClientEvent { event_id, kind: parsed })
}

fn no_more_fields(kind: &str, object: &serde_json::Map<String, Value>) -> Result<(), Problem> {
    match object.keys().next() {
        Some(field) => Err(Problem::invalid(
            "unknown_parameter",
            Some(field.as_str()),
            format!("unknown parameter `{field}` of {kind}"),
        )),
        None => Ok(()),
    }
}

/// A serde error about a session, as a problem naming `session`.
fn session_problem(e: &serde_json::Error) -> Problem {
    let message = e.to_string();
    let code = if message.contains("unknown field") {
        "unknown_parameter"
    } else {
        "invalid_value"
    };
    Problem::invalid(code, Some("session"), format!("session: {message}"))
}

fn ga_patch(session: Value) -> Result<SessionPatch, Problem> {
    let session: GaSession = serde_json::from_value(session).map_err(|e| session_problem(&e))?;
    match session.kind.as_deref() {
        None | Some("transcription") => {}
        Some(other) => {
            return Err(Problem::invalid(
                "invalid_value",
                Some("session.type"),
                format!(
                    "session type `{other}`: steno serves transcription sessions only (`\"type\": \"transcription\"`)"
                ),
            ));
        }
    }
    let mut patch = SessionPatch {
        include: session.include,
        ..SessionPatch::default()
    };
    let Some(input) = session.audio.and_then(|a| a.input) else {
        return Ok(patch);
    };
    if let Some(format) = input.format {
        match format.kind.as_deref() {
            None | Some("audio/pcm") => {}
            Some(other) => {
                return Err(Problem::invalid(
                    "invalid_value",
                    Some("session.audio.input.format.type"),
                    format!("format `{other}`: steno takes audio/pcm (pcm16, 24 kHz) only"),
                ));
            }
        }
        if let Some(rate) = format.rate.filter(|&r| r != INPUT_RATE) {
            return Err(Problem::invalid(
                "invalid_value",
                Some("session.audio.input.format.rate"),
                format!("rate {rate}: audio/pcm is 24000 Hz"),
            ));
        }
    }
    if let Some(t) = input.transcription {
        set_transcription(&mut patch, t);
    }
    patch.turn_detection = turn_patch(input.turn_detection, "session.audio.input.turn_detection")?;
    Ok(patch)
}

fn beta_patch(session: Value) -> Result<SessionPatch, Problem> {
    let session: BetaSession = serde_json::from_value(session).map_err(|e| session_problem(&e))?;
    if let Some(format) = session.input_audio_format.filter(|f| f != "pcm16") {
        return Err(Problem::invalid(
            "invalid_value",
            Some("session.input_audio_format"),
            format!("input_audio_format `{format}`: steno takes pcm16 (24 kHz) only"),
        ));
    }
    let mut patch = SessionPatch {
        include: session.include,
        ..SessionPatch::default()
    };
    if let Some(t) = session.input_audio_transcription {
        set_transcription(&mut patch, t);
    }
    patch.turn_detection = turn_patch(session.turn_detection, "session.turn_detection")?;
    Ok(patch)
}

fn set_transcription(patch: &mut SessionPatch, t: WireTranscription) {
    patch.model = t.model;
    patch.language = t.language.map(|l| Some(l.trim().to_owned()).filter(|l| !l.is_empty()));
    patch.prompt = t.prompt;
}

fn turn_patch(turn: Option<Option<WireTurn>>, param: &str) -> Result<Option<Option<TurnPatch>>, Problem> {
    let Some(turn) = turn else { return Ok(None) };
    let Some(turn) = turn else { return Ok(Some(None)) };
    match turn.kind.as_deref() {
        None | Some("server_vad") => {}
        Some(other) => {
            return Err(Problem::invalid(
                "invalid_value",
                Some(&format!("{param}.type")),
                format!("turn detection `{other}`: steno has server_vad, or null for manual commits"),
            ));
        }
    }
    if let Some(t) = turn.threshold
        && !(t.is_finite() && t > 0.0 && t <= 1.0)
    {
        return Err(Problem::invalid(
            "invalid_value",
            Some(&format!("{param}.threshold")),
            format!("threshold {t} is not in (0, 1]"),
        ));
    }
    for (name, ms) in [
        ("prefix_padding_ms", turn.prefix_padding_ms),
        ("silence_duration_ms", turn.silence_duration_ms),
    ] {
        if let Some(ms) = ms.filter(|&ms| ms > MAX_MS) {
            return Err(Problem::invalid(
                "invalid_value",
                Some(&format!("{param}.{name}")),
                format!("{name} {ms} is more than {MAX_MS} ms"),
            ));
        }
    }
    Ok(Some(Some(TurnPatch {
        threshold: turn.threshold,
        prefix_padding_ms: turn.prefix_padding_ms,
        silence_duration_ms: turn.silence_duration_ms,
    })))
}

/// Base64 pcm16 (little-endian, mono) to samples in [-1, 1).
pub fn decode_pcm16(audio: &str) -> Result<Vec<f32>, Problem> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(audio.trim())
        .map_err(|e| Problem::invalid("invalid_value", Some("audio"), format!("`audio` is not base64: {e}")))?;
    if !bytes.len().is_multiple_of(2) {
        return Err(Problem::invalid(
            "invalid_value",
            Some("audio"),
            format!("`audio` has {} bytes: not whole 16-bit samples", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(2)
        .filter_map(|b| b.try_into().ok())
        .map(|b| f32::from(i16::from_le_bytes(b)) / 32768.0)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The session

/// `server_vad` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerVad {
    pub threshold: f32,
    pub prefix_padding_ms: u32,
    pub silence_duration_ms: u32,
}

/// A connection's session: what `session.updated` reports and the stream's settings follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    /// Reported only: the loaded model answers.
    pub model: String,
    pub language: Option<String>,
    /// Accepted and reported; steno's streams prompt with their own earlier text instead.
    pub prompt: String,
    /// `None`: manual commits.
    pub turn: Option<ServerVad>,
    pub include: Vec<String>,
    /// The server's stream defaults, which a session's settings override.
    defaults: StreamConfig,
}

impl Session {
    /// The server's defaults: `server_vad` with the stream defaults' VAD settings.
    pub fn new(id: String, model: String, defaults: &StreamConfig) -> Session {
        Session {
            id,
            model,
            language: defaults.language.clone(),
            prompt: String::new(),
            turn: Some(Self::default_vad(defaults)),
            include: Vec::new(),
            defaults: defaults.clone(),
        }
    }

    fn default_vad(defaults: &StreamConfig) -> ServerVad {
        ServerVad {
            threshold: defaults.vad.threshold,
            prefix_padding_ms: defaults.vad.speech_pad_ms,
            silence_duration_ms: defaults.vad.min_silence_ms,
        }
    }

    /// This session with `patch` applied (the model name is only reported).
    pub fn patched(&self, patch: SessionPatch) -> Session {
        let mut next = self.clone();
        if let Some(model) = patch.model {
            next.model = model;
        }
        if let Some(language) = patch.language {
            next.language = language;
        }
        if let Some(prompt) = patch.prompt {
            next.prompt = prompt;
        }
        if let Some(turn) = patch.turn_detection {
            next.turn = turn.map(|t| {
                let base = self.turn.unwrap_or_else(|| Self::default_vad(&self.defaults));
                ServerVad {
                    threshold: t.threshold.unwrap_or(base.threshold),
                    prefix_padding_ms: t.prefix_padding_ms.unwrap_or(base.prefix_padding_ms),
                    silence_duration_ms: t.silence_duration_ms.unwrap_or(base.silence_duration_ms),
                }
            });
        }
        if let Some(include) = patch.include {
            next.include = include;
        }
        next
    }

    /// The stream's settings: live pacing, turn events; `server_vad` sets the VAD, manual
    /// commits turn silence endpoints off (the longest silence the VAD takes: only a commit, or
    /// `max_utterance_s`, ends an utterance).
    pub fn stream_config(&self) -> Result<StreamConfig, Problem> {
        let mut config = StreamConfig {
            pacing: Pacing::Live,
            turn_events: true,
            language: self.language.clone(),
            ..self.defaults.clone()
        };
        match self.turn {
            Some(vad) => {
                config.vad.threshold = vad.threshold;
                config.vad.speech_pad_ms = vad.prefix_padding_ms;
                config.vad.min_silence_ms = vad.silence_duration_ms;
            }
            None => config.vad.min_silence_ms = MAX_MS,
        }
        config.validate().map_err(|e| match e {
            crate::Error::Config { field, problem } => {
                Problem::invalid("invalid_value", Some("session"), format!("{field}: {problem}"))
            }
            other => Problem::invalid("invalid_value", Some("session"), other.to_string()),
        })?;
        Ok(config)
    }

    fn turn_json(&self) -> Value {
        match self.turn {
            Some(vad) => json!({
                "type": "server_vad",
                // f32 → f64 without the binary tail (0.6, not 0.6000000238).
                "threshold": (f64::from(vad.threshold) * 1e4).round() / 1e4,
                "prefix_padding_ms": vad.prefix_padding_ms,
                "silence_duration_ms": vad.silence_duration_ms,
            }),
            None => Value::Null,
        }
    }

    fn transcription_json(&self) -> Value {
        json!({"model": self.model, "language": self.language, "prompt": self.prompt})
    }

    /// The GA session object (`session.created`, `session.updated`).
    pub fn ga_json(&self) -> Value {
        json!({
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": self.id,
            "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": INPUT_RATE},
                "transcription": self.transcription_json(),
                "noise_reduction": null,
                "turn_detection": self.turn_json(),
            }},
            "include": self.include,
        })
    }

    /// The beta session object (`transcription_session.updated`).
    pub fn beta_json(&self) -> Value {
        json!({
            "object": "realtime.transcription_session",
            "id": self.id,
            "input_audio_format": "pcm16",
            "input_audio_transcription": self.transcription_json(),
            "input_audio_noise_reduction": null,
            "turn_detection": self.turn_json(),
            "include": self.include,
            "modalities": ["text"],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Items

/// One conversation item: the audio of one turn and what was heard of it.
#[derive(Debug, Clone)]
struct Item {
    id: String,
    /// `input_audio_buffer.committed` was sent.
    committed: bool,
    /// Completes at the `Flushed` of its commit (a manual turn, or a commit without speech)
    /// rather than at its utterance's final.
    until_flush: bool,
    /// Texts of its ended utterances.
    finals: Vec<String>,
    /// Committed text of its utterance in progress.
    current: String,
    /// What the deltas said so far.
    sent: String,
    /// Seconds of audio (the usage).
    audio_s: f64,
}

impl Item {
    fn new(id: String) -> Item {
        Item {
            id,
            committed: false,
            until_flush: false,
            finals: Vec::new(),
            current: String::new(),
            sent: String::new(),
            audio_s: 0.0,
        }
    }

    fn text(&self) -> String {
        let parts = self.finals.iter().chain(std::iter::once(&self.current));
        parts
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The bookkeeping between a stream's events and the Realtime events: items, their ids and
/// order, and the deltas already sent. Pure: the connection feeds it and sends what it returns.
#[derive(Debug)]
pub struct Turns {
    connection: u64,
    next_event: u64,
    next_item: u64,
    /// `turn_detection: null`.
    manual: bool,
    /// Milliseconds of audio appended before the current stream started.
    offset_ms: f64,
    previous_item: Option<String>,
    /// Items not yet completed, oldest first.
    items: Vec<Item>,
    /// The current stream's utterances → their items.
    utterances: HashMap<u64, String>,
    /// The item not yet committed that new speech joins.
    open: Option<String>,
    /// One per flush or discard sent to the stream, oldest first: the item that completes at
    /// its `Flushed`.
    markers: VecDeque<Option<String>>,
    /// Samples appended since the last commit or clear.
    buffered: u64,
}

impl Turns {
    pub fn new(connection: u64, manual: bool) -> Turns {
        Turns {
            connection,
            next_event: 0,
            next_item: 0,
            manual,
            offset_ms: 0.0,
            previous_item: None,
            items: Vec::new(),
            utterances: HashMap::new(),
            open: None,
            markers: VecDeque::new(),
            buffered: 0,
        }
    }

    /// A new server event of `kind` with its `event_id` and `fields`.
    pub fn event(&mut self, kind: &str, fields: Value) -> Value {
        self.next_event += 1;
        let mut event = json!({"type": kind, "event_id": format!("event_{}_{}", self.connection, self.next_event)});
        if let (Value::Object(event), Value::Object(fields)) = (&mut event, fields) {
            event.extend(fields);
        }
        event
    }

    /// The `error` event of `problem`.
    pub fn error(&mut self, problem: &Problem) -> Value {
        let error = json!({
            "type": problem.kind,
            "code": problem.code,
            "message": problem.message,
            "param": problem.param,
            "event_id": problem.event_id,
        });
        self.event("error", json!({ "error": error }))
    }

    /// Manual commits (`turn_detection: null`) or server VAD, from now on.
    pub fn set_manual(&mut self, manual: bool) {
        self.manual = manual;
    }

    /// Samples were appended (and pushed into the stream).
    pub fn on_append(&mut self, samples: usize) {
        self.buffered += samples as u64;
    }

    fn new_item(&mut self) -> String {
        self.next_item += 1;
        let id = format!("item_{}_{}", self.connection, self.next_item);
        self.items.push(Item::new(id.clone()));
        id
    }

    fn item_mut(&mut self, id: &str) -> Option<&mut Item> {
        self.items.iter_mut().find(|i| i.id == id)
    }

    fn ms(&self, seconds: f64) -> i64 {
        (self.offset_ms + seconds * 1e3).round() as i64
    }

    /// `committed` for `id`, which becomes the previous item.
    fn commit_item(&mut self, id: &str, out: &mut Vec<Value>) {
        let Some(item) = self.item_mut(id) else { return };
        if item.committed {
            return;
        }
        item.committed = true;
        if self.open.as_deref() == Some(id) {
            self.open = None;
        }
        let previous = self.previous_item.replace(id.to_owned());
        let event = self.event(
            "input_audio_buffer.committed",
            json!({"item_id": id, "previous_item_id": previous}),
        );
        out.push(event);
    }

    /// The delta of `id`'s text since the last one, when its text has grown (never revised:
    /// text that no longer starts with what was sent waits for the transcript).
    fn delta(&mut self, id: &str, out: &mut Vec<Value>) {
        let manual = self.manual;
        let Some(item) = self.item_mut(id) else { return };
        if manual && !item.committed {
            // A manual turn's item is named by its commit: its text waits until then.
            return;
        }
        let text = item.text();
        let Some(new) = text.strip_prefix(item.sent.as_str()).filter(|d| !d.is_empty()) else {
            return;
        };
        // A word's leading space belongs to it; the first delta of an item starts with the word.
        let delta = if item.sent.is_empty() {
            new.trim_start().to_owned()
        } else {
            new.to_owned()
        };
        item.sent = text;
        let event = self.event(
            "conversation.item.input_audio_transcription.delta",
            json!({"item_id": id, "content_index": 0, "delta": delta}),
        );
        out.push(event);
    }

    /// The last delta and `completed` of `id`, which is then forgotten.
    fn complete(&mut self, id: &str, out: &mut Vec<Value>) {
        self.commit_item(id, out);
        self.delta(id, out);
        let Some(index) = self.items.iter().position(|i| i.id == id) else {
            return;
        };
        let item = self.items.remove(index);
        self.utterances.retain(|_, v| v != id);
        let event = self.event(
            "conversation.item.input_audio_transcription.completed",
            json!({
                "item_id": id,
                "content_index": 0,
                "transcript": item.text(),
                "usage": {"type": "duration", "seconds": (item.audio_s * 1e3).round() / 1e3},
            }),
        );
        out.push(event);
    }

    /// `input_audio_buffer.commit`: the events to send, after which the connection flushes the
    /// stream. An empty buffer is an error (nothing is sent to the stream then).
    pub fn commit(&mut self) -> Result<Vec<Value>, Problem> {
        if self.buffered == 0 {
            return Err(Problem::invalid(
                "input_audio_buffer_commit_empty",
                None,
                "the input audio buffer is empty: append audio before committing",
            ));
        }
        let buffered_s = self.buffered as f64 / f64::from(INPUT_RATE);
        self.buffered = 0;
        let id = match self.open.clone() {
            Some(id) => id,
            None => self.new_item(),
        };
        // A server-VAD turn in progress ends with its utterance's final; a manual turn (any
        // number of utterances) or a commit of no speech ends at the flush.
        let speaking = self.utterances.values().any(|v| *v == id);
        let until_flush = self.manual || !speaking;
        if let Some(item) = self.item_mut(&id) {
            item.until_flush = until_flush;
            if until_flush {
                item.audio_s = buffered_s;
            }
        }
        let mut out = Vec::new();
        self.commit_item(&id, &mut out);
        self.delta(&id, &mut out);
        self.markers.push_back(until_flush.then_some(id));
        Ok(out)
    }

    /// The turn in progress is committed, if speech was heard (its stream is about to end).
    pub fn end_turn(&mut self) -> Vec<Value> {
        if self.open.is_none() {
            return Vec::new();
        }
        self.commit().unwrap_or_default()
    }

    /// `input_audio_buffer.clear`: the audio not yet committed is dropped with its item; the
    /// connection then discards the stream's turn.
    pub fn clear(&mut self) -> Vec<Value> {
        self.buffered = 0;
        if let Some(id) = self.open.take() {
            self.items.retain(|i| i.id != id);
            self.utterances.retain(|_, v| *v != id);
        }
        self.markers.push_back(None);
        vec![self.event("input_audio_buffer.cleared", json!({}))]
    }

    /// The events a stream event makes.
    pub fn on_stream(&mut self, event: &StreamEvent) -> Vec<Value> {
        let mut out = Vec::new();
        match event {
            StreamEvent::SpeechStarted { utterance, start } => {
                // Events before a flush's `Flushed` are about the audio before it: speech heard
                // then (cut at the maximum length, or heard while the last utterance ended)
                // belongs to that commit's item, or, after a clear, to nothing.
                let id = match (self.markers.front(), self.manual) {
                    (Some(None), _) => return out,
                    (Some(Some(id)), true) => id.clone(),
                    (None, true) => match self.open.clone() {
                        Some(id) => id,
                        None => {
                            let id = self.new_item();
                            self.open = Some(id.clone());
                            id
                        }
                    },
                    (_, false) => {
                        let id = self.new_item();
                        self.open = Some(id.clone());
                        id
                    }
                };
                self.utterances.insert(*utterance, id.clone());
                if !self.manual {
                    let audio_start_ms = self.ms(*start);
                    let event = self.event(
                        "input_audio_buffer.speech_started",
                        json!({"audio_start_ms": audio_start_ms, "item_id": id}),
                    );
                    out.push(event);
                }
            }
            StreamEvent::Partial {
                utterance, committed, ..
            } => {
                if let Some(id) = self.utterances.get(utterance).cloned() {
                    if let Some(item) = self.item_mut(&id) {
                        item.current.clone_from(committed);
                    }
                    self.delta(&id, &mut out);
                }
            }
            StreamEvent::SpeechStopped { utterance, end } => {
                if let Some(id) = self.utterances.get(utterance).cloned()
                    && !self.manual
                    && self.item_mut(&id).is_some_and(|i| !i.committed)
                {
                    let audio_end_ms = self.ms(*end);
                    let event = self.event(
                        "input_audio_buffer.speech_stopped",
                        json!({"audio_end_ms": audio_end_ms, "item_id": id}),
                    );
                    out.push(event);
                    // Server VAD commits the buffer at the end of speech.
                    self.buffered = 0;
                    self.commit_item(&id, &mut out);
                }
            }
            StreamEvent::Final {
                utterance,
                text,
                start,
                end,
                ..
            } => {
                if let Some(id) = self.utterances.remove(utterance) {
                    let manual = self.manual;
                    let Some(item) = self.item_mut(&id) else { return out };
                    item.current.clear();
                    item.finals.push(text.clone());
                    let until_flush = item.until_flush;
                    if !until_flush {
                        item.audio_s += (end - start).max(0.0);
                    }
                    if manual || until_flush {
                        self.delta(&id, &mut out);
                    } else {
                        self.complete(&id, &mut out);
                    }
                }
            }
            StreamEvent::Flushed { .. } => {
                if let Some(Some(id)) = self.markers.pop_front() {
                    self.complete(&id, &mut out);
                }
            }
            StreamEvent::Error { message } => {
                out.push(self.error(&Problem::server("transcription_failed", message.clone())));
            }
            StreamEvent::Warning { message } => {
                out.push(self.error(&Problem::server("stream_warning", message.clone())));
            }
            StreamEvent::Stats(_) => {}
        }
        out
    }

    /// The stream ended (all its events seen; the next one starts after `appended_ms` of
    /// audio): committed items complete with what they have, uncommitted ones are dropped.
    pub fn on_stream_end(&mut self, appended_ms: f64) -> Vec<Value> {
        let mut out = Vec::new();
        let committed: Vec<String> = self
            .items
            .iter()
            .filter(|i| i.committed)
            .map(|i| i.id.clone())
            .collect();
        for id in committed {
            self.complete(&id, &mut out);
        }
        self.items.clear();
        self.utterances.clear();
        self.markers.clear();
        self.open = None;
        self.offset_ms = appended_ms;
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The connection

/// `GET /v1/realtime?intent=transcription`: upgrade, then run the protocol. Another intent (a
/// conversation) is a 400; a full server still upgrades, to say so with an `error` and 1013.
pub(super) async fn realtime(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let intent = query.as_deref().unwrap_or_default().split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == "intent").then_some(value)
    });
    if intent != Some("transcription") {
        let mut e = ApiError::bad_request(
            Some("intent".into()),
            "steno serves Realtime transcription sessions only: connect to /v1/realtime?intent=transcription",
        );
        e.code = Some("invalid_intent");
        return e.into_response();
    }
    let slot = state.try_stream_slot();
    let (engine, worker_slot) = match state.engine() {
        Ok(picked) => picked,
        Err(e) => return e.into_response(),
    };
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |mut socket| async move {
            match slot {
                Some(slot) => Connection::new(state, engine, (slot, worker_slot)).run(socket).await,
                None => {
                    let mut turns = Turns::new(0, false);
                    let message = format!(
                        "server busy: all {} streams are in use; try again later",
                        state.config.max_streams
                    );
                    let error = turns.error(&Problem::server("server_busy", message));
                    let _ = timeout(
                        Duration::from_secs(2),
                        socket.send(Message::Text(error.to_string().into())),
                    )
                    .await;
                    close(&mut socket, TRY_AGAIN_LATER, "too many streams").await;
                }
            }
        })
}

/// The running stream of a connection.
struct Live {
    session: StreamSession<'static>,
    sender: AudioSender,
    events: tokio::sync::mpsc::Receiver<TimedEvent>,
    config: StreamConfig,
}

/// How a connection ended, for the log.
enum Ending {
    ClientGone,
    Closed { code: u16, reason: &'static str },
}

struct Connection {
    state: Arc<AppState>,
    engine: Arc<Engine>,
    /// The stream's place under `max_streams` and on its engine, given back on drop.
    _slots: (Slot, Slot),
    idle: Duration,
    /// Samples appended on the connection (24 kHz), for the audio clock across streams.
    appended: u64,
}

impl Connection {
    fn new(state: Arc<AppState>, engine: Arc<Engine>, slots: (Slot, Slot)) -> Connection {
        let idle = Duration::from_secs(state.config.idle_timeout_s);
        Connection {
            state,
            engine,
            _slots: slots,
            idle,
            appended: 0,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let id = self.state.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut live = None;
        let ending = self.serve(&mut socket, id, &mut live).await;
        match ending {
            Ending::ClientGone => tracing::info!(stream = id, "realtime client went away"),
            Ending::Closed { code, reason } => {
                tracing::info!(stream = id, code, reason, "realtime session closed by the server");
                close(&mut socket, code, reason).await;
            }
        }
        // Joining the stream's thread may wait for its last window job: not on an async
        // worker. The slots go after it, then the heap is trimmed if the server is idle.
        let Connection { state, _slots, .. } = self;
        tokio::task::spawn_blocking(move || {
            drop(live);
            drop(_slots);
            state.trim_if_idle();
        });
    }

    /// Start a stream with `config` (off the async workers: it loads the VAD).
    async fn start(&self, config: StreamConfig) -> Result<Live, Problem> {
        let engine = self.engine.clone();
        let settings = config.clone();
        let started = tokio::task::spawn_blocking(move || StreamSession::start_shared(engine, settings)).await;
        let session = match started {
            Ok(Ok(session)) => session,
            Ok(Err(crate::Error::Config { field, problem })) => {
                return Err(Problem::invalid(
                    "invalid_value",
                    Some("session"),
                    format!("{field}: {problem}"),
                ));
            }
            Ok(Err(e)) => return Err(Problem::server("stream_failed", e.to_string())),
            Err(e) => return Err(Problem::server("stream_failed", e.to_string())),
        };
        let sender = session
            .sender()
            .map_err(|e| Problem::server("stream_failed", e.to_string()))?;
        let events = session.events().clone();
        let (events_tx, events_rx) = tokio::sync::mpsc::channel::<TimedEvent>(256);
        tokio::task::spawn_blocking(move || {
            for event in events.iter() {
                if events_tx.blocking_send(event).is_err() {
                    break;
                }
            }
        });
        Ok(Live {
            session,
            sender,
            events: events_rx,
            config,
        })
    }

    fn appended_ms(&self) -> f64 {
        self.appended as f64 * 1e3 / f64::from(INPUT_RATE)
    }

    async fn serve(&mut self, socket: &mut WebSocket, id: u64, live: &mut Option<Live>) -> Ending {
        let mut session = Session::new(
            format!("sess_{id}"),
            self.state.config.model_name.clone(),
            &self.state.config.stream,
        );
        let mut turns = Turns::new(id, session.turn.is_none());
        let first = match session.stream_config() {
            Ok(config) => self.start(config).await,
            Err(e) => Err(e),
        };
        match first {
            Ok(started) => *live = Some(started),
            Err(e) => {
                let error = turns.error(&e);
                return if self.send(socket, &error).await {
                    Ending::Closed {
                        code: INTERNAL,
                        reason: "stream failed",
                    }
                } else {
                    Ending::ClientGone
                };
            }
        }
        let created = turns.event("session.created", json!({"session": session.ga_json()}));
        if !self.send(socket, &created).await {
            return Ending::ClientGone;
        }
        let mut deadline = Instant::now() + self.idle;
        let drained = self.state.drained();
        tokio::pin!(drained);
        loop {
            let Some(stream) = live.as_mut() else {
                return Ending::Closed {
                    code: INTERNAL,
                    reason: "stream failed",
                };
            };
            tokio::select! {
                () = &mut drained => break,
                () = sleep_until(deadline) => {
                    let e = Problem::invalid("idle_timeout", None, format!("no event for {} s", self.idle.as_secs()));
                    let error = turns.error(&e);
                    let _ = self.send(socket, &error).await;
                    return Ending::Closed { code: POLICY, reason: "idle" };
                }
                message = socket.recv() => {
                    let text = match message {
                        None | Some(Err(_)) => return Ending::ClientGone,
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) => return Ending::ClientGone,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Binary(_))) => {
                            deadline = Instant::now() + self.idle;
                            let e = Problem::invalid("invalid_json", None, "send events as JSON text messages, not binary");
                            let error = turns.error(&e);
                            if !self.send(socket, &error).await {
                                return Ending::ClientGone;
                            }
                            continue;
                        }
                    };
                    deadline = Instant::now() + self.idle;
                    let out = match parse_client_event(&text) {
                        Err(e) => vec![turns.error(&e)],
                        Ok(event) => match self.on_client(event, &mut session, &mut turns, live).await {
                            Ok(out) => out,
                            Err(ending) => return ending,
                        },
                    };
                    for event in &out {
                        if !self.send(socket, event).await {
                            return Ending::ClientGone;
                        }
                    }
                }
                event = stream.events.recv() => {
                    let Some(event) = event else {
                        let e = Problem::server("stream_failed", "the transcription stream stopped");
                        let error = turns.error(&e);
                        let _ = self.send(socket, &error).await;
                        return Ending::Closed { code: INTERNAL, reason: "stream stopped" };
                    };
                    for event in turns.on_stream(&event.event) {
                        if !self.send(socket, &event).await {
                            return Ending::ClientGone;
                        }
                    }
                }
            }
        }
        // Server shutdown: the turn in progress is committed as a client's commit would, its
        // transcript is sent, then the socket closes with 1001 (going away).
        if let Some(old) = live.take() {
            for event in self.retire(old, &mut turns).await {
                if !self.send(socket, &event).await {
                    return Ending::ClientGone;
                }
            }
        }
        Ending::Closed {
            code: GOING_AWAY,
            reason: "server shutting down",
        }
    }

    /// Handle one client event; the server events to send, or how the connection ends.
    async fn on_client(
        &mut self,
        event: ClientEvent,
        session: &mut Session,
        turns: &mut Turns,
        live: &mut Option<Live>,
    ) -> Result<Vec<Value>, Ending> {
        let event_id = event.event_id.as_deref();
        let stopped = || Ending::Closed {
            code: INTERNAL,
            reason: "stream stopped",
        };
        match event.kind {
            ClientKind::Append(samples) => {
                let Some(stream) = live.as_ref() else {
                    return Err(stopped());
                };
                if samples.is_empty() {
                    return Ok(Vec::new());
                }
                // A full input queue drops the chunk; the stream counts it and says so in a
                // warning, which arrives as an `error` event.
                stream.sender.try_push(&samples, INPUT_RATE);
                self.appended += samples.len() as u64;
                turns.on_append(samples.len());
                Ok(Vec::new())
            }
            ClientKind::Commit => {
                let Some(stream) = live.as_ref() else {
                    return Err(stopped());
                };
                let out = match turns.commit() {
                    Ok(out) => out,
                    Err(e) => return Ok(vec![turns.error(&e.for_event(event_id))]),
                };
                // `flush` waits only while the input queue is full (rarely).
                if tokio::task::block_in_place(|| stream.session.flush()).is_err() {
                    return Err(stopped());
                }
                Ok(out)
            }
            ClientKind::Clear => {
                let Some(stream) = live.as_ref() else {
                    return Err(stopped());
                };
                let out = turns.clear();
                if tokio::task::block_in_place(|| stream.session.discard()).is_err() {
                    return Err(stopped());
                }
                Ok(out)
            }
            ClientKind::SessionUpdate { patch, beta } => {
                let next = session.patched(patch);
                let config = match next.stream_config() {
                    Ok(config) => config,
                    Err(e) => return Ok(vec![turns.error(&e.for_event(event_id))]),
                };
                let mut out = Vec::new();
                if live.as_ref().is_none_or(|l| l.config != config) {
                    // Start the new stream first: a setting it refuses leaves the old one.
                    let fresh = match self.start(config).await {
                        Ok(fresh) => fresh,
                        Err(e) => return Ok(vec![turns.error(&e.for_event(event_id))]),
                    };
                    if let Some(old) = live.replace(fresh) {
                        out = self.retire(old, turns).await;
                    }
                }
                turns.set_manual(next.turn.is_none());
                *session = next;
                let updated = if beta {
                    turns.event("transcription_session.updated", json!({"session": session.beta_json()}))
                } else {
                    turns.event("session.updated", json!({"session": session.ga_json()}))
                };
                out.push(updated);
                Ok(out)
            }
        }
    }

    /// End a stream whose settings changed: the turn in progress is committed, the stream is
    /// finished and its last events are turned into Realtime events.
    async fn retire(&self, old: Live, turns: &mut Turns) -> Vec<Value> {
        let Live {
            mut session,
            mut events,
            ..
        } = old;
        let mut out = turns.end_turn();
        tokio::task::block_in_place(|| session.finish());
        while let Some(event) = events.recv().await {
            out.extend(turns.on_stream(&event.event));
        }
        out.extend(turns.on_stream_end(self.appended_ms()));
        tokio::task::spawn_blocking(move || drop(session));
        out
    }

    /// Send one event; `false` when the client is gone or has not read for `idle`.
    async fn send(&self, socket: &mut WebSocket, event: &Value) -> bool {
        matches!(
            timeout(self.idle, socket.send(Message::Text(event.to_string().into()))).await,
            Ok(Ok(()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClientKind {
        parse_client_event(text).unwrap().kind
    }

    fn b64(samples: &[i16]) -> String {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn ga_session_update_parses_and_applies() {
        let text = r#"{"type":"session.update","event_id":"c1","session":{"type":"transcription","audio":{"input":{
            "format":{"type":"audio/pcm","rate":24000},
            "transcription":{"model":"whisper-1","language":"en","prompt":"names"},
            "noise_reduction":null,
            "turn_detection":{"type":"server_vad","threshold":0.6,"prefix_padding_ms":300,"silence_duration_ms":800}}},
            "include":[]}}"#;
        let event = parse_client_event(text).unwrap();
        assert_eq!(event.event_id.as_deref(), Some("c1"));
        let ClientKind::SessionUpdate { patch, beta } = event.kind else {
            panic!("{event:?}")
        };
        assert!(!beta);
        let session = Session::new("sess_1".into(), "tiny.en".into(), &StreamConfig::default()).patched(patch);
        assert_eq!(session.language.as_deref(), Some("en"));
        assert_eq!(
            session.turn,
            Some(ServerVad {
                threshold: 0.6,
                prefix_padding_ms: 300,
                silence_duration_ms: 800
            })
        );
        let config = session.stream_config().unwrap();
        assert_eq!(config.vad.threshold, 0.6);
        assert_eq!(config.vad.speech_pad_ms, 300);
        assert_eq!(config.vad.min_silence_ms, 800);
        assert!(config.turn_events);
        assert_eq!(config.pacing, Pacing::Live);
        let echo = session.ga_json();
        assert_eq!(echo["audio"]["input"]["turn_detection"]["silence_duration_ms"], 800);
        assert_eq!(echo["audio"]["input"]["format"]["rate"], 24000);
        assert_eq!(echo["type"], "transcription");
    }

    #[test]
    fn null_turn_detection_means_manual_and_absent_means_unchanged() {
        let defaults = StreamConfig::default();
        let session = Session::new("s".into(), "m".into(), &defaults);
        assert!(session.turn.is_some(), "server_vad by default");
        let ClientKind::SessionUpdate { patch, .. } = parse(
            r#"{"type":"session.update","session":{"type":"transcription","audio":{"input":{"turn_detection":null}}}}"#,
        ) else {
            panic!()
        };
        let manual = session.patched(patch);
        assert_eq!(manual.turn, None);
        assert_eq!(manual.stream_config().unwrap().vad.min_silence_ms, MAX_MS);
        assert_eq!(manual.ga_json()["audio"]["input"]["turn_detection"], Value::Null);
        let ClientKind::SessionUpdate { patch, .. } =
            parse(r#"{"type":"session.update","session":{"type":"transcription","include":[]}}"#)
        else {
            panic!()
        };
        assert_eq!(
            manual.patched(patch).turn,
            None,
            "an absent turn_detection is unchanged"
        );
        // A partial server_vad takes the other values from the defaults.
        let ClientKind::SessionUpdate { patch, .. } = parse(
            r#"{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"type":"server_vad","silence_duration_ms":900}}}}}"#,
        ) else {
            panic!()
        };
        let vad = manual.patched(patch).turn.unwrap();
        assert_eq!(vad.silence_duration_ms, 900);
        assert_eq!(vad.threshold, defaults.vad.threshold);
    }

    #[test]
    fn beta_session_update_parses() {
        let ClientKind::SessionUpdate { patch, beta } = parse(
            r#"{"type":"transcription_session.update","session":{"input_audio_format":"pcm16",
              "input_audio_transcription":{"model":"gpt-4o-transcribe","language":""},
              "turn_detection":{"type":"server_vad","threshold":0.4},"input_audio_noise_reduction":null}}"#,
        ) else {
            panic!()
        };
        assert!(beta);
        assert_eq!(patch.language, Some(None), "an empty language detects");
        assert_eq!(patch.turn_detection.unwrap().unwrap().threshold, Some(0.4));
        let session = Session::new("s".into(), "m".into(), &StreamConfig::default());
        assert_eq!(session.beta_json()["input_audio_format"], "pcm16");
    }

    #[test]
    fn append_commit_clear_parse() {
        assert_eq!(
            parse(&format!(
                r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
                b64(&[16384, -16384])
            )),
            ClientKind::Append(vec![0.5, -0.5])
        );
        assert_eq!(parse(r#"{"type":"input_audio_buffer.commit"}"#), ClientKind::Commit);
        assert_eq!(
            parse(r#"{"type":"input_audio_buffer.clear","event_id":"x"}"#),
            ClientKind::Clear
        );
    }

    #[test]
    fn bad_events_say_what_is_wrong_and_keep_the_clients_event_id() {
        let cases = [
            ("{", "invalid_json", None),
            ("[1]", "invalid_json", None),
            (r#"{"event_id":"e1"}"#, "missing_required_parameter", Some("type")),
            (
                r#"{"type":"response.create","event_id":"e2"}"#,
                "invalid_value",
                Some("type"),
            ),
            (
                r#"{"type":"input_audio_buffer.append","event_id":"e3"}"#,
                "missing_required_parameter",
                Some("audio"),
            ),
            (
                r#"{"type":"input_audio_buffer.append","audio":"!!!","event_id":"e4"}"#,
                "invalid_value",
                Some("audio"),
            ),
            (
                r#"{"type":"input_audio_buffer.append","audio":"AAEC","event_id":"e5"}"#,
                "invalid_value",
                Some("audio"),
            ),
            (
                r#"{"type":"input_audio_buffer.commit","volume":1}"#,
                "unknown_parameter",
                Some("volume"),
            ),
            (
                r#"{"type":"session.update","session":{"type":"realtime"}}"#,
                "invalid_value",
                Some("session.type"),
            ),
            (
                r#"{"type":"session.update","session":{"audio":{"input":{"format":{"type":"audio/pcmu"}}}}}"#,
                "invalid_value",
                Some("session.audio.input.format.type"),
            ),
            (
                r#"{"type":"session.update","session":{"audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}}"#,
                "invalid_value",
                Some("session.audio.input.format.rate"),
            ),
            (
                r#"{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"type":"semantic_vad"}}}}}"#,
                "invalid_value",
                Some("session.audio.input.turn_detection.type"),
            ),
            (
                r#"{"type":"session.update","session":{"audio":{"input":{"turn_detection":{"threshold":0}}}}}"#,
                "invalid_value",
                Some("session.audio.input.turn_detection.threshold"),
            ),
            (
                r#"{"type":"session.update","session":{"audio":{"input":{"volume":3}}}}"#,
                "unknown_parameter",
                Some("session"),
            ),
            (
                r#"{"type":"transcription_session.update","session":{"input_audio_format":"g711_ulaw"}}"#,
                "invalid_value",
                Some("session.input_audio_format"),
            ),
            (
                r#"{"type":"session.update"}"#,
                "missing_required_parameter",
                Some("session"),
            ),
        ];
        for (text, code, param) in cases {
            let e = parse_client_event(text).unwrap_err();
            assert_eq!((e.code, e.param.as_deref()), (code, param), "{text}: {e:?}");
            assert_eq!(e.kind, "invalid_request_error");
            if let Some(id) = text.split(r#""event_id":""#).nth(1) {
                assert_eq!(e.event_id.as_deref(), id.split('"').next(), "{text}");
            }
        }
    }

    #[test]
    fn error_events_have_openais_shape() {
        let mut turns = Turns::new(7, false);
        let e = parse_client_event(r#"{"type":"bogus","event_id":"mine"}"#).unwrap_err();
        let event = turns.error(&e);
        assert_eq!(event["type"], "error");
        assert_eq!(event["event_id"], "event_7_1");
        assert_eq!(event["error"]["type"], "invalid_request_error");
        assert_eq!(event["error"]["code"], "invalid_value");
        assert_eq!(event["error"]["param"], "type");
        assert_eq!(event["error"]["event_id"], "mine");
        assert!(event["error"]["message"].as_str().unwrap().contains("bogus"));
    }

    fn started(utterance: u64, start: f64) -> StreamEvent {
        StreamEvent::SpeechStarted { utterance, start }
    }

    fn partial(utterance: u64, committed: &str) -> StreamEvent {
        StreamEvent::Partial {
            utterance,
            committed: committed.into(),
            tentative: "…".into(),
            start: 0.0,
            end: 0.0,
        }
    }

    fn stopped(utterance: u64, end: f64) -> StreamEvent {
        StreamEvent::SpeechStopped { utterance, end }
    }

    fn last(utterance: u64, text: &str, start: f64, end: f64) -> StreamEvent {
        StreamEvent::Final {
            utterance,
            text: text.into(),
            start,
            end,
            segments: Vec::new(),
            words: None,
            compute_ms: 0.0,
            reason: crate::stream::EndReason::Silence,
        }
    }

    /// Feed `events`, collecting `(type, item_id, the rest)` of what comes out.
    fn run(turns: &mut Turns, events: &[StreamEvent]) -> Vec<Value> {
        events.iter().flat_map(|e| turns.on_stream(e)).collect()
    }

    fn kinds(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let kind = e["type"].as_str().unwrap().rsplit('.').next().unwrap().to_owned();
                match e.get("item_id").and_then(Value::as_str) {
                    Some(item) => format!("{kind} {item}"),
                    None => kind,
                }
            })
            .collect()
    }

    fn deltas(events: &[Value], item: &str) -> String {
        events
            .iter()
            .filter(|e| e["type"] == "conversation.item.input_audio_transcription.delta" && e["item_id"] == item)
            .map(|e| e["delta"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn server_vad_turns_become_items_with_append_only_deltas() {
        let mut turns = Turns::new(1, false);
        turns.on_append(24_000 * 5);
        let out = run(
            &mut turns,
            &[
                started(0, 0.25),
                partial(0, "And"),
                partial(0, "And so my"),
                stopped(0, 2.3),
                last(0, "And so my fellow Americans.", 0.25, 2.3),
                started(1, 3.5),
                partial(1, "Ask not"),
                stopped(1, 5.0),
                last(1, "Ask not.", 3.5, 5.0),
            ],
        );
        assert_eq!(
            kinds(&out),
            [
                "speech_started item_1_1",
                "delta item_1_1",
                "delta item_1_1",
                "speech_stopped item_1_1",
                "committed item_1_1",
                "delta item_1_1",
                "completed item_1_1",
                "speech_started item_1_2",
                "delta item_1_2",
                "speech_stopped item_1_2",
                "committed item_1_2",
                "delta item_1_2",
                "completed item_1_2",
            ]
        );
        assert_eq!(deltas(&out, "item_1_1"), "And so my fellow Americans.");
        assert_eq!(out[0]["audio_start_ms"], 250);
        assert_eq!(out[3]["audio_end_ms"], 2300);
        assert_eq!(out[4]["previous_item_id"], Value::Null);
        assert_eq!(out[10]["previous_item_id"], "item_1_1");
        assert_eq!(out[6]["transcript"], "And so my fellow Americans.");
        assert_eq!(out[6]["usage"]["seconds"], 2.05);
        let ids: Vec<&str> = out.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "every event has its own event_id");
        // An utterance that heard nothing still completes its item, empty.
        let out = run(&mut turns, &[started(2, 6.0), stopped(2, 6.5), last(2, "", 6.0, 6.5)]);
        assert_eq!(out.last().unwrap()["transcript"], "");
    }

    #[test]
    fn revised_text_is_never_sent_twice() {
        let mut turns = Turns::new(1, false);
        let out = run(
            &mut turns,
            &[
                started(0, 0.0),
                partial(0, "Hello there"),
                partial(0, "Hello"),
                stopped(0, 1.0),
                last(0, "Hello world.", 0.0, 1.0),
            ],
        );
        let said = deltas(&out, "item_1_1");
        assert_eq!(said, "Hello there");
        assert_eq!(out.last().unwrap()["transcript"], "Hello world.");
    }

    #[test]
    fn manual_commit_makes_one_item_of_every_utterance_before_it() {
        let mut turns = Turns::new(2, true);
        assert_eq!(turns.commit().unwrap_err().code, "input_audio_buffer_commit_empty");
        turns.on_append(24_000 * 11);
        // Before the commit the item has no name for the client: nothing is sent.
        let out = run(&mut turns, &[started(0, 0.3), partial(0, "And so")]);
        assert!(out.is_empty(), "{out:?}");
        let out = turns.commit().unwrap();
        assert_eq!(kinds(&out), ["committed item_2_1", "delta item_2_1"]);
        assert_eq!(out[1]["delta"], "And so");
        // The flush ends the utterances (a cut one is two), then says it is done.
        let out = run(
            &mut turns,
            &[
                stopped(0, 8.0),
                last(0, "And so my fellow Americans, ask not.", 0.3, 8.0),
                started(1, 8.0),
                last(1, "Ask what you can do.", 8.0, 11.0),
                StreamEvent::Flushed { end: 11.0 },
            ],
        );
        assert_eq!(kinds(&out), ["delta item_2_1", "delta item_2_1", "completed item_2_1"]);
        let completed = out.last().unwrap();
        assert_eq!(
            completed["transcript"],
            "And so my fellow Americans, ask not. Ask what you can do."
        );
        assert_eq!(completed["usage"]["seconds"], 11.0);
        assert_eq!(
            format!("And so{}", deltas(&out, "item_2_1")),
            completed["transcript"].as_str().unwrap()
        );
        // The next commit is a new item after it.
        turns.on_append(2_400);
        let out = turns.commit().unwrap();
        assert_eq!(out[0]["previous_item_id"], "item_2_1");
        let out = run(&mut turns, &[StreamEvent::Flushed { end: 11.1 }]);
        assert_eq!(kinds(&out), ["completed item_2_2"]);
        assert_eq!(out[0]["transcript"], "");
    }

    #[test]
    fn clear_drops_the_uncommitted_item() {
        let mut turns = Turns::new(3, true);
        turns.on_append(24_000);
        let out = run(&mut turns, &[started(0, 0.1), partial(0, "Drop me")]);
        assert!(out.is_empty());
        let out = turns.clear();
        assert_eq!(kinds(&out), ["cleared"]);
        assert_eq!(turns.commit().unwrap_err().code, "input_audio_buffer_commit_empty");
        // What the stream still says about the dropped turn goes nowhere.
        let out = run(
            &mut turns,
            &[partial(0, "Drop me now"), StreamEvent::Flushed { end: 1.0 }],
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_commit_during_server_vad_speech_ends_that_item() {
        let mut turns = Turns::new(4, false);
        turns.on_append(24_000);
        let out = run(&mut turns, &[started(0, 0.1), partial(0, "Hello")]);
        assert_eq!(kinds(&out), ["speech_started item_4_1", "delta item_4_1"]);
        let out = turns.commit().unwrap();
        assert_eq!(kinds(&out), ["committed item_4_1"]);
        // The flush ends the utterance: no speech_stopped for a committed item.
        let out = run(
            &mut turns,
            &[
                stopped(0, 0.9),
                last(0, "Hello world.", 0.1, 0.9),
                StreamEvent::Flushed { end: 1.0 },
            ],
        );
        assert_eq!(kinds(&out), ["delta item_4_1", "completed item_4_1"]);
        assert_eq!(out[0]["delta"], " world.");
    }

    #[test]
    fn a_stream_ending_completes_committed_items_only() {
        let mut turns = Turns::new(5, false);
        turns.on_append(48_000);
        let mut out = run(&mut turns, &[started(0, 0.0), partial(0, "One"), stopped(0, 1.0)]);
        out.extend(run(&mut turns, &[started(1, 1.5), partial(1, "Two")]));
        let end = turns.on_stream_end(2_000.0);
        assert_eq!(kinds(&end), ["completed item_5_1"]);
        assert_eq!(end[0]["transcript"], "One");
        // The next stream's clock follows the audio appended before it.
        let out = run(&mut turns, &[started(0, 0.5)]);
        assert_eq!(out[0]["audio_start_ms"], 2500);
        assert_eq!(out[0]["item_id"], "item_5_3");
    }
}
