//! A generation request: parsing, validation and the run's plan, before anything is queued.
//!
//! The layout goes through `semi_layout::Layout::from_json_sized` + `check` (the CLI's
//! `--layout` path: a layout without a size gets the model's), the method words through
//! `semi_methods::Method::parse`, and the whole through `semi_run::Run::plan` (the CLI's
//! `semi generate` path); so the page, the API and the CLI refuse the same inputs with the same
//! messages and make the same image.

use semi_layout::Layout;
use semi_methods::{Guidance, Init, Method};
use semi_run::{Choices, Request, Run};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::model::ModelInfo;

/// Init words the page offers (`semi_methods::Init::ALL`).
pub fn inits() -> Vec<&'static str> {
    Init::ALL.iter().map(|i| i.name()).collect()
}

/// Layout-guidance words the page offers (`semi_methods::Guidance::ALL`); `none` = no guidance.
pub fn layout_methods() -> Vec<&'static str> {
    Guidance::ALL.iter().map(|g| g.name()).collect()
}
/// Upper bound on denoising steps per job (a CPU server should not be tied up for hours).
pub const MAX_STEPS: usize = 200;
/// Bound on the classifier-free guidance scale.
pub const MAX_GUIDANCE: f64 = 50.0;

/// The JSON body of `POST /api/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// A layout in the native format (`semi_layout` crate docs); its `seed` and
    /// `negative_prompt` are the request's.
    layout: serde_json::Value,
    #[serde(default)]
    init: Option<String>,
    #[serde(default)]
    layout_method: Option<String>,
    #[serde(default)]
    steps: Option<usize>,
    #[serde(default)]
    guidance: Option<f64>,
    #[serde(default)]
    eta: Option<f64>,
    /// A `--scheduler` name (`euler`, `dpm++2m`, ...); the model's settings otherwise.
    #[serde(default)]
    scheduler: Option<String>,
}

/// A validated request, ready for the worker.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The planned run: layout (with its seed), method, settings and sampling.
    pub run: Run,
    /// Layout warnings (e.g. a category the prompt does not name), shown with the job.
    pub warnings: Vec<String>,
}

impl JobRequest {
    /// Parse and validate a request body against the served model.
    pub fn parse(bytes: &[u8], model: &ModelInfo) -> ApiResult<JobRequest> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
        let body: Body = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
        let native = (model.width as u32, model.height as u32);
        let (layout, size_from) = Layout::from_json_sized(&body.layout.to_string(), native)
            .map_err(|e| ApiError::invalid(format!("invalid layout: {e}")))?;
        let warnings = semi_layout::summarize_warnings(
            &layout
                .check()
                .map_err(|e| ApiError::invalid(format!("invalid layout: {e}")))?,
        );
        if (layout.width as usize, layout.height as usize) != (model.width, model.height) {
            return Err(ApiError::invalid(format!(
                "the layout is {}x{}, but this server's model {} works at {}x{}",
                layout.width, layout.height, model.name, model.width, model.height
            )));
        }
        for (i, o) in layout.objects.iter().enumerate() {
            model
                .check_category(&o.category)
                .map_err(|e| ApiError::invalid(format!("objects[{i}].category: {e}")))?;
        }
        let method = parse_method(body.init.as_deref(), body.layout_method.as_deref())?;
        let steps = body.steps.unwrap_or(model.default_steps);
        let max_steps = MAX_STEPS.min(model.train_timesteps);
        if steps > max_steps {
            return Err(ApiError::invalid(format!(
                "steps {steps} is more than this server allows ({max_steps})"
            )));
        }
        let guidance = body.guidance.unwrap_or(model.default_guidance);
        if !(0.0..=MAX_GUIDANCE).contains(&guidance) {
            return Err(ApiError::invalid(format!(
                "guidance {guidance} must lie in [0, {MAX_GUIDANCE}]"
            )));
        }
        let eta = body.eta.unwrap_or(0.0);
        if eta > 1.0 {
            return Err(ApiError::invalid(format!("eta {eta} must lie in [0, 1]")));
        }
        let request = Request {
            layout: Some((layout, size_from)),
            method: Some(method),
            flags: Choices {
                num_inference_steps: body.steps,
                guidance_scale: body.guidance,
                scheduler: body.scheduler,
                ..Choices::default()
            },
            eta,
            ..Request::default()
        };
        let run = Run::plan(&model.reference, request)
            .map_err(|e| ApiError::invalid(semi_jobs::one_line(&e)))?;
        Ok(JobRequest { run, warnings })
    }
}

/// `init` (default gaussian) and `layout_method` (default none) -> a method; the words are the
/// page's menus, the parsing is `Method::parse`'s.
fn parse_method(init: Option<&str>, layout_method: Option<&str>) -> ApiResult<Method> {
    let init = init.unwrap_or("gaussian").trim().to_lowercase();
    let guidance = layout_method.unwrap_or("none").trim().to_lowercase();
    if !inits().contains(&init.as_str()) {
        return Err(ApiError::invalid(format!(
            "init {init:?} is not one of {}",
            inits().join(", ")
        )));
    }
    if !layout_methods().contains(&guidance.as_str()) {
        return Err(ApiError::invalid(format!(
            "layout_method {guidance:?} is not one of {}",
            layout_methods().join(", ")
        )));
    }
    let text = if guidance == "none" {
        init
    } else {
        format!("{init}+{guidance}")
    };
    Method::parse(&text).map_err(|e| ApiError::invalid(semi_jobs::one_line(&e)))
}
