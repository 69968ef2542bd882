// Overload and soak of `createServer` (RepVGG-A0 224, binary FP32 requests on 127.0.0.1, the server's default queue
// and deadline): measures capacity, then offers twice that rate for --overload-seconds (how fast rejections come
// back, whether accepted requests meet their deadline), then holds it at capacity for --soak-seconds sampling RSS.
// Usage: USAGE below (`node dist/bench/serve-overload.js --help`).
// Not for: throughput against a peer (bench/serve.ts) or correctness under bad input (test/serve.test.ts).

import { writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { availableParallelism, cpus } from 'node:os';
import { performance } from 'node:perf_hooks';

import { integerOption, parseBenchArgs, runBench } from '../lib/bench/args.js';
import { DEFAULT_COMPUTE_NICE } from '../lib/serve/server.js';
import { metricValue } from '../test/helpers/metrics.js';
import { hammer, progress, randomImages, requestFor, startChild, stopChild, type Child, type RequestSpec } from './serve.js';

const MAX_BATCH = 32;
/** Connections of the capacity and soak runs: enough to keep full batches queued, within the default queue (256). */
const CLOSED_LOOP_CONNECTIONS = 64;
/**
 * Most sockets of the overload run's open-loop client. Accepted requests hold one for up to a full queue's wait
 * (256 images at ~130 img/s: about 2 s), rejected ones for milliseconds: 2 x capacity needs a few hundred.
 */
const OVERLOAD_SOCKETS = 1024;
/** How long after the overload run's last request its answers may still come (the server's deadline is 10 s). */
const OVERLOAD_TAIL_MS = 30_000;
const SOAK_SLICE_SECONDS = 10;
const WARMUP_SECONDS = 3;
/** Bounds on what the command line can ask for. */
const MAX_SECONDS = 3600;

interface StatusLatencies {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

interface OverloadResult {
  offeredPerSecond: number;
  seconds: number;
  byStatus: Record<string, StatusLatencies>;
  /** Connection errors and client-side timeouts (no HTTP status at all). */
  errors: number;
  liveAfter: boolean;
  /**
   * The server's own view of its 503s during the run (repvgg_request_duration_seconds{outcome="rejected"}, arrival to
   * response): how many, and the share answered within each histogram bound. The client's latencies above also hold
   * the time its own event loop (sending 2x capacity of 600 KB bodies) took to send and read them.
   */
  serverRejected: { count: number; withinSeconds: Record<string, number> };
  rssBeforeMiB: number;
  rssAfterMiB: number;
}

function percentiles(values: number[]): StatusLatencies {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { count: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted[sorted.length - 1]! };
}

/**
 * An open-loop load: one request every 1000 / rate ms for `seconds`, whether or not earlier ones were answered (what
 * 2x capacity means; autocannon is closed-loop: a connection waits for its response, so a slow server slows the
 * offered load down with it). Resolves once every request was answered or failed.
 */
async function openLoop(child: Child, request: RequestSpec, rate: number, seconds: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: OVERLOAD_SOCKETS });
  const times = new Map<number, number[]>();
  let errors = 0;
  let sent = 0;
  const answered: Array<Promise<void>> = [];
  const fire = (): Promise<void> => new Promise((resolve) => {
    const start = performance.now();
    const outgoing = httpRequest(`${child.base}${request.path}`, { method: 'POST', agent, headers: request.headers, timeout: OVERLOAD_TAIL_MS }, (response) => {
      response.resume();
      response.once('end', () => {
        const list = times.get(response.statusCode ?? 0) ?? [];
        list.push(performance.now() - start);
        times.set(response.statusCode ?? 0, list);
        resolve();
      });
    });
    outgoing.once('error', () => {
      errors++;
      resolve();
    });
    outgoing.once('timeout', () => outgoing.destroy(new Error('timed out')));
    outgoing.end(request.body);
  });
  const begin = performance.now();
  const intervalMs = 1000 / rate;
  while (performance.now() - begin < seconds * 1000) {
    const due = begin + sent * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    answered.push(fire());
    sent++;
  }
  const elapsed = (performance.now() - begin) / 1000;
  await Promise.all(answered);
  agent.destroy();
  return { sent, offeredPerSecond: sent / elapsed, seconds: elapsed, times, errors };
}

/** Bounds (seconds) of the server's latency histogram read for rejected requests; a subset of its buckets. */
const REJECTED_BOUNDS = ['0.005', '0.01', '0.025', '0.05', '0.1', '0.25'];

/** Cumulative counts of the server's rejected-request latency histogram at REJECTED_BOUNDS, and the total. */
async function rejectedHistogram(child: Child): Promise<{ count: number; buckets: number[] }> {
  const text = await (await fetch(`${child.base}/metrics`)).text();
  const value = (sample: string) => {
    const found = metricValue(text, sample);
    return Number.isNaN(found) ? 0 : found; // no line until the first rejection
  };
  return {
    count: value('repvgg_request_duration_seconds_count{outcome="rejected"}'),
    buckets: REJECTED_BOUNDS.map((bound) => value(`repvgg_request_duration_seconds_bucket{le="${bound}",outcome="rejected"}`)),
  };
}

/** The server's resident set size in MiB, from its own /metrics (prom-client's process metrics). */
async function rssMiB(child: Child): Promise<number> {
  const text = await (await fetch(`${child.base}/metrics`)).text();
  return metricValue(text, 'process_resident_memory_bytes') / 2 ** 20;
}

async function isLive(child: Child): Promise<boolean> {
  try {
    return (await fetch(`${child.base}/v2/health/live`, { signal: AbortSignal.timeout(5000) })).status === 200;
  } catch {
    return false;
  }
}

const USAGE = `Usage: node dist/bench/serve-overload.js [--capacity-seconds 10] [--overload-seconds 60] [--soak-seconds 600] [--json FILE]
  --capacity-seconds  seconds of closed-loop load that measure capacity (default 10)
  --overload-seconds  seconds at twice that rate, open loop (default 60)
  --soak-seconds      seconds at capacity, sampling RSS (default 600)
  --json              also write every number as JSON to this file
  (each at most ${MAX_SECONDS} s)`;

async function main(): Promise<void> {
  const values = parseBenchArgs(USAGE, {
    'capacity-seconds': { type: 'string', default: '10' },
    'overload-seconds': { type: 'string', default: '60' },
    'soak-seconds': { type: 'string', default: '600' },
    json: { type: 'string' },
  });
  const seconds = { min: 1, max: MAX_SECONDS };
  const capacitySeconds = integerOption(values['capacity-seconds'], '--capacity-seconds', seconds);
  const overloadSeconds = integerOption(values['overload-seconds'], '--overload-seconds', seconds);
  const soakSeconds = integerOption(values['soak-seconds'], '--soak-seconds', seconds);
  const request = requestFor('ours', 'fp32', randomImages(1, 2), Buffer.alloc(0));

  progress('starting the server (RepVGG-A0, 224x224, max batch 32, default queue 256 and deadline 10 s)');
  const child = await startChild('ours', MAX_BATCH, DEFAULT_COMPUTE_NICE);
  try {
    await hammer(child, request, CLOSED_LOOP_CONNECTIONS, WARMUP_SECONDS);
    progress(`capacity: ${CLOSED_LOOP_CONNECTIONS} connections for ${capacitySeconds} s`);
    const capacity = await hammer(child, request, CLOSED_LOOP_CONNECTIONS, capacitySeconds);
    const capacityPerSecond = capacity['2xx'] / capacity.duration;
    progress(`capacity ${capacityPerSecond.toFixed(1)} req/s`);

    const rate = 2 * capacityPerSecond;
    progress(`overload: ${rate.toFixed(0)} req/s offered (2x capacity, open loop) for ${overloadSeconds} s`);
    const rssBefore = await rssMiB(child);
    const rejectedBefore = await rejectedHistogram(child);
    const overload = await openLoop(child, request, rate, overloadSeconds);
    const rejectedAfter = await rejectedHistogram(child);
    const rejectedCount = rejectedAfter.count - rejectedBefore.count;
    const overloadResult: OverloadResult = {
      offeredPerSecond: overload.offeredPerSecond,
      seconds: overload.seconds,
      byStatus: Object.fromEntries([...overload.times].map(([status, list]) => [String(status), percentiles(list)])),
      errors: overload.errors,
      liveAfter: await isLive(child),
      serverRejected: {
        count: rejectedCount,
        // Shares of the rejections; none when there were none (the JSON then holds an empty record, not NaNs).
        withinSeconds: rejectedCount === 0 ? {} : Object.fromEntries(REJECTED_BOUNDS.map((bound, i) => [bound, (rejectedAfter.buckets[i]! - rejectedBefore.buckets[i]!) / rejectedCount])),
      },
      rssBeforeMiB: rssBefore,
      rssAfterMiB: await rssMiB(child),
    };
    progress(`overload: ${JSON.stringify(overloadResult.byStatus)}`);

    const soak: Array<{ seconds: number; requestsPerSecond: number; rssMiB: number; non2xx: number }> = [];
    for (let elapsed = 0; elapsed < soakSeconds; elapsed += SOAK_SLICE_SECONDS) {
      const slice = await hammer(child, request, CLOSED_LOOP_CONNECTIONS, Math.min(SOAK_SLICE_SECONDS, soakSeconds - elapsed));
      const point = {
        seconds: elapsed + slice.duration,
        requestsPerSecond: slice['2xx'] / slice.duration,
        rssMiB: await rssMiB(child),
        non2xx: slice.non2xx + slice.errors + slice.timeouts,
      };
      soak.push(point);
      progress(`soak ${point.seconds.toFixed(0)}/${soakSeconds} s: ${point.requestsPerSecond.toFixed(1)} req/s, RSS ${point.rssMiB.toFixed(1)} MiB`);
    }
    // The first slice still grows the heap and the allocator's pools; drift is measured from the end of it.
    const base = soak[0]!.rssMiB;
    const rssValues = soak.map((point) => point.rssMiB);
    const drift = { fromMiB: base, lastMiB: rssValues[rssValues.length - 1]!, minMiB: Math.min(...rssValues), maxMiB: Math.max(...rssValues) };
    const percent = (value: number) => `${(((value - base) / base) * 100).toFixed(1)}%`;

    const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores`;
    const lines = [
      `## Overload and soak of createServer (RepVGG-A0 224, binary FP32, max batch ${MAX_BATCH}, queue 256, deadline 10 s; ${machine})`,
      '',
      `Capacity (${CLOSED_LOOP_CONNECTIONS} connections, ${capacitySeconds} s): ${capacityPerSecond.toFixed(1)} req/s, p99 ${capacity.latency.p99} ms.`,
      '',
      `Overload: ${overloadResult.offeredPerSecond.toFixed(1)} req/s offered (open loop) for ${overloadResult.seconds.toFixed(0)} s; ${overloadResult.errors} connection errors or client timeouts; live afterwards: ${overloadResult.liveAfter}; RSS ${rssBefore.toFixed(1)} -> ${overloadResult.rssAfterMiB.toFixed(1)} MiB.`,
      '',
      '| status | responses | p50 ms | p99 ms | max ms |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...Object.entries(overloadResult.byStatus).map(([status, l]) => `| ${status} | ${l.count} | ${l.p50Ms.toFixed(1)} | ${l.p99Ms.toFixed(1)} | ${l.maxMs.toFixed(1)} |`),
      '',
      rejectedCount === 0
        ? "The server rejected nothing (its /metrics)."
        : `The server's own latency of its ${rejectedCount} rejections (arrival to response, /metrics): ${Object.entries(overloadResult.serverRejected.withinSeconds).map(([bound, share]) => `${(share * 100).toFixed(1)}% within ${Number(bound) * 1000} ms`).join(', ')}.`,
      '',
      `Soak at capacity for ${soakSeconds} s: RSS ${drift.fromMiB.toFixed(1)} MiB after the first ${SOAK_SLICE_SECONDS} s, ${drift.lastMiB.toFixed(1)} MiB at the end (${percent(drift.lastMiB)}), range ${drift.minMiB.toFixed(1)}-${drift.maxMiB.toFixed(1)} MiB (${percent(drift.minMiB)} to ${percent(drift.maxMiB)}); ${soak.reduce((sum, p) => sum + p.non2xx, 0)} failed requests; ${(soak.reduce((sum, p) => sum + p.requestsPerSecond, 0) / soak.length).toFixed(1)} req/s on average.`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    if (values.json !== undefined) {
      await writeFile(values.json, JSON.stringify({ machine, capacityPerSecond, overload: overloadResult, soak, drift }, null, 2));
    }
  } finally {
    await stopChild(child);
  }
}

await runBench(USAGE, main);
