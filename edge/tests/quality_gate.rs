//! The quality gate on seeded synthetic fields (each reason fires, sharp frames pass). Its pass and
//! reject rates on the real data are `quality_gate_data.rs`.

use edge::quality::{QualityConfig, QualityGate, RetakeReason, synthetic_smear};
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A smear-like field: pale background with noise, lavender red cells, and `nuclei` clusters of
/// violet discs.
fn field(width: u32, height: u32, nuclei: usize, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let s = width.min(height) as f32;
    let disc = |rng: &mut StdRng, r: f32| {
        (
            rng.random::<f32>() * width as f32,
            rng.random::<f32>() * height as f32,
            r * s,
        )
    };
    let rbcs: Vec<_> = (0..(width * height / 2500).max(8))
        .map(|_| disc(&mut rng, 0.04))
        .collect();
    let nuc: Vec<_> = (0..nuclei).map(|_| disc(&mut rng, 0.06)).collect();
    let hit = |v: &[(f32, f32, f32)], x: f32, y: f32| {
        v.iter()
            .any(|&(cx, cy, r)| (x - cx).powi(2) + (y - cy).powi(2) <= r * r)
    };
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let base = if hit(&nuc, fx, fy) {
            [100.0, 50.0, 160.0]
        } else if hit(&rbcs, fx, fy) {
            [192.0, 188.0, 212.0]
        } else {
            [238.0, 234.0, 238.0]
        };
        let n = (rng.random::<f32>() - 0.5) * 8.0;
        Rgb(base.map(|c: f32| (c + n).clamp(0.0, 255.0) as u8))
    })
}

fn scaled(img: &RgbImage, gain: f32, offset: f32) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        Rgb(img
            .get_pixel(x, y)
            .0
            .map(|c| (c as f32 * gain + offset).clamp(0.0, 255.0) as u8))
    })
}

#[test]
fn sharp_fields_pass_and_each_reason_fires() {
    let mut gate = QualityGate::new(QualityConfig::default());
    for seed in 0..4u64 {
        // One seed at HD is enough (the test builds its pictures slowly in debug builds).
        let sizes: &[(u32, u32)] = if seed == 0 {
            &[(224, 224), (640, 480), (1280, 720)]
        } else {
            &[(224, 224), (640, 480)]
        };
        for &(w, h) in sizes {
            let sharp = field(w, h, 4, seed);
            let (fig, reason) = gate.assess(&sharp);
            assert_eq!(reason, None, "sharp {w}x{h} seed {seed}: {fig:?}");

            // σ = 3 px at the analysis scale (224 px): the frame blurred after framing.
            let framed = image::imageops::resize(
                &image::imageops::crop_imm(&sharp, (w - h.min(w)) / 2, 0, h.min(w), h.min(w))
                    .to_image(),
                224,
                224,
                image::imageops::FilterType::Triangle,
            );
            let blurred = image::imageops::blur(&framed, 3.0);
            let (fig, reason) = gate.assess(&blurred);
            assert_eq!(
                reason,
                Some(RetakeReason::Focus),
                "blurred {w}x{h} seed {seed}: {fig:?}"
            );

            let (fig, reason) = gate.assess(&scaled(&sharp, 0.2, 0.0));
            assert_eq!(reason, Some(RetakeReason::Exposure), "dark: {fig:?}");
            let (fig, reason) = gate.assess(&scaled(&sharp, 1.0, 120.0));
            assert_eq!(reason, Some(RetakeReason::Exposure), "bright: {fig:?}");

            let (fig, reason) = gate.assess(&field(w, h, 0, seed));
            assert_eq!(
                reason,
                Some(RetakeReason::Empty),
                "no nuclei {w}x{h}: {fig:?}"
            );
        }
    }
    // The library's own synthetic frame (used by benchmarks) passes too.
    assert_eq!(gate.assess(&synthetic_smear(640, 480, 3)).1, None);
    // A black frame and an empty picture are exposure failures.
    assert_eq!(
        gate.assess(&RgbImage::new(64, 48)).1,
        Some(RetakeReason::Exposure)
    );
    assert_eq!(
        gate.assess(&RgbImage::new(0, 0)).1,
        Some(RetakeReason::Exposure)
    );
}

#[test]
fn figures_do_not_depend_much_on_the_camera_resolution() {
    // The same field rendered at two resolutions: the analysis picture is the same size, so the
    // focus figure stays within a factor of two.
    let mut gate = QualityGate::new(QualityConfig::default());
    let small = field(640, 480, 5, 11);
    let large = image::imageops::resize(&small, 1280, 960, image::imageops::FilterType::Nearest);
    let a = gate.assess(&small).0;
    let b = gate.assess(&large).0;
    assert!(
        b.focus / a.focus > 0.5 && b.focus / a.focus < 2.0,
        "{a:?} {b:?}"
    );
    assert!((a.stained_fraction - b.stained_fraction).abs() < 0.01);
}

#[test]
fn config_reads_a_partial_toml_table() {
    let c: QualityConfig = toml::from_str("min_focus = 12.5").unwrap();
    assert_eq!(c.min_focus, 12.5);
    assert_eq!(c.max_mean, QualityConfig::default().max_mean);
    assert!(toml::from_str::<QualityConfig>("min_fokus = 1").is_err());
    assert_eq!(RetakeReason::Empty.as_str(), "empty");
}
