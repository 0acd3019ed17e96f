//! OpenAI-shaped HTTP errors: `{"error":{"message","type","param","code"}}` with a 4xx or 5xx
//! status. Client mistakes get 4xx and say what to fix; a fault of steno's gets 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::protocol::BadRequest;
use crate::Error;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error` for client mistakes, `server_error` otherwise.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(param: Option<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub fn status(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind: if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            },
            param: None,
            code: Some(code),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> ApiError {
        ApiError::bad_request(e.param, e.message)
    }
}

impl From<Error> for ApiError {
    /// Unreadable audio and invalid options are the client's; everything else is ours.
    fn from(e: Error) -> ApiError {
        match e {
            Error::Audio(audio) => ApiError::bad_request(Some("file".into()), audio.to_string()),
            Error::Config { field, problem } => {
                ApiError::bad_request(Some(field.to_owned()), format!("{field}: {problem}"))
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
