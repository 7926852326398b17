//! The evaluation report: a folder with `report.json`, `report.md` and PNG plots.
//!
//! [`write_report`] turns a [`ClassificationReport`] (from [`crate::metrics::evaluate`]), a
//! [`ReportContext`] and, after training, the per-epoch history into:
//!
//! - `report.json`: `{"context": …, "metrics": …, "history": …}`, readable with [`read_report`];
//! - `report.md`: the human-readable report, linking the plots;
//! - `confusion_matrix.png`: counts per (true, predicted) class, coloured by row share;
//! - `roc.png`: one-vs-rest ROC curves with their AUC;
//! - `training_curves.png`: loss and accuracy per epoch, when a non-empty history is given.
//!
//! Plots are drawn with `plotters` into memory and encoded with `image`. Their text uses DejaVu
//! Sans, embedded in the library (`assets/DejaVuSans.ttf`, license in
//! `assets/DejaVu-LICENSE.txt`), so reports render the same on a workstation and on a Raspberry
//! Pi without any system font.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{ExtendedColorType, ImageEncoder, codecs::png::PngEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::metrics::ClassificationReport;

/// Everything besides the metrics that a report states.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportContext {
    /// Report title, e.g. "MobileNetV2 ×0.5 @128 — test split".
    pub title: String,
    /// Model family and settings, free text.
    pub model: String,
    /// Dataset path or manifest sha256, free text.
    pub dataset: String,
    /// The evaluated split: "test", "val", or "all" (`edge evaluate`).
    pub split: String,
    /// Number of model parameters.
    pub parameters: Option<u64>,
    /// Size of the model file in bytes.
    pub model_bytes: Option<u64>,
    /// Training throughput in images per second.
    pub train_images_per_s: Option<f64>,
    /// Inference throughput in images per second.
    pub inference_images_per_s: Option<f64>,
    /// Free-text notes, e.g. "class-weighted loss", "balanced sampling", caveats.
    pub notes: Vec<String>,
}

/// One epoch of training, for the curves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (usually from 1).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy, as a fraction.
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Validation accuracy, as a fraction.
    pub valid_accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Training throughput in images per second.
    pub images_per_s: f64,
}

/// The content of `report.json`.
///
/// Non-finite numbers (a diverged loss) are written as `null` by JSON and cannot be read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportDocument {
    /// What was evaluated.
    pub context: ReportContext,
    /// The metrics.
    pub metrics: ClassificationReport,
    /// Training history, if the report was written after training.
    pub history: Option<Vec<EpochRecord>>,
}

/// Serializes like [`ReportDocument`] without copying.
#[derive(Serialize)]
struct ReportDocumentRef<'a> {
    context: &'a ReportContext,
    metrics: &'a ClassificationReport,
    history: Option<&'a [EpochRecord]>,
}

/// The files a report consists of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFiles {
    /// `report.json`.
    pub json: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `confusion_matrix.png`.
    pub confusion_matrix: PathBuf,
    /// `roc.png`.
    pub roc: PathBuf,
    /// `training_curves.png`, written only with a non-empty history.
    pub training_curves: Option<PathBuf>,
}

impl ReportFiles {
    /// Every written file.
    pub fn all(&self) -> Vec<&Path> {
        let mut v = vec![
            self.json.as_path(),
            self.markdown.as_path(),
            self.confusion_matrix.as_path(),
            self.roc.as_path(),
        ];
        v.extend(self.training_curves.as_deref());
        v
    }
}

/// A report that could not be written or read.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The report folder could not be created.
    #[error("cannot create report folder {}: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be written or read.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// "write" or "read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The JSON document could not be encoded or parsed.
    #[error("{}: invalid report JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A plot could not be drawn or encoded.
    #[error("cannot draw {}: {message}", path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// What went wrong, in words.
        message: String,
    },
    /// The embedded font could not be loaded.
    #[error("the embedded plot font could not be loaded")]
    Font,
    /// The metrics contradict themselves (e.g. a confusion matrix that does not match the labels).
    #[error("inconsistent metrics: {0}")]
    Inconsistent(String),
}

/// Name of the JSON file in a report folder.
pub const JSON_FILE: &str = "report.json";
/// Name of the Markdown file in a report folder.
pub const MARKDOWN_FILE: &str = "report.md";
/// Name of the confusion matrix plot.
pub const CONFUSION_FILE: &str = "confusion_matrix.png";
/// Name of the ROC plot.
pub const ROC_FILE: &str = "roc.png";
/// Name of the training curves plot.
pub const CURVES_FILE: &str = "training_curves.png";

/// Pixel size (width, height) of the confusion matrix plot.
const CONFUSION_SIZE: (u32, u32) = (1000, 900);
/// Pixel size of the ROC plot.
const ROC_SIZE: (u32, u32) = (900, 860);
/// Pixel size of the training curves plot.
const CURVES_SIZE: (u32, u32) = (1400, 620);

/// Writes the report files into `dir`, creating it if needed, and returns their paths.
///
/// `training_curves.png` is written only when `history` is given and not empty. Existing files
/// of the same names are replaced.
pub fn write_report(
    dir: &Path,
    ctx: &ReportContext,
    metrics: &ClassificationReport,
    history: Option<&[EpochRecord]>,
) -> Result<ReportFiles, ReportError> {
    check_consistency(metrics)?;
    std::fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let history = history.filter(|h| !h.is_empty());
    let files = ReportFiles {
        json: dir.join(JSON_FILE),
        markdown: dir.join(MARKDOWN_FILE),
        confusion_matrix: dir.join(CONFUSION_FILE),
        roc: dir.join(ROC_FILE),
        training_curves: history.map(|_| dir.join(CURVES_FILE)),
    };

    let doc = ReportDocumentRef {
        context: ctx,
        metrics,
        history,
    };
    let json = serde_json::to_string_pretty(&doc).map_err(|source| ReportError::Json {
        path: files.json.clone(),
        source,
    })?;
    write_file(&files.json, json.as_bytes())?;
    write_file(&files.markdown, markdown(ctx, metrics, history).as_bytes())?;

    register_font()?;
    let subtitle = subtitle(ctx);
    render_png(&files.confusion_matrix, CONFUSION_SIZE, |root| {
        draw_confusion(root, &metrics.labels, &metrics.confusion, &subtitle)
    })?;
    render_png(&files.roc, ROC_SIZE, |root| {
        draw_roc(root, metrics, &subtitle)
    })?;
    if let (Some(path), Some(h)) = (&files.training_curves, history) {
        render_png(path, CURVES_SIZE, |root| draw_history(root, h, &subtitle))?;
    }
    Ok(files)
}

/// Reads a `report.json` written by [`write_report`].
pub fn read_report(path: &Path) -> Result<ReportDocument, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Checks that labels, per-class rows, the confusion matrix and the ROC curves agree in size,
/// so that drawing can index freely.
fn check_consistency(m: &ClassificationReport) -> Result<(), ReportError> {
    let k = m.labels.len();
    if k == 0 {
        return Err(ReportError::Inconsistent("no class labels".into()));
    }
    if m.per_class.len() != k || m.roc.len() != k {
        return Err(ReportError::Inconsistent(format!(
            "{k} labels but {} per-class rows and {} ROC curves",
            m.per_class.len(),
            m.roc.len()
        )));
    }
    if m.confusion.len() != k || m.confusion.iter().any(|r| r.len() != k) {
        return Err(ReportError::Inconsistent(format!(
            "the confusion matrix is not {k}×{k}"
        )));
    }
    if m.roc.iter().any(|c| c.fpr.len() != c.tpr.len()) {
        return Err(ReportError::Inconsistent(
            "a ROC curve has different numbers of FPR and TPR values".into(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Markdown

const SCREENING_STATEMENT: &str = "**Screening-aid evaluation, not a diagnostic claim.** These \
numbers describe how often the model's image classification agrees with the reference labels of \
this data set. They do not establish clinical performance; every result must be reviewed by a \
qualified person.";

fn markdown(
    ctx: &ReportContext,
    m: &ClassificationReport,
    history: Option<&[EpochRecord]>,
) -> String {
    let mut s = String::new();
    let title = if ctx.title.trim().is_empty() {
        "Evaluation report"
    } else {
        ctx.title.trim()
    };
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(s, "> {SCREENING_STATEMENT}\n");

    let _ = writeln!(s, "| | |\n|---|---|");
    let mut row = |k: &str, v: String| {
        if !v.trim().is_empty() {
            let _ = writeln!(s, "| {k} | {} |", cell(&v));
        }
    };
    row("Model", ctx.model.clone());
    row("Data set", ctx.dataset.clone());
    row("Split", ctx.split.clone());
    row("Samples", thousands(m.samples));
    row("Classes", m.labels.join(", "));
    if let Some(p) = ctx.parameters {
        row(
            "Parameters",
            format!("{} ({:.2} M)", thousands(p), p as f64 / 1e6),
        );
    }
    if let Some(b) = ctx.model_bytes {
        row(
            "Model size",
            format!("{:.2} MiB ({} bytes)", b as f64 / 1_048_576.0, thousands(b)),
        );
    }
    if let Some(t) = ctx.train_images_per_s {
        row("Training throughput", format!("{t:.1} images/s"));
    }
    if let Some(t) = ctx.inference_images_per_s {
        row("Inference throughput", format!("{t:.1} images/s"));
    }

    let _ = writeln!(s, "\n## Headline\n");
    let _ = writeln!(
        s,
        "| Accuracy | Macro F1 | Cohen's kappa | MCC | Macro AUC |\n|---:|---:|---:|---:|---:|"
    );
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} |",
        f4(m.accuracy),
        f4(m.macro_avg.f1),
        f4(m.cohen_kappa),
        f4(m.mcc),
        opt4(m.macro_auc)
    );

    let _ = writeln!(s, "\n## Per class\n");
    let _ = writeln!(
        s,
        "| Class | Precision | Recall (sensitivity) | Specificity | F1 | F2 | AUC | Support |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &m.per_class {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.label),
            f4(c.precision),
            f4(c.recall),
            f4(c.specificity),
            f4(c.f1),
            f4(c.f2),
            opt4(c.auc),
            c.support
        );
    }
    for (name, a, auc) in [
        ("macro avg", &m.macro_avg, opt4(m.macro_auc)),
        ("weighted avg", &m.weighted_avg, "–".to_string()),
    ] {
        let _ = writeln!(
            s,
            "| **{name}** | {} | {} | {} | {} | {} | {auc} | {} |",
            f4(a.precision),
            f4(a.recall),
            f4(a.specificity),
            f4(a.f1),
            f4(a.f2),
            m.samples
        );
    }
    let _ = writeln!(
        s,
        "\nRecall is the sensitivity. Precision of a class that is never predicted is reported as \
         0. The macro average weighs every class equally, the weighted average by support; the \
         macro AUC is the mean of the defined per-class one-vs-rest AUCs."
    );

    let _ = writeln!(s, "\n## Confusion matrix\n");
    let _ = writeln!(s, "Rows are true classes, columns predicted classes.\n");
    let _ = write!(s, "| true \\ predicted |");
    for l in &m.labels {
        let _ = write!(s, " {} |", cell(l));
    }
    let _ = write!(s, "\n|---|");
    for _ in &m.labels {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for (l, r) in m.labels.iter().zip(&m.confusion) {
        let _ = write!(s, "| **{}** |", cell(l));
        for v in r {
            let _ = write!(s, " {v} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\n![Confusion matrix]({CONFUSION_FILE})");
    let _ = writeln!(
        s,
        "\n## ROC curves\n\n![ROC curves, one class vs rest]({ROC_FILE})"
    );

    if let Some(h) = history {
        let _ = writeln!(s, "\n## Training\n");
        if let Some(last) = h.last() {
            let _ = writeln!(
                s,
                "- Last epoch ({}): train loss {}, train accuracy {}, validation loss {}, \
                 validation accuracy {}, learning rate {:.3e}, {:.1} images/s.",
                last.epoch,
                f4(last.train_loss),
                f4(last.train_accuracy),
                f4(last.valid_loss),
                f4(last.valid_accuracy),
                last.learning_rate,
                last.images_per_s
            );
        }
        if let Some(best) = h
            .iter()
            .filter(|e| e.valid_accuracy.is_finite())
            .max_by(|a, b| a.valid_accuracy.total_cmp(&b.valid_accuracy))
        {
            let _ = writeln!(
                s,
                "- Best validation accuracy: {} at epoch {}.",
                f4(best.valid_accuracy),
                best.epoch
            );
        }
        let _ = writeln!(s, "\n![Training curves]({CURVES_FILE})");
    }

    let mut notes: Vec<String> = ctx.notes.clone();
    let undefined: Vec<&str> = m
        .per_class
        .iter()
        .filter(|c| c.auc.is_none())
        .map(|c| c.label.as_str())
        .collect();
    if !undefined.is_empty() {
        notes.push(format!(
            "AUC is undefined for {} (no samples of the class, or no other samples).",
            undefined.join(", ")
        ));
    }
    let small: Vec<String> = m
        .per_class
        .iter()
        .filter(|c| c.support < 30)
        .map(|c| format!("{} ({})", c.label, c.support))
        .collect();
    if !small.is_empty() {
        notes.push(format!(
            "Fewer than 30 samples for {}: these per-class figures are imprecise.",
            small.join(", ")
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &notes {
            let _ = writeln!(s, "- {}", n.replace('\n', " "));
        }
    }
    s
}

/// Four decimals.
fn f4(x: f64) -> String {
    format!("{x:.4}")
}

/// Four decimals, or "n/a".
fn opt4(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), f4)
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Plots

pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
pub(crate) type PlotResult = Result<(), Box<dyn StdError>>;

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
pub(crate) const FONT: &str = "sans-serif";

/// Registers the embedded font as plotters' "sans-serif", once per process.
pub(crate) fn register_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// Draws into an RGB buffer and writes it to `path` as PNG.
pub(crate) fn render_png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> PlotResult,
) -> Result<(), ReportError> {
    let plot_error = |message: String| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(|e| plot_error(e.to_string()))?;
        root.present().map_err(|e| plot_error(e.to_string()))?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&buf, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| plot_error(format!("PNG encoding failed: {e}")))?;
    write_file(path, &png)
}

/// The line under each plot's title: the report title and the split.
fn subtitle(ctx: &ReportContext) -> String {
    let mut parts = Vec::new();
    if !ctx.title.trim().is_empty() {
        parts.push(ctx.title.trim().to_string());
    }
    if !ctx.split.trim().is_empty() && !ctx.title.contains(ctx.split.trim()) {
        parts.push(format!("{} split", ctx.split.trim()));
    }
    parts.join(" — ")
}

pub(crate) const TEXT: RGBColor = RGBColor(30, 30, 30);
pub(crate) const MUTED: RGBColor = RGBColor(90, 90, 90);
const GRID_LINE: RGBColor = RGBColor(200, 200, 200);

/// Series colours (matplotlib's tab10).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(crate) fn style<'a>(size: f64, color: &'a RGBColor, h: HPos, v: VPos) -> TextStyle<'a> {
    TextStyle::from((FONT, size).into_font())
        .color(color)
        .pos(Pos::new(h, v))
}

/// Shrinks `text` (down to `min_size`, then by cutting characters and adding "…") until it is at
/// most `max_width` pixels wide. Returns the text and its font size.
fn fit_text(
    area: &Area<'_>,
    text: &str,
    max_width: u32,
    size: f64,
    min_size: f64,
) -> Result<(String, f64), Box<dyn StdError>> {
    let width = |t: &str, sz: f64| -> Result<u32, Box<dyn StdError>> {
        Ok(area
            .estimate_text_size(t, &style(sz, &TEXT, HPos::Left, VPos::Top))?
            .0)
    };
    let mut sz = size;
    while sz > min_size && width(text, sz)? > max_width {
        sz -= 1.0;
    }
    let mut t = text.to_string();
    let mut chars: Vec<char> = text.chars().collect();
    while width(&t, sz)? > max_width && !chars.is_empty() {
        chars.pop();
        t = chars.iter().collect::<String>() + "…";
    }
    Ok((t, sz))
}

/// Title and subtitle centred in the top 80 pixels.
pub(crate) fn header(root: &Area<'_>, title: &str, subtitle: &str) -> PlotResult {
    let (w, _) = root.dim_in_pixel();
    let cx = w as i32 / 2;
    root.draw(&Text::new(
        title.to_string(),
        (cx, 14),
        style(28.0, &TEXT, HPos::Center, VPos::Top),
    ))?;
    if !subtitle.is_empty() {
        let (t, sz) = fit_text(root, subtitle, w.saturating_sub(40), 18.0, 12.0)?;
        root.draw(&Text::new(
            t,
            (cx, 52),
            style(sz, &MUTED, HPos::Center, VPos::Top),
        ))?;
    }
    Ok(())
}

/// White → dark blue (matplotlib's "Blues"), for a share in 0..=1.
fn blues(share: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let s = share.clamp(0.0, 1.0);
    let (lo, hi) = if s <= 0.5 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let t = (s - lo.0) / (hi.0 - lo.0);
    let c = |i: usize| (lo.1[i] + t * (hi.1[i] - lo.1[i])).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

fn draw_confusion(
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

fn draw_roc(root: &Area<'_>, m: &ClassificationReport, subtitle: &str) -> PlotResult {
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

fn draw_history(root: &Area<'_>, history: &[EpochRecord], subtitle: &str) -> PlotResult {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::evaluate;
    use crate::metrics::tests::assert_json_close;

    /// 3 classes, confusion (rows true, columns predicted) [[5,1,0],[2,3,1],[0,1,4]], with
    /// probabilities that vary within each cell so the ROC curves have several steps.
    fn known_metrics() -> ClassificationReport {
        let cm = [[5, 1, 0], [2, 3, 1], [0, 1, 4]];
        let labels: Vec<String> = ["lymphoblast", "myeloblast", "normal"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut truth = Vec::new();
        let mut probs = Vec::new();
        for (t, row) in cm.iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                for k in 0..count {
                    let top = 0.5 + 0.08 * k as f32;
                    let mut r = vec![(1.0 - top) / 2.0; 3];
                    r[p] = top;
                    truth.push(t);
                    probs.push(r);
                }
            }
        }
        evaluate(&labels, &truth, &probs).unwrap()
    }

    fn context() -> ReportContext {
        ReportContext {
            title: "MobileNetV2 ×0.5 @128 — test split".into(),
            model: "mobilenetv2, width 0.5, input 128".into(),
            dataset: "data/manifest.json sha256 0123abcd".into(),
            split: "test".into(),
            parameters: Some(700_000),
            model_bytes: Some(2_900_000),
            train_images_per_s: Some(210.5),
            inference_images_per_s: Some(48.0),
            notes: vec!["class-weighted loss".into()],
        }
    }

    fn history() -> Vec<EpochRecord> {
        (1..=12)
            .map(|e| {
                let x = e as f64;
                EpochRecord {
                    epoch: e,
                    train_loss: 1.2 / x.sqrt(),
                    train_accuracy: 1.0 - 0.6 / x.sqrt(),
                    valid_loss: 1.3 / x.sqrt() + 0.01 * x,
                    valid_accuracy: 0.95 - 0.6 / x.sqrt(),
                    learning_rate: 1e-3 * 0.9f64.powi(e as i32),
                    images_per_s: 200.0,
                }
            })
            .collect()
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (img.width(), img.height())
    }

    #[test]
    fn writes_every_file_and_they_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/report");
        let m = known_metrics();
        let h = history();
        let files = write_report(&out, &context(), &m, Some(&h)).unwrap();
        assert_eq!(files.all().len(), 5);
        for f in files.all() {
            assert!(f.is_file(), "{} missing", f.display());
        }
        assert_eq!(png_size(&files.confusion_matrix), CONFUSION_SIZE);
        assert_eq!(png_size(&files.roc), ROC_SIZE);
        assert_eq!(
            png_size(files.training_curves.as_ref().unwrap()),
            CURVES_SIZE
        );

        let doc = read_report(&files.json).unwrap();
        assert_json_close(&doc.metrics, &m);
        assert_eq!(doc.metrics.confusion, m.confusion);
        assert_eq!(doc.context, context());
        assert_json_close(&doc.history, &Some(h.clone()));
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
        for key in ["context", "metrics", "history"] {
            assert!(raw.get(key).is_some(), "report.json lacks {key}");
        }

        let md = std::fs::read_to_string(&files.markdown).unwrap();
        // Headline: accuracy 12/17, kappa 107/192, MCC 107/√36480.
        assert!(md.contains("| 0.7059 |"), "{md}");
        assert!(md.contains(&format!("| {:.4} |", m.macro_avg.f1)), "{md}");
        assert!(md.contains("| 0.5573 |"), "{md}");
        assert!(md.contains("| 0.5602 |"), "{md}");
        // Per-class rows: lymphoblast P 5/7, R 5/6, spec 9/11, F1 10/13, F2 25/31, support 6.
        let auc = m.per_class[0].auc.unwrap();
        assert!(
            md.contains(&format!(
                "| lymphoblast | 0.7143 | 0.8333 | 0.8182 | 0.7692 | 0.8065 | {auc:.4} | 6 |"
            )),
            "{md}"
        );
        assert!(md.contains("| myeloblast | 0.6000 | 0.5000 | 0.8182 | 0.5455 | 0.5172 |"));
        assert!(md.contains("| normal | 0.8000 | 0.8000 | 0.9167 | 0.8000 | 0.8000 |"));
        assert!(md.contains("| **macro avg** | 0.7048 | 0.7111 |"), "{md}");
        assert!(
            md.contains("| **weighted avg** | 0.6992 | 0.7059 |"),
            "{md}"
        );
        assert!(md.contains("| **myeloblast** | 2 | 3 | 1 |"), "{md}");
        assert!(md.contains("not a diagnostic claim"));
        assert!(md.contains("class-weighted loss"));
        for f in [CONFUSION_FILE, ROC_FILE, CURVES_FILE] {
            assert!(md.contains(&format!("]({f})")), "no link to {f}");
        }
    }

    #[test]
    fn no_history_means_no_training_curves() {
        let dir = tempfile::tempdir().unwrap();
        let m = known_metrics();
        for h in [None, Some(&[][..])] {
            let files = write_report(dir.path(), &ReportContext::default(), &m, h).unwrap();
            assert_eq!(files.training_curves, None);
            assert!(!dir.path().join(CURVES_FILE).exists());
            let md = std::fs::read_to_string(&files.markdown).unwrap();
            assert!(!md.contains(CURVES_FILE));
            assert!(md.starts_with("# Evaluation report"));
        }
    }

    #[test]
    fn unwritable_folder_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the folder should be: creating the folder must fail.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"not a folder").unwrap();
        let target = blocker.join("report");
        let err = write_report(&target, &context(), &known_metrics(), None).unwrap_err();
        assert!(matches!(err, ReportError::CreateDir { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn unwritable_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where report.json should be: writing it must fail and name it.
        std::fs::create_dir(dir.path().join(JSON_FILE)).unwrap();
        let err = write_report(dir.path(), &context(), &known_metrics(), None).unwrap_err();
        assert!(matches!(err, ReportError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(JSON_FILE), "{err}");
    }

    #[test]
    fn inconsistent_metrics_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = known_metrics();
        m.confusion.pop();
        let err = write_report(dir.path(), &context(), &m, None).unwrap_err();
        assert!(matches!(err, ReportError::Inconsistent(_)), "{err}");
        assert!(!dir.path().join(JSON_FILE).exists());
    }

    #[test]
    fn many_classes_and_long_labels_still_render() {
        let labels: Vec<String> = (0..12)
            .map(|i| format!("a rather long class name number {i}"))
            .collect();
        let truth: Vec<usize> = (0..120).map(|i| i % 12).collect();
        let probs: Vec<Vec<f32>> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let mut r = vec![0.05f32; 12];
                r[if i.is_multiple_of(5) { (t + 1) % 12 } else { t }] = 0.45;
                r
            })
            .collect();
        let m = evaluate(&labels, &truth, &probs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = write_report(dir.path(), &context(), &m, Some(&history()[..1])).unwrap();
        assert_eq!(png_size(&files.confusion_matrix), CONFUSION_SIZE);
        assert_eq!(
            png_size(files.training_curves.as_ref().unwrap()),
            CURVES_SIZE
        );
    }

    /// Writes sample reports for looking at: `EDGE_REPORT_PREVIEW=/some/dir cargo test -p edge
    /// --no-default-features -- --ignored report_preview`.
    #[test]
    #[ignore]
    fn report_preview() {
        let Some(dir) = std::env::var_os("EDGE_REPORT_PREVIEW") else {
            return;
        };
        let dir = PathBuf::from(dir);
        write_report(
            &dir.join("small"),
            &context(),
            &known_metrics(),
            Some(&history()),
        )
        .unwrap();
        let labels: Vec<String> = (0..12)
            .map(|i| format!("a rather long class name number {i}"))
            .collect();
        let truth: Vec<usize> = (0..1200).map(|i| i % 12).collect();
        let probs: Vec<Vec<f32>> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let mut r = vec![0.05f32; 12];
                r[if i.is_multiple_of(5) { (t + 1) % 12 } else { t }] = 0.45;
                r
            })
            .collect();
        let m = evaluate(&labels, &truth, &probs).unwrap();
        write_report(&dir.join("many"), &context(), &m, Some(&history()[..1])).unwrap();
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(2_236_682), "2,236,682");
    }
}
