//! The encoder-only Transformer of the study, equal to PyTorch's
//! `nn.TransformerEncoder` of post-norm `nn.TransformerEncoderLayer`s
//! (feed-forward width 2d, ReLU) behind a shared `Linear(1, d)` and a
//! sinusoidal positional encoding, with a final LayerNorm and `Linear(d, 1)`
//! on the last position.

use burn::tensor::{Tensor, activation};

use super::{Ctx, Dropout, Network, Params, layer_norm, linear};

/// # Shapes
/// - x: `[batch, length, 1]`
/// - output: `[batch, 1]`
pub(super) fn forward(
    net: &Network,
    mut p: Params,
    x: Tensor<3>,
    mut dropout: Option<&mut Dropout>,
) -> Tensor<2> {
    let [batch, length, _] = x.dims();
    let d = net.spec.hidden;
    let heads = net.spec.heads.unwrap_or(1);
    let head_dim = d / heads;
    let ctx = &net.ctx;

    let x = p.linear(x); // [batch, length, d]
    let mut x = x + positional_encoding(ctx, length, d).unsqueeze();

    for _ in 0..net.spec.layers {
        let w_in = p.matrix();
        let b_in = p.vector();
        let w_out = p.matrix();
        let b_out = p.vector();
        let (w1, b1) = (p.matrix(), p.vector());
        let (w2, b2) = (p.matrix(), p.vector());
        let (norm1_scale, norm1_shift) = (p.vector(), p.vector());
        let (norm2_scale, norm2_shift) = (p.vector(), p.vector());

        // Multi-head self-attention: [batch, heads, length, head_dim] per part.
        let qkv = linear(x.clone(), w_in, b_in); // [batch, length, 3d]
        let split = |part: usize| {
            qkv.clone()
                .narrow(2, part * d, d)
                .reshape([batch, length, heads, head_dim])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (head_dim as f64).sqrt());
        let mut weights = activation::softmax(scores, 3);
        if let Some(dropout) = dropout.as_deref_mut() {
            weights = dropout.apply(ctx, weights);
        }
        let attended = weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, length, d]);
        let mut attended = linear(attended, w_out, b_out);
        if let Some(dropout) = dropout.as_deref_mut() {
            attended = dropout.apply(ctx, attended);
        }
        x = layer_norm(x + attended, norm1_scale, norm1_shift);

        // Feed-forward block.
        let mut hidden = activation::relu(linear(x.clone(), w1, b1)); // [batch, length, 2d]
        if let Some(dropout) = dropout.as_deref_mut() {
            hidden = dropout.apply(ctx, hidden);
        }
        let mut ff = linear(hidden, w2, b2);
        if let Some(dropout) = dropout.as_deref_mut() {
            ff = dropout.apply(ctx, ff);
        }
        x = layer_norm(x + ff, norm2_scale, norm2_shift);
    }

    let x = p.layer_norm(x);
    let last = x.narrow(1, length - 1, 1).reshape([batch, d]);
    p.linear(last)
}

/// `pe[pos, 2i] = sin(pos / 10000^(2i/d))`, `pe[pos, 2i+1] = cos(...)`,
/// computed in f32 as PyTorch's reference module does.
///
/// # Shapes
/// - output: `[length, d]`
pub(crate) fn positional_encoding(ctx: &Ctx, length: usize, d: usize) -> Tensor<2> {
    ctx.tensor(positional_encoding_values(length, d), [length, d])
}

/// The values of [`positional_encoding`], row-major `[length, d]`.
pub(crate) fn positional_encoding_values(length: usize, d: usize) -> Vec<f32> {
    let mut pe = vec![0.0f32; length * d];
    let scale = -(10000.0f64.ln() / d as f64) as f32;
    for pos in 0..length {
        for i in (0..d).step_by(2) {
            let angle = pos as f32 * (i as f32 * scale).exp();
            pe[pos * d + i] = angle.sin();
            if i + 1 < d {
                pe[pos * d + i + 1] = angle.cos();
            }
        }
    }
    pe
}
