//! Wyoming, Home Assistant's voice protocol, on a TCP port of its own (`steno serve --wyoming
//! ADDR`): an ASR service with live transcript chunks.
//!
//! ```text
//! frame:  {"type":…, "data"?:{…}, "data_length"?:N, "payload_length"?:M, "version"?:…}\n
//!         N bytes of JSON (merged over `data`), then M bytes of payload (PCM)
//! client: describe                                  server: info (one ASR program, the model)
//! client: transcribe {language?}
//! client: audio-start {rate, width, channels}       server: transcript-start
//! client: audio-chunk {rate, width, channels} + PCM …
//!                                                   server: transcript-chunk {text} …  (appended)
//! client: audio-stop                                server: transcript {text}, transcript-stop,
//!                                                           then closes the connection
//! ```
//!
//! Data in: PCM of any rate, width (1: unsigned 8-bit, 2/3/4: signed little-endian) and channel
//! count, per chunk; it is mixed to mono f32 and pushed into a [`StreamSession`] of its own (the
//! session resamples). Data out: each `transcript-chunk` is the new suffix of the text no later
//! audio can change (the finals so far and the current utterance's committed words), so the
//! chunks join to the final `transcript`; they are sent while the audio still arrives.
//!
//! One request per connection, as Home Assistant makes them: after `transcript-stop` the server
//! closes. `describe` and `ping` may come first. A malformed frame or event, or one out of order,
//! is answered with `error {text, code}` and that connection alone is closed; unknown event types
//! are dropped (the protocol says so, e.g. `select-program`). Streams count against
//! `max_streams` like WebSockets; a client silent for `idle_timeout_s` is closed. On shutdown a
//! request in progress is ended as by `audio-stop` (its transcript is sent), then the server
//! stops accepting.
//!
//! The framing ([`Decoder`], [`Frame::encode`]), the event parser ([`parse_request`]), the PCM
//! conversion ([`pcm_to_mono`]) and the chunk text ([`Deltas`]) are pure functions tested on
//! bytes; the connection task only moves them between the socket and the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep_until, timeout};

use super::{AppState, Slot};
use crate::StreamSession;
use crate::audio::{MAX_SOURCE_RATE, MIN_SOURCE_RATE};
use crate::stream::{AudioSender, Pacing, StreamEvent, TimedEvent};

/// Longest header line a client may send (the `wyoming` package's reader stops at 64 KiB too).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest data blob (`data_length`).
pub const MAX_DATA_BYTES: usize = 1 << 20;
/// Largest payload (`payload_length`): a second of 48 kHz 8-channel 32-bit audio is 1.5 MB.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// Most channels an audio chunk may have.
pub const MAX_CHANNELS: u32 = 32;
/// The `version` field of the frames steno sends: the `wyoming` release it is tested against.
pub const PROTOCOL_VERSION: &str = "1.10.2";

/// A client mistake, sent as `error {text, code}` before the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct BadEvent {
    /// Machine-readable: `bad_frame`, `too_large`, `bad_event`, `bad_audio`, `out_of_order`,
    /// `bad_request`, `busy`, `model_loading`, `shutting_down`, `idle`, `internal`.
    pub code: &'static str,
    pub text: String,
}

impl BadEvent {
    pub fn new(code: &'static str, text: impl Into<String>) -> BadEvent {
        BadEvent {
            code,
            text: text.into(),
        }
    }

    /// The `error` event that says it.
    pub fn frame(&self) -> Frame {
        Frame::new("error", json!({"text": self.text, "code": self.code}))
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// One Wyoming event: its type, its data (the header's `data` with the data blob merged over
/// it, key by key) and its payload (empty when there is none).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame without payload; `data` should be a JSON object (anything else sends none).
    pub fn new(kind: &str, data: Value) -> Frame {
        let data = match data {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Frame {
            kind: kind.to_owned(),
            data,
            payload: Vec::new(),
        }
    }

    /// The bytes on the wire, laid out as the `wyoming` package writes them: a header line with
    /// `type`, `version`, `data_length` and `payload_length`, then the data as a JSON blob, then
    /// the payload.
    pub fn encode(&self) -> Vec<u8> {
        let data = (!self.data.is_empty()).then(|| Value::Object(self.data.clone()).to_string());
        let mut header = Map::new();
        header.insert("type".into(), Value::String(self.kind.clone()));
        header.insert("version".into(), Value::String(PROTOCOL_VERSION.into()));
        if let Some(data) = &data {
            header.insert("data_length".into(), Value::from(data.len()));
        }
        if !self.payload.is_empty() {
            header.insert("payload_length".into(), Value::from(self.payload.len()));
        }
        let mut bytes = Value::Object(header).to_string().into_bytes();
        bytes.push(b'\n');
        if let Some(data) = data {
            bytes.extend_from_slice(data.as_bytes());
        }
        bytes.extend_from_slice(&self.payload);
        bytes
    }
}

/// A parsed header line, waiting for its data blob and payload.
#[derive(Debug)]
struct Header {
    /// Bytes of the line, newline included.
    line: usize,
    kind: String,
    data: Map<String, Value>,
    data_length: usize,
    payload_length: usize,
}

/// Splits a byte stream into [`Frame`]s; sizes are bounded ([`MAX_HEADER_BYTES`],
/// [`MAX_DATA_BYTES`], [`MAX_PAYLOAD_BYTES`]) and checked as soon as the header is read.
#[derive(Debug, Default)]
pub struct Decoder {
    header: Option<Header>,
}

impl Decoder {
    /// The next whole frame at the front of `buf`, which is removed from it; `None` until more
    /// bytes arrive. After an error the stream cannot be resynchronised: close it.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, BadEvent> {
        if self.header.is_none() {
            let scan = buf.get(..buf.len().min(MAX_HEADER_BYTES)).unwrap_or_default();
            let Some(end) = scan.iter().position(|&b| b == b'\n') else {
                if buf.len() >= MAX_HEADER_BYTES {
                    return Err(BadEvent::new(
                        "too_large",
                        format!("header line longer than {MAX_HEADER_BYTES} bytes"),
                    ));
                }
                return Ok(None);
            };
            let line = scan.get(..end).unwrap_or_default();
            self.header = Some(parse_header(line, end + 1)?);
        }
        let Some(header) = &self.header else { return Ok(None) };
        let total = header.line + header.data_length + header.payload_length;
        if buf.len() < total {
            return Ok(None);
        }
        let Some(header) = self.header.take() else {
            return Ok(None);
        };
        let mut data = header.data;
        if header.data_length > 0 {
            let blob = buf
                .get(header.line..header.line + header.data_length)
                .unwrap_or_default();
            match serde_json::from_slice::<Value>(blob) {
                Ok(Value::Object(extra)) => data.extend(extra),
                Ok(_) => return Err(BadEvent::new("bad_frame", "the data blob is not a JSON object")),
                Err(e) => return Err(BadEvent::new("bad_frame", format!("the data blob is not JSON: {e}"))),
            }
        }
        let payload = buf
            .get(header.line + header.data_length..total)
            .unwrap_or_default()
            .to_vec();
        buf.drain(..total);
        Ok(Some(Frame {
            kind: header.kind,
            data,
            payload,
        }))
    }
}

fn parse_header(line: &[u8], length: usize) -> Result<Header, BadEvent> {
    let bad = |text: String| BadEvent::new("bad_frame", text);
    let value: Value = serde_json::from_slice(line).map_err(|e| bad(format!("header line is not JSON: {e}")))?;
    let Value::Object(mut header) = value else {
        return Err(bad("header line is not a JSON object".into()));
    };
    let kind = match header.remove("type") {
        Some(Value::String(kind)) if !kind.is_empty() => kind,
        Some(_) => return Err(bad("`type` must be a non-empty string".into())),
        None => return Err(bad("header has no `type`".into())),
    };
    let data = match header.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(bad("`data` must be a JSON object".into())),
    };
    let length_of = |field: &str, max: usize| -> Result<usize, BadEvent> {
        match header.get(field) {
            None | Some(Value::Null) => Ok(0),
            Some(value) => match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n <= max => Ok(n),
                Some(n) => Err(BadEvent::new(
                    "too_large",
                    format!("`{field}` {n} is over the limit of {max} bytes"),
                )),
                None => Err(bad(format!("`{field}` must be a non-negative integer"))),
            },
        }
    };
    Ok(Header {
        line: length,
        data_length: length_of("data_length", MAX_DATA_BYTES)?,
        payload_length: length_of("payload_length", MAX_PAYLOAD_BYTES)?,
        kind,
        data,
    })
}

// ---------------------------------------------------------------------------------------------
// Events

/// How a chunk's PCM is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Hz.
    pub rate: u32,
    /// Bytes per sample: 1 (unsigned 8-bit, as in WAV), 2, 3 or 4 (signed little-endian).
    pub width: u32,
    /// Interleaved channels, mixed to mono.
    pub channels: u32,
}

/// What a client may send (to an ASR service).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Describe,
    /// Start of a request: the language (normalised: `en-US` → `en`) and model name, if given.
    Transcribe {
        language: Option<String>,
        name: Option<String>,
    },
    AudioStart(AudioFormat),
    AudioChunk(AudioFormat, Vec<u8>),
    AudioStop,
    Ping(Option<String>),
    /// Any other type; dropped.
    Other(String),
}

/// Read a frame as a client event; a missing or malformed field is an error that names it.
pub fn parse_request(frame: Frame) -> Result<Request, BadEvent> {
    let Frame { kind, data, payload } = frame;
    let request = match kind.as_str() {
        "describe" => Request::Describe,
        "transcribe" => Request::Transcribe {
            language: optional_string(&data, &kind, "language")?.map(|l| normalise_language(&l)),
            name: optional_string(&data, &kind, "name")?,
        },
        "audio-start" => Request::AudioStart(audio_format(&data, &kind)?),
        "audio-chunk" => {
            let format = audio_format(&data, &kind)?;
            let frame_bytes = (format.width * format.channels) as usize;
            if !payload.len().is_multiple_of(frame_bytes) {
                return Err(BadEvent::new(
                    "bad_audio",
                    format!(
                        "audio-chunk: {} bytes is not a whole number of {}-channel {}-byte frames",
                        payload.len(),
                        format.channels,
                        format.width
                    ),
                ));
            }
            Request::AudioChunk(format, payload)
        }
        "audio-stop" => Request::AudioStop,
        "ping" => Request::Ping(optional_string(&data, &kind, "text")?),
        _ => Request::Other(kind),
    };
    Ok(request)
}

fn optional_string(data: &Map<String, Value>, kind: &str, field: &str) -> Result<Option<String>, BadEvent> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(BadEvent::new(
            "bad_event",
            format!("{kind}: `{field}` must be a string"),
        )),
    }
}

fn audio_format(data: &Map<String, Value>, kind: &str) -> Result<AudioFormat, BadEvent> {
    let field = |name: &str, range: std::ops::RangeInclusive<u32>| -> Result<u32, BadEvent> {
        let value = data
            .get(name)
            .ok_or_else(|| BadEvent::new("bad_audio", format!("{kind}: `{name}` is missing")))?;
        value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                BadEvent::new(
                    "bad_audio",
                    format!(
                        "{kind}: `{name}` is {value}, not in {}..={}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    };
    Ok(AudioFormat {
        rate: field("rate", MIN_SOURCE_RATE..=MAX_SOURCE_RATE)?,
        width: field("width", 1..=4)?,
        channels: field("channels", 1..=MAX_CHANNELS)?,
    })
}

/// `en-US`, `EN_us` → `en` (Whisper's codes have no region).
fn normalise_language(language: &str) -> String {
    let base = language.split(['-', '_']).next().unwrap_or_default();
    base.trim().to_ascii_lowercase()
}

/// Interleaved PCM (see [`AudioFormat::width`]) → mono f32 in [-1, 1], the channels averaged.
/// The caller has checked that `bytes` holds whole frames; a partial frame at the end is
/// ignored.
pub fn pcm_to_mono(bytes: &[u8], width: u32, channels: u32) -> Vec<f32> {
    let width = width.clamp(1, 4) as usize;
    let channels = channels.max(1) as usize;
    let sample = |s: &[u8]| -> f32 {
        match *s {
            [x] => (f32::from(x) - 128.0) / 128.0,
            [a, b] => f32::from(i16::from_le_bytes([a, b])) / 32768.0,
            // Sign-extend by placing the 24 bits at the top of an i32.
            [a, b, c] => (i32::from_le_bytes([0, a, b, c]) >> 8) as f32 / 8_388_608.0,
            [a, b, c, d] => (f64::from(i32::from_le_bytes([a, b, c, d])) / 2_147_483_648.0) as f32,
            _ => 0.0,
        }
    };
    bytes
        .chunks_exact(width * channels)
        .map(|frame| frame.chunks_exact(width).map(sample).sum::<f32>() / channels as f32)
        .collect()
}

/// The `transcript-chunk` texts of one request: append-only deltas of the text no later audio
/// changes (the finals so far, then the current utterance's committed words), joined with
/// spaces between utterances.
#[derive(Debug, Default)]
pub struct Deltas {
    /// The finals so far, joined.
    finals: String,
    /// What the chunks sent so far add up to.
    sent: String,
}

impl Deltas {
    /// A partial's committed text: the new suffix to send, if any.
    pub fn partial(&mut self, committed: &str) -> Option<String> {
        // A token boundary inside a UTF-8 character decodes as U+FFFD until the rest arrives.
        let committed = committed.trim().trim_end_matches('\u{FFFD}');
        let stable = join(&self.finals, committed);
        self.advance(stable)
    }

    /// An utterance's final text: the new suffix to send, if any.
    pub fn final_text(&mut self, text: &str) -> Option<String> {
        self.finals = join(&self.finals, text.trim());
        self.advance(self.finals.clone())
    }

    /// The whole transcript so far (the finals).
    pub fn text(&self) -> &str {
        &self.finals
    }

    /// Whether the chunks sent add up to a prefix of the transcript (steno's invariants say
    /// always; a broken one is logged rather than un-sent).
    pub fn consistent(&self) -> bool {
        self.finals.starts_with(&self.sent)
    }

    fn advance(&mut self, stable: String) -> Option<String> {
        let delta = stable.strip_prefix(self.sent.as_str())?;
        if delta.is_empty() {
            return None;
        }
        let delta = delta.to_owned();
        self.sent = stable;
        Some(delta)
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (false, true) => a.to_owned(),
        (false, false) => format!("{a} {b}"),
    }
}

/// The `info` event's data: one ASR program, steno, with the loaded model and its languages.
pub fn info_data(model_name: &str, languages: &[String]) -> Value {
    let whisper = json!({"name": "OpenAI Whisper", "url": "https://github.com/openai/whisper"});
    json!({
        "asr": [{
            "name": "steno",
            "attribution": {"name": "steno", "url": ""},
            "installed": true,
            "description": "steno: streaming Whisper on ONNX Runtime, live transcript chunks",
            "version": env!("CARGO_PKG_VERSION"),
            "models": [{
                "name": model_name,
                "attribution": whisper,
                "installed": true,
                "description": format!("Whisper {model_name}"),
                "version": null,
                "languages": languages,
            }],
            "supports_transcript_streaming": true,
            // Home Assistant's own VAD ends the request with audio-stop.
            "requires_external_vad": true,
        }],
        "tts": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": [],
    })
}

// ---------------------------------------------------------------------------------------------
// Server

/// Accept connections until shutdown begins (the server drains) or `stop` changes (or its
/// sender is gone), then give open requests the shutdown grace period to finish: a request in
/// progress is ended as by `audio-stop`, so its client gets the transcript of what it sent.
pub(super) async fn serve(listener: TcpListener, state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    let drained = state.drained();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            () = &mut drained => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    connections.spawn(Connection::new(state.clone(), peer).run(socket));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "wyoming: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    let grace = Duration::from_secs(state.config.shutdown_grace_s + 1);
    if timeout(grace, drain).await.is_err() {
        connections.shutdown().await;
    }
}

/// A request's live stream.
struct Live {
    session: StreamSession<'static>,
    sender: AudioSender,
    events: tokio::sync::mpsc::Receiver<TimedEvent>,
    deltas: Deltas,
    /// The stream's place under `max_streams` and on its engine, given back on drop.
    slots: (Slot, Slot),
}

/// How a connection ended.
enum Ending {
    /// The request was answered (or the client only described).
    Done,
    ClientGone,
    Rejected(BadEvent),
}

/// One connection's state.
struct Connection {
    state: Arc<AppState>,
    peer: SocketAddr,
    id: u64,
    idle: Duration,
    language: Option<String>,
    live: Option<Live>,
    /// `audio-stop` came: the stream is flushing.
    stopped: bool,
}

impl Connection {
    fn new(state: Arc<AppState>, peer: SocketAddr) -> Connection {
        let idle = Duration::from_secs(state.config.idle_timeout_s);
        let id = state.next_stream.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Connection {
            state,
            peer,
            id,
            idle,
            language: None,
            live: None,
            stopped: false,
        }
    }

    async fn run(mut self, socket: TcpStream) {
        let (mut reader, mut writer) = socket.into_split();
        let ending = self.serve(&mut reader, &mut writer).await;
        let (id, peer) = (self.id, self.peer);
        match &ending {
            Ending::Done => tracing::info!(stream = id, %peer, "wyoming: request answered"),
            Ending::ClientGone => tracing::info!(stream = id, %peer, "wyoming: client went away"),
            Ending::Rejected(e) => {
                tracing::info!(stream = id, %peer, code = e.code, error = %e, "wyoming: rejected");
                let _ = timeout(self.idle, writer.write_all(&e.frame().encode())).await;
            }
        }
        // Joining the stream's thread may wait for its last window job: not on an async worker.
        // The slots go after it, then the heap is trimmed if the server is idle.
        if let Some(live) = self.live.take() {
            let state = self.state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let Live { session, slots, .. } = live;
                drop(session);
                drop(slots);
                state.trim_if_idle();
            })
            .await;
        }
        if !matches!(ending, Ending::ClientGone) {
            linger_close(reader, writer).await;
        }
    }

    async fn serve(&mut self, reader: &mut OwnedReadHalf, writer: &mut OwnedWriteHalf) -> Ending {
        let mut decoder = Decoder::default();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut deadline = Instant::now() + self.idle;
        let drained = self.state.drained();
        tokio::pin!(drained);
        loop {
            let reading = !self.stopped;
            tokio::select! {
                // Server shutdown ends a request as its audio-stop would (the transcript of the
                // audio so far follows); a connection with no request is closed.
                () = &mut drained, if reading => {
                    if self.live.is_none() {
                        return Ending::Rejected(shutting_down());
                    }
                    if let Some(ending) = self.on_request(Request::AudioStop, writer).await {
                        return ending;
                    }
                }
                () = sleep_until(deadline), if reading => {
                    let text = format!("no event for {} s", self.idle.as_secs());
                    return Ending::Rejected(BadEvent::new("idle", text));
                }
                read = reader.read(&mut chunk), if reading => {
                    let n = match read {
                        Ok(0) | Err(_) => return Ending::ClientGone,
                        Ok(n) => n,
                    };
                    deadline = Instant::now() + self.idle;
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    loop {
                        let frame = match decoder.next_frame(&mut buf) {
                            Ok(Some(frame)) => frame,
                            Ok(None) => break,
                            Err(e) => return Ending::Rejected(e),
                        };
                        let request = match parse_request(frame) {
                            Ok(request) => request,
                            Err(e) => return Ending::Rejected(e),
                        };
                        if let Some(ending) = self.on_request(request, writer).await {
                            return ending;
                        }
                        if self.stopped {
                            // Anything after audio-stop is left unread (drained at close).
                            break;
                        }
                    }
                }
                event = next_event(&mut self.live) => {
                    if let Some(ending) = self.on_stream_event(event, writer).await {
                        return ending;
                    }
                }
            }
        }
    }

    /// Act on one client event; `Some` ends the connection.
    async fn on_request(&mut self, request: Request, writer: &mut OwnedWriteHalf) -> Option<Ending> {
        match request {
            Request::Describe => {
                let frame = match self.info() {
                    Ok(frame) => frame,
                    Err(e) => return Some(Ending::Rejected(e)),
                };
                return self.send(writer, &frame).await;
            }
            Request::Ping(text) => return self.send(writer, &Frame::new("pong", json!({"text": text}))).await,
            Request::Transcribe { language, name } => {
                if self.live.is_some() {
                    return Some(Ending::Rejected(BadEvent::new(
                        "out_of_order",
                        "transcribe after audio-start: one request per connection",
                    )));
                }
                tracing::debug!(stream = self.id, ?language, ?name, "wyoming: transcribe");
                self.language = language.filter(|l| !l.is_empty());
            }
            Request::AudioStart(format) => {
                if self.live.is_some() {
                    return Some(Ending::Rejected(BadEvent::new("out_of_order", "audio-start twice")));
                }
                tracing::debug!(stream = self.id, ?format, "wyoming: audio-start");
                return self.start(writer).await;
            }
            Request::AudioChunk(format, pcm) => {
                if self.live.is_none() {
                    // Tolerated (wyoming-faster-whisper does too): the chunk carries its format.
                    if let Some(ending) = self.start(writer).await {
                        return Some(ending);
                    }
                }
                let samples = pcm_to_mono(&pcm, format.width, format.channels);
                if let Some(live) = &self.live
                    && !samples.is_empty()
                {
                    // A full input queue drops the chunk; the stream counts it (stats).
                    live.sender.try_push(&samples, format.rate);
                }
            }
            Request::AudioStop => {
                self.stopped = true;
                match &mut self.live {
                    // `finish` waits for room in the input queue (rarely full): tell tokio this
                    // worker blocks for that moment.
                    Some(live) => tokio::task::block_in_place(|| live.session.finish()),
                    // No audio: an empty transcript, as wyoming-faster-whisper answers.
                    None => {
                        for frame in [
                            Frame::new("transcript-start", self.language_data()),
                            Frame::new("transcript", json!({"text": ""})),
                            Frame::new("transcript-stop", json!({})),
                        ] {
                            if let Some(ending) = self.send(writer, &frame).await {
                                return Some(ending);
                            }
                        }
                        return Some(Ending::Done);
                    }
                }
            }
            Request::Other(kind) => tracing::debug!(stream = self.id, kind, "wyoming: event dropped"),
        }
        None
    }

    /// An event of the stream (`None`: it has ended); `Some` ends the connection.
    async fn on_stream_event(&mut self, event: Option<TimedEvent>, writer: &mut OwnedWriteHalf) -> Option<Ending> {
        let Some(live) = &mut self.live else { return None };
        let Some(event) = event else {
            if !self.stopped {
                return Some(Ending::Rejected(BadEvent::new("internal", "the stream stopped")));
            }
            // Flushed: the transcript, then the end of the stream.
            let text = live.deltas.text().to_owned();
            if !live.deltas.consistent() {
                tracing::warn!(
                    stream = self.id,
                    "wyoming: transcript chunks do not prefix the transcript"
                );
            }
            let mut data = json!({"text": text});
            if let (Some(language), Some(map)) = (&self.language, data.as_object_mut()) {
                map.insert("language".into(), Value::String(language.clone()));
            }
            for frame in [Frame::new("transcript", data), Frame::new("transcript-stop", json!({}))] {
                if let Some(ending) = self.send(writer, &frame).await {
                    return Some(ending);
                }
            }
            return Some(Ending::Done);
        };
        let delta = match &event.event {
            StreamEvent::Partial { committed, .. } => live.deltas.partial(committed),
            StreamEvent::Final { text, .. } => live.deltas.final_text(text),
            StreamEvent::Stats(stats) => {
                if stats.dropped_samples > 0 {
                    tracing::warn!(
                        stream = self.id,
                        dropped = stats.dropped_samples,
                        "wyoming: audio dropped"
                    );
                }
                None
            }
            StreamEvent::Warning { message } => {
                tracing::warn!(stream = self.id, message, "wyoming: stream warning");
                None
            }
            StreamEvent::Error { message } => {
                tracing::warn!(stream = self.id, message, "wyoming: stream error");
                None
            }
            // Turn events are not asked for.
            _ => None,
        };
        match delta {
            Some(text) => {
                self.send(writer, &Frame::new("transcript-chunk", json!({"text": text})))
                    .await
            }
            None => None,
        }
    }

    /// Start the request's stream and say `transcript-start`.
    async fn start(&mut self, writer: &mut OwnedWriteHalf) -> Option<Ending> {
        if self.state.is_draining() {
            return Some(Ending::Rejected(shutting_down()));
        }
        let Some(slot) = self.state.try_stream_slot() else {
            let text = format!(
                "server busy: all {} streams are in use; try again later",
                self.state.config.max_streams
            );
            return Some(Ending::Rejected(BadEvent::new("busy", text)));
        };
        let Ok((engine, worker_slot)) = self.state.engine() else {
            return Some(Ending::Rejected(model_loading()));
        };
        let mut config = crate::StreamConfig {
            pacing: Pacing::Live,
            ..self.state.config.stream.clone()
        };
        if let Some(language) = &self.language {
            config.language = Some(language.clone());
        }
        let started = tokio::task::spawn_blocking(move || StreamSession::start_shared(engine, config)).await;
        let session = match started {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => return Some(Ending::Rejected(BadEvent::new("bad_request", e.to_string()))),
            Err(e) => return Some(Ending::Rejected(BadEvent::new("internal", e.to_string()))),
        };
        let sender = match session.sender() {
            Ok(sender) => sender,
            Err(e) => return Some(Ending::Rejected(BadEvent::new("internal", e.to_string()))),
        };
        // The session's events come on a blocking channel: a blocking task forwards them.
        let events = session.events().clone();
        let (events_tx, events_rx) = tokio::sync::mpsc::channel::<TimedEvent>(256);
        tokio::task::spawn_blocking(move || {
            for event in events.iter() {
                if events_tx.blocking_send(event).is_err() {
                    break;
                }
            }
        });
        self.live = Some(Live {
            session,
            sender,
            events: events_rx,
            deltas: Deltas::default(),
            slots: (slot, worker_slot),
        });
        tracing::info!(stream = self.id, peer = %self.peer, language = ?self.language, "wyoming: stream started");
        self.send(writer, &Frame::new("transcript-start", self.language_data()))
            .await
    }

    fn language_data(&self) -> Value {
        match &self.language {
            Some(language) => json!({"language": language}),
            None => json!({}),
        }
    }

    /// The `info` event, once the model is loaded.
    fn info(&self) -> Result<Frame, BadEvent> {
        let engine = self.state.any_engine().map_err(|_| model_loading())?;
        let handle = engine.handle().map_err(|e| BadEvent::new("internal", e.to_string()))?;
        let languages: Vec<String> = if engine.spec().multilingual {
            handle.tokens.languages.iter().map(|l| l.code.clone()).collect()
        } else {
            vec!["en".to_owned()]
        };
        Ok(Frame::new("info", info_data(&self.state.config.model_name, &languages)))
    }

    /// Write a frame; `Some(ClientGone)` when the client is gone or has not read for `idle`.
    async fn send(&self, writer: &mut OwnedWriteHalf, frame: &Frame) -> Option<Ending> {
        match timeout(self.idle, writer.write_all(&frame.encode())).await {
            Ok(Ok(())) => None,
            _ => Some(Ending::ClientGone),
        }
    }
}

fn shutting_down() -> BadEvent {
    BadEvent::new("shutting_down", "the server is shutting down")
}

fn model_loading() -> BadEvent {
    BadEvent::new("model_loading", "the model is still loading; retry in a moment")
}

/// The next event of the live stream, or never when there is none.
async fn next_event(live: &mut Option<Live>) -> Option<TimedEvent> {
    match live {
        Some(live) => live.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Close after the last frame without losing it: send FIN, then read (and drop) what the
/// client still sends for a moment, so unread input does not make the kernel answer with a
/// reset that could discard the frames in flight.
async fn linger_close(mut reader: OwnedReadHalf, mut writer: OwnedWriteHalf) {
    let _ = timeout(Duration::from_secs(2), writer.shutdown()).await;
    let mut sink = vec![0u8; 16 * 1024];
    let drain = async {
        let mut total = 0usize;
        while total < 16 << 20 {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(Duration::from_secs(2), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(header: &str, data: &str, payload: &[u8]) -> Vec<u8> {
        let mut bytes = format!("{header}\n{data}").into_bytes();
        bytes.extend_from_slice(payload);
        bytes
    }

    fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<Frame>, BadEvent> {
        let mut decoder = Decoder::default();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decoder.next_frame(&mut buf)? {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(frames)
    }

    #[test]
    fn frames_as_the_wyoming_package_writes_them_decode_at_any_split() {
        // wyoming 1.10.2's async_write_event: data as a blob after the header, then the payload.
        let data = r#"{"rate": 16000, "width": 2, "channels": 1, "timestamp": null}"#;
        let header = format!(
            r#"{{"type": "audio-chunk", "version": "1.10.2", "data_length": {}, "payload_length": 4}}"#,
            data.len()
        );
        let mut stream = wire(&header, data, &[1, 0, 255, 127]);
        stream.extend(wire(r#"{"type": "describe", "version": "1.10.2"}"#, "", &[]));
        // Data inline in the header, merged under the blob's keys.
        stream.extend(wire(
            r#"{"type":"transcribe","data":{"language":"de","name":"x"},"data_length":17}"#,
            r#"{"language":"en"}"#,
            &[],
        ));
        for step in [1, 2, 3, 7, 64, stream.len()] {
            let frames = decode_all(&stream, step).unwrap();
            assert_eq!(frames.len(), 3, "step {step}");
            assert_eq!(frames[0].kind, "audio-chunk");
            assert_eq!(frames[0].data["rate"], 16000);
            assert_eq!(frames[0].payload, vec![1, 0, 255, 127]);
            assert_eq!(frames[1].kind, "describe");
            assert!(frames[1].data.is_empty() && frames[1].payload.is_empty());
            assert_eq!(frames[2].data["language"], "en");
            assert_eq!(frames[2].data["name"], "x");
        }
    }

    #[test]
    fn encoded_frames_decode_to_themselves() {
        let mut frame = Frame::new("audio-chunk", json!({"rate": 8000, "width": 1, "channels": 2}));
        frame.payload = vec![128; 10];
        let empty = Frame::new("transcript-stop", json!({}));
        let unicode = Frame::new("transcript-chunk", json!({"text": " naïve café ✓"}));
        let mut bytes = frame.encode();
        bytes.extend(empty.encode());
        bytes.extend(unicode.encode());
        let header: Value = serde_json::from_slice(empty.encode().strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(header, json!({"type": "transcript-stop", "version": PROTOCOL_VERSION}));
        assert_eq!(decode_all(&bytes, 5).unwrap(), vec![frame, empty, unicode]);
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let cases: [(&[u8], &str, &str); 9] = [
            (b"not json\n", "bad_frame", "not JSON"),
            (b"[1,2]\n", "bad_frame", "not a JSON object"),
            (b"{\"data\":{}}\n", "bad_frame", "no `type`"),
            (b"{\"type\":3}\n", "bad_frame", "`type`"),
            (b"{\"type\":\"x\",\"data\":[]}\n", "bad_frame", "`data`"),
            (
                b"{\"type\":\"x\",\"payload_length\":-1}\n",
                "bad_frame",
                "payload_length",
            ),
            (
                b"{\"type\":\"x\",\"payload_length\":99999999}\n",
                "too_large",
                "payload_length",
            ),
            (b"{\"type\":\"x\",\"data_length\":2}\n[]", "bad_frame", "data blob"),
            (b"{\"type\":\"x\",\"data_length\":3}\n{{{", "bad_frame", "data blob"),
        ];
        for (bytes, code, needle) in cases {
            let e = decode_all(bytes, bytes.len()).unwrap_err();
            assert_eq!(e.code, code, "{}", String::from_utf8_lossy(bytes));
            assert!(e.text.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_header_line_without_end_is_refused_at_the_limit() {
        let mut decoder = Decoder::default();
        let mut buf = vec![b' '; MAX_HEADER_BYTES - 1];
        assert_eq!(decoder.next_frame(&mut buf), Ok(None));
        buf.push(b' ');
        assert_eq!(decoder.next_frame(&mut buf).unwrap_err().code, "too_large");
        // An oversized payload is refused on its header, before any of it arrives.
        let mut buf = format!(
            "{{\"type\":\"audio-chunk\",\"payload_length\":{}}}\n",
            MAX_PAYLOAD_BYTES + 1
        )
        .into_bytes();
        assert_eq!(Decoder::default().next_frame(&mut buf).unwrap_err().code, "too_large");
    }

    #[test]
    fn requests_parse_and_name_the_bad_field() {
        let frame = |kind: &str, data: Value, payload: &[u8]| Frame {
            payload: payload.to_vec(),
            ..Frame::new(kind, data)
        };
        let format = json!({"rate": 44100, "width": 2, "channels": 2});
        assert_eq!(
            parse_request(frame("audio-chunk", format.clone(), &[0; 8])),
            Ok(Request::AudioChunk(
                AudioFormat {
                    rate: 44100,
                    width: 2,
                    channels: 2
                },
                vec![0; 8]
            ))
        );
        assert_eq!(
            parse_request(frame("transcribe", json!({"language": "en-US"}), &[])),
            Ok(Request::Transcribe {
                language: Some("en".into()),
                name: None
            })
        );
        assert_eq!(
            parse_request(frame("select-program", json!({"name": "x"}), &[])),
            Ok(Request::Other("select-program".into()))
        );
        assert_eq!(
            parse_request(frame("ping", json!({"text": "hi"}), &[])),
            Ok(Request::Ping(Some("hi".into())))
        );
        let bad = [
            (frame("audio-chunk", format, &[0; 6]), "bad_audio", "whole number"),
            (
                frame("audio-start", json!({"rate": 16000, "width": 2}), &[]),
                "bad_audio",
                "`channels`",
            ),
            (
                frame("audio-start", json!({"rate": 16000, "width": 5, "channels": 1}), &[]),
                "bad_audio",
                "`width`",
            ),
            (
                frame("audio-start", json!({"rate": 10, "width": 2, "channels": 1}), &[]),
                "bad_audio",
                "`rate`",
            ),
            (
                frame("audio-start", json!({"rate": "16000", "width": 2, "channels": 1}), &[]),
                "bad_audio",
                "`rate`",
            ),
            (
                frame("audio-start", json!({"rate": 16000, "width": 2, "channels": 0}), &[]),
                "bad_audio",
                "`channels`",
            ),
            (
                frame("transcribe", json!({"language": 5}), &[]),
                "bad_event",
                "`language`",
            ),
        ];
        for (frame, code, needle) in bad {
            let e = parse_request(frame).unwrap_err();
            assert_eq!(e.code, code, "{e}");
            assert!(e.text.contains(needle), "{e}");
        }
    }

    #[test]
    fn pcm_of_every_width_and_channel_count_becomes_mono() {
        assert_eq!(pcm_to_mono(&[128, 0, 255], 1, 1), vec![0.0, -1.0, 127.0 / 128.0]);
        assert_eq!(pcm_to_mono(&[0, 0x80, 0xff, 0x7f], 2, 1), vec![-1.0, 32767.0 / 32768.0]);
        // Stereo s16: (-16384 + 16384) / 2 and (16384 + 16384) / 2.
        let stereo = [0x00, 0xc0, 0x00, 0x40, 0x00, 0x40, 0x00, 0x40];
        assert_eq!(pcm_to_mono(&stereo, 2, 2), vec![0.0, 0.5]);
        // s24: -2^23, 2^22.
        assert_eq!(pcm_to_mono(&[0, 0, 0x80, 0, 0, 0x40], 3, 1), vec![-1.0, 0.5]);
        // s32: -2^31, 2^30, and three channels averaged.
        assert_eq!(pcm_to_mono(&[0, 0, 0, 0x80, 0, 0, 0, 0x40], 4, 1), vec![-1.0, 0.5]);
        let three = [0, 0, 0, 0x40, 0, 0, 0, 0x40, 0, 0, 0, 0x40];
        assert_eq!(pcm_to_mono(&three, 4, 3), vec![0.5]);
        assert!(pcm_to_mono(&[], 2, 1).is_empty());
    }

    #[test]
    fn deltas_are_append_only_and_join_to_the_transcript() {
        let mut d = Deltas::default();
        assert_eq!(d.partial(""), None);
        assert_eq!(d.partial("And so"), Some("And so".into()));
        assert_eq!(d.partial("And so"), None);
        assert_eq!(d.partial("And so my"), Some(" my".into()));
        // A half character at the end waits for the rest.
        assert_eq!(d.partial("And so my f\u{FFFD}"), Some(" f".into()));
        assert_eq!(
            d.final_text("And so my fellow Americans."),
            Some("ellow Americans.".into())
        );
        assert_eq!(d.partial("Ask not"), Some(" Ask not".into()));
        assert_eq!(d.final_text("Ask not what."), Some(" what.".into()));
        // An utterance that ends with no committed text before its final.
        assert_eq!(d.final_text("Done."), Some(" Done.".into()));
        assert_eq!(d.text(), "And so my fellow Americans. Ask not what. Done.");
        assert!(d.consistent());
        // A committed text that is not an extension is held back, never un-sent.
        assert_eq!(d.partial("Something else"), Some(" Something else".into()));
        assert_eq!(d.final_text("Other words."), None);
        assert!(!d.consistent());
    }

    #[test]
    fn info_describes_one_streaming_asr_program() {
        let info = info_data("tiny.en", &["en".to_owned()]);
        let program = &info["asr"][0];
        assert_eq!(program["supports_transcript_streaming"], true);
        assert_eq!(program["installed"], true);
        assert_eq!(program["models"][0]["name"], "tiny.en");
        assert_eq!(program["models"][0]["languages"], json!(["en"]));
        for list in ["tts", "handle", "intent", "wake", "mic", "snd"] {
            assert_eq!(info[list], json!([]), "{list}");
        }
    }
}
