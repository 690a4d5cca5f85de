//! Model families and their exact sizes.
//!
//! The parameter count is a closed form of the architecture, so the coordinator
//! can print a sweep's sizes without building a single tensor. The worker's
//! tests check these formulas against the models it actually builds.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The three model families of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Lstm,
    Gru,
    Transformer,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Lstm, Arch::Gru, Arch::Transformer];

    /// The lowercase name used in sweep files and task folders.
    pub fn key(self) -> &'static str {
        match self {
            Arch::Lstm => "lstm",
            Arch::Gru => "gru",
            Arch::Transformer => "transformer",
        }
    }

    /// The name used in tables, as the study prints it.
    pub fn display_name(self) -> &'static str {
        match self {
            Arch::Lstm => "LSTM",
            Arch::Gru => "GRU",
            Arch::Transformer => "Transformer",
        }
    }

    pub fn parse(text: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|arch| arch.key().eq_ignore_ascii_case(text.trim()))
    }

    pub fn is_recurrent(self) -> bool {
        matches!(self, Arch::Lstm | Arch::Gru)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// The shape of one model: family, depth, width and (Transformer only) heads.
///
/// Invariant once validated: `layers >= 1`, `hidden >= 1`, and `heads` is
/// `Some(h)` with `hidden % h == 0` exactly when `arch` is the Transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub layers: usize,
    pub hidden: usize,
    pub heads: Option<usize>,
}

impl ModelSpec {
    /// Number of trainable parameters, equal to PyTorch's
    /// `sum(p.numel() for p in model.parameters())` for the same model.
    pub fn param_count(&self) -> usize {
        let d = self.hidden;
        let k = self.layers;
        match self.arch {
            // One input-to-hidden and one hidden-to-hidden matrix per gate, with a
            // bias on each side (PyTorch's layout), then Linear(d, 1).
            Arch::Lstm => recurrent_count(4, k, d) + d + 1,
            Arch::Gru => recurrent_count(3, k, d) + d + 1,
            // Linear(1, d), K encoder layers of 8d^2 + 11d each (attention in and
            // out projections, a 2d-wide feed-forward block, two LayerNorms), a
            // final LayerNorm(d) and Linear(d, 1).
            Arch::Transformer => 2 * d + k * (8 * d * d + 11 * d) + 2 * d + d + 1,
        }
    }

    /// Short label for logs and folder names, e.g. `transformer-l6-d32-h4`.
    pub fn label(&self) -> String {
        match self.heads {
            Some(h) => format!(
                "{}-l{}-d{}-h{}",
                self.arch.key(),
                self.layers,
                self.hidden,
                h
            ),
            None => format!("{}-l{}-d{}", self.arch.key(), self.layers, self.hidden),
        }
    }
}

/// Parameters of `layers` stacked recurrent layers with `gates` gates each and
/// a scalar input.
fn recurrent_count(gates: usize, layers: usize, d: usize) -> usize {
    (0..layers)
        .map(|layer| {
            let input = if layer == 0 { 1 } else { d };
            gates * d * (input + d) + 2 * gates * d
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Arch, layers: usize, hidden: usize, heads: Option<usize>) -> ModelSpec {
        ModelSpec {
            arch,
            layers,
            hidden,
            heads,
        }
    }

    /// Table I of the study (with its GRU 6 x 32 misprint corrected to 35073)
    /// and the two sequence-learning models.
    #[test]
    fn counts_match_the_reference_table() {
        let recurrent = [
            (
                Arch::Gru,
                [[273, 929, 3393], [2433, 9089, 35073], [4593, 17249, 66753]],
            ),
            (
                Arch::Lstm,
                [
                    [361, 1233, 4513],
                    [3241, 12113, 46753],
                    [6121, 22993, 88993],
                ],
            ),
        ];
        for (arch, rows) in recurrent {
            for (row, layers) in rows.iter().zip([1, 6, 11]) {
                for (&count, hidden) in row.iter().zip([8, 16, 32]) {
                    assert_eq!(spec(arch, layers, hidden, None).param_count(), count);
                }
            }
        }
        let transformer = [
            [641, 2305, 8705],
            [3641, 13425, 51425],
            [6641, 24545, 94145],
        ];
        for (row, layers) in transformer.iter().zip([1, 6, 11]) {
            for (&count, hidden) in row.iter().zip([8, 16, 32]) {
                for heads in [1, 2, 4] {
                    let model = spec(Arch::Transformer, layers, hidden, Some(heads));
                    assert_eq!(model.param_count(), count);
                }
            }
        }
        assert_eq!(spec(Arch::Lstm, 2, 14, None).param_count(), 2647);
        assert_eq!(spec(Arch::Transformer, 2, 12, Some(1)).param_count(), 2629);
    }

    #[test]
    fn arch_names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.key()), Some(arch));
            assert_eq!(Arch::parse(arch.display_name()), Some(arch));
        }
        assert_eq!(Arch::parse("rnn"), None);
    }
}
