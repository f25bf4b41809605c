//! `semi serve`: a local web page to draw a layout and watch it become an image, and the JSON
//! API behind it (axum on tokio; generation on a dedicated worker thread).
//!
//! # Safety
//! - Binds to 127.0.0.1 unless `--host` says otherwise, and then prints a warning: the API has
//!   no authentication and a job ties up the CPU.
//! - Only its own page may use it: foreign `Host` headers (DNS rebinding), other sites'
//!   origins and non-JSON bodies on requests that change something are refused ([`guard`]).
//! - Request bodies are bounded ([`ServeOptions::max_body`], 413 beyond), the queue too (503),
//!   and the finished results kept in memory ([`jobs`]).
//! - The client never names a file: the model and the store are the command line's; images and
//!   latents are kept in memory and fetched by job id.
//! - Every field is validated by the code the CLI uses (`semi_layout::Layout::from_json` +
//!   `check`, `GenerateRequest::validate`, `semi_methods::Method::parse`); every error is a 4xx
//!   or 5xx with `{"error": "one line"}`; a job that fails (or panics) is marked failed with its
//!   message, and the server goes on.
//! - Categories: with `--store`, a layout may use only the store's categories (SemI has no
//!   tickets for others); on the embedded toy model only its six shapes (`circle`, `square`,
//!   `triangle`, `cross`, `ring`, `diamond`: it knows no other nouns); on any other model without
//!   a store, any name (tickets are collected on the fly). Anything else is a 422.
//!
//! # Routes
//! - `GET /` the page; `GET /assets/app.js`, `GET /assets/style.css`.
//! - `GET /api/info`: `{"model": {name, width, height, size_multiple, train_timesteps, grid:
//!   [rows, cols], pixel_space, categories: {"source": "store"|"toy", "names": [..]} or
//!   {"source": "any"}, default_steps, default_guidance, cache_images, has_store}, "inits":
//!   [..], "layout_methods": [..], "limits": {max_steps, max_guidance, max_body_bytes,
//!   max_queue}}`.
//! - `POST /api/jobs` with `{"layout": <layout JSON>, "init": "gaussian"|"semi"|"swap"|
//!   "semi+swap", "layout_method": "none"|"paint"|"soft", "steps": n, "guidance": g, "eta": e,
//!   "scheduler": "euler"|"dpm++2m"|...}`
//!   (all but `layout` optional; the layout's `seed` and `negative_prompt` are used; its size
//!   must be the model's): 202 and the job view below; 400 malformed JSON or unknown fields,
//!   413 too large, 422 invalid values, 503 queue full.
//! - `GET /api/jobs`: `{"jobs": [job view, newest first], "queue": [ids in order]}`.
//! - `GET /api/jobs/{id}`: the job view `{id, status: queued|running|done|failed|cancelled,
//!   phase, position (in the queue, 0 = next), step, steps, method, prompt, seed, error,
//!   warnings, elapsed_s, preview, image, initial_latents, attention (URLs or null), metadata,
//!   layout}`.
//! - `POST /api/jobs/{id}/cancel`: `{id, status}`; a queued job leaves the queue, a running one
//!   stops at its next step (the step callback checks the flag and returns an error).
//! - `GET /api/jobs/{id}/preview.png` (the current estimate, per step),
//!   `GET /api/jobs/{id}/image.png` (with a `parameters` text chunk, as `semi generate`),
//!   `GET /api/jobs/{id}/initial_latents.npy` (unit variance, `[1, C, h, w]` f32, as `semi
//!   generate --latents` reads), `GET /api/jobs/{id}/attention` (`{grid, prompt, maps:
//!   [{category, tokens, values (rows*cols, [0, 1]) or null, note?}], cells: null or {grid,
//!   owners: [category|"background" per cell], uses, warnings}}`, see [`attention`]).
//!   404 for an unknown job, 409 when not there yet.

pub mod api;
pub mod assets;
pub mod attention;
pub mod error;
pub mod guard;
pub mod jobs;
pub mod listener;
pub mod model;
pub mod preview;
pub mod request;
pub mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};

pub use model::{ModelInfo, ModelSource, Vocabulary};

/// Default body limit: a layout with hundreds of boxes is a few tens of kB.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
/// Default bound on waiting jobs.
pub const DEFAULT_MAX_QUEUE: usize = 16;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: ModelSource,
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    pub max_body: usize,
    pub max_queue: usize,
    /// Host names answered besides `localhost` and IP addresses ([`guard`]).
    pub allow_hosts: Vec<String>,
    /// Other sites' origins allowed to queue and cancel jobs ([`guard`]).
    pub allow_origins: Vec<String>,
}

impl ServeOptions {
    pub fn new(model: ModelSource) -> Self {
        ServeOptions {
            model,
            host: "127.0.0.1".into(),
            port: 7860,
            max_body: DEFAULT_MAX_BODY,
            max_queue: DEFAULT_MAX_QUEUE,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
        }
    }
}

/// A server running on the current tokio runtime.
pub struct Running {
    pub addr: SocketAddr,
    pub info: Arc<ModelInfo>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Whether `host` is a loopback address (no warning needed).
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Load the model on its worker thread, bind, and serve in a background task.
pub async fn start(options: ServeOptions) -> Result<Running> {
    let shared = Arc::new(jobs::Shared::default());
    let source = options.model.clone();
    let worker_shared = shared.clone();
    let info = tokio::task::spawn_blocking(move || worker::spawn(source, worker_shared))
        .await
        .context("the model loader stopped")??;
    let info = Arc::new(info);
    let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", options.host, options.port))?;
    let addr = listener.local_addr()?;
    // The name the server was started with is answered too.
    let mut hosts = options.allow_hosts.clone();
    hosts.push(options.host.clone());
    let guard = guard::Guard {
        port: addr.port(),
        hosts,
        origins: options.allow_origins.clone(),
    };
    let app = api::router(
        api::AppState {
            info: info.clone(),
            shared,
            max_queue: options.max_queue,
            max_body: options.max_body,
        },
        guard,
    );
    let task = tokio::spawn(async move {
        axum::serve(listener::JsonErrorListener(listener), app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    });
    Ok(Running { addr, info, task })
}

/// `semi serve`: serve until Ctrl-C.
pub fn run(options: ServeOptions) -> Result<()> {
    if !is_loopback(&options.host) {
        eprintln!(
            "warning: listening on {} makes the page and its API (no authentication, \
             CPU-heavy jobs) reachable from other machines",
            options.host
        );
    }
    // A panic in a job must fail that job, not end the server (the CLI's hook exits).
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "error: internal error: {}",
            info.to_string().replace('\n', " ")
        );
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        eprintln!("loading {} ...", options.model.name);
        let running = start(options).await?;
        let host = match running.addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        println!(
            "semi serve: {} ({}x{}) on http://{host}:{}  (Ctrl-C stops)",
            running.info.name,
            running.info.width,
            running.info.height,
            running.addr.port()
        );
        running
            .task
            .await
            .context("the server task stopped")?
            .context("the server failed")
    })
}

/// `semi serve`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: semi_run::model::ModelArgs,
    /// A collected ticket store for the semi inits [default: a cache store per model, filled on
    /// the fly for the categories a layout uses].
    #[arg(long, value_name = "DIR")]
    pub store: Option<std::path::PathBuf>,
    /// Address to listen on; anything but a loopback address exposes the API to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// Also answer requests for this host name (repeatable; `localhost` and IP addresses are
    /// always answered, other names are refused against DNS rebinding).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Let pages of this origin (`http://host:port`) queue and cancel jobs (repeatable; by
    /// default only the server's own page may).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
}

/// `semi serve`: `--model` resolved as every command resolves it (`semi_run::embedded`).
pub fn run_cli(args: &ServeArgs) -> Result<()> {
    let spec = args.model.spec()?;
    let mut options = ServeOptions::new(ModelSource {
        name: spec.model.clone(),
        spec,
        store: args.store.clone(),
    });
    options.host = args.host.clone();
    options.port = args.port;
    options.allow_hosts = args.allow_hosts.clone();
    options.allow_origins = args
        .allow_origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_string())
        .collect();
    run(options)
}
