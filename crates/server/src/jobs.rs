//! The job table and queue shared by the HTTP handlers and the worker thread.
//!
//! One worker per model runs one job at a time; the rest wait in FIFO order. Finished jobs are
//! kept for the page to fetch, oldest dropped first, in two bounded sets: done jobs (with their
//! images) up to [`KEEP_FINISHED`] and [`KEEP_RESULT_BYTES`], and failed or cancelled ones
//! (at most a preview each) up to [`KEEP_FINISHED`] more. So however many jobs are cancelled,
//! they never push a finished image out, and memory stays bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use crate::request::JobRequest;

/// Done jobs kept for the page to fetch, and failed or cancelled ones besides.
pub const KEEP_FINISHED: usize = 32;

/// The most bytes of results (PNGs, latents, attention maps) that done jobs keep in memory.
pub const KEEP_RESULT_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl Status {
    pub fn finished(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Cancelled)
    }
}

/// Results of a finished generation.
#[derive(Default)]
pub struct Outputs {
    pub image_png: Option<Arc<Vec<u8>>>,
    /// The initial latents as `.npy` (f32, `[1, C, h, w]`).
    pub initial_npy: Option<Arc<Vec<u8>>>,
    /// Per-category first-step attention maps and SemI's cell fill (`attention.rs`).
    pub attention: Option<serde_json::Value>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

pub struct Job {
    pub id: u64,
    pub request: Arc<JobRequest>,
    pub status: Status,
    /// What the worker is doing: `queued`, `collecting tickets`, `denoising`, ...
    pub phase: String,
    pub step: usize,
    pub steps: usize,
    pub error: Option<String>,
    /// Warnings of the generation itself (a cut prompt), after the request's.
    pub warnings: Vec<String>,
    pub preview_png: Option<Arc<Vec<u8>>>,
    pub outputs: Outputs,
    pub cancel: Arc<AtomicBool>,
    pub created: Instant,
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
}

/// The JSON view of a job (`GET /api/jobs/{id}`).
#[derive(Serialize)]
pub struct JobView {
    pub id: u64,
    pub status: Status,
    pub phase: String,
    /// Place in the queue (0 = next) while queued.
    pub position: Option<usize>,
    pub step: usize,
    pub steps: usize,
    pub method: String,
    pub prompt: String,
    pub seed: u64,
    pub error: Option<String>,
    pub warnings: Vec<String>,
    /// Seconds since the job started running (or its total run time once finished).
    pub elapsed_s: Option<f64>,
    /// Relative URLs of what can be fetched now.
    pub preview: Option<String>,
    pub image: Option<String>,
    pub initial_latents: Option<String>,
    pub attention: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub layout: semi_layout::Layout,
}

#[derive(Default)]
pub struct Table {
    next_id: u64,
    pub jobs: BTreeMap<u64, Job>,
    pub queue: VecDeque<u64>,
}

impl Table {
    pub fn view(&self, job: &Job) -> JobView {
        let position = self.queue.iter().position(|&q| q == job.id);
        let url = |what: &str| format!("/api/jobs/{}/{what}", job.id);
        let elapsed = job.started.map(|s| {
            job.finished
                .unwrap_or_else(Instant::now)
                .duration_since(s)
                .as_secs_f64()
        });
        JobView {
            id: job.id,
            status: job.status,
            phase: job.phase.clone(),
            position,
            step: job.step,
            steps: job.steps,
            method: job.request.run.method.name(),
            prompt: job.request.run.layout.prompt.clone(),
            seed: job.request.run.sampling.seed,
            error: job.error.clone(),
            warnings: job
                .request
                .warnings
                .iter()
                .chain(&job.warnings)
                .cloned()
                .collect(),
            elapsed_s: elapsed,
            preview: job.preview_png.as_ref().map(|_| url("preview.png")),
            image: job.outputs.image_png.as_ref().map(|_| url("image.png")),
            initial_latents: job
                .outputs
                .initial_npy
                .as_ref()
                .map(|_| url("initial_latents.npy")),
            attention: job.outputs.attention.as_ref().map(|_| url("attention")),
            metadata: job.outputs.metadata.clone(),
            layout: job.request.run.layout.clone(),
        }
    }

    /// Drop the oldest finished jobs beyond the bounds of the module docs.
    fn prune(&mut self) {
        let (done, other): (Vec<&Job>, Vec<&Job>) = self
            .jobs
            .values()
            .filter(|j| j.status.finished())
            .partition(|j| j.status == Status::Done);
        let mut drop = Vec::new();
        // Newest first: keep while within the bounds.
        let mut bytes = 0;
        for (kept, j) in done.iter().rev().enumerate() {
            bytes += j.result_bytes();
            if kept >= KEEP_FINISHED || bytes > KEEP_RESULT_BYTES {
                drop.push(j.id);
            }
        }
        drop.extend(other.iter().rev().skip(KEEP_FINISHED).map(|j| j.id));
        for id in drop {
            self.jobs.remove(&id);
        }
    }
}

impl Job {
    /// Bytes of results this job holds in memory.
    pub fn result_bytes(&self) -> usize {
        let len = |b: &Option<Arc<Vec<u8>>>| b.as_ref().map_or(0, |b| b.len());
        len(&self.outputs.image_png)
            + len(&self.outputs.initial_npy)
            + len(&self.preview_png)
            + self
                .outputs
                .attention
                .as_ref()
                .map_or(0, |a| a.to_string().len())
    }
}

/// The table plus the worker's wake-up signal.
#[derive(Default)]
pub struct Shared {
    table: Mutex<Table>,
    wake: Condvar,
}

impl Shared {
    /// The table; a poisoned lock (a panic while holding it) still yields the data, which is
    /// only ever left in a consistent state between statements.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a job; `None` when `max_queue` jobs are already waiting.
    pub fn submit(&self, request: JobRequest, max_queue: usize) -> Option<(u64, usize)> {
        let mut t = self.lock();
        if t.queue.len() >= max_queue {
            return None;
        }
        t.next_id += 1;
        let id = t.next_id;
        let steps = request.run.sampling.steps;
        t.jobs.insert(
            id,
            Job {
                id,
                request: Arc::new(request),
                status: Status::Queued,
                phase: "queued".into(),
                step: 0,
                steps,
                error: None,
                warnings: Vec::new(),
                preview_png: None,
                outputs: Outputs::default(),
                cancel: Arc::new(AtomicBool::new(false)),
                created: Instant::now(),
                started: None,
                finished: None,
            },
        );
        t.queue.push_back(id);
        let position = t.queue.len() - 1;
        t.prune();
        drop(t);
        self.wake.notify_all();
        Some((id, position))
    }

    /// Cancel a job: a queued one leaves the queue at once, a running one stops at its next
    /// step. Returns the status after the request, `None` for an unknown id.
    pub fn cancel(&self, id: u64) -> Option<Status> {
        let mut t = self.lock();
        let queued = t.queue.iter().position(|&q| q == id);
        let job = t.jobs.get_mut(&id)?;
        match job.status {
            Status::Queued => {
                job.status = Status::Cancelled;
                job.phase = "cancelled".into();
                job.error = Some("cancelled before it started".into());
                job.finished = Some(Instant::now());
                if let Some(i) = queued {
                    t.queue.remove(i);
                }
                Some(Status::Cancelled)
            }
            Status::Running => {
                job.cancel.store(true, Ordering::SeqCst);
                job.phase = "cancelling".into();
                Some(Status::Running)
            }
            s => Some(s),
        }
    }

    /// Block until a job is queued; mark it running and hand it to the worker.
    pub fn next_job(&self) -> (u64, Arc<JobRequest>, Arc<AtomicBool>) {
        let mut t = self.lock();
        loop {
            if let Some(id) = t.queue.pop_front() {
                if let Some(job) = t.jobs.get_mut(&id) {
                    job.status = Status::Running;
                    job.phase = "starting".into();
                    job.started = Some(Instant::now());
                    return (id, job.request.clone(), job.cancel.clone());
                }
                continue;
            }
            t = self.wake.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Update a job in place (no-op when it was pruned meanwhile).
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Job)) {
        if let Some(job) = self.lock().jobs.get_mut(&id) {
            f(job);
        }
    }
}
