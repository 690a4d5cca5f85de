//! Stacked LSTM and GRU layers with PyTorch's equations and gate layout.
//!
//! Each layer projects its whole input sequence with one matrix product before
//! the time loop, and computes all gates of a step with one more product: few,
//! large operations are what make small-batch training fast on the CPU.

use burn::tensor::Tensor;

use super::{Dropout, Network, Params, sigmoid, tanh};

/// `nn.LSTM` (gates i, f, g, o) then `Linear(d, 1)` on the last hidden state.
///
/// # Shapes
/// - x: `[batch, length, 1]`
/// - output: `[batch, 1]`
pub(super) fn lstm(
    net: &Network,
    mut p: Params,
    x: Tensor<3>,
    mut dropout: Option<&mut Dropout>,
) -> Tensor<2> {
    let [batch, length, _] = x.dims();
    let d = net.spec.hidden;
    let mut x = x;
    let mut last = None;

    for layer in 0..net.spec.layers {
        let input = x.dims()[2];
        let w_ih = p.matrix();
        let w_hh = p.matrix().transpose();
        let bias = p.vector() + p.vector();

        // Input projection of every step at once: [batch * length, 4d].
        let xw = x
            .clone()
            .reshape([batch * length, input])
            .matmul(w_ih.transpose())
            .add(bias.unsqueeze())
            .reshape([batch, length, 4 * d]);

        let top = layer + 1 == net.spec.layers;
        let mut outputs = Vec::with_capacity(if top { 0 } else { length });
        let mut state: Option<(Tensor<2>, Tensor<2>)> = None;

        for t in 0..length {
            let mut gates = xw.clone().narrow(1, t, 1).reshape([batch, 4 * d]);
            if let Some((h, _)) = &state {
                gates = gates + h.clone().matmul(w_hh.clone());
            }
            let i = sigmoid(gates.clone().narrow(1, 0, d));
            let f = sigmoid(gates.clone().narrow(1, d, d));
            let g = tanh(gates.clone().narrow(1, 2 * d, d));
            let o = sigmoid(gates.narrow(1, 3 * d, d));

            let c = match state {
                Some((_, c)) => f * c + i * g,
                None => i * g,
            };
            let h = o * tanh(c.clone());
            if !top {
                outputs.push(h.clone());
            }
            state = Some((h, c));
        }

        let (h, _) = state.expect("sequences have at least one element");
        if top {
            last = Some(h);
        } else {
            x = Tensor::stack(outputs, 1);
            if let Some(dropout) = dropout.as_deref_mut() {
                x = dropout.apply(&net.ctx, x);
            }
        }
    }

    p.linear(last.expect("at least one layer"))
}

/// `nn.GRU` (gates r, z, n, reset applied after the hidden product) then
/// `Linear(d, 1)` on the last hidden state.
///
/// # Shapes
/// - x: `[batch, length, 1]`
/// - output: `[batch, 1]`
pub(super) fn gru(
    net: &Network,
    mut p: Params,
    x: Tensor<3>,
    mut dropout: Option<&mut Dropout>,
) -> Tensor<2> {
    let [batch, length, _] = x.dims();
    let d = net.spec.hidden;
    let mut x = x;
    let mut last = None;

    for layer in 0..net.spec.layers {
        let input = x.dims()[2];
        let w_ih = p.matrix();
        let w_hh = p.matrix().transpose();
        let b_ih = p.vector();
        let b_hh = p.vector();

        let xw = x
            .clone()
            .reshape([batch * length, input])
            .matmul(w_ih.transpose())
            .add(b_ih.unsqueeze())
            .reshape([batch, length, 3 * d]);

        let top = layer + 1 == net.spec.layers;
        let mut outputs = Vec::with_capacity(if top { 0 } else { length });
        let mut h: Option<Tensor<2>> = None;
        for t in 0..length {
            let xt = xw.clone().narrow(1, t, 1).reshape([batch, 3 * d]);
            // With h = 0 the hidden product is the bias alone.
            let hw: Tensor<2> = match &h {
                Some(h) => h.clone().matmul(w_hh.clone()) + b_hh.clone().unsqueeze(),
                None => b_hh.clone().unsqueeze(),
            };
            let rz = sigmoid(xt.clone().narrow(1, 0, 2 * d) + hw.clone().narrow(1, 0, 2 * d));
            let r = rz.clone().narrow(1, 0, d);
            let z = rz.narrow(1, d, d);
            let n = tanh(xt.narrow(1, 2 * d, d) + r * hw.narrow(1, 2 * d, d));

            // h' = (1 - z) * n + z * h = n + z * (h - n)
            let next = match h {
                Some(h) => n.clone() + z * (h - n),
                None => n.clone() - z * n,
            };
            if !top {
                outputs.push(next.clone());
            }
            h = Some(next);
        }

        let h = h.expect("sequences have at least one element");
        if top {
            last = Some(h);
        } else {
            x = Tensor::stack(outputs, 1);
            if let Some(dropout) = dropout.as_deref_mut() {
                x = dropout.apply(&net.ctx, x);
            }
        }
    }

    p.linear(last.expect("at least one layer"))
}
