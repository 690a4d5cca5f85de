//! The sweep's figures, drawn from its table and task folders as PNG and SVG.
//!
//! - `figures/test_loss`, `figures/top_eigenvalue`, `figures/trace`: one
//!   point per task and configuration, coloured by family (the study's
//!   Figures 1, 2 and 7).
//! - `figures/interpolation`: the loss along the line from the initial to
//!   the final weights of every task, overlaid (Figure 8).
//! - per task, `surface_contour`, `surface_filled`, `surface_3d` (Figures 3
//!   to 6) and `density` (Figure 9), when the task computed them.
//!
//! Values spanning two decades or more are drawn on a log scale; when they
//! also change sign (Hessian eigenvalues can), on `sign(v) log10(1 + |v|)`,
//! which the axis label says.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, anyhow};
use minima_shared::{Arch, TaskMetrics, TaskSpec};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// Size of every figure, in pixels (PNG) and user units (SVG).
pub const SIZE: (u32, u32) = (1000, 700);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; a failure leaves
        // plotters without text, which the figure tests would notice.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// A figure that can draw itself on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// Draws `figure` to `<stem>.png` and `<stem>.svg`; returns both paths.
fn save(figure: &impl Figure, stem: &Path) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        figure
            .draw(&root)
            .map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e:?}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        figure
            .draw(&root)
            .map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e:?}", svg.display()))?;
    }
    Ok(vec![png, svg])
}

/// How values map to the vertical axis.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
    SymLog,
}

impl Scale {
    /// Log when positive values span two decades, symmetric log when such a
    /// span comes with both signs, linear otherwise.
    fn choose(values: &[f64]) -> Scale {
        let magnitudes: Vec<f64> = values
            .iter()
            .map(|v| v.abs())
            .filter(|v| *v > 0.0)
            .collect();
        let (lo, hi) = magnitudes
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if magnitudes.is_empty() || hi / lo < 100.0 {
            Scale::Linear
        } else if values.iter().all(|&v| v > 0.0) {
            Scale::Log
        } else {
            Scale::SymLog
        }
    }

    fn forward(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log => v.log10(),
            Scale::SymLog => v.signum() * v.abs().ln_1p() / std::f64::consts::LN_10,
        }
    }

    fn inverse(self, y: f64) -> f64 {
        match self {
            Scale::Linear => y,
            Scale::Log => 10f64.powf(y),
            Scale::SymLog => y.signum() * (y.abs() * std::f64::consts::LN_10).exp_m1(),
        }
    }

    fn describe(self, label: &str) -> String {
        match self {
            Scale::Linear => label.to_string(),
            Scale::Log => format!("{label} (log scale)"),
            Scale::SymLog => format!("{label} (sign(v) log10(1 + |v|) scale)"),
        }
    }
}

/// A tick label that stays short at any magnitude.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-2 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// `[lo, hi]` padded by 5 %, never empty.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9 * lo.abs().max(1.0));
    (lo - pad, hi + pad)
}

fn family_colour(arch: Arch) -> RGBColor {
    match arch {
        Arch::Gru => RGBColor(31, 119, 180),
        Arch::Lstm => RGBColor(214, 39, 40),
        Arch::Transformer => RGBColor(44, 160, 44),
    }
}

/// A metric of every task against its configuration (Figures 1, 2, 7).
struct PerConfiguration {
    title: String,
    label: &'static str,
    /// Configuration labels, in table order.
    configurations: Vec<String>,
    /// (configuration index, family, value)
    points: Vec<(usize, Arch, f64)>,
}

impl Figure for PerConfiguration {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let values: Vec<f64> = self.points.iter().map(|p| p.2).collect();
        let scale = Scale::choose(&values);
        let (lo, hi) = padded(values.iter().map(|&v| scale.forward(v)));
        let n = self.configurations.len();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(170)
            .y_label_area_size(90)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| short(scale.inverse(*y)))
            .y_desc(scale.describe(self.label))
            .x_desc("configuration (layers, heads, hidden size)")
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        // Configuration names, written downwards from just below the axis.
        let style = ("sans-serif", 12)
            .into_font()
            .transform(FontTransform::Rotate90)
            .into_text_style(root)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (i, name) in self.configurations.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64, lo));
            root.draw_text(name, &style, (x, y + 6)).map_err(err)?;
        }
        for arch in Arch::ALL {
            let colour = family_colour(arch);
            let points: Vec<(f64, f64)> = self
                .points
                .iter()
                .filter(|p| p.1 == arch)
                .map(|&(i, _, v)| (i as f64, scale.forward(v)))
                .collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 5, colour.filled())))
                .map_err(err)?
                .label(arch.display_name())
                .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
        }
        draw_legend(&mut chart, 16)
    }
}

/// The legend of a 2-D chart: boxed, on a translucent white background.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart2d<'a, DB>,
    font_size: u32,
) -> DrawResult {
    chart
        .configure_series_labels()
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

type Chart2d<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Loss along the interpolation line of several tasks (Figure 8).
struct Interpolations {
    title: String,
    /// (label, family, alphas, train losses)
    curves: Vec<(String, Arch, Vec<f64>, Vec<f64>)>,
}

impl Figure for Interpolations {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let all: Vec<f64> = self
            .curves
            .iter()
            .flat_map(|c| c.3.iter().copied())
            .collect();
        let scale = Scale::choose(&all);
        let (lo, hi) = padded(all.iter().map(|&v| scale.forward(v)));
        let (x_lo, x_hi) = padded(self.curves.iter().flat_map(|c| c.2.iter().copied()));
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(x_lo..x_hi, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .y_label_formatter(&|y| short(scale.inverse(*y)))
            .y_desc(scale.describe("training loss"))
            .x_desc("alpha: (1 - alpha) initial + alpha final weights")
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        let legend = self.curves.len() <= 12;
        for (k, (label, arch, alphas, losses)) in self.curves.iter().enumerate() {
            // Families keep their hue; tasks within a family vary in shade.
            let base = family_colour(*arch);
            let colour = if legend {
                Palette99::pick(k).to_rgba()
            } else {
                base.mix(0.6)
            };
            let series = chart
                .draw_series(LineSeries::new(
                    alphas
                        .iter()
                        .zip(losses)
                        .map(|(&a, &l)| (a, scale.forward(l))),
                    colour.stroke_width(2),
                ))
                .map_err(err)?;
            if legend {
                series.label(label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
        }
        if legend {
            draw_legend(&mut chart, 14)?;
        }
        Ok(())
    }
}

/// A task's spectral density on a log scale (Figure 9).
struct DensityPlot {
    title: String,
    grid: Vec<f64>,
    density: Vec<f64>,
}

impl Figure for DensityPlot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let peak = self
            .density
            .iter()
            .copied()
            .fold(0.0f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let floor = peak * 1e-8;
        let logs: Vec<f64> = self.density.iter().map(|d| d.max(floor).log10()).collect();
        let (x_lo, x_hi) = padded(self.grid.iter().copied());
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(x_lo..x_hi, floor.log10()..peak.log10() + 0.5)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| short(*x))
            .y_label_formatter(&|y| short(10f64.powf(*y)))
            .x_desc("Hessian eigenvalue")
            .y_desc("density (log scale)")
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                self.grid.iter().copied().zip(logs),
                RGBColor(31, 119, 180).stroke_width(2),
            ))
            .map_err(err)?;
        Ok(())
    }
}

/// How a surface is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SurfaceStyle {
    Contour,
    Filled,
    ThreeD,
}

/// A task's loss surface (Figures 3 to 6).
struct SurfacePlot {
    title: String,
    style: SurfaceStyle,
    xs: Vec<f64>,
    ys: Vec<f64>,
    /// `values[j * xs.len() + i]` at `(xs[i], ys[j])`.
    values: Vec<f64>,
}

impl SurfacePlot {
    /// log10 of the loss, which keeps steep walls from hiding the basin.
    fn log_at(&self, i: usize, j: usize) -> f64 {
        self.values[j * self.xs.len() + i].max(1e-12).log10()
    }

    fn levels(&self, count: usize) -> Vec<f64> {
        let logs: Vec<f64> = self.values.iter().map(|v| v.max(1e-12).log10()).collect();
        let (lo, hi) = logs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        (1..=count)
            .map(|k| lo + (hi - lo) * k as f64 / (count + 1) as f64)
            .collect()
    }
}

impl Figure for SurfacePlot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(err)?;
        let (nx, ny) = (self.xs.len(), self.ys.len());
        let x_range = self.xs[0]..self.xs[nx - 1];
        let y_range = self.ys[0]..self.ys[ny - 1];
        let logs: Vec<f64> = self.values.iter().map(|v| v.max(1e-12).log10()).collect();
        let (lo, hi) = logs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let span = (hi - lo).max(1e-12);
        let colour = |v: f64| ViridisRGB::get_color_normalized(v, lo, lo + span);

        if self.style == SurfaceStyle::ThreeD {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.title, ("sans-serif", 24))
                .margin(20)
                .build_cartesian_3d(x_range, lo..lo + span, y_range)
                .map_err(err)?;
            chart.with_projection(|mut p| {
                p.pitch = 0.5;
                p.yaw = 0.6;
                p.scale = 0.85;
                p.into_matrix()
            });
            chart
                .configure_axes()
                .x_formatter(&|x| short(*x))
                .y_formatter(&|y| short(10f64.powf(*y)))
                .z_formatter(&|z| short(*z))
                .draw()
                .map_err(err)?;
            // The series hands back coordinates; find their grid indices.
            let index = |values: &[f64], v: f64| {
                let step = (values[values.len() - 1] - values[0]) / (values.len() - 1) as f64;
                (((v - values[0]) / step).round() as usize).min(values.len() - 1)
            };
            chart
                .draw_series(
                    SurfaceSeries::xoz(self.xs.iter().copied(), self.ys.iter().copied(), |x, y| {
                        self.log_at(index(&self.xs, x), index(&self.ys, y))
                    })
                    .style_func(&|&v| colour(v).filled()),
                )
                .map_err(err)?;
            return Ok(());
        }

        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range, y_range)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("coefficient of direction delta")
            .y_desc("coefficient of direction eta")
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        let dx = (self.xs[nx - 1] - self.xs[0]) / (nx - 1) as f64;
        let dy = (self.ys[ny - 1] - self.ys[0]) / (ny - 1) as f64;
        if self.style == SurfaceStyle::Filled {
            let cells = (0..ny).flat_map(|j| (0..nx).map(move |i| (i, j)));
            chart
                .draw_series(cells.map(|(i, j)| {
                    let (x, y) = (self.xs[i], self.ys[j]);
                    Rectangle::new(
                        [(x - dx / 2.0, y - dy / 2.0), (x + dx / 2.0, y + dy / 2.0)],
                        colour(self.log_at(i, j)).filled(),
                    )
                }))
                .map_err(err)?;
        }
        let line_colour = if self.style == SurfaceStyle::Filled {
            WHITE
        } else {
            BLACK
        };
        for level in self.levels(12) {
            let segments = marching_squares(&self.xs, &self.ys, &logs, level);
            chart
                .draw_series(
                    segments
                        .into_iter()
                        .map(|(a, b)| PathElement::new(vec![a, b], line_colour.stroke_width(1))),
                )
                .map_err(err)?;
        }
        chart
            .draw_series(std::iter::once(Cross::new(
                (0.0, 0.0),
                8,
                RED.stroke_width(2),
            )))
            .map_err(err)?
            .label("trained weights")
            .legend(|(x, y)| Cross::new((x, y), 6, RED.stroke_width(2)));
        draw_legend(&mut chart, 14)?;
        root.draw_text(
            &format!(
                "contours of log10(loss), from {} to {}",
                short(10f64.powf(lo)),
                short(10f64.powf(hi))
            ),
            &("sans-serif", 14).into_text_style(root),
            (20, SIZE.1 as i32 - 22),
        )
        .map_err(err)
    }
}

/// Line segments where the bilinear interpolant of `values` (row-major by
/// `y`, as in [`SurfacePlot`]) crosses `level`.
pub fn marching_squares(
    xs: &[f64],
    ys: &[f64],
    values: &[f64],
    level: f64,
) -> Vec<((f64, f64), (f64, f64))> {
    let nx = xs.len();
    let at = |i: usize, j: usize| values[j * nx + i];
    let mut segments = Vec::new();
    for j in 0..ys.len().saturating_sub(1) {
        for i in 0..nx.saturating_sub(1) {
            // Corners counter-clockwise from (i, j).
            let corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)];
            let mut crossings = Vec::with_capacity(4);
            for k in 0..4 {
                let (a, b) = (corners[k], corners[(k + 1) % 4]);
                let (va, vb) = (at(a.0, a.1), at(b.0, b.1));
                if (va < level) != (vb < level) {
                    let t = (level - va) / (vb - va);
                    let x = xs[a.0] + t * (xs[b.0] - xs[a.0]);
                    let y = ys[a.1] + t * (ys[b.1] - ys[a.1]);
                    crossings.push((x, y));
                }
            }
            // Two crossings: one segment; four (a saddle): two segments.
            for pair in crossings.chunks_exact(2) {
                segments.push((pair[0], pair[1]));
            }
        }
    }
    segments
}

/// `label` of a configuration on the figures' x axis.
fn configuration_label(spec: &TaskSpec) -> String {
    let m = &spec.model;
    match m.heads {
        Some(h) => format!(
            "{} L{} h{} d{}",
            m.arch.display_name(),
            m.layers,
            h,
            m.hidden
        ),
        None => format!("{} L{} d{}", m.arch.display_name(), m.layers, m.hidden),
    }
}

/// Draws every figure of a finished sweep; returns the files written.
pub fn draw_sweep(
    sweep_name: &str,
    sweep_dir: &Path,
    rows: &[(TaskSpec, TaskMetrics, PathBuf)],
) -> anyhow::Result<Vec<PathBuf>> {
    let dir = sweep_dir.join("figures");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();

    // One x position per configuration; seeds of a configuration share it.
    let mut configurations: Vec<String> = Vec::new();
    let mut index_of = |spec: &TaskSpec| {
        let label = configuration_label(spec);
        configurations
            .iter()
            .position(|c| *c == label)
            .unwrap_or_else(|| {
                configurations.push(label);
                configurations.len() - 1
            })
    };
    let indices: Vec<usize> = rows.iter().map(|(spec, _, _)| index_of(spec)).collect();
    type Metric = fn(&TaskMetrics) -> Option<f64>;
    let metrics: [(&str, &'static str, Metric); 3] = [
        ("test_loss", "test loss", |m| Some(m.test_loss)),
        ("top_eigenvalue", "top Hessian eigenvalue", |m| {
            m.top_eigenvalue
        }),
        ("trace", "Hessian trace", |m| m.trace),
    ];
    for (file, label, value) in metrics {
        let points: Vec<(usize, Arch, f64)> = rows
            .iter()
            .zip(&indices)
            .filter_map(|((spec, m, _), &i)| {
                value(m)
                    .filter(|v| v.is_finite())
                    .map(|v| (i, spec.model.arch, v))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let figure = PerConfiguration {
            title: format!("{label} per configuration, sweep {sweep_name}"),
            label,
            configurations: configurations.clone(),
            points,
        };
        written.extend(save(&figure, &dir.join(file))?);
    }

    let mut curves = Vec::new();
    for (spec, _, task_dir) in rows {
        if let Some(columns) = read_csv(&task_dir.join("interpolation.csv"))? {
            let label = format!("{} s{}", spec.model.label(), spec.seed);
            curves.push((
                label,
                spec.model.arch,
                columns[0].clone(),
                columns[1].clone(),
            ));
        }
        written.extend(draw_task(spec, task_dir)?);
    }
    if !curves.is_empty() {
        let figure = Interpolations {
            title: format!("loss from initial to final weights, sweep {sweep_name}"),
            curves,
        };
        written.extend(save(&figure, &dir.join("interpolation"))?);
    }
    Ok(written)
}

/// Draws a task's own figures (surface, density) into its folder.
pub fn draw_task(spec: &TaskSpec, task_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let label = format!("{} seed {}", configuration_label(spec), spec.seed);
    if let Some(columns) = read_csv(&task_dir.join("density.csv"))? {
        let figure = DensityPlot {
            title: format!("Hessian spectral density, {label}"),
            grid: columns[0].clone(),
            density: columns[1].clone(),
        };
        written.extend(save(&figure, &task_dir.join("density"))?);
    }
    let surface = task_dir.join("surface_train.npy");
    if surface.is_file() {
        let (shape, values) = read_npy_f64(&surface)?;
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(task_dir.join("surface.json")).context("surface.json")?,
        )?;
        let axis = |key: &str| -> Vec<f64> {
            info[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default()
        };
        let (xs, ys) = (axis("x"), axis("y"));
        anyhow::ensure!(
            shape == [ys.len(), xs.len()],
            "{}: shape {shape:?} does not match the axes in surface.json",
            surface.display()
        );
        for (style, file, what) in [
            (SurfaceStyle::Contour, "surface_contour", "contours"),
            (SurfaceStyle::Filled, "surface_filled", "filled contours"),
            (
                SurfaceStyle::ThreeD,
                "surface_3d",
                "surface (height: log10 loss)",
            ),
        ] {
            let figure = SurfacePlot {
                title: format!("training loss {what}, {label}"),
                style,
                xs: xs.clone(),
                ys: ys.clone(),
                values: values.clone(),
            };
            written.extend(save(&figure, &task_dir.join(file))?);
        }
    }
    Ok(written)
}

/// The numeric columns of a CSV file with a header, or `None` without file.
fn read_csv(path: &Path) -> anyhow::Result<Option<Vec<Vec<f64>>>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for (n, line) in text.lines().skip(1).enumerate() {
        for (k, cell) in line.split(',').enumerate() {
            let value: f64 = cell.parse().with_context(|| {
                format!(
                    "{} line {}: '{cell}' is not a number",
                    path.display(),
                    n + 2
                )
            })?;
            if columns.len() <= k {
                columns.push(Vec::new());
            }
            columns[k].push(value);
        }
    }
    Ok(Some(columns))
}

/// Shape and values of a little-endian float64 `.npy` file (C order).
pub fn read_npy_f64(path: &Path) -> anyhow::Result<(Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bad = || anyhow!("{} is not a float64 .npy file", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad());
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header =
        std::str::from_utf8(bytes.get(10..10 + header_len).ok_or_else(bad)?).map_err(|_| bad())?;
    if !header.contains("'<f8'") || header.contains("'fortran_order': True") {
        return Err(bad());
    }
    let dims = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(bad)?;
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_err(|_| bad()))
        .collect::<anyhow::Result<_>>()?;
    let data = &bytes[10 + header_len..];
    let count: usize = shape.iter().product();
    if data.len() != count * 8 {
        return Err(bad());
    }
    let values = data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG, checks its size and that it is not one flat colour.
    fn assert_real_png(path: &Path) {
        let image = image::open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        assert_eq!(image.dimensions(), SIZE, "{}", path.display());
        let first = image.get_pixel(0, 0);
        let differing = image.pixels().filter(|p| *p != first).count();
        assert!(
            differing > 1000,
            "{} is nearly blank ({differing} pixels differ)",
            path.display()
        );
    }

    fn assert_real_svg(path: &Path) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with("<svg"), "{}", path.display());
        assert!(text.contains(&format!("width=\"{}\"", SIZE.0)));
        assert!(
            text.matches("<text").count() > 3,
            "{} has axis labels",
            path.display()
        );
    }

    #[test]
    fn scales_follow_the_spread_and_sign_of_the_values() {
        assert_eq!(Scale::choose(&[0.1, 0.5, 0.7]), Scale::Linear);
        assert_eq!(Scale::choose(&[2.0, 40_000.0]), Scale::Log);
        assert_eq!(Scale::choose(&[-11_128.0, 4.0, 10.0]), Scale::SymLog);
        for scale in [Scale::Linear, Scale::Log, Scale::SymLog] {
            for v in [0.3, 7.0, 12_345.0] {
                assert!((scale.inverse(scale.forward(v)) - v).abs() < 1e-9 * v);
            }
        }
        assert!((Scale::SymLog.inverse(Scale::SymLog.forward(-42.0)) + 42.0).abs() < 1e-9);
    }

    /// Contours of f = x^2 + y^2 at level r^2 lie on the circle of radius r.
    #[test]
    fn marching_squares_traces_a_circle() {
        let axis: Vec<f64> = (0..41).map(|i| -1.0 + i as f64 * 0.05).collect();
        let values: Vec<f64> = axis
            .iter()
            .flat_map(|&y| axis.iter().map(move |&x| x * x + y * y))
            .collect();
        let segments = marching_squares(&axis, &axis, &values, 0.25);
        assert!(segments.len() > 20);
        for ((x1, y1), (x2, y2)) in segments {
            for r in [(x1 * x1 + y1 * y1).sqrt(), (x2 * x2 + y2 * y2).sqrt()] {
                assert!((r - 0.5).abs() < 0.01, "point at radius {r}");
            }
        }
    }

    #[test]
    fn every_figure_is_written_as_a_real_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let configurations = vec!["LSTM L1 d8".to_string(), "Transformer L1 h1 d8".to_string()];
        let figure = PerConfiguration {
            title: "top Hessian eigenvalue per configuration".into(),
            label: "top Hessian eigenvalue",
            configurations,
            points: vec![
                (0, Arch::Lstm, 42_418.0),
                (0, Arch::Lstm, 18_935.0),
                (1, Arch::Transformer, -1792.0),
            ],
        };
        let mut files = save(&figure, &dir.path().join("top")).unwrap();
        let alphas: Vec<f64> = (0..21).map(|i| -0.5 + 0.1 * i as f64).collect();
        let figure = Interpolations {
            title: "interpolation".into(),
            curves: vec![
                (
                    "lstm".into(),
                    Arch::Lstm,
                    alphas.clone(),
                    alphas.iter().map(|a| 0.7 - 0.5 * a + a * a * 0.3).collect(),
                ),
                (
                    "transformer".into(),
                    Arch::Transformer,
                    alphas.clone(),
                    alphas.iter().map(|a| 0.7 - 0.2 * a).collect(),
                ),
            ],
        };
        files.extend(save(&figure, &dir.path().join("interpolation")).unwrap());
        let grid: Vec<f64> = (0..200).map(|i| -5.0 + i as f64 * 0.1).collect();
        let density = grid.iter().map(|t| (-t * t).exp() + 1e-6).collect();
        files.extend(
            save(
                &DensityPlot {
                    title: "density".into(),
                    grid,
                    density,
                },
                &dir.path().join("density"),
            )
            .unwrap(),
        );
        let xs: Vec<f64> = (0..9).map(|i| -1.0 + i as f64 * 0.25).collect();
        let ys: Vec<f64> = (0..7).map(|i| -1.0 + i as f64 / 3.0).collect();
        let values: Vec<f64> = ys
            .iter()
            .flat_map(|&y| xs.iter().map(move |&x| 0.1 + x * x + 2.0 * y * y))
            .collect();
        for (style, name) in [
            (SurfaceStyle::Contour, "contour"),
            (SurfaceStyle::Filled, "filled"),
            (SurfaceStyle::ThreeD, "three_d"),
        ] {
            let plot = SurfacePlot {
                title: name.into(),
                style,
                xs: xs.clone(),
                ys: ys.clone(),
                values: values.clone(),
            };
            files.extend(save(&plot, &dir.path().join(name)).unwrap());
        }
        assert_eq!(files.len(), 12);
        for file in &files {
            match file.extension().and_then(|e| e.to_str()) {
                Some("png") => assert_real_png(file),
                _ => assert_real_svg(file),
            }
        }
    }
}
