// Training curves as a self-contained SVG: loss per step on the left axis, test accuracy per epoch on the right.
// Hand-written because a two-series line chart is ~60 lines and a charting dependency would pull a DOM or
// canvas implementation into a training library.

export interface CurveData {
  /** (global step, training loss) pairs, any density. */
  loss: [number, number][];
  /** (global step at epoch end, test accuracy in [0, 1]) pairs. */
  accuracy: [number, number][];
  title: string;
}

const escapeXml = (s: string): string => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);

export function trainingCurveSvg({ loss, accuracy, title }: CurveData): string {
  const width = 720;
  const height = 360;
  const m = { left: 60, right: 60, top: 40, bottom: 45 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const maxStep = Math.max(1, ...loss.map(([s]) => s), ...accuracy.map(([s]) => s));
  const maxLoss = Math.max(1e-9, ...loss.map(([, l]) => l));
  const x = (step: number): number => m.left + (step / maxStep) * plotW;
  const yLoss = (l: number): number => m.top + plotH - (l / maxLoss) * plotH;
  const yAcc = (a: number): number => m.top + plotH - a * plotH;
  const path = (points: [number, number][], y: (v: number) => number): string =>
    points.map(([s, v], i) => `${i === 0 ? 'M' : 'L'}${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(title)}</text>`,
    `<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`,
    ...ticks.map((t) => {
      const y = m.top + plotH - t * plotH;
      return `<line x1="${m.left}" x2="${m.left + plotW}" y1="${y}" y2="${y}" stroke="#eee"/>` +
        `<text x="${m.left - 6}" y="${y + 4}" text-anchor="end" fill="#1f77b4">${(t * maxLoss).toFixed(2)}</text>` +
        `<text x="${m.left + plotW + 6}" y="${y + 4}" fill="#d62728">${(t * 100).toFixed(0)}%</text>`;
    }),
    ...ticks.map((t) => `<text x="${x(t * maxStep)}" y="${m.top + plotH + 16}" text-anchor="middle">${Math.round(t * maxStep)}</text>`),
    `<text x="${m.left + plotW / 2}" y="${height - 8}" text-anchor="middle">step</text>`,
    `<text x="14" y="${m.top + plotH / 2}" transform="rotate(-90 14 ${m.top + plotH / 2})" text-anchor="middle" fill="#1f77b4">training loss</text>`,
    `<text x="${width - 12}" y="${m.top + plotH / 2}" transform="rotate(90 ${width - 12} ${m.top + plotH / 2})" text-anchor="middle" fill="#d62728">test accuracy</text>`,
    `<path d="${path(loss, yLoss)}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`,
    `<path d="${path(accuracy, yAcc)}" fill="none" stroke="#d62728" stroke-width="2"/>`,
    ...accuracy.map(([s, a]) => `<circle cx="${x(s).toFixed(1)}" cy="${yAcc(a).toFixed(1)}" r="3" fill="#d62728"/>`),
    `</svg>`,
  ];
  return parts.join('\n') + '\n';
}
