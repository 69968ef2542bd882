// deploy/: every Kubernetes manifest parses, and the fields that make a rollout work are right: kinds and apiVersions,
// one `repvgg serve` process per pod with known flags, probes on the v2 health paths and the serving port, resources,
// a grace period longer than --drain-ms, one GPU per GPU pod, Services that select their pods.
// Not for: the server's behaviour behind those paths (serve.test.ts) or the CLI's flag parsing (serve-cli.test.ts).

import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { parseAllDocuments } from 'yaml';

import { SERVE_FLAGS as SERVE_FLAG_SPECS } from '../lib/cli/serve.js';

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
/** The flags of `repvgg serve` that take a value, and those that do not (boolean), from the command itself. */
const SERVE_FLAGS = new Set(Object.entries(SERVE_FLAG_SPECS).filter(([, o]) => o.type === 'string').map(([name]) => `--${name}`));
const VALUELESS_FLAGS = new Set(Object.entries(SERVE_FLAG_SPECS).filter(([, o]) => o.type === 'boolean').map(([name]) => `--${name}`));
/** `repvgg serve`'s default --drain-ms. */
const DEFAULT_DRAIN_MS = 30_000;
const API_VERSIONS: Record<string, string> = {
  Deployment: 'apps/v1',
  Service: 'v1',
  InferenceService: 'serving.kserve.io/v1beta1',
};

type Doc = Record<string, any>;
interface Manifest {
  file: string;
  doc: Doc;
}

async function yamlFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(entries.map(async (entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  }));
  return nested.flat();
}

async function loadManifests(): Promise<Manifest[]> {
  const manifests: Manifest[] = [];
  for (const file of await yamlFiles(DEPLOY)) {
    for (const document of parseAllDocuments(await readFile(file, 'utf8'))) {
      if (!('errors' in document)) throw new Error(`${file}: a stray document end marker`);
      if (document.errors.length > 0) throw new Error(`${file}: ${document.errors.map((e) => e.message).join('; ')}`);
      if (document.warnings.length > 0) throw new Error(`${file}: ${document.warnings.map((e) => e.message).join('; ')}`);
      const doc = document.toJS() as Doc | null;
      if (doc !== null) manifests.push({ file, doc });
    }
  }
  return manifests;
}

const manifests = loadManifests();
const fileName = (file: string) => file.slice(DEPLOY.length);

/** The pod specs that run `repvgg serve`: Deployments' templates and InferenceServices' predictors. */
async function servingPods(): Promise<Array<{ name: string; pod: Doc; gpu: boolean }>> {
  return (await manifests).flatMap(({ file, doc }) => {
    const name = `${fileName(file)} ${doc.kind}/${doc.metadata?.name}`;
    if (doc.kind === 'Deployment') return [{ name, pod: doc.spec.template.spec as Doc, gpu: file.includes('gpu') }];
    if (doc.kind === 'InferenceService') return [{ name, pod: doc.spec.predictor as Doc, gpu: false }];
    return [];
  });
}

/** `repvgg serve`'s flags as a map, failing on unknown, repeated or value-less flags. */
function serveFlags(t: ExecutionContext, name: string, container: Doc): Map<string, string> {
  const argv = [...(container.command ?? []), ...(container.args ?? [])] as unknown[];
  t.true(argv.every((arg) => typeof arg === 'string'), `${name}: every command word is a string (quote numbers)`);
  t.deepEqual(argv.slice(0, 3), ['npx', 'repvgg', 'serve'], `${name}: the container runs npx repvgg serve`);
  const flags = new Map<string, string>();
  const words = argv.slice(3) as string[];
  for (let i = 0; i < words.length; i++) {
    const flag = words[i]!;
    if (VALUELESS_FLAGS.has(flag)) {
      flags.set(flag, '');
      continue;
    }
    t.true(SERVE_FLAGS.has(flag), `${name}: '${flag}' is a flag of repvgg serve`);
    t.false(flags.has(flag), `${name}: '${flag}' is given once`);
    const value = words[i + 1];
    t.true(value !== undefined && !value.startsWith('--'), `${name}: '${flag}' has a value`);
    flags.set(flag, value ?? '');
    i++;
  }
  return flags;
}

/** A probe's or Service's port (a number or the name of a container port) as a number. */
function resolvePort(container: Doc, port: unknown): number | undefined {
  if (typeof port === 'number') return port;
  const named = (container.ports as Doc[] | undefined)?.find((p) => p.name === port);
  return named?.containerPort as number | undefined;
}

test('every YAML document under deploy/ parses and has a known kind with its apiVersion', async (t) => {
  const all = await manifests;
  const kinds = all.map(({ doc }) => doc.kind as string).sort();
  t.deepEqual(kinds, ['Deployment', 'Deployment', 'InferenceService', 'Service', 'Service']);
  for (const { file, doc } of all) {
    t.is(doc.apiVersion, API_VERSIONS[doc.kind as string], `${fileName(file)} ${doc.kind}`);
    t.is(typeof doc.metadata?.name, 'string', `${fileName(file)} ${doc.kind} has a name`);
  }
});

test('each pod runs one repvgg serve process listening on all interfaces at its container port', async (t) => {
  const pods = await servingPods();
  t.is(pods.length, 3);
  for (const { name, pod } of pods) {
    const containers = pod.containers as Doc[];
    t.is(containers.length, 1, `${name}: one container`);
    const container = containers[0]!;
    const flags = serveFlags(t, name, container);
    t.regex(flags.get('--weights') ?? '', /^\/.+\.(safetensors|pth|pt)$/, `${name}: --weights is an absolute weights file`);
    t.is(flags.get('--host'), '0.0.0.0', `${name}: --host 0.0.0.0 (the default 127.0.0.1 is unreachable from the kubelet)`);
    const port = Number(flags.get('--port'));
    t.true(Number.isInteger(port) && port > 0, `${name}: --port is set`);
    t.deepEqual((container.ports as Doc[]).map((p) => p.containerPort), [port], `${name}: the container port is --port`);
  }
});

test('liveness and readiness probes ask the v2 health endpoints on the serving port', async (t) => {
  for (const { name, pod } of await servingPods()) {
    const container = (pod.containers as Doc[])[0]!;
    const port = Number(serveFlags(t, name, container).get('--port'));
    const expected: Record<string, string> = { livenessProbe: '/v2/health/live', readinessProbe: '/v2/health/ready' };
    for (const [probe, path] of Object.entries(expected)) {
      const httpGet = container[probe]?.httpGet as Doc | undefined;
      t.is(httpGet?.path, path, `${name}: ${probe} path`);
      t.is(resolvePort(container, httpGet?.port), port, `${name}: ${probe} port`);
    }
    if (container.startupProbe !== undefined) {
      t.is(container.startupProbe.httpGet?.path, '/v2/health/live', `${name}: the startup probe asks liveness, not readiness`);
      t.is(resolvePort(container, container.startupProbe.httpGet?.port), port, `${name}: startupProbe port`);
    }
  }
});

test('resources are requested and limited, and the grace period outlasts --drain-ms', async (t) => {
  for (const { name, pod } of await servingPods()) {
    const container = (pod.containers as Doc[])[0]!;
    for (const kind of ['requests', 'limits']) {
      for (const resource of ['cpu', 'memory']) {
        t.truthy(container.resources?.[kind]?.[resource], `${name}: resources.${kind}.${resource}`);
      }
    }
    const drain = serveFlags(t, name, container).get('--drain-ms');
    const drainMs = drain === undefined ? DEFAULT_DRAIN_MS : Number(drain);
    t.true(Number.isInteger(drainMs) && drainMs > 0, `${name}: --drain-ms is an integer`);
    const grace = pod.terminationGracePeriodSeconds as unknown;
    t.true(typeof grace === 'number' && grace * 1000 > drainMs, `${name}: terminationGracePeriodSeconds ${String(grace)} s > --drain-ms ${drainMs}`);
  }
});

test('GPU pods take one GPU and the cuda backend; CPU pods take none', async (t) => {
  const pods = await servingPods();
  t.true(pods.some(({ gpu }) => gpu), 'a GPU deployment exists');
  for (const { name, pod, gpu } of pods) {
    const container = (pod.containers as Doc[])[0]!;
    const flags = serveFlags(t, name, container);
    if (gpu) {
      t.is(container.resources.limits['nvidia.com/gpu'], 1, `${name}: limits one GPU`);
      t.is(flags.get('--backend'), 'cuda', `${name}: --backend cuda`);
    } else {
      t.is(container.resources.limits['nvidia.com/gpu'], undefined, `${name}: no GPU`);
      t.not(flags.get('--backend'), 'cuda', `${name}: not the cuda backend`);
    }
  }
});

test('each Service selects the pods of the Deployment in its file and targets their serving port', async (t) => {
  const all = await manifests;
  const services = all.filter(({ doc }) => doc.kind === 'Service');
  t.is(services.length, 2);
  for (const { file, doc: service } of services) {
    const deployment = all.find(({ file: other, doc }) => other === file && doc.kind === 'Deployment')?.doc;
    t.truthy(deployment, `${fileName(file)}: a Deployment beside the Service`);
    const template = deployment!.spec.template as Doc;
    t.deepEqual(deployment!.spec.selector.matchLabels, service.spec.selector, `${fileName(file)}: the Deployment's selector is the Service's`);
    for (const [key, value] of Object.entries(service.spec.selector as Doc)) {
      t.is(template.metadata.labels[key], value, `${fileName(file)}: the pod template carries ${key}`);
    }
    const container = (template.spec.containers as Doc[])[0]!;
    const port = Number(serveFlags(t, fileName(file), container).get('--port'));
    for (const servicePort of service.spec.ports as Doc[]) {
      t.is(resolvePort(container, servicePort.targetPort), port, `${fileName(file)}: targetPort is the serving port`);
    }
  }
});
