//! The evaluation report's plots: confusion matrix, one-vs-rest ROC curves, training curves,
//! reliability diagram.

use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, VPos};

use super::plot::*;
use super::{EpochRecord, ReportContext};
use crate::calibration::Calibration;
use crate::metrics::ClassificationReport;

pub(super) fn subtitle(ctx: &ReportContext) -> String {
    let mut parts = Vec::new();
    if !ctx.title.trim().is_empty() {
        parts.push(ctx.title.trim().to_string());
    }
    if !ctx.split.trim().is_empty() && !ctx.title.contains(ctx.split.trim()) {
        parts.push(format!("{} split", ctx.split.trim()));
    }
    parts.join(" — ")
}

pub(super) fn draw_confusion(
    root: &Area<'_>,
    labels: &[String],
    cm: &[Vec<u64>],
    subtitle: &str,
) -> PlotResult {
    root.fill(&WHITE)?;
    header(root, "Confusion matrix", subtitle)?;
    let (w, h) = root.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let n = labels.len().max(1) as i32;

    let label_size = 18.0;
    let mut widest = 0;
    for l in labels {
        let (lw, _) =
            root.estimate_text_size(l, &style(label_size, &TEXT, HPos::Left, VPos::Top))?;
        widest = widest.max(lw as i32);
    }
    let axis_title = 44;
    let label_w = (widest + 16).clamp(50, 240);
    let (top, right) = (100, 150);
    let left = axis_title + label_w;
    // Column labels are written horizontally when they fit their column at a readable size,
    // otherwise turned to run downwards (up to 200 pixels long).
    let horizontal_cell = (w - left - right).min(h - top - 110) / n;
    let mut rotate = false;
    for l in labels {
        let (_, sz) = fit_text(
            root,
            l,
            (horizontal_cell - 8).max(1) as u32,
            label_size,
            8.0,
        )?;
        rotate |= sz < 14.0;
    }
    let column_labels_h = if rotate { widest.min(200) + 10 } else { 30 };
    let bottom = column_labels_h + 80;
    let grid = (w - left - right).min(h - top - bottom);
    let cell = grid / n;
    let grid = cell * n;
    let x0 = left + (w - left - right - grid) / 2;
    let y0 = top;

    // Cells: colour by the share of the row (true class); count and share as text.
    let count_size = (f64::from(cell) * 0.24).clamp(11.0, 30.0);
    let share_size = (count_size * 0.7).max(10.0);
    for (i, row) in cm.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (j, &count) in row.iter().enumerate() {
            let share = if total > 0 {
                count as f64 / total as f64
            } else {
                0.0
            };
            let (cx0, cy0) = (x0 + j as i32 * cell, y0 + i as i32 * cell);
            root.draw(&Rectangle::new(
                [(cx0, cy0), (cx0 + cell, cy0 + cell)],
                blues(share).filled(),
            ))?;
            root.draw(&Rectangle::new(
                [(cx0, cy0), (cx0 + cell, cy0 + cell)],
                WHITE.stroke_width(1),
            ))?;
            let ink = if share > 0.5 { &WHITE } else { &TEXT };
            let (cx, cy) = (cx0 + cell / 2, cy0 + cell / 2);
            let count_text = count.to_string();
            let (count_text, csz) =
                fit_text(root, &count_text, (cell - 6).max(1) as u32, count_size, 8.0)?;
            if cell >= 56 {
                let pct = if total > 0 {
                    format!("{:.1}%", 100.0 * share)
                } else {
                    "–".to_string()
                };
                root.draw(&Text::new(
                    count_text,
                    (cx, cy - 2),
                    style(csz, ink, HPos::Center, VPos::Bottom),
                ))?;
                root.draw(&Text::new(
                    pct,
                    (cx, cy + 4),
                    style(share_size, ink, HPos::Center, VPos::Top),
                ))?;
            } else {
                root.draw(&Text::new(
                    count_text,
                    (cx, cy),
                    style(csz, ink, HPos::Center, VPos::Center),
                ))?;
            }
        }
    }
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + grid, y0 + grid)],
        GRID_LINE.stroke_width(1),
    ))?;

    // Class names: true classes left of the rows, predicted classes under the columns.
    for (i, l) in labels.iter().enumerate() {
        let (t, sz) = fit_text(root, l, (label_w - 16) as u32, label_size, 10.0)?;
        root.draw(&Text::new(
            t,
            (x0 - 10, y0 + i as i32 * cell + cell / 2),
            style(sz, &TEXT, HPos::Right, VPos::Center),
        ))?;
        let cx = x0 + i as i32 * cell + cell / 2;
        if rotate {
            let sz = label_size.min(f64::from(cell) * 0.6).max(10.0);
            let (t, sz) = fit_text(root, l, 200, sz, 10.0)?;
            root.draw(&Text::new(
                t,
                (cx, y0 + grid + 10),
                style(sz, &TEXT, HPos::Left, VPos::Center).transform(FontTransform::Rotate90),
            ))?;
        } else {
            let (t, sz) = fit_text(root, l, (cell - 8).max(1) as u32, label_size, 10.0)?;
            root.draw(&Text::new(
                t,
                (cx, y0 + grid + 10),
                style(sz, &TEXT, HPos::Center, VPos::Top),
            ))?;
        }
    }
    root.draw(&Text::new(
        "Predicted class",
        (x0 + grid / 2, y0 + grid + column_labels_h + 24),
        style(21.0, &TEXT, HPos::Center, VPos::Top),
    ))?;
    root.draw(&Text::new(
        "True class",
        (x0 - label_w - 18, y0 + grid / 2),
        style(21.0, &TEXT, HPos::Center, VPos::Center).transform(FontTransform::Rotate270),
    ))?;

    // Colour bar: share of the true class.
    let bx = x0 + grid + 34;
    let bw = 22;
    for k in 0..grid {
        let share = 1.0 - f64::from(k) / f64::from(grid.max(1));
        root.draw(&Rectangle::new(
            [(bx, y0 + k), (bx + bw, y0 + k + 1)],
            blues(share).filled(),
        ))?;
    }
    root.draw(&Rectangle::new(
        [(bx, y0), (bx + bw, y0 + grid)],
        GRID_LINE.stroke_width(1),
    ))?;
    for (share, text) in [(1.0, "100%"), (0.5, "50%"), (0.0, "0%")] {
        let y = y0 + ((1.0 - share) * f64::from(grid)).round() as i32;
        root.draw(&PathElement::new(
            vec![(bx + bw, y), (bx + bw + 5, y)],
            TEXT.stroke_width(1),
        ))?;
        root.draw(&Text::new(
            text,
            (bx + bw + 8, y),
            style(16.0, &TEXT, HPos::Left, VPos::Center),
        ))?;
    }
    root.draw(&Text::new(
        "share of the true class (row)",
        (bx + bw + 62, y0 + grid / 2),
        style(16.0, &MUTED, HPos::Center, VPos::Center).transform(FontTransform::Rotate90),
    ))?;
    Ok(())
}

pub(super) fn draw_roc(root: &Area<'_>, m: &ClassificationReport, subtitle: &str) -> PlotResult {
    root.fill(&WHITE)?;
    header(root, "ROC curves, one class vs rest", subtitle)?;
    let area = root.margin(86, 16, 16, 30);
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(64)
        .y_label_area_size(76)
        .build_cartesian_2d(-0.01f64..1.01f64, -0.01f64..1.01f64)?;
    chart
        .configure_mesh()
        .x_desc("False positive rate (1 − specificity)")
        .y_desc("True positive rate (sensitivity)")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 19))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .x_labels(11)
        .y_labels(11)
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;

    let chance = RGBColor(150, 150, 150);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            8,
            6,
            chance.stroke_width(2),
        ))?
        .label("chance (AUC 0.500)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], chance.stroke_width(2)));

    for (i, curve) in m.roc.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = match curve.auc {
            Some(_) => curve
                .fpr
                .iter()
                .copied()
                .zip(curve.tpr.iter().copied())
                .collect(),
            None => Vec::new(),
        };
        let label = match curve.auc {
            Some(auc) => format!("{} (AUC {auc:.3})", curve.label),
            None => format!("{} (AUC undefined)", curve.label),
        };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .margin(18)
        .legend_area_size(34)
        .label_font((FONT, if m.roc.len() > 6 { 15 } else { 18 }))
        .background_style(WHITE.mix(0.92))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

pub(super) fn draw_history(root: &Area<'_>, history: &[EpochRecord], subtitle: &str) -> PlotResult {
    root.fill(&WHITE)?;
    header(root, "Training curves", subtitle)?;
    let body = root.margin(80, 10, 10, 10);
    let panels = body.split_evenly((1, 2));
    draw_panel(
        &panels[0],
        "Loss",
        history,
        |e| (e.train_loss, e.valid_loss),
        None,
        SeriesLabelPosition::UpperRight,
    )?;
    draw_panel(
        &panels[1],
        "Accuracy",
        history,
        |e| (e.train_accuracy, e.valid_accuracy),
        Some(1.0),
        SeriesLabelPosition::LowerRight,
    )?;
    Ok(())
}

/// One panel of training curves: train and validation values per epoch.
///
/// The y axis starts at 0 (or the lowest value if negative) and ends a little above the highest
/// value, or at `top` when every value fits under it.
fn draw_panel(
    area: &Area<'_>,
    name: &str,
    history: &[EpochRecord],
    values: impl Fn(&EpochRecord) -> (f64, f64),
    top: Option<f64>,
    legend: SeriesLabelPosition,
) -> PlotResult {
    let first = history.iter().map(|e| e.epoch).min().unwrap_or(0) as f64;
    let last = history.iter().map(|e| e.epoch).max().unwrap_or(0) as f64;
    let pad = (0.03 * (last - first)).max(0.5);
    let finite: Vec<f64> = history
        .iter()
        .flat_map(|e| {
            let (a, b) = values(e);
            [a, b]
        })
        .filter(|v| v.is_finite())
        .collect();
    let lo = finite.iter().copied().fold(0.0f64, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let hi = match top {
        Some(t) if hi <= t => t,
        _ if hi.is_finite() && hi > lo => hi + 0.08 * (hi - lo),
        _ => lo + 1.0,
    };

    let mut chart = ChartBuilder::on(area)
        .caption(name, (FONT, 22))
        .margin(14)
        .x_label_area_size(54)
        .y_label_area_size(72)
        .build_cartesian_2d(first - pad..last + pad, lo..hi)?;
    let decimals = if hi - lo < 0.1 { 3 } else { 2 };
    chart
        .configure_mesh()
        .x_desc("Epoch")
        .y_desc(name)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .x_labels(12)
        .y_labels(10)
        .x_label_formatter(&|x| {
            // Epochs are whole numbers; ticks between them stay unlabeled.
            if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                format!("{}", x.round() as u64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .draw()?;

    let markers = history.len() <= 60;
    for (series, color, pick) in [
        ("train", PALETTE[0], 0usize),
        ("validation", PALETTE[1], 1usize),
    ] {
        let points: Vec<(f64, f64)> = history
            .iter()
            .map(|e| {
                let (a, b) = values(e);
                (e.epoch as f64, if pick == 0 { a } else { b })
            })
            .filter(|(_, v)| v.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))?
            .label(series)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        if markers {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .margin(14)
        .label_font((FONT, 17))
        .background_style(WHITE.mix(0.92))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

/// The reliability diagram: per confidence bin, the accuracy (bar, with its Wilson 95 % interval)
/// against the diagonal of perfect calibration, the device's threshold, and below it the number
/// of pictures per bin.
pub(super) fn draw_reliability(
    root: &Area<'_>,
    c: &Calibration,
    threshold: f64,
    subtitle: &str,
) -> PlotResult {
    root.fill(&WHITE)?;
    header(root, "Reliability diagram", subtitle)?;
    let body = root.margin(80, 10, 16, 24);
    let (_, h) = body.dim_in_pixel();
    let (top, bottom) = body.split_vertically(h * 7 / 10);
    let bar = PALETTE[0];
    let threshold_color = PALETTE[3];

    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "accuracy per top-class probability bin — ECE {:.4}, {} pictures",
                c.ece, c.samples
            ),
            (FONT, 19),
        )
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(76)
        .build_cartesian_2d(0.0f64..1.0f64, 0.0f64..1.08f64)?;
    chart
        .configure_mesh()
        .y_desc("Accuracy (top class = true class)")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .x_labels(11)
        .y_labels(11)
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    let filled: Vec<_> = c.bins.iter().filter(|b| b.count > 0).collect();
    chart
        .draw_series(filled.iter().filter_map(|b| {
            let acc = b.accuracy.value?;
            let pad = 0.08 * (b.upper - b.lower);
            Some(Rectangle::new(
                [(b.lower + pad, 0.0), (b.upper - pad, acc)],
                bar.mix(0.75).filled(),
            ))
        }))?
        .label("accuracy of the bin (95 % interval)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], bar.filled()));
    // Interval whiskers: a vertical line with caps a fifth of the bin wide.
    chart.draw_series(filled.iter().flat_map(|b| {
        let x = (b.lower + b.upper) / 2.0;
        let cap = 0.1 * (b.upper - b.lower);
        let (lo, hi) = (b.accuracy.low, b.accuracy.high);
        [
            vec![(x, lo), (x, hi)],
            vec![(x - cap, lo), (x + cap, lo)],
            vec![(x - cap, hi), (x + cap, hi)],
        ]
        .map(|points| PathElement::new(points, TEXT.stroke_width(2)))
    }))?;
    chart.draw_series(filled.iter().filter_map(|b| {
        let conf = b.mean_confidence?;
        Some(Circle::new((conf, conf), 5, PALETTE[1].filled()))
    }))?;
    let ideal = RGBColor(120, 120, 120);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            8,
            6,
            ideal.stroke_width(2),
        ))?
        .label("perfect calibration (dots: mean confidence of the bin)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], ideal.stroke_width(2)));
    if (0.0..=1.0).contains(&threshold) {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(threshold, 0.0), (threshold, 1.08)],
                6,
                4,
                threshold_color.stroke_width(2),
            ))?
            .label(format!(
                "device threshold {threshold:.2} (below: uncertain)"
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], threshold_color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(12)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.92))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;

    let most = c.bins.iter().map(|b| b.count).max().unwrap_or(0).max(1) as f64;
    let mut counts = ChartBuilder::on(&bottom)
        .margin(8)
        .x_label_area_size(54)
        .y_label_area_size(76)
        .build_cartesian_2d(0.0f64..1.0f64, 0.0f64..most * 1.25)?;
    counts
        .configure_mesh()
        .x_desc("Top-class probability (confidence)")
        .y_desc("Pictures")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .x_labels(11)
        .y_labels(4)
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    counts.draw_series(filled.iter().map(|b| {
        let pad = 0.08 * (b.upper - b.lower);
        Rectangle::new(
            [(b.lower + pad, 0.0), (b.upper - pad, b.count as f64)],
            MUTED.mix(0.6).filled(),
        )
    }))?;
    counts.draw_series(filled.iter().map(|b| {
        Text::new(
            b.count.to_string(),
            ((b.lower + b.upper) / 2.0, b.count as f64 + most * 0.04),
            style(15.0, &TEXT, HPos::Center, VPos::Bottom),
        )
    }))?;
    Ok(())
}
