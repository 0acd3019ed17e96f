//! WebSocket `/v1/stream`: steno's own streaming protocol over one [`StreamSession`] per
//! connection.
//!
//! ```text
//! client: {"type":"config","sample_rate":…,"encoding":"pcm_s16le"|"f32le",…}   (text, first)
//! server: {"type":"ready","stream":…,"sample_rate":…,"encoding":…}
//! client: binary frames of mono little-endian samples …
//! server: {"type":"partial"|"final"|"stats"|"warning"|"error", "wall_ms":…, …}   (jsonl's fields)
//! client: {"type":"end"}
//! server: the last final, a stats event, then close 1000
//! ```
//!
//! A client mistake ends that connection alone with an `error` event and a close code: 1008 for
//! a bad or missing config, a message out of order or idleness, 1007 for a frame that is not
//! whole samples, 1013 when all `max_streams` are taken. A client that vanishes, or stops
//! reading for `idle_timeout_s`, is dropped; its stream ends and its slot is given back.
//!
//! The session's events come on a blocking channel; a blocking task forwards them into a tokio
//! channel, so the connection's task waits on the socket and the events together.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::protocol::{BadRequest, ClientMessage, StreamRequest, decode_frame, parse_client_message};
use super::{AppState, Slot};
use crate::stream::{Pacing, TimedEvent};
use crate::{Engine, StreamSession};

/// Close codes (RFC 6455 §7.4.1).
const NORMAL: u16 = 1000;
/// The server is shutting down (after flushing the stream's last final).
const GOING_AWAY: u16 = 1001;
const INVALID_DATA: u16 = 1007;
const POLICY: u16 = 1008;
const TRY_AGAIN_LATER: u16 = 1013;

/// How long closing may take: sending our close frame and reading the client's.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Largest frame a client may send (a second of 48 kHz f32 is 192 kB).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// `GET /v1/stream`: upgrade, then run the protocol. A full server still upgrades, to say so
/// with close 1013 and a reason (a browser sees nothing of an HTTP 503 on a WebSocket).
pub(super) async fn stream(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
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
                    let message = format!(
                        "server busy: all {} streams are in use; try again later",
                        state.config.max_streams
                    );
                    let _ = send_error(&mut socket, &BadRequest::new(None, message)).await;
                    close(&mut socket, TRY_AGAIN_LATER, "too many streams").await;
                }
            }
        })
}

/// One connection's state.
struct Connection {
    state: Arc<AppState>,
    engine: Arc<Engine>,
    /// The stream's place under `max_streams` and on its engine, given back on drop.
    _slots: (Slot, Slot),
    idle: Duration,
}

/// How a connection ended, for the log.
enum Ending {
    ClientGone,
    Closed { code: u16, reason: &'static str },
}

impl Connection {
    fn new(state: Arc<AppState>, engine: Arc<Engine>, slots: (Slot, Slot)) -> Connection {
        let idle = Duration::from_secs(state.config.idle_timeout_s);
        Connection {
            state,
            engine,
            _slots: slots,
            idle,
        }
    }

    async fn run(self, mut socket: WebSocket) {
        let id = self.state.next_stream.fetch_add(1, Ordering::Relaxed);
        let (ending, session) = match self.configure(&mut socket).await {
            Ok(request) => self.serve(&mut socket, id, request).await,
            Err(ending) => (ending, None),
        };
        // Joining the stream's thread may wait for its last window job: not on an async
        // worker. The slots go after it, then the heap is trimmed if the server is idle; all
        // before the close frame, so a client that reconnects on close finds its slot free.
        let Connection { state, _slots, .. } = self;
        let _ = tokio::task::spawn_blocking(move || {
            drop(session);
            drop(_slots);
            state.trim_if_idle();
        })
        .await;
        match ending {
            Ending::ClientGone => tracing::info!(stream = id, "client went away"),
            Ending::Closed { code, reason } => {
                tracing::info!(stream = id, code, reason, "stream closed by the server");
                close(&mut socket, code, reason).await;
            }
        }
    }

    /// Wait for the config message.
    async fn configure(&self, socket: &mut WebSocket) -> Result<StreamRequest, Ending> {
        loop {
            let message = match timeout(self.idle, socket.recv()).await {
                Err(_) => {
                    let e = BadRequest::new(None, "no config message within the idle timeout");
                    return Err(reject(socket, &e, POLICY, "idle").await);
                }
                Ok(None | Some(Err(_))) => return Err(Ending::ClientGone),
                Ok(Some(Ok(message))) => message,
            };
            let problem = match message {
                Message::Text(text) => match parse_client_message(&text) {
                    Ok(ClientMessage::Config(request)) => return Ok(request),
                    Ok(ClientMessage::End) => BadRequest::new(None, "end before config"),
                    Err(e) => e,
                },
                Message::Binary(_) => BadRequest::new(None, "send the config message before audio"),
                Message::Close(_) => return Err(Ending::ClientGone),
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            return Err(reject(socket, &problem, POLICY, "bad config").await);
        }
    }

    /// Run the stream until `end` has been flushed, the client leaves or breaks the protocol;
    /// the session is handed back for the caller to drop off the async workers.
    async fn serve(
        &self,
        socket: &mut WebSocket,
        id: u64,
        request: StreamRequest,
    ) -> (Ending, Option<StreamSession<'static>>) {
        let config = match request.stream_config(&self.state.config.stream) {
            Ok(config) => crate::StreamConfig {
                pacing: Pacing::Live,
                ..config
            },
            Err(e) => return (reject(socket, &e, POLICY, "bad config").await, None),
        };
        let engine = self.engine.clone();
        let started = tokio::task::spawn_blocking(move || StreamSession::start_shared(engine, config)).await;
        let mut session = match started {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => {
                let e = BadRequest::new(None, e.to_string());
                return (reject(socket, &e, POLICY, "bad config").await, None);
            }
            Err(e) => {
                let e = BadRequest::new(None, e.to_string());
                return (reject(socket, &e, POLICY, "internal error").await, None);
            }
        };
        let ending = self.pump(socket, id, &request, &mut session).await;
        (ending, Some(session))
    }

    async fn pump(
        &self,
        socket: &mut WebSocket,
        id: u64,
        request: &StreamRequest,
        session: &mut StreamSession<'static>,
    ) -> Ending {
        let Ok(sender) = session.sender() else {
            return Ending::Closed {
                code: POLICY,
                reason: "stream ended",
            };
        };
        let events = session.events().clone();
        let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<TimedEvent>(256);
        tokio::task::spawn_blocking(move || {
            for event in events.iter() {
                if events_tx.blocking_send(event).is_err() {
                    break;
                }
            }
        });
        let ready = serde_json::json!({
            "type": "ready",
            "stream": id,
            "sample_rate": request.sample_rate,
            "encoding": request.encoding,
        });
        if !self.send(socket, ready.to_string()).await {
            return Ending::ClientGone;
        }
        let mut deadline = Instant::now() + self.idle;
        let mut ended = false;
        // Server shutdown ends the stream as the client's `end` would: the last final is
        // flushed, then the socket closes with 1001 (going away).
        let drained = self.state.drained();
        tokio::pin!(drained);
        let mut draining = false;
        loop {
            tokio::select! {
                () = &mut drained, if !ended => {
                    ended = true;
                    draining = true;
                    tokio::task::block_in_place(|| session.finish());
                }
                () = sleep_until(deadline), if !ended => {
                    let e = BadRequest::new(None, format!("no message for {} s", self.idle.as_secs()));
                    return reject(socket, &e, POLICY, "idle").await;
                }
                // Read on after `end` too: a ping waiting unread while the last final is
                // decoded would go unanswered, and the close at the end would meet unread data.
                message = socket.recv() => {
                    let message = match message {
                        None | Some(Err(_)) => return Ending::ClientGone,
                        Some(Ok(message)) => message,
                    };
                    deadline = Instant::now() + self.idle;
                    if ended {
                        // The stream is flushing: nothing the client sends now changes it.
                        if matches!(message, Message::Close(_)) {
                            return Ending::ClientGone;
                        }
                        continue;
                    }
                    match message {
                        Message::Binary(bytes) => match decode_frame(&bytes, request.encoding) {
                            // A full input queue drops the chunk; the stream counts it and
                            // says so in a warning event.
                            Ok(samples) => {
                                sender.try_push(&samples, request.sample_rate);
                            }
                            Err(e) => return reject(socket, &e, INVALID_DATA, "bad audio frame").await,
                        },
                        Message::Text(text) => match parse_client_message(&text) {
                            Ok(ClientMessage::End) => {
                                ended = true;
                                // `finish` waits for room in the input queue (rarely full):
                                // tell tokio this worker blocks for that moment.
                                tokio::task::block_in_place(|| session.finish());
                            }
                            Ok(ClientMessage::Config(_)) => {
                                let e = BadRequest::new(None, "config was already given");
                                return reject(socket, &e, POLICY, "bad message").await;
                            }
                            Err(e) => return reject(socket, &e, POLICY, "bad message").await,
                        },
                        Message::Close(_) => return Ending::ClientGone,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                event = events_rx.recv() => match event {
                    Some(event) => {
                        let Ok(json) = serde_json::to_string(&event) else { continue };
                        if !self.send(socket, json).await {
                            return Ending::ClientGone;
                        }
                    }
                    // The stream's thread is done: after `end`, everything is flushed.
                    None if draining => return Ending::Closed { code: GOING_AWAY, reason: "server shutting down" },
                    None if ended => return Ending::Closed { code: NORMAL, reason: "done" },
                    None => return Ending::Closed { code: POLICY, reason: "stream stopped" },
                },
            }
        }
    }

    /// Send a text frame; `false` when the client is gone or has not read for `idle`.
    async fn send(&self, socket: &mut WebSocket, text: String) -> bool {
        matches!(
            timeout(self.idle, socket.send(Message::Text(text.into()))).await,
            Ok(Ok(()))
        )
    }
}

async fn send_error(socket: &mut WebSocket, e: &BadRequest) -> bool {
    let event = serde_json::json!({"type": "error", "message": e.message, "param": e.param});
    socket.send(Message::Text(event.to_string().into())).await.is_ok()
}

/// Tell the client what is wrong, then close with `code`.
async fn reject(socket: &mut WebSocket, e: &BadRequest, code: u16, reason: &'static str) -> Ending {
    tracing::debug!(error = %e, "rejecting a stream client");
    if send_error(socket, e).await {
        Ending::Closed { code, reason }
    } else {
        Ending::ClientGone
    }
}

/// Send the close frame, then wait (briefly) for the client's: RFC 6455 §7.1.1 has the server
/// drop the TCP connection after the handshake. Dropping it at once, with client data still
/// unread (a keep-alive ping, a late frame), makes the kernel answer with a reset, and a client
/// whose reset overtakes the close frame sees code 1006 instead of ours.
pub(super) async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let deadline = Instant::now() + CLOSE_WAIT;
    let sent = timeout_at(deadline, socket.send(Message::Close(Some(frame)))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    while let Ok(Some(Ok(message))) = timeout_at(deadline, socket.recv()).await {
        if matches!(message, Message::Close(_)) {
            break;
        }
    }
}
