//! MobileNetV2 (Sandler et al., 2018): inverted residuals with linear bottlenecks, ReLU6,
//! BatchNorm and a width multiplier, with the seed paper's head: global average pool → dense
//! (128) ReLU → dropout → dense(classes).
//!
//! The backbone follows torchvision's `mobilenet_v2` exactly (channel rounding to multiples of
//! 8, block settings, bias-free convolutions), so its weights can be loaded from a torchvision
//! checkpoint (see `crate::pretrained`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::tensor::Device;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// Inverted residual settings (expansion t, output channels c, repeats n, first stride s),
/// as in the paper's Table 2 and torchvision.
pub(crate) const BLOCK_SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Rounds `v` to the nearest multiple of `divisor`, never going below 90 % of `v`
/// (torchvision's `_make_divisible`).
pub(crate) fn make_divisible(v: f32, divisor: usize) -> usize {
    let d = divisor as f32;
    let mut new_v = ((v + d / 2.0) / d).floor() * d;
    new_v = new_v.max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// MobileNetV2 settings.
#[derive(Config, Debug)]
pub struct MobileNetV2Config {
    /// Number of output classes.
    pub classes: usize,
    /// Width multiplier applied to every layer's channels.
    #[config(default = 1.0)]
    pub width: f32,
    /// Units of the hidden dense layer in the head.
    #[config(default = 128)]
    pub head_units: usize,
    /// Dropout probability before the output layer.
    #[config(default = 0.2)]
    pub dropout: f64,
}

/// ReLU6 computed as `min(relu(x), 6)`: the same function as burn's `relu6` (`clamp(0, 6)`), but
/// burn-flex runs a generic clamp (two masks and two fills) forward and backward, which cost 2.3×
/// more than this on a MobileNetV2-sized activation (`cargo run --release -p trainer --example
/// relu6_cost`).
fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    relu(x).clamp_max(6.0)
}

/// Convolution + BatchNorm, optionally followed by ReLU6.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub(crate) conv: Conv2d,
    pub(crate) bn: BatchNorm,
    relu6: bool,
}

impl ConvBn {
    fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
        relu6: bool,
        device: &Device,
    ) -> Self {
        let conv = Conv2dConfig::new(channels, [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                kernel / 2,
                kernel / 2,
                kernel / 2,
                kernel / 2,
            ))
            .with_groups(groups)
            .with_bias(false)
            .init(device);
        let bn = BatchNormConfig::new(channels[1]).init(device);
        ConvBn { conv, bn, relu6 }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.bn.forward(self.conv.forward(x));
        if self.relu6 { relu6(x) } else { x }
    }
}

/// One inverted residual block: expand (1×1) → depthwise (3×3) → linear project (1×1).
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub(crate) expand: Option<ConvBn>,
    pub(crate) depthwise: ConvBn,
    pub(crate) project: ConvBn,
    pub(crate) residual: bool,
}

impl InvertedResidual {
    fn new(input: usize, output: usize, stride: usize, expansion: usize, device: &Device) -> Self {
        let hidden = input * expansion;
        InvertedResidual {
            expand: (expansion != 1).then(|| ConvBn::new([input, hidden], 1, 1, 1, true, device)),
            depthwise: ConvBn::new([hidden, hidden], 3, stride, hidden, true, device),
            project: ConvBn::new([hidden, output], 1, 1, 1, false, device),
            residual: stride == 1 && input == output,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        y = self.project.forward(self.depthwise.forward(y));
        if self.residual { y + x } else { y }
    }
}

/// MobileNetV2 with the leukoscope head.
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    pub(crate) stem: ConvBn,
    pub(crate) blocks: Vec<InvertedResidual>,
    pub(crate) last: ConvBn,
    pool: AdaptiveAvgPool2d,
    pub(crate) hidden: Linear,
    relu: Relu,
    dropout: Dropout,
    pub(crate) output: Linear,
}

impl MobileNetV2Config {
    /// Initialises the model with fresh weights.
    pub fn init(&self, device: &Device) -> MobileNetV2 {
        let mut input = make_divisible(32.0 * self.width, 8);
        let last = make_divisible(1280.0 * self.width.max(1.0), 8);
        let stem = ConvBn::new([3, input], 3, 2, 1, true, device);
        let mut blocks = Vec::new();
        for (t, c, n, s) in BLOCK_SETTINGS {
            let output = make_divisible(c as f32 * self.width, 8);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::new(input, output, stride, t, device));
                input = output;
            }
        }
        MobileNetV2 {
            stem,
            blocks,
            last: ConvBn::new([input, last], 1, 1, 1, true, device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            hidden: LinearConfig::new(last, self.head_units).init(device),
            relu: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.head_units, self.classes).init(device),
        }
    }
}

impl MobileNetV2 {
    /// Logits `[batch, classes]` for images `[batch, 3, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(images);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.pool.forward(self.last.forward(x));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.relu.forward(self.hidden.forward(x));
        self.output.forward(self.dropout.forward(x))
    }

    /// Every Conv+BatchNorm layer, in the order export writes them.
    pub(crate) fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut out = vec![&mut self.stem];
        for block in &mut self.blocks {
            if let Some(expand) = &mut block.expand {
                out.push(expand);
            }
            out.push(&mut block.depthwise);
            out.push(&mut block.project);
        }
        out.push(&mut self.last);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn channel_rounding_matches_torchvision() {
        assert_eq!(make_divisible(32.0 * 0.5, 8), 16);
        assert_eq!(make_divisible(16.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(1280.0 * 1.4, 8), 1792);
        assert_eq!(make_divisible(96.0 * 0.75, 8), 72);
    }

    #[test]
    fn full_width_backbone_has_torchvisions_parameter_count() {
        // torchvision mobilenet_v2 (1000 classes) has 3,504,872 parameters, of which the
        // classifier holds 1280*1000 + 1000 = 1,281,000: the backbone has 2,223,872. burn also
        // counts BatchNorm's running mean and variance (torchvision's buffers): 2 × 17,056
        // BatchNorm channels = 34,112 more.
        let device = Device::flex();
        let m = MobileNetV2Config::new(4).init(&device);
        let head = (1280 * 128 + 128) + (128 * 4 + 4);
        assert_eq!(m.num_params() - head, 2_223_872 + 34_112);
    }

    #[test]
    fn relu6_clips_at_zero_and_six() {
        let device = Device::flex();
        let x = Tensor::<1>::from_floats([-3.0, 0.0, 2.5, 6.0, 9.0], &device);
        let y = relu6(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(y, vec![0.0, 0.0, 2.5, 6.0, 6.0]);
    }

    #[test]
    fn forward_gives_one_row_of_logits_per_image() {
        let device = Device::flex();
        let m = MobileNetV2Config::new(3).with_width(0.35).init(&device);
        let x = Tensor::<4>::zeros([2, 3, 64, 64], &device);
        assert_eq!(m.forward(x).dims(), [2, 3]);
    }
}
