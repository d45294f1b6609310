//! `plot.svg`: throughput against latency, one point per intake step.

use std::path::Path;

use super::Report;

impl Report {
    /// Throughput (x) against p50 and p99 latency (y) of the intake steps.
    pub(super) fn plot(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        FONT.get_or_init(|| {
            let bytes = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
                .map_err(|e| format!("DejaVuSans.ttf (apt-get install fonts-dejavu-core): {e}"))?;
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .map_err(|_| "DejaVuSans.ttf is not a usable font".to_owned())
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
        let mut points: Vec<(f64, f64, f64)> = self
            .intake
            .iter()
            .map(|s| (s.ok_per_sec, s.latency_ms.p50, s.latency_ms.p99))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
        let max_y = points.iter().map(|p| p.2).fold(1.0, f64::max) * 1.2;
        let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "RAVE intake: throughput against latency",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("durably stored webhooks per second")
            .y_desc("latency, ms")
            .draw()?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), &RED))?
            .label("p99")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0, p.2), 4, RED.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), &BLUE))?
            .label("p50")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0, p.1), 4, BLUE.filled())),
        )?;
        if let Some(c) = &self.ceilings {
            let x = c.pg_single_row_per_sec;
            if x < max_x {
                chart
                    .draw_series(LineSeries::new([(x, 0.0), (x, max_y)], BLACK.mix(0.5)))?
                    .label("PostgreSQL single-row insert rate")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    }
}
