// SVG bar charts of benchmark results, written by hand (a few rects and lines; a plotting library would be a
// large dependency for that): `repvgg bench --plot` draws one panel per model, a group of bars per batch size,
// one bar per engine/precision/form with p10-p90 whiskers, and the paper's 1080 Ti figure as a labelled dashed line
// (as a note when it would flatten the bars, as on a CPU).
// Not for: measuring (lib/bench/speed.ts).

import type { SpeedRow } from './speed.js';

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A round axis step (1, 2 or 5 times a power of ten) giving about `ticks` ticks up to max. */
export function axisStep(max: number, ticks: number): number {
  const rough = max / ticks;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return step ?? 10 * power;
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#d62728'];

/** 'ours cuda fp16 deploy', the series a row belongs to (one bar colour). */
export function seriesOf(row: SpeedRow): string {
  return row.engine === 'ours' ? `ours ${row.backend} ${row.precision} ${row.form}` : `${row.engine} ${row.backend} ${row.precision}`;
}

/**
 * The rows as one SVG document. paper: img/s per model drawn as a dashed line across its panel (a different
 * card; the legend says so).
 */
export function speedChartSvg(rows: readonly SpeedRow[], subtitle: string, paper: Readonly<Record<string, number>> = {}): string {
  const models = [...new Set(rows.map((r) => r.model))];
  const series = [...new Set(rows.map(seriesOf))];
  const width = 1100;
  const panelHeight = 300;
  const legendPerRow = 3;
  const legendRows = Math.ceil((series.length + 1) / legendPerRow);
  const top = 52 + 18 * legendRows;
  const margin = { left: 70, right: 20, top: 40, bottom: 40 };
  const height = top + models.length * panelHeight;
  const color = (name: string): string => PALETTE[series.indexOf(name) % PALETTE.length]!;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16">RepVGG throughput, images/s (median; whiskers p10–p90)</text>`,
    `<text x="${width / 2}" y="40" text-anchor="middle" fill="#555">${escapeXml(subtitle)}</text>`,
  ];
  [...series, 'paper: GTX 1080 Ti, fp32, batch 128 (another card)'].forEach((name, i) => {
    const x = margin.left + (i % legendPerRow) * 330;
    const y = 52 + 18 * Math.floor(i / legendPerRow);
    if (i < series.length) {
      parts.push(`<rect x="${x}" y="${y}" width="12" height="12" fill="${color(name)}"/>`);
    } else {
      parts.push(`<line x1="${x}" x2="${x + 12}" y1="${y + 6}" y2="${y + 6}" stroke="#d62728" stroke-dasharray="3,2" stroke-width="2"/>`);
    }
    parts.push(`<text x="${x + 16}" y="${y + 10}">${escapeXml(name)}</text>`);
  });
  models.forEach((model, panel) => {
    const modelRows = rows.filter((r) => r.model === model);
    const batches = [...new Set(modelRows.map((r) => r.batch))].sort((a, b) => a - b);
    const panelTop = top + panel * panelHeight;
    const plotTop = panelTop + margin.top;
    const plotBottom = panelTop + panelHeight - margin.bottom;
    const plotWidth = width - margin.left - margin.right;
    parts.push(`<text x="${margin.left}" y="${panelTop + 24}" font-size="14" font-weight="bold">RepVGG-${escapeXml(model)}</text>`);
    const measuredMax = Math.max(...modelRows.map((r) => r.throughput.p90ImagesPerSecond));
    // The paper's GPU figure is drawn on the axis only when it does not flatten our bars (a CPU run is far below it).
    const reference = paper[model];
    const onScale = reference !== undefined && reference <= 3 * measuredMax;
    const maxValue = onScale ? Math.max(measuredMax, reference) : measuredMax;
    const step = axisStep(maxValue, 5);
    const axisMax = Math.ceil(maxValue / step) * step;
    const y = (value: number): number => plotBottom - (value / axisMax) * (plotBottom - plotTop);
    for (let tick = 0; tick <= axisMax + step / 2; tick += step) {
      parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${y(tick)}" y2="${y(tick)}" stroke="#ddd"/>`);
      parts.push(`<text x="${margin.left - 6}" y="${y(tick) + 4}" text-anchor="end">${tick}</text>`);
    }
    const groupWidth = plotWidth / batches.length;
    const barWidth = (groupWidth * 0.8) / series.length;
    batches.forEach((batch, g) => {
      const groupLeft = margin.left + g * groupWidth + groupWidth * 0.1;
      parts.push(`<text x="${groupLeft + groupWidth * 0.4}" y="${plotBottom + 18}" text-anchor="middle">batch ${batch}</text>`);
      series.forEach((name, i) => {
        const row = modelRows.find((r) => r.batch === batch && seriesOf(r) === name);
        if (!row) return;
        const t = row.throughput;
        const x = groupLeft + i * barWidth;
        const middle = x + barWidth / 2;
        parts.push(`<rect x="${x + 1}" y="${y(t.medianImagesPerSecond)}" width="${Math.max(barWidth - 2, 1)}" height="${plotBottom - y(t.medianImagesPerSecond)}" fill="${color(name)}"/>`);
        parts.push(`<line x1="${middle}" x2="${middle}" y1="${y(t.p10ImagesPerSecond)}" y2="${y(t.p90ImagesPerSecond)}" stroke="black"/>`);
        parts.push(`<text x="${middle}" y="${y(t.p90ImagesPerSecond) - 4}" text-anchor="middle" font-size="10">${t.medianImagesPerSecond.toFixed(0)}</text>`);
      });
    });
    if (reference !== undefined && !onScale) {
      parts.push(`<text x="${width - margin.right - 4}" y="${panelTop + 24}" text-anchor="end" fill="#d62728">paper, 1080 Ti: ${reference} img/s (off this scale)</text>`);
    } else if (reference !== undefined) {
      parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${y(reference)}" y2="${y(reference)}" stroke="#d62728" stroke-dasharray="6,4" stroke-width="1.5"/>`);
      parts.push(`<text x="${width - margin.right - 4}" y="${y(reference) - 4}" text-anchor="end" fill="#d62728">paper, 1080 Ti: ${reference}</text>`);
    }
    parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${plotBottom}" y2="${plotBottom}" stroke="black"/>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
