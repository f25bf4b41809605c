//! Routes and handlers of the JSON API and the page (routes listed in the crate docs).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::assets;
use crate::error::{ApiError, ApiResult};
use crate::jobs::Shared;
use crate::model::ModelInfo;
use crate::request::{inits, layout_methods, JobRequest, MAX_GUIDANCE, MAX_STEPS};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub info: Arc<ModelInfo>,
    pub shared: Arc<Shared>,
    pub max_queue: usize,
    pub max_body: usize,
}

pub fn router(state: AppState, guard: crate::guard::Guard) -> Router {
    let limit = state.max_body;
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/info", get(info))
        .route("/api/jobs", get(list_jobs).post(submit))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/preview.png", get(preview_png))
        .route("/api/jobs/{id}/image.png", get(image_png))
        .route("/api/jobs/{id}/initial_latents.npy", get(initial_npy))
        .route("/api/jobs/{id}/attention", get(attention))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard),
            crate::guard::guard,
        ))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", assets::INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", assets::APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", assets::STYLE_CSS)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

async fn info(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "model": &*s.info,
        "inits": inits(),
        "layout_methods": layout_methods(),
        "limits": {
            "max_steps": MAX_STEPS.min(s.info.train_timesteps),
            "max_guidance": MAX_GUIDANCE,
            "max_body_bytes": s.max_body,
            "max_queue": s.max_queue,
        },
    }))
}

async fn list_jobs(State(s): State<AppState>) -> Json<serde_json::Value> {
    let t = s.shared.lock();
    let jobs: Vec<_> = t.jobs.values().rev().map(|j| t.view(j)).collect();
    let queue: Vec<u64> = t.queue.iter().copied().collect();
    Json(json!({ "jobs": jobs, "queue": queue }))
}

async fn submit(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body too large (at most {} bytes)", s.max_body)
        } else {
            format!("cannot read the request body: {}", e.body_text())
        };
        ApiError::new(status, message)
    })?;
    let request = JobRequest::parse(&body, &s.info)?;
    let (id, _) = s.shared.submit(request, s.max_queue).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the queue is full ({} jobs waiting); try again later",
                s.max_queue
            ),
        )
    })?;
    let t = s.shared.lock();
    let view = t.view(t.jobs.get(&id).expect("just inserted"));
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

fn job_id(id: Result<Path<u64>, PathRejection>) -> ApiResult<u64> {
    id.map(|Path(id)| id)
        .map_err(|_| ApiError::not_found("no such job (ids are positive integers)"))
}

fn no_job(id: u64) -> ApiError {
    ApiError::not_found(format!(
        "no job {id} (finished jobs are kept for a while only)"
    ))
}

async fn job(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Response> {
    let id = job_id(id)?;
    let t = s.shared.lock();
    let job = t.jobs.get(&id).ok_or_else(|| no_job(id))?;
    Ok(Json(t.view(job)).into_response())
}

async fn cancel(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Response> {
    let id = job_id(id)?;
    let status = s.shared.cancel(id).ok_or_else(|| no_job(id))?;
    Ok(Json(json!({ "id": id, "status": status })).into_response())
}

/// A job's stored bytes, or 404 (unknown job) / 409 (not there yet).
fn job_bytes(
    s: &AppState,
    id: Result<Path<u64>, PathRejection>,
    what: &str,
    content_type: &'static str,
    pick: impl Fn(&crate::jobs::Job) -> Option<Arc<Vec<u8>>>,
) -> ApiResult<Response> {
    let id = job_id(id)?;
    let bytes = {
        let t = s.shared.lock();
        let job = t.jobs.get(&id).ok_or_else(|| no_job(id))?;
        pick(job).ok_or_else(|| {
            ApiError::conflict(
                format!("job {id} has no {what} (it is {:?})", job.status).to_lowercase(),
            )
        })?
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes.as_ref().clone(),
    )
        .into_response())
}

async fn preview_png(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Response> {
    job_bytes(&s, id, "preview yet", "image/png", |j| {
        j.preview_png.clone()
    })
}

async fn image_png(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Response> {
    job_bytes(&s, id, "image", "image/png", |j| {
        j.outputs.image_png.clone()
    })
}

async fn initial_npy(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Response> {
    job_bytes(&s, id, "initial latents", "application/octet-stream", |j| {
        j.outputs.initial_npy.clone()
    })
}

async fn attention(
    State(s): State<AppState>,
    id: Result<Path<u64>, PathRejection>,
) -> ApiResult<Response> {
    let id = job_id(id)?;
    let t = s.shared.lock();
    let job = t.jobs.get(&id).ok_or_else(|| no_job(id))?;
    let value = job.outputs.attention.clone().ok_or_else(|| {
        ApiError::conflict(format!("job {id} has no attention maps (it is not done)"))
    })?;
    Ok(Json(value).into_response())
}
