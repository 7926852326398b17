//! Batches of model inputs, built on a background thread so the next batch is ready when the
//! current training step ends.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;
use leukoscope_model::contract::ModelContract;
use leukoscope_model::preprocess::Preprocessor;

use super::augment::{AugmentConfig, augment};
use super::balance::rng_for;

/// Pictures (framed to the input size) with their class index.
pub type LabeledImages = Arc<Vec<(RgbImage, usize)>>;

/// One batch of preprocessed images (`len × 3 × H × W`, CHW per image) and their classes.
pub struct Batch {
    /// Normalized pixels, image after image.
    pub images: Vec<f32>,
    /// Class index per image.
    pub labels: Vec<i64>,
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The batch as tensors on `device` — images `[n, 3, H, W]` and labels `[n]` — and the
    /// labels as plain values (moved, not copied: this runs once per batch).
    pub fn into_tensors(
        self,
        contract: &ModelContract,
        device: &Device,
    ) -> (Tensor<4>, Tensor<1, Int>, Vec<i64>) {
        let n = self.len();
        let shape = [
            n,
            3,
            contract.input_height as usize,
            contract.input_width as usize,
        ];
        let images = Tensor::from_data(TensorData::new(self.images, shape), device);
        let labels = Tensor::from_data(TensorData::new(self.labels.clone(), [n]), device);
        (images, labels, self.labels)
    }
}

/// Builds one batch: optional augmentation, then `edge`'s normalization.
pub fn build_batch(
    items: impl Iterator<Item = (RgbImage, usize)>,
    pre: &mut Preprocessor,
) -> Batch {
    let len = pre.contract().input_len();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (img, class) in items {
        let start = images.len();
        images.resize(start + len, 0.0);
        pre.run_into(&img, &mut images[start..])
            .expect("cached pictures are framed to the input size");
        labels.push(class as i64);
    }
    Batch { images, labels }
}

/// Streams the batches of one pass over `order` (indices into `set`), built on a background
/// thread. With `augment`, training augmentation is applied, seeded by (`seed`, `epoch`, batch).
pub fn stream(
    set: LabeledImages,
    order: Vec<usize>,
    batch_size: usize,
    contract: ModelContract,
    augmentation: Option<AugmentConfig>,
    seed: u64,
    epoch: usize,
) -> Receiver<Batch> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        let mut pre = Preprocessor::new(contract);
        for (b, chunk) in order.chunks(batch_size.max(1)).enumerate() {
            let mut rng = rng_for(seed, 1000 + b as u64, epoch);
            let items = chunk.iter().map(|&i| {
                let (img, class) = &set[i];
                match &augmentation {
                    Some(cfg) => (augment(img, cfg, &mut rng), *class),
                    None => (img.clone(), *class),
                }
            });
            if tx.send(build_batch(items, &mut pre)).is_err() {
                return; // the consumer stopped early
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_yields_every_item_once_in_order_with_labels() {
        let contract = ModelContract::new(vec!["a".into(), "b".into()], 4);
        let set: LabeledImages = Arc::new(
            (0..5)
                .map(|i| {
                    (
                        RgbImage::from_pixel(4, 4, image::Rgb([i * 50, 0, 0])),
                        (i % 2) as usize,
                    )
                })
                .collect(),
        );
        let batches: Vec<Batch> = stream(set, vec![4, 3, 2, 1, 0], 2, contract.clone(), None, 0, 0)
            .iter()
            .collect();
        assert_eq!(
            batches.iter().map(Batch::len).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        assert_eq!(batches[0].labels, vec![0, 1]);
        assert_eq!(batches[0].images.len(), 2 * contract.input_len());
        let red0 = batches[0].images[0];
        let red_last = batches[2].images[0];
        assert!(red0 > red_last, "image 4 is redder than image 0");
    }

    #[test]
    fn augmented_stream_is_reproducible() {
        let contract = ModelContract::new(vec!["a".into(), "b".into()], 8);
        let set: LabeledImages = Arc::new(
            (0..4)
                .map(|i| {
                    (
                        RgbImage::from_fn(8, 8, |x, y| {
                            image::Rgb([(x * 30) as u8, (y * 30) as u8, i])
                        }),
                        0,
                    )
                })
                .collect(),
        );
        let run = |epoch| -> Vec<f32> {
            stream(
                set.clone(),
                vec![0, 1, 2, 3],
                4,
                contract.clone(),
                Some(AugmentConfig::default()),
                9,
                epoch,
            )
            .iter()
            .flat_map(|b| b.images)
            .collect()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
