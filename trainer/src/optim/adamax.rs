//! Adamax (Kingma & Ba, 2015, section 7.1): Adam with the infinity norm in place of the second
//! moment. Keras's defaults: β₁ = 0.9, β₂ = 0.999, ε = 1e-7.

use burn::config::Config;
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};
use burn_pack::Scalar;

/// Adamax settings.
#[derive(Config, Debug)]
pub struct AdamaxConfig {
    /// Decay of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the infinity norm.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to the norm to avoid dividing by zero.
    #[config(default = 1e-7)]
    pub epsilon: f32,
    /// L2 penalty added to the gradient (0 = none).
    #[config(default = 0.0)]
    pub weight_decay: f32,
}

impl AdamaxConfig {
    /// A module optimizer running Adamax on every parameter.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(Adamax {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        })
    }
}

/// The Adamax optimizer.
#[derive(Clone, Debug)]
pub struct Adamax {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

/// Per-parameter Adamax state.
#[derive(Clone)]
pub struct AdamaxState<const D: usize> {
    time: usize,
    moment: Tensor<D>,
    norm: Tensor<D>,
}

impl<const D: usize> RecordState for AdamaxState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_scalar(prefix, "time", Scalar::from(self.time));
        out.push_tensor(prefix, "moment", self.moment.to_data());
        out.push_tensor(prefix, "norm", self.norm.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let time = usize::try_from(src.take_scalar(prefix, "time")?).ok()?;
        let moment = Tensor::from_data(src.take_tensor(prefix, "moment")?, device);
        let norm = Tensor::from_data(src.take_tensor(prefix, "norm")?, device);
        Some(AdamaxState { time, moment, norm })
    }
}

impl Optimizer for Adamax {
    type State<const D: usize> = AdamaxState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        mut grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if self.weight_decay > 0.0 {
            grad = grad + tensor.clone().mul_scalar(self.weight_decay);
        }
        let state = match state {
            Some(s) => AdamaxState {
                time: s.time + 1,
                moment: s.moment.mul_scalar(self.beta_1)
                    + grad.clone().mul_scalar(1.0 - self.beta_1),
                norm: s
                    .norm
                    .mul_scalar(self.beta_2)
                    .max_pair(grad.abs().add_scalar(self.epsilon)),
            },
            None => AdamaxState {
                time: 1,
                moment: grad.clone().mul_scalar(1.0 - self.beta_1),
                norm: grad.abs().add_scalar(self.epsilon),
            },
        };
        let correction = 1.0 - (self.beta_1 as f64).powi(state.time as i32);
        let delta = state
            .moment
            .clone()
            .div(state.norm.clone())
            .mul_scalar(lr / correction);
        (tensor - delta, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamaxState {
            time: state.time,
            moment: state.moment.to_device(device),
            norm: state.norm.to_device(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, Param};
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::TensorData;

    fn linear(device: &Device) -> Linear {
        let mut l = LinearConfig::new(2, 1).init(device);
        l.weight = Param::from_tensor(Tensor::from_data(
            TensorData::from([[0.5f32], [-0.25]]),
            device,
        ));
        l.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::from([0.1f32]),
            device,
        )));
        l
    }

    fn grads(l: &Linear, device: &Device) -> GradientsParams {
        let x = Tensor::<2>::from_data(TensorData::from([[1.0f32, 2.0]]), device);
        GradientsParams::from_grads(l.forward(x).sum().backward(), l)
    }

    #[test]
    fn first_steps_match_the_closed_form() {
        // d(sum(xW + b))/dW = x^T = [1, 2], d/db = 1, constant over steps. With a constant
        // gradient g, m_t = (1 - b1^t) g and u_t = |g| + eps, so every step moves each weight by
        // lr * sign(g): after two steps of lr 0.01, W = [0.5 - 0.02, -0.25 - 0.02].
        let device = Device::flex().autodiff();
        let mut l = linear(&device);
        let mut optim = AdamaxConfig::new().init();
        for _ in 0..2 {
            let g = grads(&l, &device);
            l = optim.step(0.01, l, g);
        }
        let w = l.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(
            (w[0] - 0.48).abs() < 1e-5 && (w[1] + 0.27).abs() < 1e-5,
            "{w:?}"
        );
        let b = l
            .bias
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!((b[0] - 0.08).abs() < 1e-5, "{b:?}");
    }

    #[test]
    fn state_survives_a_save_and_load() {
        let device = Device::flex().autodiff();
        let mut l = linear(&device);
        let mut optim = AdamaxConfig::new().init();
        for _ in 0..3 {
            let g = grads(&l, &device);
            l = optim.step(0.01, l, g);
        }
        let bytes = optim.into_bytes().unwrap();
        let mut restored = AdamaxConfig::new().init().from_bytes(bytes).unwrap();
        let expected = optim.step(0.01, l.clone(), grads(&l, &device));
        let actual = restored.step(0.01, l.clone(), grads(&l, &device));
        assert_eq!(
            expected
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
            actual.weight.val().into_data().try_to_vec::<f32>().unwrap()
        );
        assert!(l.num_params() == 3);
    }
}
