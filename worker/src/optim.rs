//! AdamW and global gradient-norm clipping on the host, as PyTorch does them.
//!
//! burn's optimiser clips each parameter tensor's gradient by its own norm;
//! `torch.nn.utils.clip_grad_norm_`, which the study used, scales all
//! gradients by one factor computed from their joint norm. The update itself
//! follows `torch.optim.AdamW` step by step (decoupled weight decay, bias
//! corrections, epsilon added to the corrected root of the second moment).

use minima_shared::task::TrainSpec;

/// State of AdamW over a flat parameter vector.
#[derive(Debug, Clone)]
pub struct AdamW {
    lr: f64,
    weight_decay: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    clip: Option<f64>,
    /// Completed steps.
    step: u32,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl AdamW {
    pub fn new(len: usize, spec: &TrainSpec) -> AdamW {
        AdamW {
            lr: spec.learning_rate,
            weight_decay: spec.weight_decay,
            beta1: spec.betas[0],
            beta2: spec.betas[1],
            epsilon: spec.epsilon,
            clip: spec.clip_grad_norm,
            step: 0,
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// Clips `grad` (in place) and updates `theta` by one step.
    pub fn step(&mut self, theta: &mut [f32], grad: &mut [f64]) {
        if let Some(max_norm) = self.clip {
            clip_grad_norm(grad, max_norm);
        }
        self.step += 1;
        let bias1 = 1.0 - self.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - self.beta2.powi(self.step as i32)).sqrt();
        let step_size = self.lr / bias1;
        let decay = 1.0 - self.lr * self.weight_decay;
        for (((p, &g), m), v) in theta
            .iter_mut()
            .zip(grad.iter())
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            let denom = v.sqrt() / bias2_sqrt + self.epsilon;
            *p = (f64::from(*p) * decay - step_size * *m / denom) as f32;
        }
    }
}

/// Scales `grad` so that its L2 norm is at most `max_norm`, exactly as
/// `torch.nn.utils.clip_grad_norm_` (coefficient `max_norm / (norm + 1e-6)`,
/// capped at 1). Returns the norm before clipping.
pub fn clip_grad_norm(grad: &mut [f64], max_norm: f64) -> f64 {
    let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 {
        grad.iter_mut().for_each(|g| *g *= coefficient);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use minima_shared::TaskKind;

    #[test]
    fn clipping_scales_jointly() {
        let mut g = vec![3.0, 4.0];
        let norm = clip_grad_norm(&mut g, 0.25);
        assert_eq!(norm, 5.0);
        let clipped = (g[0] * g[0] + g[1] * g[1]).sqrt();
        assert!((clipped - 0.25).abs() < 1e-6);
        assert!((g[0] / g[1] - 0.75).abs() < 1e-12, "direction kept");
        let mut small = vec![0.1, 0.1];
        clip_grad_norm(&mut small, 0.25);
        assert_eq!(small, [0.1, 0.1]);
    }

    /// The first AdamW step moves every parameter by lr * sign(g) (up to
    /// epsilon), after decay by (1 - lr * wd): a closed form of the update.
    #[test]
    fn first_step_matches_the_closed_form() {
        let mut spec = TrainSpec::for_task(TaskKind::SequenceClassification);
        spec.clip_grad_norm = None;
        let mut opt = AdamW::new(3, &spec);
        let mut theta = [1.0f32, -2.0, 0.5];
        let mut grad = vec![0.3, -0.02, 5.0];
        opt.step(&mut theta, &mut grad);
        let lr = 1e-3;
        let expected = [
            1.0 * (1.0 - lr * 0.01) - lr,
            -2.0 * (1.0 - lr * 0.01) + lr,
            0.5 * (1.0 - lr * 0.01) - lr,
        ];
        for (got, want) in theta.iter().zip(expected) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
