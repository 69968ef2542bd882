// Benchmark results as text: markdown tables and memory sizes, shared by `repvgg bench`, `repvgg demo` and the
// developer benchmarks in bench/. Not for: charts (chart.ts).

/** A markdown table: the header row, its separator, then one line per row. */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** '23.0 MiB'. */
export const formatMiB = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
