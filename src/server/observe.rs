//! Operations: a request id on every request (in its log span and the `x-request-id` response
//! header) and `/metrics` in Prometheus' text format.
//!
//! In: each HTTP request (the id comes from the client's `x-request-id` when that is a short
//! token, else a new random one). Out: the `request` span around the handler (with
//! `--log-format json`, every log line inside carries `request_id`), one `info` line per
//! request with its status and time, and [`RequestId`] in the request's extensions for handlers
//! that keep working after the response (WebSockets). `/metrics` renders the server's gauges
//! (streams, uploads, upload queue) with the process registry of [`crate::metrics`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use tracing::Instrument;

use super::AppState;
use crate::metrics::{Gauges, render_prometheus, snapshot};

/// The id of the request being served (also in its span and its response header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(pub(crate) String);

/// The client's id when it is a plain token of at most 64 characters, so a log line can't be
/// forged or bloated through it.
fn client_id(request: &Request) -> Option<String> {
    let value = request.headers().get("x-request-id")?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| value.to_owned())
}

/// Middleware: gives the request an id, serves it inside a `request` span, logs its outcome.
pub(crate) async fn request_id(mut request: Request, next: Next) -> Response {
    let id = client_id(&request).unwrap_or_else(|| format!("{:016x}", rand::rng().next_u64()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "served"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let gauges = Gauges {
        streams: state.streams.load(Ordering::Acquire) as u64,
        uploads: state.uploads.load(Ordering::Acquire) as u64,
        queue_depth: state.workers.get().map_or(0, |w| w.uploads.len() as u64),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render_prometheus(gauges, &snapshot()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request {
        Request::builder()
            .header("x-request-id", value)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn client_ids_are_kept_only_when_they_are_short_plain_tokens() {
        assert_eq!(client_id(&with_header("abc-123_x.y:z")), Some("abc-123_x.y:z".into()));
        assert_eq!(client_id(&with_header("has space")), None);
        assert_eq!(client_id(&with_header("a;b=\"c\"")), None);
        assert_eq!(client_id(&with_header(&"a".repeat(65))), None);
        assert_eq!(client_id(&with_header("")), None);
    }
}
