// Reads one sample from a Prometheus text exposition (GET /metrics), for the serving tests and benchmarks.
// Not for: parsing whole expositions (types, help, histogram buckets as a structure).

/**
 * The value of the sample whose name and labels are exactly `sample` (e.g. `repvgg_queue_images` or
 * `repvgg_requests_total{outcome="success"}`); NaN when there is no such line.
 */
export function metricValue(text: string, sample: string): number {
  const found = text.split('\n').find((line) => line.startsWith(sample + ' '));
  return found === undefined ? NaN : Number(found.slice(sample.length + 1));
}
