//! A generation request: parsing and validation, before anything is queued.
//!
//! The layout goes through `semi_layout::Layout::from_json` + `check` (the CLI's `--layout`
//! path), the numbers through `GenerateRequest::validate` (the CLI's `semi generate` path), and
//! the method words through `semi_methods::Method::parse`; so the page, the API and the CLI
//! refuse the same inputs with the same messages.

use semi_diffusion::pipeline::GenerateRequest;
use semi_layout::Layout;
use semi_methods::Method;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::model::ModelInfo;

/// Init words the page offers (`semi_methods::Init`).
pub const INITS: [&str; 4] = ["gaussian", "semi", "swap", "semi+swap"];
/// Layout-guidance words the page offers (`semi_methods::Guidance`); `none` = no guidance.
pub const LAYOUT_METHODS: [&str; 3] = ["none", "paint", "soft"];
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
}

/// A validated request, ready for the worker.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub layout: Layout,
    pub method: Method,
    /// Prompt, size, seed, steps, guidance and eta (no initial latents: the method makes them).
    pub generate: GenerateRequest,
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
        let layout = Layout::from_json(&body.layout.to_string())
            .map_err(|e| ApiError::invalid(format!("invalid layout: {e}")))?;
        let warnings = layout
            .check()
            .map_err(|e| ApiError::invalid(format!("invalid layout: {e}")))?
            .iter()
            .map(|w| w.to_string())
            .collect();
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
        let mut generate = GenerateRequest::new(layout.prompt.clone(), model.height, model.width);
        generate.negative_prompt = layout.negative_prompt.clone().unwrap_or_default();
        generate.seed = layout.seed.unwrap_or(0);
        generate.steps = body.steps.unwrap_or(model.default_steps);
        generate.guidance_scale = body.guidance.unwrap_or(model.default_guidance);
        generate.eta = body.eta.unwrap_or(0.0);
        generate
            .validate(model.size_multiple)
            .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
        let max_steps = MAX_STEPS.min(model.train_timesteps);
        if generate.steps > max_steps {
            return Err(ApiError::invalid(format!(
                "steps {} is more than this server allows ({max_steps})",
                generate.steps
            )));
        }
        if !(0.0..=MAX_GUIDANCE).contains(&generate.guidance_scale) {
            return Err(ApiError::invalid(format!(
                "guidance {} must lie in [0, {MAX_GUIDANCE}]",
                generate.guidance_scale
            )));
        }
        if generate.eta > 1.0 {
            return Err(ApiError::invalid(format!(
                "eta {} must lie in [0, 1]",
                generate.eta
            )));
        }
        Ok(JobRequest {
            layout,
            method,
            generate,
            warnings,
        })
    }
}

/// `init` (default gaussian) and `layout_method` (default none) -> a method; the words are the
/// page's menus, the parsing is `Method::parse`'s.
fn parse_method(init: Option<&str>, layout_method: Option<&str>) -> ApiResult<Method> {
    let init = init.unwrap_or("gaussian").trim().to_lowercase();
    let guidance = layout_method.unwrap_or("none").trim().to_lowercase();
    if !INITS.contains(&init.as_str()) {
        return Err(ApiError::invalid(format!(
            "init {init:?} is not one of {}",
            INITS.join(", ")
        )));
    }
    if !LAYOUT_METHODS.contains(&guidance.as_str()) {
        return Err(ApiError::invalid(format!(
            "layout_method {guidance:?} is not one of {}",
            LAYOUT_METHODS.join(", ")
        )));
    }
    let text = if guidance == "none" {
        init
    } else {
        format!("{init}+{guidance}")
    };
    Method::parse(&text).map_err(|e| ApiError::invalid(format!("{e:#}")))
}
