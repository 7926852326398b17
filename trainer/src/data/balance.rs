//! Class imbalance: loss weights, balanced sampling, and SMOTE-style synthetic images.

use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// How training images are drawn each epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Every training image once per epoch, shuffled.
    Uniform,
    /// Images drawn with replacement, each class equally likely (epoch size unchanged).
    Balanced,
    /// Minority classes topped up to the largest class with synthetic images interpolated
    /// between same-class neighbours (SMOTE on pixels, as the seed paper did), then uniform.
    Smote,
}

/// Inverse-frequency class weights `n / (k · n_c)`: 1 for every class when balanced.
pub fn class_weights(counts: &[usize]) -> Vec<f32> {
    let n: usize = counts.iter().sum();
    let k = counts.len();
    counts
        .iter()
        .map(|&c| n as f32 / (k as f32 * c.max(1) as f32))
        .collect()
}

/// A random generator for one purpose, one epoch and one run seed, so that resuming a run at
/// epoch `e` replays exactly what an uninterrupted run would have done.
pub fn rng_for(seed: u64, purpose: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ purpose.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (epoch as u64).wrapping_mul(0x1656_67B1_9E37_79F9),
    )
}

/// The order in which training images (by position in `classes`) are visited in `epoch`.
pub fn epoch_order(classes: &[usize], sampling: Sampling, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = rng_for(seed, 1, epoch);
    match sampling {
        Sampling::Uniform | Sampling::Smote => {
            let mut order: Vec<usize> = (0..classes.len()).collect();
            order.shuffle(&mut rng);
            order
        }
        Sampling::Balanced => {
            let k = classes.iter().max().map_or(0, |m| m + 1);
            let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
            for (i, &c) in classes.iter().enumerate() {
                by_class[c].push(i);
            }
            by_class.retain(|v| !v.is_empty());
            (0..classes.len())
                .map(|_| {
                    let members = &by_class[rng.random_range(0..by_class.len())];
                    members[rng.random_range(0..members.len())]
                })
                .collect()
        }
    }
}

/// Small grey-free feature vector used to find neighbours: the picture at 16 × 16.
fn features(img: &RgbImage) -> Vec<f32> {
    image::imageops::thumbnail(img, 16, 16)
        .into_raw()
        .into_iter()
        .map(f32::from)
        .collect()
}

/// SMOTE on pixels: for every class smaller than the largest, synthetic images interpolated
/// between an image and one of its `k` nearest same-class neighbours, until the class matches
/// the largest. Returns (image, class) pairs; deterministic for a seed.
pub fn smote(
    images: &[&RgbImage],
    classes: &[usize],
    k: usize,
    seed: u64,
) -> Vec<(RgbImage, usize)> {
    let n_classes = classes.iter().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &c) in classes.iter().enumerate() {
        by_class[c].push(i);
    }
    let target = by_class.iter().map(Vec::len).max().unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5307E);
    let mut out = Vec::new();
    for (class, members) in by_class.iter().enumerate() {
        if members.len() < 2 || members.len() >= target {
            continue;
        }
        let feats: Vec<Vec<f32>> = members.iter().map(|&i| features(images[i])).collect();
        let neighbours: Vec<Vec<usize>> = (0..members.len())
            .map(|a| {
                let mut d: Vec<(f32, usize)> = (0..members.len())
                    .filter(|&b| b != a)
                    .map(|b| {
                        let dist = feats[a]
                            .iter()
                            .zip(&feats[b])
                            .map(|(x, y)| (x - y) * (x - y))
                            .sum::<f32>();
                        (dist, b)
                    })
                    .collect();
                d.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
                d.into_iter().take(k.max(1)).map(|(_, b)| b).collect()
            })
            .collect();
        for _ in members.len()..target {
            let a = rng.random_range(0..members.len());
            let b = neighbours[a][rng.random_range(0..neighbours[a].len())];
            let lambda: f32 = rng.random();
            let (ia, ib) = (images[members[a]], images[members[b]]);
            let mixed = RgbImage::from_fn(ia.width(), ia.height(), |x, y| {
                let (pa, pb) = (ia.get_pixel(x, y).0, ib.get_pixel(x, y).0);
                image::Rgb(std::array::from_fn(|c| {
                    (pa[c] as f32 + lambda * (pb[c] as f32 - pa[c] as f32)).round() as u8
                }))
            });
            out.push((mixed, class));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_are_inverse_frequency() {
        let w = class_weights(&[10, 30]);
        assert!((w[0] - 2.0).abs() < 1e-6 && (w[1] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(class_weights(&[5, 5, 5]), vec![1.0; 3]);
    }

    #[test]
    fn uniform_order_is_a_seeded_permutation_per_epoch() {
        let classes = vec![0, 0, 1, 1, 1, 2];
        let a = epoch_order(&classes, Sampling::Uniform, 3, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..6).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(&classes, Sampling::Uniform, 3, 0));
        let others: Vec<_> = (1..6)
            .map(|e| epoch_order(&classes, Sampling::Uniform, 3, e))
            .collect();
        assert!(others.iter().any(|o| *o != a));
    }

    #[test]
    fn balanced_sampling_draws_classes_about_equally() {
        // 90 images of class 0, 10 of class 1: uniform would show class 1 10 % of the time.
        let classes: Vec<usize> = (0..100).map(|i| usize::from(i >= 90)).collect();
        let mut minority = 0;
        for epoch in 0..20 {
            minority += epoch_order(&classes, Sampling::Balanced, 1, epoch)
                .iter()
                .filter(|&&i| classes[i] == 1)
                .count();
        }
        let share = minority as f64 / 2000.0;
        assert!((0.45..0.55).contains(&share), "minority share {share}");
    }

    #[test]
    fn smote_tops_up_minorities_with_in_between_images() {
        let dark = RgbImage::from_pixel(8, 8, image::Rgb([0, 0, 0]));
        let light = RgbImage::from_pixel(8, 8, image::Rgb([200, 100, 50]));
        let other = RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]));
        let images = vec![&dark, &light, &other, &other, &other, &other, &other];
        let classes = vec![0, 0, 1, 1, 1, 1, 1];
        let synth = smote(&images, &classes, 5, 2);
        assert_eq!(synth.len(), 3);
        for (img, class) in &synth {
            assert_eq!(*class, 0);
            let p = img.get_pixel(3, 3).0;
            // On the segment between dark and light: channels keep the 4:2:1 ratio.
            assert!(
                p[0] <= 200 && (p[0] as i32 - 2 * p[1] as i32).abs() <= 2,
                "{p:?}"
            );
        }
        assert_eq!(synth[0].0, smote(&images, &classes, 5, 2)[0].0);
    }
}
