//! OpenAI-style error responses: `{"error": {"message", "type", "param", "code"}}` with the
//! matching HTTP status, so clients (the `openai` package among them) surface the message
//! instead of a parse failure.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `server_error`, ...
    pub kind: &'static str,
    /// The request field at fault, where there is one.
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (queue full, model loading).
    pub retry_after: Option<u32>,
    /// The response id of the request that failed, for the server's log line of a 500.
    pub request_id: Option<String>,
}

/// What a 500 response carries (as an extension) for the log line `routes::count_requests`
/// writes: the message and the request's id.
#[derive(Clone, Debug)]
pub struct Logged {
    pub message: String,
    pub request_id: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, param: None, code: None, retry_after: None, request_id: None }
    }

    /// 400 for a request that cannot be served as written.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError {
            param: param.map(str::to_string),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// The error of the request with this response id (logged with a 500).
    pub fn for_request(mut self, id: &str) -> ApiError {
        self.request_id = Some(id.to_string());
        self
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid or missing API key (send `Authorization: Bearer KEY`)",
        )
        .with_code("invalid_api_key")
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no such endpoint: {what}"))
            .with_code("not_found")
    }

    /// OpenAI's answer for a model id it does not serve.
    pub fn model_not_found(id: &str) -> ApiError {
        ApiError {
            param: Some("model".into()),
            ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("The model '{id}' does not exist"))
        }
        .with_code("model_not_found")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed for this endpoint")
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body exceeds the limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    /// 408: the request's body did not arrive in time (the connection is closed after it).
    pub fn body_timeout(limit: std::time::Duration) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("the request body did not arrive within {} s", limit.as_secs()),
        )
        .with_code("request_timeout")
    }

    /// 503 with `Retry-After`: the engine's queue is full, the model is still loading, or the
    /// server is stopping. A router can send the request to another replica.
    pub fn unavailable(message: impl Into<String>, retry_after: u32) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body (also sent as an SSE event when a stream fails after its headers).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if matches!(self.status, StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE) {
            // The rest of the body may still come (a 413 drains only so far: routes::read_body):
            // the connection cannot carry another request.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            resp.extensions_mut().insert(Logged { message: self.message, request_id: self.request_id });
        }
        resp
    }
}
