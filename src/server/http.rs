//! The HTTP endpoints: `/health`, `/v1/models` and OpenAI's `POST /v1/audio/transcriptions`
//! (multipart in; json, text, srt, vtt or verbose_json out; or, with `stream=true`,
//! server-sent `transcript.text.delta` events as segments finish, then
//! `transcript.text.done`). Shapes: `../shared/facts/protocols.md`, from openai-python.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;

use super::protocol::{ResponseFormat, TranscriptionForm};
use super::{ApiError, AppState};
use crate::engine::Update;
use crate::output::{self, Format};
use crate::{Engine, TranscribeOptions, Transcript};

/// 200 with counts once the model is loaded; 503 while it loads.
pub(super) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let streams = state.streams.load(Ordering::Acquire);
    let uploads = state.uploads.load(Ordering::Acquire);
    let (status, word) = if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if state.workers.get().is_some() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    };
    let body = serde_json::json!({
        "status": word,
        "model": state.config.model_name,
        "streams": streams,
        "max_streams": state.config.max_streams,
        "uploads": uploads,
    });
    (status, Json(body)).into_response()
}

/// OpenAI's model list: the one loaded model.
pub(super) async fn models(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({
        "object": "list",
        "data": [{"id": state.config.model_name, "object": "model", "created": 0, "owned_by": "steno"}],
    }))
    .into_response()
}

/// The file and the fields of a transcription request.
struct Upload {
    bytes: Vec<u8>,
    filename: String,
    form: TranscriptionForm,
}

async fn read_upload(multipart: std::result::Result<Multipart, MultipartRejection>) -> Result<Upload, ApiError> {
    let mut multipart = multipart
        .map_err(|e| ApiError::bad_request(None, format!("expected multipart/form-data with a `file` field: {e}")))?;
    let mut form = TranscriptionForm::default();
    let mut file: Option<(Vec<u8>, String)> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(&e.body_text(), e.status())),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let filename = field.file_name().unwrap_or("upload").to_owned();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| multipart_error(&e.body_text(), e.status()))?;
            file = Some((bytes.to_vec(), filename));
        } else {
            let value = field
                .text()
                .await
                .map_err(|e| multipart_error(&e.body_text(), e.status()))?;
            form.set(&name, &value)?;
        }
    }
    form.validate()?;
    let (bytes, filename) = file.ok_or_else(|| ApiError::bad_request(Some("file".into()), "no `file` field"))?;
    Ok(Upload { bytes, filename, form })
}

/// A body over the limit is 413; a cut or malformed one is 400.
fn multipart_error(text: &str, status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!("upload too large: {text}"),
        )
    } else {
        ApiError::bad_request(None, format!("malformed multipart body: {text}"))
    }
}

/// Characters of a prompt that are encoded: its end. Only the last 223 tokens of a prompt are
/// ever used (half the decoder context, as Whisper does), and byte-pair encoding takes time
/// quadratic in the length of a word without spaces: a fuzzed 8,000-character word took 22 s
/// (debug build), so an uncapped prompt field could hold a server thread for minutes.
const PROMPT_MAX_CHARS: usize = 1024;

/// The last [`PROMPT_MAX_CHARS`] characters of `prompt`.
fn prompt_tail(prompt: &str) -> &str {
    let skip = prompt.chars().count().saturating_sub(PROMPT_MAX_CHARS);
    prompt
        .char_indices()
        .nth(skip)
        .and_then(|(at, _)| prompt.get(at..))
        .unwrap_or(prompt)
}

/// This request's options: the engine's, with the request's language, prompt, temperature and
/// word times.
fn request_options(engine: &Engine, form: &TranscriptionForm) -> TranscribeOptions {
    let mut options = engine.options().cloned().unwrap_or_default();
    if let Some(language) = &form.language {
        options.language = Some(language.clone());
    }
    if let (Some(prompt), Some(tokenizer)) = (&form.prompt, engine.tokenizer()) {
        // Whisper encodes the initial prompt with a leading space, as text mid-sentence.
        options.initial_prompt = tokenizer.encode(&format!(" {}", prompt_tail(prompt.trim())));
    }
    // OpenAI: 0 means "raise the temperature as needed", i.e. the fallback ladder; a higher
    // value starts the ladder there.
    if let Some(t) = form.temperature.filter(|&t| t > 0.0) {
        options.temperatures.retain(|&ladder| ladder > t + 1e-9);
        options.temperatures.insert(0, t);
    }
    options.word_timestamps = form.words;
    options
}

/// `POST /v1/audio/transcriptions`.
pub(super) async fn transcriptions(
    State(state): State<Arc<AppState>>,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    state.refuse_while_draining()?;
    let engine = state.any_engine()?;
    let slot = state.upload_slot();
    let Upload { bytes, filename, form } = read_upload(multipart).await?;
    let options = request_options(&engine, &form);
    tracing::info!(file = %filename, bytes = bytes.len(), stream = form.stream, "upload");
    // Decode and compute log-mel off the async workers; a bad file is this request's 400.
    let prepare_engine = engine.clone();
    let mel = tokio::task::spawn_blocking(move || {
        let audio = crate::audio::read_audio_bytes(&bytes, &filename)?;
        Ok::<_, crate::Error>(prepare_engine.prepare(&audio.samples))
    })
    .await
    .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))??;
    let updates = state.enqueue_upload(mel, options)?;
    if form.stream {
        // The engine's channel is blocking: turn its updates into events on the blocking pool.
        // A client that leaves closes `rx`, which ends this (the job itself runs to its end).
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(64);
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let mut sent = String::new();
            'updates: for update in updates {
                for data in sse_data(&mut sent, update) {
                    if tx.blocking_send(Ok(Event::default().data(data))).is_err() {
                        break 'updates;
                    }
                }
            }
            drop(slot);
            state.trim_if_idle();
        });
        return Ok(Sse::new(ReceiverStream::new(rx)).into_response());
    }
    let idle_check = state.clone();
    let transcript = tokio::task::spawn_blocking(move || {
        let result = updates
            .iter()
            .find_map(|update| match update {
                Update::Done(result) => Some(result.map_err(ApiError::from)),
                _ => None,
            })
            .unwrap_or_else(|| {
                Err(ApiError::status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the inference worker stopped during the job",
                ))
            });
        drop(slot);
        idle_check.trim_if_idle();
        result
    })
    .await
    .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))??;
    Ok(respond(&transcript, &form))
}

/// The transcript in the asked format.
fn respond(transcript: &Transcript, form: &TranscriptionForm) -> Response {
    let text_body = |format: Format| {
        let mut out = Vec::new();
        // Writing to memory cannot fail.
        let _ = output::write(&mut out, transcript, format, None);
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            String::from_utf8_lossy(&out).into_owned(),
        )
            .into_response()
    };
    match form.response_format {
        ResponseFormat::Json => Json(serde_json::json!({
            "text": transcript.text(),
            "usage": {"type": "duration", "seconds": transcript.duration.ceil()},
        }))
        .into_response(),
        ResponseFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", transcript.text()),
        )
            .into_response(),
        ResponseFormat::Srt => text_body(Format::Srt),
        ResponseFormat::Vtt => text_body(Format::Vtt),
        ResponseFormat::VerboseJson => Json(verbose_json(transcript, form.words)).into_response(),
    }
}

/// OpenAI's `verbose_json`. `seek` is the segment's start in 10 ms frames (steno's segments do
/// not keep the window they came from).
fn verbose_json(transcript: &Transcript, words: bool) -> serde_json::Value {
    let segments: Vec<serde_json::Value> = transcript
        .segments
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "seek": (s.start * 100.0).round() as u64,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            })
        })
        .collect();
    let mut body = serde_json::json!({
        "task": "transcribe",
        "language": transcript.language.as_deref().unwrap_or("en"),
        "duration": transcript.duration,
        "text": transcript.text(),
        "segments": segments,
    });
    if words && let Some(object) = body.as_object_mut() {
        let words: Vec<serde_json::Value> = transcript
            .segments
            .iter()
            .flat_map(|s| s.words.iter().flatten())
            .map(|w| serde_json::json!({"word": w.word.trim(), "start": w.start, "end": w.end}))
            .collect();
        object.insert("words".into(), serde_json::Value::Array(words));
    }
    body
}

/// The server-sent events of one engine update: a delta per finished segment (their
/// concatenation, kept in `sent`, is the done text), then `transcript.text.done` and `[DONE]`;
/// a failure is an OpenAI error object (the client raises it).
fn sse_data(sent: &mut String, update: Update) -> Vec<String> {
    match update {
        Update::Segment(segment) => {
            // The first delta drops the leading space, as the done text does.
            let joined = format!("{sent}{}", segment.text);
            let delta = joined.trim_start().get(sent.len()..).unwrap_or_default().to_owned();
            sent.push_str(&delta);
            if delta.is_empty() {
                return Vec::new();
            }
            vec![serde_json::json!({"type": "transcript.text.delta", "delta": delta}).to_string()]
        }
        Update::Progress(_) => Vec::new(),
        Update::Done(Ok(_)) => vec![
            serde_json::json!({"type": "transcript.text.done", "text": sent}).to_string(),
            "[DONE]".to_owned(),
        ],
        Update::Done(Err(e)) => vec![ApiError::from(e).body().to_string()],
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_long_prompt_is_cut_to_its_end_on_a_character_boundary() {
        let long = format!("{}é{}", "x".repeat(5000), "y".repeat(1023));
        let tail = prompt_tail(&long);
        assert_eq!(tail.chars().count(), PROMPT_MAX_CHARS);
        assert!(tail.starts_with('é') && tail.ends_with('y'));
        assert_eq!(prompt_tail("short prompt"), "short prompt");
    }

    use super::*;
    use crate::Segment;

    fn segment(id: usize, text: &str, start: f64, end: f64) -> Segment {
        Segment {
            id,
            start,
            end,
            text: text.into(),
            tokens: vec![50364],
            avg_logprob: -0.2,
            no_speech_prob: 0.01,
            temperature: 0.0,
            compression_ratio: 1.2,
            words: Some(vec![crate::transcribe::Word {
                word: format!(" {}", text.trim()),
                start,
                end,
                probability: 0.9,
            }]),
        }
    }

    #[test]
    fn sse_deltas_append_up_to_the_done_text() {
        let mut sent = String::new();
        let mut deltas = String::new();
        let updates = vec![
            Update::Progress(10.0),
            Update::Segment(segment(0, " And so my fellow Americans,", 0.0, 4.0)),
            Update::Segment(segment(1, " ask not.", 4.0, 6.0)),
            Update::Done(Ok(Transcript {
                segments: Vec::new(),
                language: None,
                duration: 6.0,
            })),
        ];
        let mut events = Vec::new();
        for update in updates {
            events.extend(sse_data(&mut sent, update));
        }
        assert_eq!(events.len(), 4, "{events:?}");
        for event in &events[..2] {
            let v: serde_json::Value = serde_json::from_str(event).unwrap();
            assert_eq!(v["type"], "transcript.text.delta");
            deltas.push_str(v["delta"].as_str().unwrap());
        }
        let done: serde_json::Value = serde_json::from_str(&events[2]).unwrap();
        assert_eq!(done["type"], "transcript.text.done");
        assert_eq!(done["text"], deltas.as_str());
        assert_eq!(deltas, "And so my fellow Americans, ask not.");
        assert_eq!(events[3], "[DONE]");
    }

    #[test]
    fn sse_failure_is_an_openai_error_object() {
        let mut sent = String::new();
        let error = crate::Error::config("language", "`xx` is not a language");
        let events = sse_data(&mut sent, Update::Done(Err(error)));
        let v: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(v["error"]["param"], "language");
    }

    #[test]
    fn verbose_json_has_openai_fields_and_words_on_request() {
        let transcript = Transcript {
            segments: vec![segment(0, " Hello.", 0.0, 1.0), segment(1, " World.", 1.0, 2.5)],
            language: None,
            duration: 3.0,
        };
        let without = verbose_json(&transcript, false);
        assert!(without.get("words").is_none());
        assert_eq!(without["text"], "Hello. World.");
        assert_eq!(without["language"], "en");
        let first = &without["segments"][0];
        for key in [
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ] {
            assert!(first.get(key).is_some(), "segment lacks {key}");
        }
        let with = verbose_json(&transcript, true);
        assert_eq!(with["words"][1]["word"], "World.");
        assert_eq!(with["words"][1]["end"], 2.5);
    }
}
