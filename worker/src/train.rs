//! Training with the study's protocol: shuffled mini-batches, dropout,
//! AdamW with global gradient-norm clipping, f32 like PyTorch. Steps run on
//! burn's autodiff; the validation loss of each epoch on the native models.

use minima_shared::{EpochLosses, TaskSpec};
use tracing::{debug, info};

use crate::data::Dataset;
use crate::device::TrainDevice;
use crate::loss::batch_loss;
use crate::model::{Ctx, Dropout, Layout, Network};
use crate::native::Evaluator;
use crate::optim::AdamW;
use crate::rng::Rng;

/// Initial and final parameters of a run and its per-epoch losses.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub theta_initial: Vec<f32>,
    pub theta_final: Vec<f32>,
    pub epochs: Vec<EpochLosses>,
}

/// Trains the task's model on `data.train` on `device` and reports each
/// epoch to `on_epoch` as it ends.
pub fn train(
    spec: &TaskSpec,
    data: &Dataset,
    device: TrainDevice,
    on_epoch: &mut dyn FnMut(&EpochLosses),
) -> TrainOutcome {
    let layout = Layout::for_model(&spec.model);
    let theta_initial = layout.initialise(spec.seed);
    let mut theta = theta_initial.clone();
    let mut optimizer = AdamW::new(layout.len, &spec.train);
    let mut shuffle = Rng::stream(spec.seed, "shuffle");
    let mut dropout_rng = Rng::stream(spec.seed, "dropout");
    let train_ctx = device.training_context();
    let mut native = Evaluator::<f32>::new(&spec.model, spec.task);
    let n = data.train.len();

    let mut epochs = Vec::with_capacity(spec.train.epochs);
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 1..=spec.train.epochs {
        debug!(epoch, "epoch started");
        shuffle.shuffle(&mut order);
        let mut loss_sum = 0.0;
        for batch in order.chunks(spec.train.batch_size) {
            let (inputs, targets) = data.train.gather(batch);
            let loss = train_step(
                spec,
                &train_ctx,
                &mut theta,
                &mut optimizer,
                (&inputs, &targets),
                &mut dropout_rng,
            );
            loss_sum += loss * batch.len() as f64;
        }

        let losses = EpochLosses {
            epoch,
            train_loss: loss_sum / n as f64,
            validation_loss: native.evaluate(&theta, &data.validation).loss,
        };
        info!(
            epoch,
            train_loss = losses.train_loss,
            validation_loss = losses.validation_loss,
            "epoch finished"
        );
        on_epoch(&losses);
        epochs.push(losses);
    }

    TrainOutcome {
        theta_initial,
        theta_final: theta,
        epochs,
    }
}

/// One optimisation step on a batch (`inputs` row-major `[batch, length]`,
/// one target per sequence); returns the batch's loss before the update.
pub fn train_step(
    spec: &TaskSpec,
    ctx: &Ctx,
    theta: &mut [f32],
    optimizer: &mut AdamW,
    (inputs, targets): (&[f32], &[f32]),
    dropout_rng: &mut Rng,
) -> f64 {
    let b = targets.len();
    let length = inputs.len() / b;
    let net = Network::new(&spec.model, ctx, theta, true);
    let mut dropout = Dropout {
        p: spec.train.dropout,
        rng: dropout_rng,
    };
    let x = ctx.tensor(inputs.to_vec(), [b, length, 1]);
    let y = ctx.tensor(targets.to_vec(), [b, 1]);
    let loss = batch_loss(spec.task, net.forward(x, Some(&mut dropout)), y);
    let grads = loss.backward();
    let value = loss.into_scalar::<f64>();
    let mut grad = net.flat_gradient(&grads);
    optimizer.step(theta, &mut grad);
    value
}
