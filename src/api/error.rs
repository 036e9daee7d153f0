//! API errors: a status and a JSON body a person can act on. The body is Kazoo's error envelope
//! (`status`, `error`, `message`, `data`), which Kazoo clients parse and others read easily.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub data: Value,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, data: Value) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            data,
            retry_after: None,
        }
    }

    /// 404: no such call, transfer or path in this account.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "bad identifier",
            json!({ "message": what }),
        )
    }

    /// 400: a field's value is wrong.
    pub fn invalid(field: &str, why: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid data",
            json!({ field: { "invalid": { "message": why } } }),
        )
    }

    /// 400: a required field is missing (Kazoo's "validation error").
    pub fn required(field: &str, why: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation error",
            json!({ field: { "required": { "message": why } } }),
        )
    }

    /// 400: the body is not what the endpoint takes.
    pub fn bad_body(why: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid data",
            json!({ "message": why }),
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid credentials",
            json!({ "message": "missing or unknown X-Auth-Token" }),
        )
    }

    pub fn too_many(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests",
                json!({ "message": "this token's rate limit is reached; retry later" }),
            )
        }
    }

    /// 429 for an address held off after repeated unknown tokens.
    pub fn held_off(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests",
                json!({ "message": "too many unknown tokens from this address; retry later" }),
            )
        }
    }

    /// 409: the call is not in a state where this can be done.
    pub fn conflict(why: &str) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", json!({ "message": why }))
    }

    /// 422: understood, but hookflash cannot carry it out.
    pub fn unprocessable(why: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported",
            json!({ "message": why }),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "status": "error",
            "error": self.status.as_u16().to_string(),
            "message": self.message,
            "data": self.data,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
