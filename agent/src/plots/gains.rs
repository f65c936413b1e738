//! The per-target gain of NDHTL over STL (top-1, percentage points): ours as a bar with its
//! 95 % confidence interval (paired by seed), the paper's beside it.

use ndhtl_core::report::Table3;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{DrawResult, FONT, Figure, NDHTL_COLOUR, PAPER_COLOUR, padded_range};

#[derive(Debug, Clone)]
pub struct GainBar {
    pub target: String,
    /// Ours: mean NDHTL − STL and the 95 % interval, when both methods have results.
    pub ours: Option<(f64, Option<(f64, f64)>)>,
    pub paper: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct GainsChart {
    pub bars: Vec<GainBar>,
    pub view: &'static str,
}

impl GainsChart {
    /// The gains of a Table 3 (its average row last); `None` when no target has both methods.
    pub fn from_table3(table: &Table3) -> Option<GainsChart> {
        let bars: Vec<GainBar> = table
            .rows
            .iter()
            .chain(table.average.iter())
            .map(|row| GainBar {
                target: row.target.split(' ').next().unwrap_or_default().to_string(),
                ours: row
                    .top1
                    .difference
                    .map(|d| (d.mean, d.half_width.map(|h| (d.mean - h, d.mean + h)))),
                paper: row
                    .top1
                    .paper_stl
                    .zip(row.top1.paper_ndhtl)
                    .map(|(stl, ndhtl)| ndhtl - stl),
            })
            .collect();
        bars.iter().any(|b| b.ours.is_some()).then(|| GainsChart {
            bars,
            view: table.view.describe(),
        })
    }
}

impl Figure for GainsChart {
    fn size(&self) -> (u32, u32) {
        ((160 + 90 * self.bars.len() as u32).max(760), 540)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let values = self.bars.iter().flat_map(|bar| {
            let mut values = vec![0.0];
            values.extend(bar.paper);
            if let Some((mean, interval)) = bar.ours {
                values.push(mean);
                if let Some((low, high)) = interval {
                    values.extend([low, high]);
                }
            }
            values
        });
        let (low, high) = padded_range(values, 0.1);
        let count = self.bars.len();
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("NDHTL − STL top-1 gain per target ({})", self.view),
                (FONT, 20),
            )
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(-0.6f64..count as f64 - 0.4, low..high)
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = self.bars.iter().map(|b| b.target.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(count + 1)
            .x_label_formatter(&|x| {
                let index = x.round();
                if (x - index).abs() < 1e-6 && index >= 0.0 {
                    names.get(index as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("target task")
            .y_desc("gain in top-1 (percentage points)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(-0.6, 0.0), (count as f64 - 0.4, 0.0)],
                BLACK.stroke_width(1),
            )))
            .map_err(|e| e.to_string())?;

        let ours = self.bars.iter().enumerate().filter_map(|(i, bar)| {
            let (mean, _) = bar.ours?;
            let x = i as f64;
            Some(Rectangle::new(
                [(x - 0.38, 0.0), (x - 0.02, mean)],
                NDHTL_COLOUR.mix(0.85).filled(),
            ))
        });
        chart
            .draw_series(ours)
            .map_err(|e| e.to_string())?
            .label("ours (mean over seeds, 95% CI)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], NDHTL_COLOUR.filled()));
        let paper = self.bars.iter().enumerate().filter_map(|(i, bar)| {
            let gain = bar.paper?;
            let x = i as f64;
            Some(Rectangle::new(
                [(x + 0.02, 0.0), (x + 0.38, gain)],
                PAPER_COLOUR.filled(),
            ))
        });
        chart
            .draw_series(paper)
            .map_err(|e| e.to_string())?
            .label("paper (Table 3)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], PAPER_COLOUR.filled()));
        let whiskers = self.bars.iter().enumerate().flat_map(|(i, bar)| {
            let Some((_, Some((low, high)))) = bar.ours else {
                return Vec::new();
            };
            let x = i as f64 - 0.2;
            [
                vec![(x, low), (x, high)],
                vec![(x - 0.06, low), (x + 0.06, low)],
                vec![(x - 0.06, high), (x + 0.06, high)],
            ]
            .into_iter()
            .map(|segment| PathElement::new(segment, BLACK.stroke_width(2)))
            .collect()
        });
        chart.draw_series(whiskers).map_err(|e| e.to_string())?;
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::save;
    use crate::plots::test_support::{inked_pixels, outcome};
    use ndhtl_core::config::Method;
    use ndhtl_core::report::{LifetimeView, table3};

    #[test]
    fn gains_come_from_table3_and_draw() {
        let outcomes = vec![
            outcome("T1", Method::Stl, 0, 40.0, 2.0),
            outcome("T1", Method::Ndhtl, 0, 43.0, 2.0),
            outcome("T1", Method::Stl, 1, 41.0, 2.0),
            outcome("T1", Method::Ndhtl, 1, 43.0, 2.0),
            outcome("T8", Method::Stl, 0, 40.0, 2.0),
            outcome("T8", Method::Ndhtl, 0, 39.0, 2.0),
        ];
        let chart = GainsChart::from_table3(&table3(&outcomes, LifetimeView::Final)).unwrap();
        assert_eq!(
            chart
                .bars
                .iter()
                .map(|b| b.target.as_str())
                .collect::<Vec<_>>(),
            ["T1", "T8", "Avg"]
        );
        // T1: differences 3 and 2 → 2.5 ± 12.706 · √0.5/√2 = 6.353.
        let (mean, interval) = chart.bars[0].ours.unwrap();
        assert_eq!(mean, 2.5);
        let (low, high) = interval.unwrap();
        assert!((low + 3.853).abs() < 1e-9 && (high - 8.853).abs() < 1e-9);
        assert!((chart.bars[1].paper.unwrap() - 3.6).abs() < 1e-9);
        assert_eq!(chart.bars[1].ours, Some((-1.0, None)));

        let dir = tempfile::tempdir().unwrap();
        let files = save(&chart, &dir.path().join("gains")).unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in ["paper (Table 3)", "T8", "gain in top-1"] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        assert!(inked_pixels(&files[1]) > 10_000);
    }

    #[test]
    fn no_chart_without_both_methods() {
        let outcomes = vec![outcome("T1", Method::Stl, 0, 40.0, 2.0)];
        assert!(GainsChart::from_table3(&table3(&outcomes, LifetimeView::Final)).is_none());
    }
}
