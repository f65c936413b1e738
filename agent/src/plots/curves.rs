//! Learning curves per target: validation top-1 and loss after each lifetime, STL and NDHTL
//! overlaid, each a mean line with a ± std band over seeds. Where a sweep ran several
//! configurations of a method on a target, the curve is its best one (by mean final top-1),
//! and the legend says so.

use std::collections::BTreeMap;

use ndhtl_core::config::Method;
use ndhtl_core::report::params::{compare_values, parameters_of};
use ndhtl_core::report::{FinetuneOutcome, MeanStd, mean_std};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{DrawResult, FONT, Figure, NDHTL_COLOUR, STL_COLOUR, padded_range};

/// One method's curve on one target.
#[derive(Debug, Clone)]
pub struct CurveSeries {
    pub method: Method,
    pub label: String,
    /// `(lifetime, top-1, loss)` over the seeds that reached that lifetime.
    pub points: Vec<(usize, MeanStd, MeanStd)>,
}

#[derive(Debug, Clone)]
pub struct LearningCurves {
    pub target: String,
    pub series: Vec<CurveSeries>,
}

/// A method's configurations on a target (every parameter but the seed) and their outcomes.
type Configurations<'a> = BTreeMap<Vec<String>, Vec<&'a FinetuneOutcome>>;

/// The learning curves of every target with any lifetime recorded, in natural target order.
pub fn learning_curves(outcomes: &[FinetuneOutcome]) -> Vec<LearningCurves> {
    // (target, method) → configuration (every parameter but the seed) → outcomes.
    let mut groups: BTreeMap<(String, Method), Configurations<'_>> = BTreeMap::new();
    for outcome in outcomes.iter().filter(|o| !o.history.is_empty()) {
        let configuration: Vec<String> = parameters_of(&outcome.config)
            .into_iter()
            .filter(|(name, _)| *name != "seed")
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        groups
            .entry((outcome.config.task.clone(), outcome.config.method))
            .or_default()
            .entry(configuration)
            .or_default()
            .push(outcome);
    }
    let mut targets: Vec<String> = groups.keys().map(|(target, _)| target.clone()).collect();
    targets.sort_by(|a, b| compare_values(a, b));
    targets.dedup();
    targets
        .into_iter()
        .map(|target| {
            let series = [Method::Stl, Method::Ndhtl]
                .into_iter()
                .filter_map(|method| {
                    let configurations = groups.get(&(target.clone(), method))?;
                    Some(series_of(method, configurations))
                })
                .collect();
            LearningCurves { target, series }
        })
        .collect()
}

fn series_of(method: Method, configurations: &Configurations<'_>) -> CurveSeries {
    let score = |members: &Vec<&FinetuneOutcome>| {
        let finals: Vec<f64> = members
            .iter()
            .filter_map(|o| o.summary.as_ref().map(|s| s.final_top1))
            .collect();
        let recorded = members.iter().map(|o| o.history.len()).sum::<usize>();
        (
            mean_std(&finals).map_or(f64::NEG_INFINITY, |m| m.mean),
            recorded,
        )
    };
    let (_, members) = configurations
        .iter()
        .max_by(|a, b| {
            let (score_a, recorded_a) = score(a.1);
            let (score_b, recorded_b) = score(b.1);
            score_a
                .total_cmp(&score_b)
                .then(recorded_a.cmp(&recorded_b))
        })
        .expect("a method with results has a configuration");
    let last = members
        .iter()
        .flat_map(|o| o.history.iter().map(|r| r.lifetime))
        .max()
        .unwrap_or(0);
    let points = (1..=last)
        .filter_map(|lifetime| {
            let records: Vec<_> = members
                .iter()
                .filter_map(|o| o.history.iter().find(|r| r.lifetime == lifetime))
                .collect();
            let top1 = mean_std(&records.iter().map(|r| r.val_top1).collect::<Vec<_>>())?;
            let loss = mean_std(&records.iter().map(|r| r.val_loss).collect::<Vec<_>>())?;
            Some((lifetime, top1, loss))
        })
        .collect();
    let name = match method {
        Method::Stl => "STL",
        Method::Ndhtl => "NDHTL",
    };
    let seeds = match members.len() {
        1 => "1 seed".to_string(),
        n => format!("{n} seeds"),
    };
    let label = if configurations.len() > 1 {
        format!("{name}, best of {} configs ({seeds})", configurations.len())
    } else {
        format!("{name} ({seeds})")
    };
    CurveSeries {
        method,
        label,
        points,
    }
}

fn colour(method: Method) -> RGBColor {
    match method {
        Method::Stl => STL_COLOUR,
        Method::Ndhtl => NDHTL_COLOUR,
    }
}

impl LearningCurves {
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        title: &str,
        y_label: &str,
        legend_at: SeriesLabelPosition,
        pick: impl Fn(&(usize, MeanStd, MeanStd)) -> MeanStd,
    ) -> DrawResult {
        let last = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .max()
            .unwrap_or(1);
        let (low, high) = padded_range(
            self.series.iter().flat_map(|s| {
                s.points.iter().flat_map(|p| {
                    let m = pick(p);
                    [m.mean - m.std, m.mean + m.std]
                })
            }),
            0.08,
        );
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.7f64..last as f64 + 0.3, low..high)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("lifetime (epoch)")
            .y_desc(y_label)
            .x_labels(last.clamp(2, 12))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-9 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for series in &self.series {
            let colour = colour(series.method);
            let points: Vec<(f64, MeanStd)> = series
                .points
                .iter()
                .map(|p| (p.0 as f64, pick(p)))
                .collect();
            let band: Vec<(f64, f64)> = points
                .iter()
                .map(|(x, m)| (*x, m.mean + m.std))
                .chain(points.iter().rev().map(|(x, m)| (*x, m.mean - m.std)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band,
                    colour.mix(0.18).filled(),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(x, m)| (*x, m.mean)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(series.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, m)| Circle::new((*x, m.mean), 3, colour.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(legend_at)
            .draw()
            .map_err(|e| e.to_string())
    }
}

impl Figure for LearningCurves {
    fn size(&self) -> (u32, u32) {
        (1200, 480)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(
                &format!(
                    "{}: validation after each lifetime (mean ± std over seeds)",
                    self.target
                ),
                (FONT, 22),
            )
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((1, 2));
        // Accuracy climbs and loss falls: each legend sits where its curves are not.
        self.panel(
            &panels[0],
            "Top-1 accuracy",
            "top-1 (%)",
            SeriesLabelPosition::LowerRight,
            |p| p.1,
        )?;
        self.panel(
            &panels[1],
            "Cross-entropy loss",
            "loss",
            SeriesLabelPosition::UpperRight,
            |p| p.2,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::save;
    use crate::plots::test_support::{inked_pixels, outcome};

    #[test]
    fn curves_average_seeds_per_lifetime_and_draw() {
        let outcomes = vec![
            outcome("T2", Method::Stl, 0, 40.0, 2.0),
            outcome("T2", Method::Stl, 1, 44.0, 2.0),
            outcome("T2", Method::Ndhtl, 0, 42.0, 3.0),
            outcome("T10", Method::Ndhtl, 0, 50.0, 1.0),
        ];
        let curves = learning_curves(&outcomes);
        assert_eq!(
            curves.iter().map(|c| c.target.as_str()).collect::<Vec<_>>(),
            ["T2", "T10"]
        );
        let stl = &curves[0].series[0];
        assert_eq!(stl.label, "STL (2 seeds)");
        // Lifetime 1: 42 and 46 → 44 ± √8.
        let (lifetime, top1, loss) = stl.points[0];
        assert_eq!((lifetime, top1.mean), (1, 44.0));
        assert!((top1.std - 8f64.sqrt()).abs() < 1e-12);
        assert!((loss.mean - 1.9).abs() < 1e-12);
        assert_eq!(stl.points.len(), 4);
        assert_eq!(curves[0].series[1].method, Method::Ndhtl);

        let dir = tempfile::tempdir().unwrap();
        let files = save(&curves[0], &dir.path().join("curves-T2")).unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in [
            "T2: validation",
            "lifetime (epoch)",
            "top-1 (%)",
            "STL (2 seeds)",
            "NDHTL (1 seed)",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        // A drawn figure, not a blank canvas: axes, bands, lines and text ink a fair share.
        let inked = inked_pixels(&files[1]);
        assert!(inked > 20_000, "only {inked} pixels drawn");
    }

    #[test]
    fn the_best_configuration_of_a_method_is_the_one_drawn() {
        let mut weak = outcome("T1", Method::Ndhtl, 0, 30.0, 1.0);
        weak.config.eta = 0.5;
        let strong = outcome("T1", Method::Ndhtl, 0, 60.0, 1.0);
        let curves = learning_curves(&[weak, strong]);
        let ndhtl = &curves[0].series[0];
        assert_eq!(ndhtl.label, "NDHTL, best of 2 configs (1 seed)");
        assert_eq!(ndhtl.points[0].1.mean, 61.0);
    }
}
