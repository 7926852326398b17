//! Forward + backward cost of three ways to write ReLU6 on burn-flex, for one MobileNetV2-sized
//! activation `[16, 96, 64, 64]` (best of 5). Why `model::mobilenetv2` writes ReLU6 as
//! `min(relu(x), 6)`. Run: `cargo run --release -p trainer --example relu6_cost`.

use burn::tensor::activation::{relu, relu6};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn main() {
    let device = Device::flex().autodiff();
    let shape = [16, 96, 64, 64];
    for name in ["clamp", "relu-relu", "relu-min"] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let x =
                Tensor::<4>::random(shape, Distribution::Normal(0.0, 3.0), &device).require_grad();
            let t = Instant::now();
            let y = match name {
                "clamp" => relu6(x.clone()),
                "relu-relu" => relu(x.clone()) - relu(x.clone().sub_scalar(6.0)),
                _ => relu(x.clone()).clamp_max(6.0),
            };
            let g = y.sum().backward();
            let _ = x.grad(&g).unwrap().into_data();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("{name:>10}: {best:.1} ms");
    }
}
