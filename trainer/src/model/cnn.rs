//! The seed paper's compact CNN: three 3×3 convolutions with 32, 64 and 128 filters, each with
//! ReLU and 2×2 max-pooling; flatten; dense 128 ReLU; dropout 0.5; dense(classes).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};

/// Compact CNN settings.
#[derive(Config, Debug)]
pub struct CnnConfig {
    /// Number of output classes.
    pub classes: usize,
    /// Input side in pixels (square input); must be a multiple of 8.
    pub size: usize,
    /// Dropout probability before the output layer.
    #[config(default = 0.5)]
    pub dropout: f64,
}

/// The compact CNN.
#[derive(Module, Debug)]
pub struct Cnn {
    pub(crate) convs: Vec<Conv2d>,
    pool: MaxPool2d,
    relu: Relu,
    pub(crate) hidden: Linear,
    dropout: Dropout,
    pub(crate) output: Linear,
}

/// Filters of the three convolution layers.
const FILTERS: [usize; 3] = [32, 64, 128];

impl CnnConfig {
    /// Initialises the model with fresh weights.
    pub fn init(&self, device: &Device) -> Cnn {
        let mut input = 3;
        let convs = FILTERS
            .iter()
            .map(|&filters| {
                let conv = Conv2dConfig::new([input, filters], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device);
                input = filters;
                conv
            })
            .collect();
        let side = self.size / 8;
        Cnn {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            relu: Relu::new(),
            hidden: LinearConfig::new(FILTERS[2] * side * side, 128).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(128, self.classes).init(device),
        }
    }
}

impl Cnn {
    /// Logits `[batch, classes]` for images `[batch, 3, size, size]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for conv in &self.convs {
            x = self.pool.forward(self.relu.forward(conv.forward(x)));
        }
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.relu.forward(self.hidden.forward(x));
        self.output.forward(self.dropout.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn parameter_count_matches_the_architecture() {
        let device = Device::flex();
        let m = CnnConfig::new(4, 64).init(&device);
        let convs = (3 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 128 + 128);
        let dense = (128 * 8 * 8 * 128 + 128) + (128 * 4 + 4);
        assert_eq!(m.num_params(), convs + dense);
        let x = Tensor::<4>::zeros([2, 3, 64, 64], &device);
        assert_eq!(m.forward(x).dims(), [2, 4]);
    }
}
