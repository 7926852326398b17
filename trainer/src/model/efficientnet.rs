//! EfficientNet B0 and B3 (Tan & Le, 2019): MBConv blocks (expand 1×1 → depthwise k×k →
//! squeeze-and-excitation → linear project 1×1) with SiLU, BatchNorm and stochastic depth, with
//! the leukoscope head of MobileNetV2: global average pool → dense(`head_units`) ReLU → dropout →
//! dense(classes).
//!
//! The backbone follows torchvision's `efficientnet_b0` / `efficientnet_b3` exactly (stage
//! settings, width and depth scaling with channels rounded to multiples of 8, bias-free
//! convolutions, BatchNorm ε = 1e-5, squeeze channels = a quarter of the block's input, the
//! stochastic-depth probability growing linearly from 0 to 0.2 over the blocks), so its weights
//! load from a torchvision checkpoint (see `crate::pretrained`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::mobilenetv2::make_divisible;

/// MBConv stage settings of B0 (expansion, kernel, first stride, output channels, repeats),
/// as in the paper's Table 1 and torchvision; the stem has 32 channels.
pub(crate) const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

/// Stem output channels of B0.
const STEM: usize = 32;

/// Which EfficientNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EfficientNetVariant {
    /// Width 1.0, depth 1.0, native resolution 224.
    B0,
    /// Width 1.2, depth 1.4, native resolution 300.
    B3,
}

impl EfficientNetVariant {
    /// (width multiplier, depth multiplier).
    pub fn scaling(self) -> (f32, f32) {
        match self {
            EfficientNetVariant::B0 => (1.0, 1.0),
            EfficientNetVariant::B3 => (1.2, 1.4),
        }
    }

    /// The input side the variant was designed for (torchvision's ImageNet weights use it).
    pub fn native_resolution(self) -> usize {
        match self {
            EfficientNetVariant::B0 => 224,
            EfficientNetVariant::B3 => 300,
        }
    }

    /// `b0` or `b3`.
    pub fn name(self) -> &'static str {
        match self {
            EfficientNetVariant::B0 => "b0",
            EfficientNetVariant::B3 => "b3",
        }
    }

    /// Channels after width scaling (torchvision's `adjust_channels`).
    pub(crate) fn channels(self, c: usize) -> usize {
        make_divisible(c as f32 * self.scaling().0, 8)
    }

    /// Repeats after depth scaling (torchvision's `adjust_depth`: rounded up).
    pub(crate) fn repeats(self, n: usize) -> usize {
        (n as f32 * self.scaling().1).ceil() as usize
    }

    /// Blocks in each of the seven stages.
    pub(crate) fn stage_repeats(self) -> Vec<usize> {
        STAGES.iter().map(|s| self.repeats(s.4)).collect()
    }
}

/// EfficientNet settings.
#[derive(Config, Debug)]
pub struct EfficientNetConfig {
    /// Number of output classes.
    pub classes: usize,
    /// B0 or B3.
    pub variant: EfficientNetVariant,
    /// Units of the hidden dense layer in the head.
    #[config(default = 128)]
    pub head_units: usize,
    /// Dropout probability before the output layer.
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Stochastic-depth probability of the last block (torchvision: 0.2); block `i` of `n`
    /// drops its residual branch with probability `p·i/n` in training.
    #[config(default = 0.2)]
    pub stochastic_depth: f64,
}

/// Convolution + BatchNorm, optionally followed by SiLU.
#[derive(Module, Debug)]
pub struct ConvBnSilu {
    pub(crate) conv: Conv2d,
    pub(crate) bn: BatchNorm,
    pub(crate) silu: bool,
}

impl ConvBnSilu {
    fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
        silu: bool,
        device: &Device,
    ) -> Self {
        let p = kernel / 2;
        let conv = Conv2dConfig::new(channels, [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_groups(groups)
            .with_bias(false)
            .init(device);
        let bn = BatchNormConfig::new(channels[1]).init(device);
        ConvBnSilu { conv, bn, silu }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.bn.forward(self.conv.forward(x));
        if self.silu { silu(x) } else { x }
    }
}

/// Squeeze-and-excitation: the channels reweighted by `sigmoid(fc2(silu(fc1(mean over H, W))))`.
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    pool: AdaptiveAvgPool2d,
    /// 1×1 convolution with bias, channels → squeeze.
    pub(crate) fc1: Conv2d,
    /// 1×1 convolution with bias, squeeze → channels.
    pub(crate) fc2: Conv2d,
}

impl SqueezeExcitation {
    fn new(channels: usize, squeeze: usize, device: &Device) -> Self {
        SqueezeExcitation {
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc1: Conv2dConfig::new([channels, squeeze], [1, 1]).init(device),
            fc2: Conv2dConfig::new([squeeze, channels], [1, 1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = self.pool.forward(x.clone());
        let s = sigmoid(self.fc2.forward(silu(self.fc1.forward(s))));
        x * s
    }
}

/// Stochastic depth in torchvision's "row" mode: in training, each sample's residual branch is
/// zeroed with probability `prob` and the kept ones scaled by `1/(1−prob)`; at inference the
/// identity. Like burn's `Dropout`, it acts only on an autodiff device and while its flag is set.
#[derive(Module, Debug)]
pub struct StochasticDepth {
    /// Probability of dropping the branch.
    pub prob: f64,
    /// Whether to behave as during training (cleared by `valid()` / `freeze`).
    pub training: Param<burn::module::Flag>,
}

impl StochasticDepth {
    fn new(prob: f64) -> Self {
        StochasticDepth {
            prob,
            training: Param::from_bool(true),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if !self.training.is_enabled() || !x.device().is_autodiff() || self.prob == 0.0 {
            return x;
        }
        let keep = 1.0 - self.prob;
        let [n, _, _, _] = x.dims();
        let mask = Tensor::<4>::random([n, 1, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * (mask / keep)
    }
}

/// One MBConv block.
#[derive(Module, Debug)]
pub struct MbConv {
    pub(crate) expand: Option<ConvBnSilu>,
    pub(crate) depthwise: ConvBnSilu,
    pub(crate) se: SqueezeExcitation,
    pub(crate) project: ConvBnSilu,
    pub(crate) residual: bool,
    drop: StochasticDepth,
}

impl MbConv {
    fn new(
        input: usize,
        output: usize,
        (expansion, kernel, stride): (usize, usize, usize),
        drop: f64,
        device: &Device,
    ) -> Self {
        let hidden = make_divisible((input * expansion) as f32, 8);
        MbConv {
            expand: (hidden != input)
                .then(|| ConvBnSilu::new([input, hidden], 1, 1, 1, true, device)),
            depthwise: ConvBnSilu::new([hidden, hidden], kernel, stride, hidden, true, device),
            se: SqueezeExcitation::new(hidden, (input / 4).max(1), device),
            project: ConvBnSilu::new([hidden, output], 1, 1, 1, false, device),
            residual: stride == 1 && input == output,
            drop: StochasticDepth::new(drop),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        y = self.depthwise.forward(y);
        y = self.project.forward(self.se.forward(y));
        if self.residual {
            self.drop.forward(y) + x
        } else {
            y
        }
    }
}

/// EfficientNet with the leukoscope head.
#[derive(Module, Debug)]
pub struct EfficientNet {
    pub(crate) stem: ConvBnSilu,
    pub(crate) blocks: Vec<MbConv>,
    pub(crate) last: ConvBnSilu,
    pool: AdaptiveAvgPool2d,
    pub(crate) hidden: Linear,
    relu: Relu,
    dropout: Dropout,
    pub(crate) output: Linear,
}

impl EfficientNetConfig {
    /// Initialises the model with fresh weights.
    pub fn init(&self, device: &Device) -> EfficientNet {
        let v = self.variant;
        let mut input = v.channels(STEM);
        let stem = ConvBnSilu::new([3, input], 3, 2, 1, true, device);
        let total: usize = v.stage_repeats().iter().sum();
        let mut blocks = Vec::with_capacity(total);
        for ((t, k, s, c, _), n) in STAGES.into_iter().zip(v.stage_repeats()) {
            let output = v.channels(c);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let drop = self.stochastic_depth * blocks.len() as f64 / total as f64;
                blocks.push(MbConv::new(input, output, (t, k, stride), drop, device));
                input = output;
            }
        }
        let last = 4 * input;
        EfficientNet {
            stem,
            blocks,
            last: ConvBnSilu::new([input, last], 1, 1, 1, true, device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            hidden: LinearConfig::new(last, self.head_units).init(device),
            relu: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.head_units, self.classes).init(device),
        }
    }
}

impl EfficientNet {
    /// B0 or B3, told by the number of MBConv blocks (16 or 26).
    pub fn variant(&self) -> EfficientNetVariant {
        let b3: usize = EfficientNetVariant::B3.stage_repeats().iter().sum();
        if self.blocks.len() == b3 {
            EfficientNetVariant::B3
        } else {
            EfficientNetVariant::B0
        }
    }

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
    pub(crate) fn conv_bns_mut(&mut self) -> Vec<&mut ConvBnSilu> {
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

    fn head(features: usize, classes: usize) -> usize {
        (features * 128 + 128) + (128 * classes + classes)
    }

    /// BatchNorm channels of a model (burn counts running mean and variance as parameters;
    /// torchvision keeps them as buffers).
    fn batch_norm_channels(m: &EfficientNet) -> usize {
        let mut n = m.stem.bn.gamma.dims()[0] + m.last.bn.gamma.dims()[0];
        for b in &m.blocks {
            n += b.expand.as_ref().map_or(0, |e| e.bn.gamma.dims()[0]);
            n += b.depthwise.bn.gamma.dims()[0] + b.project.bn.gamma.dims()[0];
        }
        n
    }

    #[test]
    fn b0_backbone_has_torchvisions_parameter_count() {
        // torchvision efficientnet_b0 (1000 classes): 5,288,548 parameters, of which the
        // classifier holds 1280·1000 + 1000 = 1,281,000.
        let m = EfficientNetConfig::new(4, EfficientNetVariant::B0).init(&Device::flex());
        assert_eq!(m.blocks.len(), 16);
        let backbone = m.num_params() - head(1280, 4) - 2 * batch_norm_channels(&m);
        assert_eq!(backbone, 5_288_548 - 1_281_000);
    }

    #[test]
    fn b3_backbone_has_torchvisions_parameter_count() {
        // torchvision efficientnet_b3: 12,233,232 parameters; classifier 1536·1000 + 1000.
        let m = EfficientNetConfig::new(4, EfficientNetVariant::B3).init(&Device::flex());
        assert_eq!(m.blocks.len(), 26);
        assert_eq!(m.last.conv.weight.dims()[0], 1536);
        let backbone = m.num_params() - head(1536, 4) - 2 * batch_norm_channels(&m);
        assert_eq!(backbone, 12_233_232 - 1_537_000);
    }

    #[test]
    fn b3_scales_width_and_depth_like_torchvision() {
        let v = EfficientNetVariant::B3;
        assert_eq!(v.channels(32), 40);
        assert_eq!(v.channels(16), 24);
        assert_eq!(v.channels(320), 384);
        assert_eq!(v.stage_repeats(), vec![2, 3, 3, 5, 5, 6, 2]);
        assert_eq!(
            EfficientNetVariant::B0.stage_repeats(),
            vec![1, 2, 2, 3, 3, 4, 1]
        );
    }

    #[test]
    fn stochastic_depth_grows_linearly_and_is_off_at_inference() {
        let device = Device::flex();
        let m = EfficientNetConfig::new(2, EfficientNetVariant::B0).init(&device);
        let probs: Vec<f64> = m.blocks.iter().map(|b| b.drop.prob).collect();
        assert_eq!(probs[0], 0.0);
        assert!((probs[15] - 0.2 * 15.0 / 16.0).abs() < 1e-12);
        // Not an autodiff device: the identity even with the training flag set.
        let x = Tensor::<4>::ones([8, 2, 3, 3], &device);
        let y = StochasticDepth::new(0.5).forward(x.clone());
        assert_eq!(y.into_data(), x.into_data());
    }

    #[test]
    fn stochastic_depth_drops_whole_samples_in_training() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let x = Tensor::<4>::ones([64, 2, 3, 3], &device);
        let y = StochasticDepth::new(0.5).forward(x);
        let v = y.into_data().try_to_vec::<f32>().unwrap();
        let mut dropped = 0;
        for sample in v.chunks(18) {
            // Every value of a sample is 0 (dropped) or 2 (kept, scaled by 1/0.5).
            assert!(sample.iter().all(|&a| a == sample[0]), "{sample:?}");
            assert!(sample[0] == 0.0 || sample[0] == 2.0);
            dropped += (sample[0] == 0.0) as usize;
        }
        assert!((16..=48).contains(&dropped), "{dropped} of 64 dropped");
    }

    #[test]
    fn forward_gives_one_row_of_logits_per_image() {
        let device = Device::flex();
        let m = EfficientNetConfig::new(3, EfficientNetVariant::B0).init(&device);
        let x = Tensor::<4>::zeros([2, 3, 64, 64], &device);
        assert_eq!(m.forward(x).dims(), [2, 3]);
    }
}
