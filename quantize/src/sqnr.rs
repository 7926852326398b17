//! The f32 and int8 models side by side on the same pictures: their class probabilities and,
//! per layer, the signal-to-quantization-noise ratio of the int8 model's activations.

use tract_onnx::prelude::*;

use crate::QuantizeError;
use crate::model_file::plan_exposing;
use crate::rewrite::Layer;
use leukoscope_model::onnx::OnnxFile;

/// What running both models on a set of inputs gave.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Class probabilities of the f32 model, one row per input.
    pub f32_probabilities: Vec<Vec<f32>>,
    /// Class probabilities of the int8 model.
    pub int8_probabilities: Vec<Vec<f32>>,
    /// SQNR in dB per layer (same order as the layers given): `10·log10(Σx² / Σ(x − x̂)²)` over
    /// all inputs, x the f32 activation and x̂ the int8 model's (dequantized) one. Errors
    /// accumulate through the network, so this is end-to-end up to that layer. Infinite when the
    /// two agree exactly.
    pub sqnr_db: Vec<f64>,
}

fn values(file: &OnnxFile, v: &TValue) -> Result<Vec<f32>, QuantizeError> {
    let engine = |e: TractError| QuantizeError::Engine {
        path: file.path().to_path_buf(),
        reason: format!("{e:#}"),
    };
    let dt = v.datum_type();
    // Quantized tensors come back as plain integers (u8/i8) or as tract's quantized types; read
    // the integers either way, the layer's parameters dequantize them.
    let t = if dt.is_quantized() {
        let raw = dt.unquantized();
        let mut t = v.clone().into_tensor();
        unsafe { t.set_datum_type(raw) };
        t.cast_to::<f32>().map_err(engine)?.into_owned()
    } else {
        v.cast_to::<f32>().map_err(engine)?.into_owned()
    };
    Ok(t.to_plain_array_view::<f32>()
        .map_err(engine)?
        .iter()
        .copied()
        .collect())
}

fn softmax_if_needed(file: &OnnxFile, mut p: Vec<f32>) -> Vec<f32> {
    if file.graph().output[0].name != "probabilities" {
        let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for x in p.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        p.iter_mut().for_each(|x| *x /= sum);
    }
    p
}

/// Runs both models on `inputs`, collecting probabilities and the per-layer SQNR of `layers`.
pub fn compare(
    f32_model: &OnnxFile,
    int8_model: &OnnxFile,
    layers: &[Layer],
    inputs: &[Vec<f32>],
    progress: &dyn Fn(),
) -> Result<Comparison, QuantizeError> {
    let reference: Vec<String> = layers.iter().map(|l| l.tensor.clone()).collect();
    let observed: Vec<String> = layers
        .iter()
        .map(|l| {
            l.quantized
                .as_ref()
                .map_or(l.tensor.clone(), |q| q.0.clone())
        })
        .collect();
    let pf = plan_exposing(f32_model, &reference)?;
    let pq = plan_exposing(int8_model, &observed)?;
    let (h, w) = f32_model.input_hw();
    let mut signal = vec![0f64; layers.len()];
    let mut noise = vec![0f64; layers.len()];
    let (mut fp, mut qp) = (Vec::new(), Vec::new());
    for x in inputs {
        let run = |file: &OnnxFile, plan: &std::sync::Arc<TypedRunnableModel>| {
            let engine = |e: TractError| QuantizeError::Engine {
                path: file.path().to_path_buf(),
                reason: format!("{e:#}"),
            };
            let t = Tensor::from_shape(&[1, 3, h, w], x).map_err(engine)?;
            plan.run(tvec!(t.into())).map_err(engine)
        };
        let of = run(f32_model, &pf)?;
        let oq = run(int8_model, &pq)?;
        fp.push(softmax_if_needed(f32_model, values(f32_model, &of[0])?));
        qp.push(softmax_if_needed(int8_model, values(int8_model, &oq[0])?));
        for (k, layer) in layers.iter().enumerate() {
            let a = values(f32_model, &of[k + 1])?;
            let mut b = values(int8_model, &oq[k + 1])?;
            if let Some((_, q)) = &layer.quantized {
                b.iter_mut()
                    .for_each(|v| *v = q.dequantize(v.round() as i32));
            }
            if a.len() != b.len() {
                return Err(QuantizeError::Engine {
                    path: int8_model.path().to_path_buf(),
                    reason: format!(
                        "layer {}: {} values in the f32 model, {} in the int8 one",
                        layer.node,
                        a.len(),
                        b.len()
                    ),
                });
            }
            for (x, y) in a.iter().zip(&b) {
                signal[k] += (*x as f64).powi(2);
                noise[k] += (*x as f64 - *y as f64).powi(2);
            }
        }
        progress();
    }
    let sqnr_db = signal
        .iter()
        .zip(&noise)
        .map(|(s, n)| {
            if *n == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (s / n).log10()
            }
        })
        .collect();
    Ok(Comparison {
        f32_probabilities: fp,
        int8_probabilities: qp,
        sqnr_db,
    })
}
