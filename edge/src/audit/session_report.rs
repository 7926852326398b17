//! `edge report`: the one-page report of one session, written into a folder.
//!
//! [`write_session_report`] writes `report.md`, `report.html` (self-contained: the chart and thumbnails are embedded),
//! `counts.png` (bar chart of the class counts, uncertain frames and retakes) and
//! `thumbnails/frame-<id>.jpg` (up to [`MAX_THUMBNAILS`] flagged frames whose picture was kept).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{PixelType, ResizeOptions, Resizer};
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::{AuditError, verdict_line};
use crate::store::{
    FrameFacts, FrameRow, SessionCounts, SessionRow, SessionState, Store, StoredDecision,
    format_time,
};
use leukoscope_model::evaluation_report::ReportError;
use leukoscope_model::evaluation_report::plot::{self, FONT, MUTED, PALETTE, PlotResult, TEXT};
use leukoscope_screening::{SCREENING_NOTE, UncertainReason, Verdict, is_normal};

/// The most thumbnails a report shows (it is one page).
pub const MAX_THUMBNAILS: usize = 12;
/// Longest side of a thumbnail, in pixels.
const THUMBNAIL_SIZE: u32 = 192;
/// Pixel size of the counts chart.
const CHART_SIZE: (u32, u32) = (900, 520);

/// The files of a session report.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html` (self-contained).
    pub html: PathBuf,
    /// `counts.png`.
    pub chart: PathBuf,
    /// The thumbnails written.
    pub thumbnails: Vec<PathBuf>,
}

/// A flagged frame shown in the report.
struct Thumb {
    frame_id: i64,
    caption: String,
    /// Relative to the report folder, and the JPEG bytes; none when the picture is unreadable.
    image: Option<(String, Vec<u8>)>,
    problem: Option<String>,
}

/// What the report states, computed once for both documents.
struct Facts {
    title: String,
    verdict: String,
    verdict_class: &'static str,
    counts: SessionCounts,
    counts_note: &'static str,
    retake_reasons: Vec<(String, u32)>,
    /// Classified frames the model found unfamiliar.
    unfamiliar_frames: usize,
    flagged_kept: usize,
    evicted: usize,
    thumbs: Vec<Thumb>,
    details: Vec<(&'static str, String)>,
}

/// Writes the one-page report of session `id` into `out_dir` (created if needed).
///
/// `flagged_dir` is the flagged-images folder the kept pictures are relative to; without it,
/// or when a picture is missing, the report says so instead of showing it.
pub fn write_session_report(
    store: &Store,
    id: i64,
    out_dir: &Path,
    flagged_dir: Option<&Path>,
) -> Result<SessionReportFiles, AuditError> {
    let session = store.session(id)?;
    let frames = store.frames(id)?;
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let files = SessionReportFiles {
        markdown: out_dir.join("report.md"),
        html: out_dir.join("report.html"),
        chart: out_dir.join("counts.png"),
        thumbnails: Vec::new(),
    };
    let mut facts = facts(&session, &frames);
    let mut thumbnails = Vec::new();
    facts.thumbs = thumbs(&session, &frames, flagged_dir);
    if facts.thumbs.iter().any(|t| t.image.is_some()) {
        let dir = out_dir.join("thumbnails");
        std::fs::create_dir_all(&dir).map_err(|source| ReportError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        for t in &facts.thumbs {
            if let Some((rel, bytes)) = &t.image {
                let path = out_dir.join(rel);
                write_file(&path, bytes)?;
                thumbnails.push(path);
            }
        }
    }

    plot::register_font()?;
    let bars = chart_bars(&session, &facts.counts);
    let subtitle = facts.title.clone();
    plot::render_png(&files.chart, CHART_SIZE, |root| {
        draw_counts(root, &bars, &subtitle)
    })?;
    let chart_png = std::fs::read(&files.chart).map_err(|source| ReportError::Io {
        action: "read",
        path: files.chart.clone(),
        source,
    })?;

    write_file(&files.markdown, markdown(&facts).as_bytes())?;
    write_file(&files.html, html(&facts, &chart_png).as_bytes())?;
    Ok(SessionReportFiles {
        thumbnails,
        ..files
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Counts from the frames themselves (for a session still open).
fn count_frames(session: &SessionRow, frames: &[FrameRow]) -> SessionCounts {
    SessionCounts::replay(
        session,
        frames.iter().map(|f| FrameFacts {
            decision: f.frame.decision,
            label: f.frame.label.clone(),
            probabilities: f.frame.probabilities.clone(),
            field: f.frame.field,
            tile: f.frame.tile,
            uncertain_reason: f.frame.uncertain_reason,
        }),
    )
}

fn facts(session: &SessionRow, frames: &[FrameRow]) -> Facts {
    let title = match &session.slide_id {
        Some(slide) => format!("Session {} — slide {slide}", session.id),
        None => format!("Session {}", session.id),
    };
    let (counts, counts_note) = match (&session.counts, session.state) {
        (Some(c), SessionState::Closed) => (c.clone(), "as shown when the session closed"),
        (Some(c), _) => (c.clone(), "recomputed from the recorded frames"),
        (None, _) => (count_frames(session, frames), "so far (session still open)"),
    };
    let mut retake_reasons: Vec<(String, u32)> = Vec::new();
    for f in frames
        .iter()
        .filter(|f| f.frame.decision == StoredDecision::Retake)
    {
        let reason = f
            .frame
            .retake_reason
            .clone()
            .unwrap_or_else(|| "unknown".into());
        match retake_reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => retake_reasons.push((reason, 1)),
        }
    }
    let verdict_class = match session.verdict.as_deref() {
        _ if session.state != SessionState::Closed => "none",
        Some(v) if v == Verdict::Refer.as_str() || v == Verdict::Refer.headline() => "refer",
        Some(v) if v == Verdict::NoBlasts.as_str() || v == Verdict::NoBlasts.headline() => "clear",
        _ => "other",
    };
    let stop = match (session.stopped, session.stop_reason) {
        (Some(t), Some(r)) => format!("{} ({r})", format_time(&t)),
        (Some(t), None) => format_time(&t),
        (None, _) => "-".into(),
    };
    let mut details = vec![
        ("State", session.state.to_string()),
        ("Started", format_time(&session.started)),
        ("Stopped", stop),
        ("Results recorded", session.frames.to_string()),
        (
            "Fields",
            session
                .counts
                .as_ref()
                .and_then(|c| c.fields)
                .map_or_else(|| "-".into(), |n| n.to_string()),
        ),
        ("Model", session.model_variant.clone()),
        ("Model sha256", session.model_sha256.clone()),
        ("Software version", session.software_version.clone()),
        ("Labels", session.labels.join(", ")),
        ("Decision rule", session.rule.to_string()),
    ];
    if let Some(device) = &session.device {
        // A collector's database: which kit screened it, and its id there.
        let kit = match (&session.site, session.device_session) {
            (Some(site), Some(id)) => format!("{device} (site {site}, session {id} on the kit)"),
            _ => device.clone(),
        };
        details.insert(0, ("Device", kit));
    }
    Facts {
        title,
        verdict: verdict_line(session),
        verdict_class,
        counts,
        counts_note,
        retake_reasons,
        unfamiliar_frames: frames
            .iter()
            .filter(|f| f.frame.uncertain_reason == Some(UncertainReason::Unfamiliar))
            .count(),
        flagged_kept: frames
            .iter()
            .filter(|f| f.frame.kept_image.is_some())
            .count(),
        evicted: frames.iter().filter(|f| f.image_evicted.is_some()).count(),
        thumbs: Vec::new(),
        details,
    }
}

/// Picks the flagged frames to show (confident blasts by confidence, then uncertain frames) and
/// makes their thumbnails.
fn thumbs(session: &SessionRow, frames: &[FrameRow], flagged_dir: Option<&Path>) -> Vec<Thumb> {
    let mut kept: Vec<&FrameRow> = frames
        .iter()
        .filter(|f| f.frame.kept_image.is_some())
        .collect();
    let rank = |f: &FrameRow| match f.frame.decision {
        StoredDecision::Label
            if !is_normal(
                &session.normal_labels,
                f.frame.label.as_deref().unwrap_or(""),
            ) =>
        {
            0
        }
        StoredDecision::Uncertain => 1,
        _ => 2,
    };
    kept.sort_by(|a, b| {
        rank(a).cmp(&rank(b)).then(
            b.frame
                .confidence
                .unwrap_or(0.0)
                .total_cmp(&a.frame.confidence.unwrap_or(0.0)),
        )
    });
    let mut resizer = Resizer::new();
    kept.into_iter()
        .take(MAX_THUMBNAILS)
        .map(|f| {
            let fr = &f.frame;
            let caption = format!(
                "frame {}{}: {} {}{}",
                fr.seq,
                fr.tile.map_or(String::new(), |t| format!(" tile {t}")),
                fr.decision,
                fr.label.as_deref().unwrap_or(""),
                fr.confidence
                    .map_or(String::new(), |c| format!(" ({:.0} %)", c * 100.0)),
            );
            let rel = fr.kept_image.as_deref().expect("filtered on kept images");
            let made = match flagged_dir {
                None => Err("flagged-images folder not given".to_string()),
                Some(dir) => thumbnail(&mut resizer, &dir.join(rel)),
            };
            match made {
                Ok(bytes) => Thumb {
                    frame_id: f.id,
                    caption,
                    image: Some((format!("thumbnails/frame-{}.jpg", f.id), bytes)),
                    problem: None,
                },
                Err(problem) => Thumb {
                    frame_id: f.id,
                    caption,
                    image: None,
                    problem: Some(problem),
                },
            }
        })
        .collect()
}

/// A JPEG thumbnail of at most `THUMBNAIL_SIZE` on its longest side.
fn thumbnail(resizer: &mut Resizer, path: &Path) -> Result<Vec<u8>, String> {
    let img = leukoscope_model::preprocess::decode_image(path).map_err(|e| e.to_string())?;
    let (w, h) = (img.width(), img.height());
    let scale = f64::from(THUMBNAIL_SIZE) / f64::from(w.max(h));
    let small: RgbImage = if scale >= 1.0 {
        img
    } else {
        let tw = ((f64::from(w) * scale).round() as u32).max(1);
        let th = ((f64::from(h) * scale).round() as u32).max(1);
        let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut dst = Image::new(tw, th, PixelType::U8x3);
        resizer
            .resize(&src, &mut dst, &ResizeOptions::new())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        RgbImage::from_raw(tw, th, dst.into_vec()).expect("resized buffer has the thumbnail size")
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&small)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(jpeg)
}

/// The fields the verdict counted: good, blast and uncertain ones, and of those the unfamiliar
/// ones when there are any (or why there are none).
fn fields_text(c: &SessionCounts) -> String {
    match (c.fields, c.blast_fields, c.uncertain_fields) {
        (Some(good), Some(blasts), Some(uncertain)) => match c.unfamiliar_fields {
            Some(unfamiliar) if unfamiliar > 0 => format!(
                "{good} good ({blasts} blast, {uncertain} uncertain, of which {unfamiliar} \
                 unfamiliar: not validated for such pictures)"
            ),
            _ => format!("{good} good ({blasts} blast, {uncertain} uncertain)"),
        },
        _ => "not tracked (recorded before fields were tracked)".into(),
    }
}

/// Bars: confident frames per class, then uncertain frames and retakes.
fn chart_bars(session: &SessionRow, c: &SessionCounts) -> Vec<(String, u32, RGBColor)> {
    let mut bars: Vec<(String, u32, RGBColor)> = c
        .counts
        .iter()
        .map(|(l, n)| {
            let color = if is_normal(&session.normal_labels, l) {
                PALETTE[2]
            } else {
                PALETTE[3]
            };
            (l.clone(), *n, color)
        })
        .collect();
    bars.push(("uncertain".into(), c.uncertain, PALETTE[7]));
    bars.push(("retake".into(), c.retakes, PALETTE[1]));
    bars
}

fn draw_counts(
    root: &plot::Area<'_>,
    bars: &[(String, u32, RGBColor)],
    subtitle: &str,
) -> PlotResult {
    root.fill(&WHITE)?;
    plot::header(root, "Frames per class", subtitle)?;
    let body = root.margin(80, 10, 10, 10);
    let n = bars.len();
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let top = (f64::from(max) * 1.15).ceil().max(1.0);
    let mut chart = ChartBuilder::on(&body)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("frames")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(TRANSPARENT)
        .y_labels(8)
        .y_label_formatter(&|y| {
            if y.fract() == 0.0 {
                format!("{y:.0}")
            } else {
                String::new()
            }
        })
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, c))| {
        let x = i as f64;
        Rectangle::new([(x + 0.15, 0.0), (x + 0.85, f64::from(*v))], c.filled())
    }))?;
    let value_style = plot::style(16.0, &TEXT, HPos::Center, VPos::Bottom);
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, _))| {
        Text::new(
            v.to_string(),
            (i as f64 + 0.5, f64::from(*v) + top * 0.01),
            value_style.clone(),
        )
    }))?;
    // Class names under the bars, in pixel coordinates (the x axis has no numeric meaning).
    let name_style = plot::style(16.0, &MUTED, HPos::Center, VPos::Top);
    for (i, (label, _, _)) in bars.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(label.clone(), (px, py + 8), name_style.clone()))?;
    }
    Ok(())
}

fn percent(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1} %", x * 100.0)
    } else {
        "-".into()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn retake_text(f: &Facts) -> String {
    if f.retake_reasons.is_empty() {
        return f.counts.retakes.to_string();
    }
    let reasons: Vec<String> = f
        .retake_reasons
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    format!("{} ({})", f.counts.retakes, reasons.join(", "))
}

fn flagged_text(f: &Facts) -> String {
    let mut s = format!("{} flagged pictures kept", f.flagged_kept);
    if f.flagged_kept > f.thumbs.len() {
        let _ = write!(s, ", the first {} shown", f.thumbs.len());
    }
    if f.evicted > 0 {
        let _ = write!(s, "; {} removed by the folder's size cap", f.evicted);
    }
    s
}

fn markdown(f: &Facts) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", f.title);
    let _ = writeln!(md, "**Verdict: {}** — {SCREENING_NOTE}.\n", f.verdict);
    let _ = writeln!(
        md,
        "> Every result must be reviewed by a qualified person.\n"
    );
    let _ = writeln!(md, "## Counts ({})\n", f.counts_note);
    let _ = writeln!(md, "| class | confident frames |\n|---|---:|");
    for (label, n) in &f.counts.counts {
        let _ = writeln!(md, "| {} | {n} |", md_cell(label));
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "- Good frames (passed the quality gate): {}",
        f.counts.good
    );
    let _ = writeln!(
        md,
        "- Uncertain (below the confidence threshold, or unfamiliar): {}",
        f.counts.uncertain
    );
    if f.unfamiliar_frames > 0 {
        let _ = writeln!(
            md,
            "- Unfamiliar (the model was not validated for such pictures): {}",
            f.unfamiliar_frames
        );
    }
    let _ = writeln!(
        md,
        "- Retakes (failed the quality gate): {}",
        retake_text(f)
    );
    let _ = writeln!(md, "- Fields: {}", fields_text(&f.counts));
    let _ = writeln!(
        md,
        "- Blast fraction (blast fields / confident fields): {}\n",
        percent(f.counts.blast_fraction)
    );
    let _ = writeln!(md, "![frames per class](counts.png)\n");
    let _ = writeln!(md, "## Flagged frames\n\n{}.\n", flagged_text(f));
    for t in &f.thumbs {
        match (&t.image, &t.problem) {
            (Some((rel, _)), _) => {
                let _ = writeln!(
                    md,
                    "- ![frame {}]({rel}) {}",
                    t.frame_id,
                    md_cell(&t.caption)
                );
            }
            (None, problem) => {
                let _ = writeln!(
                    md,
                    "- {} — picture unavailable: {}",
                    md_cell(&t.caption),
                    md_cell(problem.as_deref().unwrap_or("unknown"))
                );
            }
        }
    }
    let _ = writeln!(md, "\n## Session\n\n| | |\n|---|---|");
    for (k, v) in &f.details {
        let _ = writeln!(md, "| {k} | {} |", md_cell(v));
    }
    md
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(f: &Facts, chart_png: &[u8]) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 900px; margin: 1.5em auto; color: #1e1e1e; font-size: 14px; }}
h1 {{ font-size: 1.5em; margin-bottom: 0.3em; }} h2 {{ font-size: 1.1em; margin: 1em 0 0.4em; }}
.verdict {{ padding: 0.6em 0.9em; border-radius: 4px; font-size: 1.2em; font-weight: bold; }}
.refer {{ background: #fbe3e3; border-left: 6px solid #d62728; }}
.clear {{ background: #e3f4e3; border-left: 6px solid #2ca02c; }}
.other {{ background: #fff3dc; border-left: 6px solid #ff7f0e; }}
.none {{ background: #eeeeee; border-left: 6px solid #7f7f7f; }}
.note {{ font-weight: normal; font-size: 0.8em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }}
td.n {{ text-align: right; }} .details td {{ word-break: break-all; }}
.cols {{ display: flex; gap: 1.5em; align-items: flex-start; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; width: {thumb}px; font-size: 0.8em; }} figure img {{ max-width: {thumb}px; display: block; }}
</style></head><body>
<h1>{title}</h1>
<div class="verdict {class}">{verdict}<br><span class="note">{note} — every result must be reviewed by a qualified person.</span></div>
"#,
        title = esc(&f.title),
        class = f.verdict_class,
        verdict = esc(&f.verdict),
        note = SCREENING_NOTE,
        thumb = THUMBNAIL_SIZE,
    );
    let _ = write!(
        h,
        "<h2>Counts ({})</h2>\n<div class=\"cols\"><div><table><tr><th>class</th><th>confident frames</th></tr>\n",
        esc(f.counts_note)
    );
    for (label, n) in &f.counts.counts {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{n}</td></tr>",
            esc(label)
        );
    }
    let _ = writeln!(
        h,
        "</table><p>Good frames: {}<br>Uncertain: {}<br>Unfamiliar: {}<br>Retakes: {}<br>Fields: {}<br>Blast fraction: {}</p></div>",
        f.counts.good,
        f.counts.uncertain,
        f.unfamiliar_frames,
        esc(&retake_text(f)),
        esc(&fields_text(&f.counts)),
        percent(f.counts.blast_fraction)
    );
    let _ = writeln!(
        h,
        "<img alt=\"frames per class\" width=\"540\" src=\"data:image/png;base64,{}\"></div>",
        b64(chart_png)
    );
    let _ = writeln!(
        h,
        "<h2>Flagged frames</h2><p>{}.</p><div class=\"thumbs\">",
        esc(&flagged_text(f))
    );
    for t in &f.thumbs {
        match &t.image {
            Some((_, bytes)) => {
                let _ = writeln!(
                    h,
                    "<figure><img alt=\"frame {}\" src=\"data:image/jpeg;base64,{}\"><figcaption>{}</figcaption></figure>",
                    t.frame_id,
                    b64(bytes),
                    esc(&t.caption)
                );
            }
            None => {
                let _ = writeln!(
                    h,
                    "<figure><figcaption>{} — picture unavailable: {}</figcaption></figure>",
                    esc(&t.caption),
                    esc(t.problem.as_deref().unwrap_or("unknown"))
                );
            }
        }
    }
    let _ = writeln!(h, "</div>\n<h2>Session</h2><table class=\"details\">");
    for (k, v) in &f.details {
        let _ = writeln!(h, "<tr><td>{k}</td><td>{}</td></tr>", esc(v));
    }
    let _ = writeln!(h, "</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_text_is_escaped() {
        assert_eq!(esc("<b>&\"x\""), "&lt;b&gt;&amp;&quot;x&quot;");
    }
}
