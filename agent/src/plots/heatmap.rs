//! A heatmap of one two-parameter grid table: each cell coloured by its metric (viridis, with a
//! colour bar), its mean ± std written in it, the best cell outlined.

use ndhtl_core::report::grid::{GridReport, GridSlice};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{DrawResult, FONT, Figure, padded_range};

#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub rows_name: String,
    pub cols_name: String,
    pub metric_label: String,
    pub row_values: Vec<String>,
    pub col_values: Vec<String>,
    /// `cells[row][col]`: mean, std and whether every job of the cell has finished.
    pub cells: Vec<Vec<Option<(f64, f64, bool)>>>,
    pub best: Option<(usize, usize)>,
}

impl Heatmap {
    /// One heatmap per table of the grid report.
    pub fn from_grid(report: &GridReport) -> Vec<Heatmap> {
        report
            .slices
            .iter()
            .map(|slice| Heatmap::from_slice(report, slice))
            .collect()
    }

    fn from_slice(report: &GridReport, slice: &GridSlice) -> Heatmap {
        let mut title = format!(
            "{} by {} and {}",
            report.metric.label(),
            report.rows,
            report.cols
        );
        if !slice.fixed.is_empty() {
            let fixed: Vec<String> = slice
                .fixed
                .iter()
                .map(|(name, value)| format!("{name} = {value}"))
                .collect();
            title = format!("{title} ({})", fixed.join(", "));
        }
        Heatmap {
            title,
            rows_name: report.rows.clone(),
            cols_name: report.cols.clone(),
            metric_label: format!(
                "{}, mean over {}",
                report.metric.label(),
                report.pooled.join(", ")
            ),
            row_values: slice.row_values.clone(),
            col_values: slice.col_values.clone(),
            cells: slice
                .cells
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|cell| {
                            cell.stats
                                .map(|s| (s.mean, s.std, cell.finished == cell.total))
                        })
                        .collect()
                })
                .collect(),
            best: slice.best,
        }
    }

    fn value_range(&self) -> (f64, f64) {
        let (low, high) = padded_range(
            self.cells
                .iter()
                .flatten()
                .flatten()
                .map(|(mean, ..)| *mean),
            0.0,
        );
        if high - low < 1e-9 {
            (low - 0.5, high + 0.5)
        } else {
            (low, high)
        }
    }

    fn grid<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        let rows = self.row_values.len();
        let cols = self.col_values.len();
        let (low, high) = self.value_range();
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..cols as f64 - 0.5, -0.5f64..rows as f64 - 0.5)
            .map_err(|e| e.to_string())?;
        let col_names = self.col_values.clone();
        let row_names = self.row_values.clone();
        // Row 0 at the top: y = rows − 1 − row.
        let label_at = |names: &[String], value: f64, flip: bool| {
            let index = value.round();
            if (value - index).abs() > 1e-6 || index < 0.0 || index as usize >= names.len() {
                return String::new();
            }
            let index = if flip {
                names.len() - 1 - index as usize
            } else {
                index as usize
            };
            names[index].clone()
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols + 1)
            .y_labels(rows + 1)
            .x_label_formatter(&|x| label_at(&col_names, *x, false))
            .y_label_formatter(&|y| label_at(&row_names, *y, true))
            .x_desc(self.cols_name.as_str())
            .y_desc(self.rows_name.as_str())
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(|e| e.to_string())?;
        for (r, row) in self.cells.iter().enumerate() {
            let y = (rows - 1 - r) as f64;
            for (c, cell) in row.iter().enumerate() {
                let x = c as f64;
                let corners = [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)];
                let Some((mean, std, complete)) = *cell else {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            corners,
                            RGBColor(235, 235, 235).filled(),
                        )))
                        .map_err(|e| e.to_string())?;
                    continue;
                };
                let colour = ViridisRGB::get_color_normalized(mean, low, high);
                let position = (mean - low) / (high - low);
                let ink = if position < 0.55 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Rectangle::new(corners, colour.filled())))
                    .map_err(|e| e.to_string())?;
                let text = if complete {
                    format!("{mean:.2} ± {std:.2}")
                } else {
                    format!("{mean:.2} ± {std:.2}*")
                };
                let style = TextStyle::from((FONT, 15).into_font())
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(text, (x, y), style)))
                    .map_err(|e| e.to_string())?;
            }
        }
        if let Some((r, c)) = self.best {
            let (x, y) = (c as f64, (rows - 1 - r) as f64);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.47, y - 0.47), (x + 0.47, y + 0.47)],
                    RED.stroke_width(4),
                )))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn colour_bar<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        let (low, high) = self.value_range();
        let mut chart = ChartBuilder::on(area)
            .margin_top(14)
            .margin_bottom(64)
            .margin_right(10)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1.0, low..high)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_desc(self.metric_label.as_str())
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(|e| e.to_string())?;
        let steps = 100;
        chart
            .draw_series((0..steps).map(|i| {
                let a = low + (high - low) * i as f64 / steps as f64;
                let b = low + (high - low) * (i + 1) as f64 / steps as f64;
                Rectangle::new(
                    [(0.0, a), (1.0, b)],
                    ViridisRGB::get_color_normalized(a, low, high).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        (
            260 + 150 * self.col_values.len().max(1) as u32,
            150 + 62 * self.row_values.len().max(1) as u32,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let incomplete = self.cells.iter().flatten().flatten().any(|cell| !cell.2);
        let title = if incomplete {
            format!("{} — * some jobs unfinished; red: best", self.title)
        } else {
            format!("{} — red: best", self.title)
        };
        let root = root.titled(&title, (FONT, 17)).map_err(|e| e.to_string())?;
        let (width, _) = root.dim_in_pixel();
        let (cells, bar) = root.split_horizontally(width.saturating_sub(120));
        self.grid(&cells)?;
        self.colour_bar(&bar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::save;
    use crate::plots::test_support::{inked_pixels, outcome};
    use ndhtl_core::config::Method;
    use ndhtl_core::report::{GridSpec, LifetimeView, Metric, grid};

    #[test]
    fn a_grid_becomes_a_heatmap_per_slice() {
        let mut outcomes = Vec::new();
        for (eta, k, start) in [
            (0.01, 5, 40.0),
            (0.01, 10, 45.0),
            (0.1, 5, 50.0),
            (0.1, 10, 48.0),
        ] {
            for seed in 0..2 {
                let mut o = outcome("T1", Method::Ndhtl, seed, start + seed as f64, 1.0);
                o.config.eta = eta;
                o.config.k = k;
                outcomes.push(o);
            }
        }
        outcomes[7].summary = None; // (0.1, 10) seed 1 still running
        let report = grid(
            &outcomes,
            &GridSpec::new("eta", "k"),
            Metric::Top1,
            LifetimeView::Final,
        )
        .unwrap();
        let heatmaps = Heatmap::from_grid(&report);
        assert_eq!(heatmaps.len(), 1);
        let heatmap = &heatmaps[0];
        // (0.1, 5): finals 54 and 55 → 54.5, the best cell.
        assert_eq!(heatmap.best, Some((1, 0)));
        assert_eq!(heatmap.cells[1][0].unwrap().0, 54.5);
        assert!(!heatmap.cells[1][1].unwrap().2, "(0.1, 10) is incomplete");

        let dir = tempfile::tempdir().unwrap();
        let files = save(heatmap, &dir.path().join("heatmap")).unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in [
            "54.50 ± 0.71",
            "eta",
            "some jobs unfinished",
            "top-1 (%), mean over seed",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        assert!(inked_pixels(&files[1]) > 30_000);
    }
}
