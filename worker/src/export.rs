//! Trained weights as safetensors that PyTorch loads with `load_state_dict`.
//!
//! Tensor names and shapes are those of the equivalent PyTorch module's
//! `state_dict` (see `python/minima_torch.py` in the repository), including
//! the Transformer's positional-encoding buffer `pos.pe`.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::DType;
use minima_shared::{Arch, ModelSpec};
use safetensors::tensor::{Dtype, TensorView};

use crate::model::{Ctx, Layout};

/// Serialises `theta` (a flat vector of `spec`'s layout) with `metadata`.
pub fn safetensors_bytes(
    spec: &ModelSpec,
    length: usize,
    theta: &[f32],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let layout = Layout::for_model(spec);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = layout
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone(), le_bytes(&theta[e.range()])))
        .collect();
    if spec.arch == Arch::Transformer {
        let pe = crate::model::positional_encoding(&Ctx::flex(DType::F32), length, spec.hidden);
        let values: Vec<f32> = pe.into_data().iter::<f32>().collect();
        tensors.push((
            "pos.pe".into(),
            vec![length, spec.hidden],
            le_bytes(&values),
        ));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape fits data");
            (name.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize(views, Some(metadata))
}

/// Writes `theta` as a safetensors file, atomically.
pub fn write_safetensors(
    path: &Path,
    spec: &ModelSpec,
    length: usize,
    theta: &[f32],
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes = safetensors_bytes(spec, length, theta, metadata)?;
    crate::output::write_atomic(path, &bytes)?;
    Ok(())
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
