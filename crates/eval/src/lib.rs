//! Evaluation for semi: the protocol of the paper's Table 1 (docs/design.md 1.6), end to end.
//!
//! 1. **Samples** ([`coco`], [`naming`], [`samples`]): read COCO 2017 instances and captions,
//!    keep images whose every box category the caption names, pick 3000 one-object and 3000
//!    two-object samples deterministically, write them as layouts (JSONL, `semi_layout`).
//! 2. **Generation bookkeeping** ([`plan`], [`shard`], [`batch`]): ids and seeds fixed per
//!    layout, shard `i/n` (Slurm array aware), `<out>/<method>/<id>.png` + sidecar, atomic
//!    writes, resume, a manifest per shard, and a merge that checks completeness and
//!    consistency. The images themselves come from a callback (the CLI's pipeline).
//! 3. **Detectors** ([`detector`]): a trait, the toy world's exact detector, and detections
//!    imported from COCO results JSON (any external detector).
//! 4. **Metrics and reports** ([`metrics`], [`evaluate`], [`report`], [`figures`]): best
//!    same-category IoU per object, success at IoU > 0.5, by size and by objects per sample;
//!    Markdown (Table 1 shape), CSV, JSON, a bar chart and contact sheets.

pub mod batch;
pub mod coco;
pub mod cocoeval;
pub mod detector;
pub mod evaluate;
pub mod figures;
pub mod font;
mod fsutil;
pub mod metrics;
pub mod naming;
pub mod pairs;
pub mod plan;
pub mod report;
pub mod samples;
pub mod shard;

pub use batch::{
    generate_shard, merge, Generated, ItemState, MergeReport, Merged, MergedItem, MethodDir,
    ShardManifest, ShardStatus, Sidecar,
};
pub use coco::{CocoCaptions, CocoInstances, COCO_CATEGORIES};
pub use cocoeval::{CocoEval, CocoStats};
pub use detector::{CategoryMap, CocoResults, DetectRequest, Detection, Detector, ToyDetector};
pub use evaluate::{evaluate_coco, evaluate_method, ImageDetections, MethodResult};
pub use figures::{bar_chart, method_sheet};
pub use fsutil::{write_atomic, write_json_atomic, write_png_atomic};
pub use metrics::{score_layout, MetricConfig, ObjectScore, SizeBucket, Stats, Summary};
pub use naming::{Mention, NameMatcher};
pub use pairs::{category_pairs, CategoryPairs};
pub use plan::{item_seed, read_image_ids, CocoImageEntry, Plan, PlanItem};
pub use report::{
    markdown_table, objects_csv, run_report, summary_csv, summary_json, write_report, ReportFiles,
    ReportOptions,
};
pub use samples::{select_samples, SampleRule, Selection, SelectionStats};
pub use shard::{Shard, SlurmArray};
