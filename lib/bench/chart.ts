// SVG bar charts of benchmark results, written by hand (a few rects and lines; a plotting library would be a
// large dependency for that). barChartSvg draws the shared form: a legend, then one panel per model with a group of
// bars per batch size, one bar per series (median, whiskers p10-p90), and optionally a reference value as a
// labelled dashed line (a note instead when it would flatten the bars). speedChartSvg is `repvgg bench --plot`
// (the paper's 1080 Ti figure as the reference); bench/cpu.ts draws its engines with barChartSvg too.
// Not for: measuring (lib/bench/speed.ts).

import type { Throughput } from './measure.js';
import type { SpeedRow } from './speed.js';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A round axis step (1, 2 or 5 times a power of ten) giving about `ticks` ticks up to max. */
function axisStep(max: number, ticks: number): number {
  const rough = max / ticks;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return step ?? 10 * power;
}

export interface BarChart {
  title: string;
  subtitle: string;
  /** One entry per series, in bar order; `reference` marks the dashed-line entry of BarPanel.reference. */
  legend: { label: string; color: string; reference?: boolean }[];
  /** Horizontal distance between legend columns (three per row). */
  legendColumnWidth: number;
  panels: BarPanel[];
}

export interface BarPanel {
  title: string;
  /** Shown instead of bars (e.g. why the timings were skipped). */
  message?: string;
  /** One group per batch size; bars[i] belongs to legend entry i (undefined: no bar in that slot). */
  groups: { label: string; bars: (Throughput | undefined)[] }[];
  /** Drawn as a dashed line when within 3x of the highest whisker, else named in a note. */
  reference?: { value: number; label: string };
}

const REFERENCE_COLOR = '#d62728';

export function barChartSvg(chart: BarChart): string {
  const width = 1100;
  const panelHeight = 300;
  const legendPerRow = 3;
  const top = 52 + 18 * Math.ceil(chart.legend.length / legendPerRow);
  const margin = { left: 70, right: 20, top: 40, bottom: 40 };
  const height = top + chart.panels.length * panelHeight;
  const series = chart.legend.filter((entry) => entry.reference !== true);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16">${escapeXml(chart.title)}</text>`,
    `<text x="${width / 2}" y="40" text-anchor="middle" fill="#555">${escapeXml(chart.subtitle)}</text>`,
  ];
  chart.legend.forEach((entry, i) => {
    const x = margin.left + (i % legendPerRow) * chart.legendColumnWidth;
    const y = 52 + 18 * Math.floor(i / legendPerRow);
    if (entry.reference) {
      parts.push(`<line x1="${x}" x2="${x + 12}" y1="${y + 6}" y2="${y + 6}" stroke="${entry.color}" stroke-dasharray="3,2" stroke-width="2"/>`);
    } else {
      parts.push(`<rect x="${x}" y="${y}" width="12" height="12" fill="${entry.color}"/>`);
    }
    parts.push(`<text x="${x + 16}" y="${y + 10}">${escapeXml(entry.label)}</text>`);
  });
  chart.panels.forEach((panel, index) => {
    const panelTop = top + index * panelHeight;
    const plotTop = panelTop + margin.top;
    const plotBottom = panelTop + panelHeight - margin.bottom;
    const plotWidth = width - margin.left - margin.right;
    parts.push(`<text x="${margin.left}" y="${panelTop + 24}" font-size="14" font-weight="bold">${escapeXml(panel.title)}</text>`);
    if (panel.message !== undefined) {
      parts.push(`<text x="${margin.left}" y="${plotTop + 40}" fill="#b00">${escapeXml(panel.message)}</text>`);
      return;
    }
    const measuredMax = Math.max(...panel.groups.flatMap((g) => g.bars.map((t) => t?.p90ImagesPerSecond ?? 0)));
    const reference = panel.reference;
    const onScale = reference !== undefined && reference.value <= 3 * measuredMax;
    const maxValue = onScale ? Math.max(measuredMax, reference.value) : measuredMax;
    const step = axisStep(maxValue, 5);
    const axisMax = Math.ceil(maxValue / step) * step;
    const y = (value: number): number => plotBottom - (value / axisMax) * (plotBottom - plotTop);
    for (let tick = 0; tick <= axisMax + step / 2; tick += step) {
      parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${y(tick)}" y2="${y(tick)}" stroke="#ddd"/>`);
      parts.push(`<text x="${margin.left - 6}" y="${y(tick) + 4}" text-anchor="end">${tick}</text>`);
    }
    const groupWidth = plotWidth / panel.groups.length;
    const barWidth = (groupWidth * 0.8) / series.length;
    panel.groups.forEach((group, g) => {
      const groupLeft = margin.left + g * groupWidth + groupWidth * 0.1;
      parts.push(`<text x="${groupLeft + groupWidth * 0.4}" y="${plotBottom + 18}" text-anchor="middle">${escapeXml(group.label)}</text>`);
      group.bars.forEach((t, i) => {
        if (t === undefined) return;
        const x = groupLeft + i * barWidth;
        const middle = x + barWidth / 2;
        parts.push(`<rect x="${x + 1}" y="${y(t.medianImagesPerSecond)}" width="${Math.max(barWidth - 2, 1)}" height="${plotBottom - y(t.medianImagesPerSecond)}" fill="${series[i]!.color}"/>`);
        parts.push(`<line x1="${middle}" x2="${middle}" y1="${y(t.p10ImagesPerSecond)}" y2="${y(t.p90ImagesPerSecond)}" stroke="black"/>`);
        parts.push(`<text x="${middle}" y="${y(t.p90ImagesPerSecond) - 4}" text-anchor="middle" font-size="10">${t.medianImagesPerSecond.toFixed(0)}</text>`);
      });
    });
    if (reference !== undefined && !onScale) {
      parts.push(`<text x="${width - margin.right - 4}" y="${panelTop + 24}" text-anchor="end" fill="${REFERENCE_COLOR}">${escapeXml(reference.label)}: ${reference.value} img/s (off this scale)</text>`);
    } else if (reference !== undefined) {
      parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${y(reference.value)}" y2="${y(reference.value)}" stroke="${REFERENCE_COLOR}" stroke-dasharray="6,4" stroke-width="1.5"/>`);
      parts.push(`<text x="${width - margin.right - 4}" y="${y(reference.value) - 4}" text-anchor="end" fill="${REFERENCE_COLOR}">${escapeXml(reference.label)}: ${reference.value}</text>`);
    }
    parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${plotBottom}" y2="${plotBottom}" stroke="black"/>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', REFERENCE_COLOR];

/** 'ours cuda fp16 deploy', the series a row belongs to (one bar colour). */
function seriesOf(row: SpeedRow): string {
  return row.engine === 'ours' ? `ours ${row.backend} ${row.precision} ${row.form}` : `${row.engine} ${row.backend} ${row.precision}`;
}

/**
 * The rows as one SVG document. paper: img/s per model drawn as a dashed line across its panel (a different
 * card; the legend says so).
 */
export function speedChartSvg(rows: readonly SpeedRow[], subtitle: string, paper: Readonly<Record<string, number>> = {}): string {
  const models = [...new Set(rows.map((r) => r.model))];
  const series = [...new Set(rows.map(seriesOf))];
  return barChartSvg({
    title: 'RepVGG throughput, images/s (median; whiskers p10–p90)',
    subtitle,
    legend: [
      ...series.map((label, i) => ({ label, color: PALETTE[i % PALETTE.length]! })),
      { label: 'paper: GTX 1080 Ti, fp32, batch 128 (another card)', color: REFERENCE_COLOR, reference: true },
    ],
    legendColumnWidth: 330,
    panels: models.map((model) => {
      const modelRows = rows.filter((r) => r.model === model);
      const batches = [...new Set(modelRows.map((r) => r.batch))].sort((a, b) => a - b);
      const reference = paper[model];
      return {
        title: `RepVGG-${model}`,
        groups: batches.map((batch) => ({
          label: `batch ${batch}`,
          bars: series.map((name) => modelRows.find((r) => r.batch === batch && seriesOf(r) === name)?.throughput),
        })),
        ...(reference !== undefined && { reference: { value: reference, label: 'paper, 1080 Ti' } }),
      };
    }),
  });
}
