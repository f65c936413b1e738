//! Figures from a sweep's results, drawn with plotters as SVG and PNG:
//!
//! - [`curves`]: learning curves per target (validation top-1 and loss per lifetime, STL and
//!   NDHTL overlaid, mean ± std bands over seeds);
//! - [`gains`]: the per-target NDHTL − STL top-1 gains with their 95 % intervals, beside the
//!   paper's;
//! - [`heatmap`]: a two-parameter grid, coloured by its metric, the best cell outlined.
//!
//! Text is drawn with the DejaVu Sans embedded in the binary, so figures need no system fonts
//! and look the same everywhere.

pub mod curves;
pub mod gains;
pub mod heatmap;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("creating {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a figure drawing function returns; plotters' errors are generic over the backend, so
/// they are carried as text until [`save`] names the file.
pub type DrawResult = Result<(), String>;

/// A figure that can be drawn on any plotters backend.
pub trait Figure {
    /// Width and height in pixels (SVG user units).
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// The font family every figure uses.
pub const FONT: &str = "sans-serif";

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
        plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans Bold is a valid font"));
    });
}

/// Draws `figure` to `stem.svg` and `stem.png`; returns both paths.
pub fn save(figure: &impl Figure, stem: &Path) -> Result<Vec<PathBuf>, PlotError> {
    register_font();
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| PlotError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |message: String| PlotError::Draw { path, message }
    };
    {
        let root = SVGBackend::new(&svg, figure.size()).into_drawing_area();
        figure.draw(&root).map_err(failed(&svg))?;
        root.present().map_err(|e| failed(&svg)(e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, figure.size()).into_drawing_area();
        figure.draw(&root).map_err(failed(&png))?;
        root.present().map_err(|e| failed(&png)(e.to_string()))?;
    }
    Ok(vec![svg, png])
}

/// The colours of the two methods, the same in every figure.
pub const STL_COLOUR: RGBColor = RGBColor(31, 119, 180);
pub const NDHTL_COLOUR: RGBColor = RGBColor(214, 39, 40);
pub const PAPER_COLOUR: RGBColor = RGBColor(150, 150, 150);

/// Lower and upper bounds of `values` with a margin, never empty.
pub fn padded_range(values: impl IntoIterator<Item = f64>, margin: f64) -> (f64, f64) {
    let (low, high) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    let span = (high - low).max(1e-6);
    (low - margin * span, high + margin * span)
}

/// A filesystem-safe form of a label (`T1`, `eta=0.01`).
pub fn file_safe(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use ndhtl_core::config::{FinetuneConfig, Method};
    use ndhtl_core::metrics::{LifetimeMetrics, RunSummary};
    use ndhtl_core::report::FinetuneOutcome;

    /// A finished fine-tune whose validation top-1 climbs from `start` by `step` per lifetime.
    pub fn outcome(
        task: &str,
        method: Method,
        seed: u64,
        start: f64,
        step: f64,
    ) -> FinetuneOutcome {
        let history: Vec<LifetimeMetrics> = (1..=4)
            .map(|lifetime| LifetimeMetrics {
                lifetime,
                val_loss: 2.0 - 0.1 * lifetime as f64,
                val_top1: start + step * lifetime as f64,
                val_top5: 90.0,
                train_loss: 2.0,
                train_top1: 30.0,
                steps: 10,
                backward_passes: 10,
                lr: 0.001,
                eta: None,
                alpha_abs_mean: None,
                hebb_abs_mean: None,
                modulator_mean: None,
                train_seconds: 1.0,
                train_images_per_second: 10.0,
            })
            .collect();
        FinetuneOutcome {
            job_id: format!("{task}-{method:?}-{seed}"),
            config: FinetuneConfig {
                task: task.into(),
                method,
                seed,
                ..FinetuneConfig::default()
            },
            summary: RunSummary::from_history(&history),
            history,
        }
    }

    /// The image's pixels that are not white.
    pub fn inked_pixels(png: &std::path::Path) -> usize {
        let image = image::open(png).expect("a readable PNG").to_rgb8();
        image.pixels().filter(|p| p.0 != [255, 255, 255]).count()
    }
}
