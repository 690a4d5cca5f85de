//! Where each parameter lives in a model's flat parameter vector.
//!
//! The flat vector is the model as the analyses see it: interpolation, surfaces
//! and Hessians all work on `theta` as one vector. Its order and the layout of
//! each tensor are those of the equivalent PyTorch module's `state_dict`
//! (row-major, weights as `[out, in]`), so the vector equals PyTorch's
//! `parameters_to_vector(model.parameters())` and exports need no reshuffling.

use minima_shared::{Arch, ModelSpec};

use crate::rng::Rng;

/// What a parameter tensor is, which decides its initialisation and whether
/// filter normalisation treats its rows as filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A matrix whose rows are output units (filters).
    Weight,
    /// A vector added to outputs.
    Bias,
    /// LayerNorm scale (initialised to 1).
    NormScale,
    /// LayerNorm shift (initialised to 0).
    NormShift,
}

/// One parameter tensor of the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamEntry {
    /// The PyTorch `state_dict` key, e.g. `rnn.weight_ih_l0`.
    pub name: String,
    /// The PyTorch shape, e.g. `[32, 1]`.
    pub shape: Vec<usize>,
    /// Index of the first element in the flat vector.
    pub offset: usize,
    pub kind: ParamKind,
    /// Initialisation: uniform in `(-bound, bound)`; `0` leaves the tensor at
    /// its constant (0 for biases and shifts, 1 for scales).
    pub init_bound: f64,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The ordered parameter tensors of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub entries: Vec<ParamEntry>,
    /// Total number of parameters.
    pub len: usize,
    /// Transformer only: tensors of the encoder layer that PyTorch's
    /// `nn.TransformerEncoder` deep-copies into every layer, so that all layers
    /// start equal. Index ranges into `entries`, one per layer.
    pub cloned_layers: Vec<std::ops::Range<usize>>,
}

impl Layout {
    pub fn for_model(spec: &ModelSpec) -> Layout {
        let mut builder = Builder::default();
        let d = spec.hidden;
        match spec.arch {
            Arch::Lstm | Arch::Gru => {
                let gates = if spec.arch == Arch::Lstm { 4 } else { 3 };
                // PyTorch initialises every recurrent tensor U(-1/sqrt(d), 1/sqrt(d)).
                let bound = 1.0 / (d as f64).sqrt();
                for layer in 0..spec.layers {
                    let input = if layer == 0 { 1 } else { d };
                    let rows = gates * d;
                    builder.push(
                        format!("rnn.weight_ih_l{layer}"),
                        &[rows, input],
                        ParamKind::Weight,
                        bound,
                    );
                    builder.push(
                        format!("rnn.weight_hh_l{layer}"),
                        &[rows, d],
                        ParamKind::Weight,
                        bound,
                    );
                    builder.push(
                        format!("rnn.bias_ih_l{layer}"),
                        &[rows],
                        ParamKind::Bias,
                        bound,
                    );
                    builder.push(
                        format!("rnn.bias_hh_l{layer}"),
                        &[rows],
                        ParamKind::Bias,
                        bound,
                    );
                }
                builder.linear("out", d, 1);
            }
            Arch::Transformer => {
                builder.linear("inp", 1, d);
                for layer in 0..spec.layers {
                    let start = builder.entries.len();
                    let p = format!("enc.layers.{layer}");
                    // Xavier-uniform over the stacked [3d, d] projection, zero bias.
                    let xavier = (6.0 / (d + 3 * d) as f64).sqrt();
                    builder.push(
                        format!("{p}.self_attn.in_proj_weight"),
                        &[3 * d, d],
                        ParamKind::Weight,
                        xavier,
                    );
                    builder.push(
                        format!("{p}.self_attn.in_proj_bias"),
                        &[3 * d],
                        ParamKind::Bias,
                        0.0,
                    );
                    // The output projection keeps Linear's weight init; its bias is zeroed.
                    let bound = 1.0 / (d as f64).sqrt();
                    builder.push(
                        format!("{p}.self_attn.out_proj.weight"),
                        &[d, d],
                        ParamKind::Weight,
                        bound,
                    );
                    builder.push(
                        format!("{p}.self_attn.out_proj.bias"),
                        &[d],
                        ParamKind::Bias,
                        0.0,
                    );
                    builder.linear(&format!("{p}.linear1"), d, 2 * d);
                    builder.linear(&format!("{p}.linear2"), 2 * d, d);
                    builder.norm(&format!("{p}.norm1"), d);
                    builder.norm(&format!("{p}.norm2"), d);
                    builder.cloned.push(start..builder.entries.len());
                }
                builder.norm("enc.norm", d);
                builder.linear("out", d, 1);
            }
        }
        Layout {
            len: builder.offset,
            entries: builder.entries,
            cloned_layers: builder.cloned,
        }
    }

    /// Draws initial parameters as PyTorch's default initialisation does:
    /// the same distributions, from this crate's own generator.
    ///
    /// PyTorch's `nn.TransformerEncoder` builds its layers as deep copies of one
    /// initialised layer, so every encoder layer starts with equal weights; we
    /// reproduce that, since the study's models were built that way.
    pub fn initialise(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::stream(seed, "init");
        let mut theta = vec![0.0f32; self.len];
        for entry in &self.entries {
            let values = &mut theta[entry.range()];
            match entry.kind {
                ParamKind::NormScale => values.fill(1.0),
                ParamKind::NormShift => values.fill(0.0),
                ParamKind::Weight | ParamKind::Bias if entry.init_bound == 0.0 => values.fill(0.0),
                ParamKind::Weight | ParamKind::Bias => {
                    let b = entry.init_bound;
                    values
                        .iter_mut()
                        .for_each(|v| *v = rng.uniform(-b, b) as f32);
                }
            }
        }
        if let Some(first) = self.cloned_layers.first() {
            let source = self.entries[first.start].offset..self.entries[first.end - 1].range().end;
            for layer in &self.cloned_layers[1..] {
                let dest = self.entries[layer.start].offset;
                theta.copy_within(source.clone(), dest);
            }
        }
        theta
    }

    /// `name shape` lines, the form of the PyTorch listing the tests compare to.
    pub fn listing(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| {
                let dims: Vec<String> = e.shape.iter().map(|d| d.to_string()).collect();
                format!("{} [{}]", e.name, dims.join(", "))
            })
            .collect()
    }
}

#[derive(Default)]
struct Builder {
    entries: Vec<ParamEntry>,
    offset: usize,
    cloned: Vec<std::ops::Range<usize>>,
}

impl Builder {
    fn push(&mut self, name: String, shape: &[usize], kind: ParamKind, init_bound: f64) {
        let entry = ParamEntry {
            name,
            shape: shape.to_vec(),
            offset: self.offset,
            kind,
            init_bound,
        };
        self.offset += entry.len();
        self.entries.push(entry);
    }

    /// `nn.Linear(input, output)`: weight and bias U(-1/sqrt(input), 1/sqrt(input)).
    fn linear(&mut self, prefix: &str, input: usize, output: usize) {
        let bound = 1.0 / (input as f64).sqrt();
        self.push(
            format!("{prefix}.weight"),
            &[output, input],
            ParamKind::Weight,
            bound,
        );
        self.push(format!("{prefix}.bias"), &[output], ParamKind::Bias, bound);
    }

    fn norm(&mut self, prefix: &str, d: usize) {
        self.push(format!("{prefix}.weight"), &[d], ParamKind::NormScale, 0.0);
        self.push(format!("{prefix}.bias"), &[d], ParamKind::NormShift, 0.0);
    }
}
