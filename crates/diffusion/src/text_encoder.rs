//! CLIP text encoder (transformers' CLIPTextModel and CLIPTextModelWithProjection): token ids
//! -> last hidden state (SD 1.x/2.x), or the penultimate hidden state and the pooled, projected
//! embedding (SDXL).
//!
//! Token + position embeddings, `num_hidden_layers` pre-LayerNorm transformer layers with a
//! causal mask (no padding mask: diffusers calls the encoder without one), an MLP with
//! quick_gelu or exact erf gelu, and the final layer norm.
use crate::config::TextEncoderConfig;
use crate::nn::linear::{linear, Linear};
use crate::precision::widen;
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};

/// The key prefix of published SD repositories; transformers 5.x save_pretrained omits it.
const PREFIX: &str = "text_model";

#[derive(Debug, Clone, Copy)]
enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// Exact `0.5 x (1 + erf(x / sqrt 2))` (OpenCLIP, SD 2.x).
    Gelu,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Activation::Gelu => xs.gelu_erf(),
        }
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, hidden: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: linear(hidden, hidden, vb.pp("q_proj"))?,
            k: linear(hidden, hidden, vb.pp("k_proj"))?,
            v: linear(hidden, hidden, vb.pp("v_proj"))?,
            out: linear(hidden, hidden, vb.pp("out_proj"))?,
            heads,
            head_dim: hidden / heads,
        })
    }

    /// `[b, seq, hidden]` -> `[b * heads, seq, head_dim]`.
    fn split_heads(&self, xs: &Tensor, b: usize, seq: usize) -> Result<Tensor> {
        xs.reshape((b, seq, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b * self.heads, seq, self.head_dim))?
            .contiguous()
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let (b, seq, hidden) = xs.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&self.q.forward(xs)?, b, seq)?;
        let k = self.split_heads(&self.k.forward(xs)?, b, seq)?;
        let v = self.split_heads(&self.v.forward(xs)?, b, seq)?;
        let logits = (q.matmul(&k.t()?)? * scale)?.broadcast_add(causal_mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let ctx = probs
            .matmul(&v)?
            .reshape((b, self.heads, seq, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, seq, hidden))?;
        self.out.forward(&ctx)
    }
}

struct EncoderLayer {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &TextEncoderConfig, act: Activation) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp("layer_norm1"))?,
            attn: Attention::new(vb.pp("self_attn"), h, cfg.num_attention_heads)?,
            norm2: layer_norm(h, eps, vb.pp("layer_norm2"))?,
            fc1: linear(h, cfg.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, h, vb.pp("mlp").pp("fc2"))?,
            act,
        })
    }

    fn forward(&self, xs: &Tensor, causal_mask: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.norm1.forward(xs)?, causal_mask)?)?;
        let mlp = self.fc2.forward(
            &self
                .act
                .apply(&self.fc1.forward(&self.norm2.forward(&xs)?)?)?,
        )?;
        xs + mlp
    }
}

/// Which hidden state a pipeline conditions its UNet on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenState {
    /// The last layer's output after the final layer norm (`last_hidden_state`; SD 1.x/2.x).
    Last,
    /// The output of the second-to-last layer, without the final norm (`hidden_states[-2]`;
    /// SDXL).
    Penultimate,
}

/// What [`ClipTextModel::encode`] returns.
pub struct TextOutput {
    /// `[batch, seq, hidden]`: the chosen hidden state.
    pub hidden: Tensor,
    /// `[batch, projection_dim]`: the final-normed state at the end token, projected
    /// (`text_embeds` of CLIPTextModelWithProjection); when asked for.
    pub pooled: Option<Tensor>,
}

pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    /// `text_projection` of CLIPTextModelWithProjection.
    text_projection: Option<Linear>,
    /// The end token whose state is pooled; 2 means transformers' legacy rule (the highest id).
    eos_token_id: u32,
    max_positions: usize,
    hidden_size: usize,
    dtype: DType,
    device: Device,
}

impl ClipTextModel {
    /// A `CLIPTextModel`; accepts weights with or without the `text_model.` prefix.
    pub fn new(vb: VarBuilder, cfg: &TextEncoderConfig) -> Result<Self> {
        Self::build(vb, cfg, false)
    }

    /// A `CLIPTextModelWithProjection` (SDXL's second encoder): also `text_projection`.
    pub fn with_projection(vb: VarBuilder, cfg: &TextEncoderConfig) -> Result<Self> {
        Self::build(vb, cfg, true)
    }

    fn build(vb: VarBuilder, cfg: &TextEncoderConfig, projection: bool) -> Result<Self> {
        let text_projection = if projection {
            Some(crate::nn::linear::linear_no_bias(
                cfg.hidden_size,
                cfg.projection_dim,
                vb.pp("text_projection"),
            )?)
        } else {
            None
        };
        let act = match cfg.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => bail!("text encoder: unsupported hidden_act `{other}`"),
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            bail!(
                "text encoder: hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        let vb = if vb.contains_tensor(&format!("{PREFIX}.embeddings.token_embedding.weight")) {
            vb.pp(PREFIX)
        } else {
            vb
        };
        let emb = vb.pp("embeddings");
        let token_embedding =
            embedding(cfg.vocab_size, cfg.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((cfg.max_position_embeddings, cfg.hidden_size), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp("encoder").pp("layers").pp(i), cfg, act))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm(
            cfg.hidden_size,
            cfg.layer_norm_eps,
            vb.pp("final_layer_norm"),
        )?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection,
            // transformers' default when the config has none.
            eos_token_id: cfg.eos_token_id.unwrap_or(49407),
            max_positions: cfg.max_position_embeddings,
            hidden_size: cfg.hidden_size,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// ids: u32 `[batch, seq]` -> `[batch, seq, hidden]` after the final layer norm.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let xs = self.run_layers(ids, seq, self.layers.len())?;
        self.final_layer_norm.forward(&xs)
    }

    /// Token ids, one row each (all of one length), -> the `state` hidden state and, when
    /// `pooled`, the projected end-token embedding (needs `text_projection`).
    pub fn encode(
        &self,
        rows: &[Vec<u32>],
        state: HiddenState,
        pooled: bool,
    ) -> Result<TextOutput> {
        let seq = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != seq) {
            bail!("text encoder: token rows of different lengths");
        }
        let ids = Tensor::from_vec(rows.concat(), (rows.len(), seq), &self.device)?;
        let n = self.layers.len();
        let penultimate = n
            .checked_sub(1)
            .filter(|_| state == HiddenState::Penultimate);
        let run_to = if pooled { n } else { penultimate.unwrap_or(n) };
        let mut kept = None;
        let xs = self.run_layers_keeping(&ids, seq, run_to, penultimate, &mut kept)?;
        let last = if pooled || state == HiddenState::Last {
            Some(self.final_layer_norm.forward(&xs)?)
        } else {
            None
        };
        let pooled = if pooled {
            let Some(projection) = &self.text_projection else {
                bail!("text encoder: a pooled embedding needs text_projection (CLIPTextModelWithProjection)");
            };
            let last = last.as_ref().expect("computed for pooling");
            let states: Vec<Tensor> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| last.get(i)?.get(self.pooled_position(r)))
                .collect::<Result<_>>()?;
            Some(projection.forward(&Tensor::stack(&states, 0)?)?)
        } else {
            None
        };
        let hidden = match state {
            HiddenState::Last => last.expect("computed for the last state"),
            HiddenState::Penultimate => match kept {
                Some(k) => k,
                // A one-layer encoder: hidden_states[-2] is the embeddings' output.
                None => xs,
            },
        };
        Ok(TextOutput { hidden, pooled })
    }

    /// transformers' pooling position: the first end token, or with the legacy `eos_token_id`
    /// 2 the highest id (the first of equal ones, as `argmax`).
    fn pooled_position(&self, ids: &[u32]) -> usize {
        if self.eos_token_id == 2 {
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&t| t == max).unwrap_or(0)
        } else {
            ids.iter()
                .position(|&t| t == self.eos_token_id)
                .unwrap_or(0)
        }
    }

    /// Embeddings, then the first `layers` layers.
    fn run_layers(&self, ids: &Tensor, seq: usize, layers: usize) -> Result<Tensor> {
        self.run_layers_keeping(ids, seq, layers, None, &mut None)
    }

    /// [`Self::run_layers`], storing the output after `keep_after` layers in `kept`.
    fn run_layers_keeping(
        &self,
        ids: &Tensor,
        seq: usize,
        layers: usize,
        keep_after: Option<usize>,
        kept: &mut Option<Tensor>,
    ) -> Result<Tensor> {
        if seq == 0 || seq > self.max_positions {
            bail!(
                "text encoder: sequence length {seq} must be in 1..={}",
                self.max_positions
            );
        }
        let ids = ids.to_device(&self.device)?;
        // Embeddings may be stored narrower than the compute dtype (`crate::precision`).
        let positions = widen(&self.position_embedding.narrow(0, 0, seq)?, self.dtype)?;
        let tokens = self.token_embedding.forward(&ids)?;
        let mut xs = widen(&tokens, self.dtype)?.broadcast_add(&positions)?;
        let mask = causal_mask(seq, &self.device)?.to_dtype(self.dtype)?;
        for (i, layer) in self.layers.iter().take(layers).enumerate() {
            if keep_after == Some(i) {
                *kept = Some(xs.clone());
            }
            xs = layer.forward(&xs, &mask)?;
        }
        if keep_after == Some(layers.min(self.layers.len())) {
            *kept = Some(xs.clone());
        }
        Ok(xs)
    }
}

/// `[seq, seq]` additive mask: 0 on and below the diagonal, -inf above (no look-ahead).
fn causal_mask(seq: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (seq, seq), device)
}
