//! Every failure the API reports is a status code and `{"error": "one line"}`, so the page (and
//! any script) can always show what went wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An HTTP error with a one-line message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let message = message.into().replace('\n', " ");
        ApiError { status, message }
    }

    /// 400: the body is not the JSON we expect.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 422: well-formed JSON whose values are refused (layout, category, steps, ...).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// From an anyhow chain, all causes on one line.
    pub fn from_anyhow(status: StatusCode, err: &anyhow::Error) -> Self {
        Self::new(status, semi_jobs::one_line(err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A failed job's message for the page: what to change there, not which CLI flag to pass.
/// Errors that name a flag are typed where they arise; the rest read the same everywhere.
pub fn page_message(err: &anyhow::Error) -> String {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<semi_tickets::NoTickets>() {
            let change = match &e.category {
                Some(_) => "give its box another category, or choose the gaussian Init (it needs no tickets)",
                None => "choose the gaussian Init (it needs no tickets)",
            };
            return format!(
                "{} ({} of {} blocks qualify under {}, the model's thresholds): {change}",
                e.what(),
                e.qualified,
                e.n_blocks,
                e.rule
            );
        }
        if let Some(e) = cause.downcast_ref::<semi_methods::NoPartner>() {
            return format!(
                "a layout with the one category {:?} has nothing to contrast it with: add a box \
                 of a second category",
                e.category
            );
        }
    }
    semi_jobs::one_line(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_messages_name_what_to_change_on_the_page_not_a_flag() {
        let e = semi_tickets::NoTickets {
            category: None,
            qualified: 0,
            ambiguous: 0,
            n_blocks: 1920,
            rule: "paper (T_obj 0.7, T_bg 0.3)".into(),
            advice: "raise --t-bg (now 0.3)".into(),
            n_images: 30,
        };
        let cli = anyhow::Error::new(e.clone()).to_string();
        assert!(cli.contains("raise --t-bg"), "{cli}");
        let page = page_message(&anyhow::Error::new(e).context("cannot build the latents"));
        assert!(!page.contains("--"), "{page}");
        assert!(page.contains("gaussian Init"), "{page}");
        let page = page_message(&anyhow::Error::new(semi_methods::NoPartner {
            category: "dog".into(),
        }));
        assert!(
            !page.contains("--") && page.contains("second category"),
            "{page}"
        );
    }
}
