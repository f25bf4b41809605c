//! semi's Stable Diffusion runtime: everything needed to run an unmodified SD 1.x/2.x/XL diffusers
//! model on candle, with cross-attention exposed to controllers (the ticket probe, Paint, Soft).

pub mod config;
pub mod controller;
pub mod cpu;
pub mod family;
pub mod image;
pub mod kernels;
pub mod latents_io;
pub mod loading;
pub mod lora;
pub mod memory;
pub mod nn;
pub mod noise;
pub mod pipeline;
pub mod precision;
pub mod safetensors_header;
pub mod schedulers;
pub mod single_file;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use controller::{AttentionController, AttentionKind, AttentionSite, Place};
