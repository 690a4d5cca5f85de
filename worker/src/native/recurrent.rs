//! Stacked LSTM and GRU layers with their backward passes.
//!
//! Every time step of a layer is stored feature-major, `[width, batch]`: a
//! step's gates are `W x^T + U h^T` (weights on the left), and each gate is
//! one contiguous block of `d * batch` values, so the element-wise loops run
//! over long spans of full vectors whatever the hidden size. Buffers are
//! `[length][width, batch]` per layer.

use super::kernels::{
    Mat, Real, add_outer, add_row_dots, add_row_sums, gemm, gru_cell, gru_cell_backward, lstm_cell,
    lstm_cell_backward,
};
use super::{Params, Shape};

/// The gate count of each family: the number of `d`-wide blocks a step's
/// projections produce.
const LSTM_GATES: usize = 4;
const GRU_GATES: usize = 3;

/// Entries of one layer in the flat vector: `weight_ih`, `weight_hh`,
/// `bias_ih`, `bias_hh`.
pub(super) const LAYER_ENTRIES: usize = 4;

/// What a forward pass of a recurrent stack keeps for its backward pass,
/// and the scratch of both passes; reused from call to call.
#[derive(Default)]
pub(super) struct Recurrent<T> {
    /// The inputs, `[length, batch]`.
    xt: Vec<T>,
    /// Per layer, the activated gates (LSTM: i f g o; GRU: r z n),
    /// `[length][gates * d, batch]`.
    gates: Vec<Vec<T>>,
    /// Per layer, LSTM: the cells; GRU: the n block of the hidden
    /// projection with its bias. `[length][d, batch]`.
    cells: Vec<Vec<T>>,
    /// Per layer, LSTM: `tanh` of the cells; GRU: unused.
    tanh_cells: Vec<Vec<T>>,
    /// Per layer, the outputs `[length][d, batch]`, the next layer's inputs.
    hidden: Vec<Vec<T>>,
    /// `[d, batch]` zeros: the state before the first step.
    zeros: Vec<T>,
    /// GRU: a step's hidden projection; backward: its gradient.
    step_gates: Vec<T>,
    /// Backward: a step's input-side gate gradients.
    d_gates: Vec<T>,
    /// Backward: gradients of this layer's outputs and of its inputs.
    d_hidden: Vec<T>,
    d_below: Vec<T>,
    /// Backward: the LSTM cell's gradient or the GRU's direct `dh_prev`.
    d_state: Vec<T>,
    /// LSTM: `bias_ih + bias_hh` of the current layer.
    bias: Vec<T>,
}

fn resize<T: Real>(buffers: &mut Vec<Vec<T>>, count: usize, len: usize) {
    buffers.resize_with(count, Vec::new);
    for b in buffers.iter_mut() {
        b.resize(len, T::ZERO);
    }
}

/// Step `t` of a `[length][width, batch]` buffer.
fn at<T>(buffer: &[T], t: usize, size: usize) -> &[T] {
    &buffer[t * size..(t + 1) * size]
}

fn at_mut<T>(buffer: &mut [T], t: usize, size: usize) -> &mut [T] {
    &mut buffer[t * size..(t + 1) * size]
}

impl<T: Real> Recurrent<T> {
    fn prepare(&mut self, s: &Shape, x: &[T], gates: usize) {
        let steps = s.length * s.batch;
        resize(&mut self.gates, s.layers, steps * gates * s.d);
        resize(&mut self.cells, s.layers, steps * s.d);
        resize(&mut self.tanh_cells, s.layers, steps * s.d);
        resize(&mut self.hidden, s.layers, steps * s.d);
        self.zeros.clear();
        self.zeros.resize(s.batch * s.d, T::ZERO);
        // [batch, length] -> [length, batch].
        self.xt.resize(steps, T::ZERO);
        for (b, row) in x.chunks_exact(s.length).enumerate() {
            for (t, &v) in row.iter().enumerate() {
                self.xt[t * s.batch + b] = v;
            }
        }
    }

    /// Writes into `out` (`[width, batch]`) step `t` of a layer's input
    /// projection `W_ih x_t^T`, without bias: an outer product for layer 0,
    /// whose inputs have one feature.
    fn project_input(&self, s: &Shape, layer: usize, t: usize, w_ih: &[T], out: &mut [T]) {
        let width = w_ih.len() / if layer == 0 { 1 } else { s.d };
        if layer == 0 {
            out.fill(T::ZERO);
            add_outer(out, w_ih, at(&self.xt, t, s.batch));
        } else {
            let input = at(&self.hidden[layer - 1], t, s.d * s.batch);
            let (w, x) = (Mat::new(w_ih, s.d), Mat::new(input, s.batch));
            gemm(width, s.batch, s.d, out, s.batch, w, x, false);
        }
    }

    /// `z = w h + b` of the top layer's last step.
    fn output(&self, s: &Shape, p: &Params<T>, out: &mut [T]) {
        let (w, b) = (p.get(s.out_weight()), p.get(s.out_weight() + 1));
        let last = at(&self.hidden[s.layers - 1], s.length - 1, s.d * s.batch);
        gemm(
            1,
            s.batch,
            s.d,
            out,
            s.batch,
            Mat::new(w, s.d),
            Mat::new(last, s.batch),
            false,
        );
        out.iter_mut().for_each(|z| *z += b[0]);
    }

    /// The output layer's gradient, and into `d_hidden` the gradient of the
    /// top layer's outputs (non-zero at the last step only).
    fn output_backward(&mut self, s: &Shape, p: &Params<T>, dout: &[T], grad: &mut [T]) {
        let step = s.d * s.batch;
        let wi = s.out_weight();
        let last = at(&self.hidden[s.layers - 1], s.length - 1, step);
        let gw = &mut grad[p.range(wi)];
        gemm(
            1,
            s.d,
            s.batch,
            gw,
            s.d,
            Mat::new(dout, s.batch),
            Mat::t(last, s.batch),
            true,
        );
        grad[p.range(wi + 1)][0] += dout.iter().fold(T::ZERO, |a, &v| a + v);

        self.d_hidden.clear();
        self.d_hidden.resize(s.length * step, T::ZERO);
        add_outer(
            at_mut(&mut self.d_hidden, s.length - 1, step),
            p.get(wi),
            dout,
        );
    }

    /// The input side of step `t` backwards, from its gate gradients `dg`
    /// (`[width, batch]`): adds `W_ih`'s gradient and, above layer 0,
    /// writes step `t` of the gradient of the layer's inputs into `d_below`.
    fn input_backward(
        &mut self,
        s: &Shape,
        layer: usize,
        t: usize,
        dg: &[T],
        w_ih: &[T],
        gw_ih: &mut [T],
    ) {
        let width = dg.len() / s.batch;
        if layer == 0 {
            add_row_dots(gw_ih, dg, at(&self.xt, t, s.batch));
            return;
        }
        let step = s.d * s.batch;
        let input = at(&self.hidden[layer - 1], t, step);
        let dgm = Mat::new(dg, s.batch);
        gemm(
            width,
            s.d,
            s.batch,
            gw_ih,
            s.d,
            dgm,
            Mat::t(input, s.batch),
            true,
        );
        let below = at_mut(&mut self.d_below, t, step);
        gemm(
            s.d,
            s.batch,
            width,
            below,
            s.batch,
            Mat::t(w_ih, s.d),
            dgm,
            false,
        );
    }

    /// `nn.LSTM` then `Linear(d, 1)` on the last step's hidden state.
    pub(super) fn lstm_forward(&mut self, s: &Shape, p: &Params<T>, x: &[T], out: &mut [T]) {
        self.prepare(s, x, LSTM_GATES);
        let (d, batch) = (s.d, s.batch);
        let (step, gate_step) = (d * batch, LSTM_GATES * d * batch);
        for layer in 0..s.layers {
            let [w_ih, w_hh, b_ih, b_hh] = p.four(LAYER_ENTRIES * layer);
            self.bias.clear();
            self.bias
                .extend(b_ih.iter().zip(b_hh).map(|(&a, &b)| a + b));
            let mut gates = std::mem::take(&mut self.gates[layer]);
            for t in 0..s.length {
                let g = at_mut(&mut gates, t, gate_step);
                self.project_input(s, layer, t, w_ih, g);
                let (h_done, h_now) = self.hidden[layer].split_at_mut(t * step);
                let (c_done, c_now) = self.cells[layer].split_at_mut(t * step);
                let c_prev = if t == 0 {
                    &self.zeros[..]
                } else {
                    let h_prev = Mat::new(&h_done[(t - 1) * step..], batch);
                    gemm(4 * d, batch, d, g, batch, Mat::new(w_hh, d), h_prev, true);
                    &c_done[(t - 1) * step..]
                };
                let tc = at_mut(&mut self.tanh_cells[layer], t, step);
                lstm_cell(
                    g,
                    &self.bias,
                    c_prev,
                    &mut c_now[..step],
                    tc,
                    &mut h_now[..step],
                );
            }
            self.gates[layer] = gates;
        }
        self.output(s, p, out);
    }

    /// Adds to `grad` the gradient of `sum_b dout[b] z[b]` for the inputs of
    /// the last [`Self::lstm_forward`].
    pub(super) fn lstm_backward(&mut self, s: &Shape, p: &Params<T>, dout: &[T], grad: &mut [T]) {
        let (d, batch) = (s.d, s.batch);
        let (step, gate_step) = (d * batch, LSTM_GATES * d * batch);
        self.output_backward(s, p, dout, grad);
        self.d_gates.resize(gate_step, T::ZERO);
        self.d_below.resize(s.length * step, T::ZERO);
        for layer in (0..s.layers).rev() {
            let base = LAYER_ENTRIES * layer;
            let [w_ih, w_hh, _, _] = p.four(base);
            self.d_state.clear();
            self.d_state.resize(step, T::ZERO);
            let mut dg = std::mem::take(&mut self.d_gates);
            for t in (0..s.length).rev() {
                let c_prev = if t == 0 {
                    &self.zeros[..]
                } else {
                    at(&self.cells[layer], t - 1, step)
                };
                lstm_cell_backward(
                    at(&self.gates[layer], t, gate_step),
                    c_prev,
                    at(&self.tanh_cells[layer], t, step),
                    at(&self.d_hidden, t, step),
                    &mut self.d_state,
                    &mut dg,
                );
                if t > 0 {
                    let dgm = Mat::new(&dg[..], batch);
                    let dh_prev = at_mut(&mut self.d_hidden, t - 1, step);
                    gemm(d, batch, 4 * d, dh_prev, batch, Mat::t(w_hh, d), dgm, true);
                    let h_prev = Mat::t(at(&self.hidden[layer], t - 1, step), batch);
                    gemm(
                        4 * d,
                        d,
                        batch,
                        &mut grad[p.range(base + 1)],
                        d,
                        dgm,
                        h_prev,
                        true,
                    );
                }
                add_row_sums(&mut grad[p.range(base + 2)], &dg);
                add_row_sums(&mut grad[p.range(base + 3)], &dg);
                self.input_backward(s, layer, t, &dg, w_ih, &mut grad[p.range(base)]);
            }
            self.d_gates = dg;
            std::mem::swap(&mut self.d_hidden, &mut self.d_below);
        }
    }

    /// `nn.GRU` (reset gate applied after the hidden product) then
    /// `Linear(d, 1)` on the last step's hidden state.
    pub(super) fn gru_forward(&mut self, s: &Shape, p: &Params<T>, x: &[T], out: &mut [T]) {
        self.prepare(s, x, GRU_GATES);
        let (d, batch) = (s.d, s.batch);
        let (step, gate_step) = (d * batch, GRU_GATES * d * batch);
        self.step_gates.resize(gate_step, T::ZERO);
        for layer in 0..s.layers {
            let [w_ih, w_hh, b_ih, b_hh] = p.four(LAYER_ENTRIES * layer);
            let mut gates = std::mem::take(&mut self.gates[layer]);
            for t in 0..s.length {
                let g = at_mut(&mut gates, t, gate_step);
                self.project_input(s, layer, t, w_ih, g);
                let hw = &mut self.step_gates;
                let (h_done, h_now) = self.hidden[layer].split_at_mut(t * step);
                let h_prev = if t == 0 {
                    hw.fill(T::ZERO);
                    &self.zeros[..]
                } else {
                    let h_prev = &h_done[(t - 1) * step..];
                    let (w, h) = (Mat::new(w_hh, d), Mat::new(h_prev, batch));
                    gemm(3 * d, batch, d, hw, batch, w, h, false);
                    h_prev
                };
                let hn = at_mut(&mut self.cells[layer], t, step);
                gru_cell(g, hw, b_ih, b_hh, h_prev, hn, &mut h_now[..step]);
            }
            self.gates[layer] = gates;
        }
        self.output(s, p, out);
    }

    /// Adds to `grad` the gradient of `sum_b dout[b] z[b]` for the inputs of
    /// the last [`Self::gru_forward`].
    pub(super) fn gru_backward(&mut self, s: &Shape, p: &Params<T>, dout: &[T], grad: &mut [T]) {
        let (d, batch) = (s.d, s.batch);
        let (step, gate_step) = (d * batch, GRU_GATES * d * batch);
        self.output_backward(s, p, dout, grad);
        self.d_gates.resize(gate_step, T::ZERO);
        self.step_gates.resize(gate_step, T::ZERO);
        self.d_state.resize(step, T::ZERO);
        self.d_below.resize(s.length * step, T::ZERO);
        for layer in (0..s.layers).rev() {
            let base = LAYER_ENTRIES * layer;
            let [w_ih, w_hh, _, _] = p.four(base);
            let (mut dg, mut dhw) = (
                std::mem::take(&mut self.d_gates),
                std::mem::take(&mut self.step_gates),
            );
            for t in (0..s.length).rev() {
                let h_prev = if t == 0 {
                    &self.zeros[..]
                } else {
                    at(&self.hidden[layer], t - 1, step)
                };
                gru_cell_backward(
                    at(&self.gates[layer], t, gate_step),
                    at(&self.cells[layer], t, step),
                    h_prev,
                    at(&self.d_hidden, t, step),
                    &mut dg,
                    &mut dhw,
                    &mut self.d_state,
                );
                let dhwm = Mat::new(&dhw[..], batch);
                if t > 0 {
                    let dh_prev = at_mut(&mut self.d_hidden, t - 1, step);
                    dh_prev
                        .iter_mut()
                        .zip(&self.d_state)
                        .for_each(|(g, &v)| *g += v);
                    gemm(d, batch, 3 * d, dh_prev, batch, Mat::t(w_hh, d), dhwm, true);
                    let h_prev = Mat::t(h_prev, batch);
                    gemm(
                        3 * d,
                        d,
                        batch,
                        &mut grad[p.range(base + 1)],
                        d,
                        dhwm,
                        h_prev,
                        true,
                    );
                }
                add_row_sums(&mut grad[p.range(base + 2)], &dg);
                add_row_sums(&mut grad[p.range(base + 3)], &dhw);
                self.input_backward(s, layer, t, &dg, w_ih, &mut grad[p.range(base)]);
            }
            (self.d_gates, self.step_gates) = (dg, dhw);
            std::mem::swap(&mut self.d_hidden, &mut self.d_below);
        }
    }
}
