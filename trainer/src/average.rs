//! `trainer fit --average-from EPOCH`: stochastic weight averaging (Izmailov et al., 2018).
//!
//! From the given epoch on, the weights at the end of every epoch are folded into a running
//! mean. A mean of weights along one training trajectory sits nearer the centre of the basin
//! than any single epoch's weights, which tends to generalise better; it costs no extra training.
//! BatchNorm's running statistics do not average that way (the mean network's activations are
//! not the mean of the epochs' activations), so once training ends they are measured again: one
//! pass over the training pictures (shuffled, with the training augmentation) in training mode,
//! each layer keeping the plain mean of the batches' statistics.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use crate::data::augment::AugmentConfig;
use crate::data::balance::{Sampling, epoch_order};
use crate::data::batches::{LabeledImages, stream};
use crate::model::Classifier;
use leukoscope_model::contract::ModelContract;

/// The running mean of a model's weights over the epochs added so far.
pub struct WeightAverage {
    /// The mean, in inference mode (no autodiff).
    pub model: Classifier,
    /// How many snapshots it averages.
    pub count: usize,
}

impl WeightAverage {
    /// Starts from one snapshot.
    pub fn new(model: &Classifier) -> Self {
        WeightAverage {
            model: model.valid(),
            count: 1,
        }
    }

    /// Resumes an average of `count` snapshots.
    pub fn resume(model: Classifier, count: usize) -> Self {
        WeightAverage {
            model: model.valid(),
            count,
        }
    }

    /// Folds one more snapshot (same architecture) into the mean.
    pub fn add(&mut self, model: &Classifier) {
        let mut collect = Collect(Vec::new());
        model.valid().visit(&mut collect);
        let n = self.count as f64;
        let mut blend = Blend {
            snapshot: collect.0.into_iter(),
            weight: 1.0 / (n + 1.0),
        };
        self.model = self.model.clone().map(&mut blend);
        self.count += 1;
    }
}

/// Every float tensor of a module (parameters and running statistics), flattened, in visit order.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

/// `mean + w·(snapshot − mean)` for every float tensor, matched by visit order (both modules
/// have the same architecture, so the same order).
struct Blend<I: Iterator<Item = Tensor<1>>> {
    snapshot: I,
    weight: f64,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Blend<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let snapshot = self
            .snapshot
            .next()
            .expect("a snapshot of the same architecture has as many tensors");
        let weight = self.weight;
        param.map(|mean| {
            let shape = mean.shape();
            let delta = snapshot.reshape(shape).sub(mean.clone()).mul_scalar(weight);
            mean.add(delta)
        })
    }
}

/// Measures BatchNorm's running statistics of `model` afresh: one pass over `images` in training
/// mode, in a shuffled order, with the training `augment`ation if given (the statistics the
/// weights were trained against), each layer's statistics the plain mean over the batches.
/// Returns the model in inference mode. Models without BatchNorm come back unchanged.
///
/// The order must be shuffled: a layer's variance becomes the mean of the batches' variances,
/// and batches of one class each (the images' stored order) would leave out the variance between
/// classes.
pub fn remeasure_batch_norm(
    mut model: Classifier,
    images: &LabeledImages,
    contract: &ModelContract,
    training_device: &Device,
    batch: usize,
    augment: Option<AugmentConfig>,
    seed: u64,
) -> Classifier {
    if model.batch_norms_mut().is_empty() {
        return model;
    }
    // Training mode (BatchNorm updates its running statistics) without gradient tracking: with
    // it, the autodiff graph of every forward pass is kept for a backward that never comes, and
    // one pass over a few thousand 224 px pictures outgrows 24 GiB.
    let mut net = model.train().set_require_grad(false);
    // An order and augmentation stream of their own, apart from the training epochs'.
    let pass = usize::MAX;
    let classes: Vec<usize> = images.iter().map(|(_, c)| *c).collect();
    let order = epoch_order(&classes, Sampling::Uniform, seed, pass);
    for (t, b) in stream(
        images.clone(),
        order,
        batch,
        contract.clone(),
        augment,
        seed,
        pass,
    )
    .into_iter()
    .enumerate()
    {
        // Momentum 1/(t+1) makes the running value the mean of the t+1 batches seen.
        for bn in net.batch_norms_mut() {
            bn.momentum = 1.0 / (t as f64 + 1.0);
        }
        let (x, _, _) = b.into_tensors(contract, training_device);
        // Only the BatchNorm side effect matters; the logits are dropped.
        let _ = net.forward(x);
    }
    for bn in net.batch_norms_mut() {
        bn.momentum = burn::nn::BatchNormConfig::new(1).momentum;
    }
    net.valid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use std::sync::Arc;

    fn spec() -> ModelSpec {
        ModelSpec::Mobilenetv2 {
            width: 0.35,
            head_units: 8,
            dropout: 0.0,
        }
    }

    /// A small MobileNetV2 for two classes at 32 px on the autodiff device, and its contract.
    fn fixture(seed: u64) -> (Device, Classifier, ModelContract) {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let model = spec().init(2, 32, &device);
        let contract = ModelContract::new(vec!["a".into(), "b".into()], 32);
        (device, model, contract)
    }

    fn grey(v: u8) -> image::RgbImage {
        image::RgbImage::from_pixel(32, 32, image::Rgb([v, v, v]))
    }

    fn tensors(model: &Classifier) -> Vec<Vec<f32>> {
        let mut c = Collect(Vec::new());
        model.visit(&mut c);
        c.0.into_iter()
            .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn the_average_of_three_models_is_their_elementwise_mean() {
        let device = Device::flex().autodiff();
        device.seed(1);
        let models: Vec<Classifier> = (0..3).map(|_| spec().init(2, 32, &device)).collect();
        let mut average = WeightAverage::new(&models[0]);
        average.add(&models[1]);
        average.add(&models[2]);
        assert_eq!(average.count, 3);
        let each: Vec<Vec<Vec<f32>>> = models.iter().map(tensors).collect();
        let mean = tensors(&average.model);
        assert_eq!(mean.len(), each[0].len());
        let mut compared = 0;
        for (k, m) in mean.iter().enumerate() {
            for (i, v) in m.iter().enumerate() {
                let want = (each[0][k][i] + each[1][k][i] + each[2][k][i]) / 3.0;
                assert!((v - want).abs() < 1e-5, "tensor {k}[{i}]: {v} vs {want}");
                compared += 1;
            }
        }
        // Randomly initialised models differ, so the mean is not any one of them.
        assert_ne!(mean, each[0]);
        assert!(compared > 1000);
    }

    #[test]
    fn remeasured_batch_norm_statistics_are_the_mean_over_the_batches() {
        let (device, model, contract) = fixture(2);
        // Two batches of flat grey pictures, one dark and one light: the stem's per-channel
        // running mean must be the mean of the two batches' means, not the last batch's.
        let images: LabeledImages = Arc::new(vec![
            (grey(40), 0),
            (grey(40), 0),
            (grey(200), 1),
            (grey(200), 1),
        ]);
        let stem_mean_of = |imgs: Vec<(image::RgbImage, usize)>| -> Vec<f32> {
            let m = remeasure_batch_norm(
                model.clone(),
                &Arc::new(imgs),
                &contract,
                &device,
                2,
                None,
                0,
            );
            let Classifier::MobileNetV2(net) = m else {
                unreachable!()
            };
            net.stem
                .bn
                .running_mean
                .value()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let dark = stem_mean_of(images[..2].to_vec());
        let light = stem_mean_of(images[2..].to_vec());
        let both = stem_mean_of(images.to_vec());
        for c in 0..both.len() {
            let want = (dark[c] + light[c]) / 2.0;
            assert!(
                (both[c] - want).abs() < 1e-4 * (1.0 + want.abs()),
                "channel {c}: {} vs {want}",
                both[c]
            );
        }
        assert_ne!(dark, light);
    }

    #[test]
    fn remeasured_variance_includes_the_variance_between_classes() {
        let (device, model, contract) = fixture(3);
        // Stored class by class, as the training set is. Flat pictures vary almost only between
        // the classes, so batches of one class each would see nearly none of that variance.
        let images: Vec<(image::RgbImage, usize)> = (0..16)
            .map(|i| if i < 8 { (grey(40), 0) } else { (grey(200), 1) })
            .collect();
        let images: LabeledImages = Arc::new(images);
        let stem_var = |batch: usize| -> f32 {
            let m =
                remeasure_batch_norm(model.clone(), &images, &contract, &device, batch, None, 7);
            let Classifier::MobileNetV2(net) = m else {
                unreachable!()
            };
            let var = net.stem.bn.running_var.value().into_data();
            var.try_to_vec::<f32>().unwrap().iter().sum()
        };
        // One batch of all 16 is the population's variance; batches of 4 must come near it.
        let (population, batched) = (stem_var(16), stem_var(4));
        assert!(population > 0.0);
        assert!(
            batched > 0.5 * population,
            "batches of 4: {batched}, population {population}"
        );
    }
}
