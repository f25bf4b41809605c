//! `Transformer2DModel` and `BasicTransformerBlock` with the controllable attention layer.
//!
//! Every method that runs an attention layer returns `Ok(None)` when the call's `stop_at` layer
//! has been reached: the caller propagates it and nothing after that layer is computed.

use super::control::{CallState, LayerInfo, LayerRegistry};
use crate::controller::AttentionKind;
use crate::nn::linear::{linear, linear_no_bias, Linear};
use crate::nn::{attention, conv2d, group_norm, Conv2d, GroupNorm};
use candle_core::{Result, Tensor};
use candle_nn::{LayerNorm, Module, VarBuilder};

/// diffusers `Attention` as used in SD's transformer blocks: bias-free q/k/v projections, a
/// biased output projection (`to_out.0`), and the controller hook.
#[derive(Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    upcast: bool,
    info: LayerInfo,
}

impl Attention {
    /// `context_dim` is `None` for self-attention (`attn1`).
    pub fn new(
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        upcast: bool,
    ) -> Result<Self> {
        let kv_dim = context_dim.unwrap_or(query_dim);
        let kind = match context_dim {
            Some(_) => AttentionKind::CrossAttention,
            None => AttentionKind::SelfAttention,
        };
        Ok(Self {
            to_q: linear_no_bias(query_dim, query_dim, vb.pp("to_q"))?,
            to_k: linear_no_bias(kv_dim, query_dim, vb.pp("to_k"))?,
            to_v: linear_no_bias(kv_dim, query_dim, vb.pp("to_v"))?,
            to_out: linear(query_dim, query_dim, vb.pp("to_out").pp("0"))?,
            heads,
            upcast,
            info: registry.register(vb.prefix(), kind, heads),
        })
    }

    /// `x` `[b, h*w, c]` attends to `context` (or to itself); `hw` is the query feature map size.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        hw: (usize, usize),
        state: &mut CallState,
    ) -> Result<Option<Tensor>> {
        let stop_here = state.stop_at == Some(self.info.index);
        let CallState {
            controller,
            step,
            timestep,
            conditional_rows,
            ..
        } = state;
        let site = self
            .info
            .site(hw.0, hw.1, *step, *timestep, conditional_rows.as_slice());
        let controller = match controller.as_deref_mut() {
            Some(c) if c.wants(&site) => Some(c),
            _ => None,
        };
        if stop_here && controller.is_none() {
            // Nobody observes this layer's output: stop before computing it.
            return Ok(None);
        }
        let kv_in = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(kv_in)?;
        let out = match controller {
            None => {
                let v = self.to_v.forward(kv_in)?;
                attention::attend(&q, &k, &v, self.heads, self.upcast)?
            }
            Some(c) => {
                let q = attention::split_heads(&q, self.heads)?;
                let k = attention::split_heads(&k, self.heads)?;
                let scale = 1.0 / ((q.dim(3)?) as f64).sqrt();
                let logits = attention::logits(&q, &k, scale, self.upcast)?;
                let logits = c.edit_logits(&site, logits)?;
                let probs = c.edit_probs(&site, attention::softmax(&logits)?)?;
                if stop_here {
                    return Ok(None);
                }
                let v = attention::split_heads(&self.to_v.forward(kv_in)?, self.heads)?;
                attention::merge_heads(&attention::weighted_values(&probs, &v)?)?
            }
        };
        Ok(Some(self.to_out.forward(&out)?))
    }
}

/// `ff`: GEGLU (`net.0.proj`, width 4*dim doubled for the gate) then `net.2` back to dim.
#[derive(Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: linear(dim, 2 * inner, vb.pp("net").pp("0").pp("proj"))?,
            out: linear(inner, dim, vb.pp("net").pp("2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        self.out.forward(&crate::nn::geglu(&h)?)
    }
}

/// Self-attention, cross-attention and feed-forward, each pre-normed with a residual.
#[derive(Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        dim: usize,
        heads: usize,
        context_dim: usize,
        upcast: bool,
    ) -> Result<Self> {
        let ln = |name: &str| candle_nn::layer_norm(dim, 1e-5, vb.pp(name));
        Ok(Self {
            norm1: ln("norm1")?,
            attn1: Attention::new(vb.pp("attn1"), registry, dim, None, heads, upcast)?,
            norm2: ln("norm2")?,
            attn2: Attention::new(
                vb.pp("attn2"),
                registry,
                dim,
                Some(context_dim),
                heads,
                upcast,
            )?,
            norm3: ln("norm3")?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        hw: (usize, usize),
        state: &mut CallState,
    ) -> Result<Option<Tensor>> {
        let a = or_stop!(self
            .attn1
            .forward(&self.norm1.forward(x)?, None, hw, state)?);
        let x = (a + x)?;
        let a = or_stop!(self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context), hw, state)?);
        let x = (a + x)?;
        let f = self.ff.forward(&self.norm3.forward(&x)?)?;
        Ok(Some((f + x)?))
    }
}

/// `proj_in`/`proj_out`: 1x1 convolutions on the feature map (SD 1.x) or linear layers on the
/// token sequence (`use_linear_projection`, SD 2.x).
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(vb: VarBuilder, cin: usize, cout: usize, linear: bool) -> Result<Self> {
        Ok(if linear {
            Projection::Linear(crate::nn::linear::linear(cin, cout, vb)?)
        } else {
            Projection::Conv(conv2d(vb, cin, cout, 1, 1, 0)?)
        })
    }
}

/// Shape parameters of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
    pub upcast_attention: bool,
}

/// Group norm, projection to tokens, transformer blocks, projection back, plus the input.
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn new(
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        spec: TransformerSpec,
    ) -> Result<Self> {
        let c = spec.channels;
        if spec.heads == 0 || spec.heads > c {
            candle_core::bail!("{}: {} heads for {c} channels", vb.prefix(), spec.heads);
        }
        // diffusers: head_dim = channels / heads (floored), inner width = heads * head_dim.
        let inner = spec.heads * (c / spec.heads);
        let norm = group_norm(vb.pp("norm"), spec.groups, c, 1e-6)?;
        let proj_in = Projection::new(vb.pp("proj_in"), c, inner, spec.linear_projection)?;
        let blocks = (0..spec.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp("transformer_blocks").pp(i),
                    registry,
                    inner,
                    spec.heads,
                    spec.context_dim,
                    spec.upcast_attention,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let proj_out = Projection::new(vb.pp("proj_out"), inner, c, spec.linear_projection)?;
        Ok(Self {
            norm,
            proj_in,
            blocks,
            proj_out,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        state: &mut CallState,
    ) -> Result<Option<Tensor>> {
        let (b, _, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: Tensor| {
            let ch = t.dim(1)?;
            t.permute((0, 2, 3, 1))?.reshape((b, h * w, ch))
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(normed)?)?,
        };
        for block in &self.blocks {
            tokens = or_stop!(block.forward(&tokens, context, (h, w), state)?);
        }
        let to_map = |t: Tensor| {
            let ch = t.dim(2)?;
            t.reshape((b, h, w, ch))?
                .permute((0, 3, 1, 2))?
                .contiguous()
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(tokens)?)?,
            Projection::Linear(lin) => to_map(lin.forward(&tokens)?)?,
        };
        Ok(Some((out + x)?))
    }
}
