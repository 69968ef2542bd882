// Weight key naming: timm's byobnet names <-> the official ones (every key of every form of A0 and D2se, in both
// directions), DataParallel's 'module.' prefix, detection from the keys, loading timm-named files, identifying the
// official variant of a file without metadata, and the recorded metadata (normalization, class names) read back.
// Not for: the .pth container (pth.test.ts) or the CLI (real-inputs-cli.test.ts).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { detectKeyStyle, officialToTimmKey, stripModulePrefix, timmToOfficialKey, toOfficialKeys, withKeyStyle } from '../lib/io/keys.js';
import { writeSafetensors } from '../lib/io/safetensors.js';
import { IMAGENET_NORMALIZATION, identifyOfficialArch, loadWeights, recordedClassNames, recordedNormalization, saveWeights } from '../lib/io/weights.js';
import { randomStateDict } from '../lib/models/init.js';
import { OFFICIAL_ARCHS, customSpec, expectedWeights, officialSpec } from '../lib/models/repvgg.js';

test('official <-> timm names: the documented pairs, and every key of A0 and D2se round-trips one to one', (t) => {
  const pairs: [string, string][] = [
    ['stage0.rbr_dense.conv.weight', 'stem.conv_kxk.conv.weight'],
    ['stage0.rbr_1x1.bn.running_var', 'stem.conv_1x1.bn.running_var'],
    ['stage1.0.rbr_dense.bn.weight', 'stages.0.0.conv_kxk.bn.weight'],
    ['stage1.1.rbr_identity.running_mean', 'stages.0.1.identity.running_mean'],
    ['stage3.13.rbr_1x1.conv.weight', 'stages.2.13.conv_1x1.conv.weight'],
    ['stage4.0.rbr_reparam.bias', 'stages.3.0.reparam_conv.bias'],
    ['stage2.3.se.down.weight', 'stages.1.3.attn.fc1.weight'],
    ['stage2.3.se.up.bias', 'stages.1.3.attn.fc2.bias'],
    ['linear.weight', 'head.fc.weight'],
    ['linear.bias', 'head.fc.bias'],
  ];
  for (const [official, timm] of pairs) {
    t.is(officialToTimmKey(official), timm);
    t.is(timmToOfficialKey(timm), official);
  }
  for (const arch of ['A0', 'D2se']) {
    for (const form of ['train', 'deploy'] as const) {
      const keys = [...expectedWeights(officialSpec(arch), form).keys()];
      const timm = keys.map(officialToTimmKey);
      t.is(new Set(timm).size, keys.length, `${arch} ${form}: timm names are distinct`);
      t.true(timm.every((k) => !k.includes('rbr_') && !/^stage\d/.test(k) && !k.startsWith('linear')), `${arch} ${form}: no official name left`);
      t.deepEqual(timm.map(timmToOfficialKey), keys);
    }
  }
});

test('the naming is detected from the keys; module. is stripped only when every key has it', (t) => {
  t.is(detectKeyStyle(['stage0.rbr_dense.conv.weight', 'linear.bias']), 'official');
  t.is(detectKeyStyle(['stem.conv_kxk.conv.weight']), 'timm');
  t.is(detectKeyStyle(['head.fc.weight']), 'timm');
  const tensor = { shape: [1], data: new Float32Array([0.5]) };
  t.deepEqual([...stripModulePrefix(new Map([['module.a', tensor], ['module.b', tensor]])).keys()], ['a', 'b']);
  t.deepEqual([...stripModulePrefix(new Map([['module.a', tensor], ['b', tensor]])).keys()], ['module.a', 'b']);
});

test('toOfficialKeys maps a DataParallel timm state dict and refuses two keys that collapse into one', (t) => {
  const state = randomStateDict(officialSpec('A0', { numClasses: 7 }), 'deploy', 4);
  const timm = new Map([...withKeyStyle(state, 'timm')].map(([k, v]) => [`module.${k}`, v]));
  const { state: back, style } = toOfficialKeys(timm);
  t.is(style, 'timm');
  t.deepEqual([...back.keys()], [...state.keys()]);
  t.is(back.get('linear.weight'), state.get('linear.weight'), 'tensors are shared, not copied');
  const clash = new Map([['stem.conv_kxk.conv.weight', state.get('stage0.rbr_reparam.weight')!], ['stage0.rbr_dense.conv.weight', state.get('stage0.rbr_reparam.weight')!]]);
  t.throws(() => toOfficialKeys(clash, 'x.pth'), { code: 'ERR_WEIGHTS_MISMATCH', message: /x\.pth: two keys map to 'stage0\.rbr_dense\.conv\.weight'/ });
});

test('loadWeights reads timm-named files without metadata, identifying the variant from the shapes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [arch, form, classes] of [['A0', 'train', 10], ['B1g4', 'deploy', 3], ['A1', 'deploy', 1000]] as const) {
    const state = randomStateDict(officialSpec(arch, { numClasses: classes }), form, 5);
    const path = join(dir, `${arch}.safetensors`);
    await writeSafetensors(path, withKeyStyle(state, 'timm')); // no metadata at all, as timm's exporter writes
    const loaded = await loadWeights(path);
    t.is(loaded.spec.arch, `RepVGG-${arch}`);
    t.is(loaded.spec.numClasses, classes);
    t.is(loaded.form, form);
    t.is(loaded.keyStyle, 'timm');
    t.is(loaded.fileFormat, 'safetensors');
    t.deepEqual(loaded.state.get('linear.bias')!.data, state.get('linear.bias')!.data);
  }
});

test('identifyOfficialArch tells every official variant apart and names the closest when none fits', (t) => {
  for (const arch of OFFICIAL_ARCHS) {
    const state = new Map([...expectedWeights(officialSpec(arch, { numClasses: 4 }), 'deploy')].map(([k, shape]) => [k, { shape, data: new Float32Array(0) }]));
    t.is(identifyOfficialArch(state, 'deploy', 'w'), arch);
  }
  const mini = customSpec({ numClasses: 4, stemChannels: 16, stageChannels: [16, 32, 64, 128], stageDepths: [1, 1, 1, 1] });
  const state = new Map([...expectedWeights(mini, 'train')].map(([k, shape]) => [k, { shape, data: new Float32Array(0) }]));
  t.throws(() => identifyOfficialArch(state, 'train', 'mini.pth'), { code: 'ERR_WEIGHTS_MISMATCH', message: /mini\.pth records no architecture .* pass the arch \(e\.g\. --arch A0\)/ });
});

test('saved normalization and class names are read back; malformed normalization metadata is a FormatError', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const spec = officialSpec('A0', { numClasses: 3 });
  const path = join(dir, 'w.safetensors');
  const normalization = { mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3] };
  await saveWeights(path, spec, 'deploy', randomStateDict(spec, 'deploy', 6), '--out', { normalization, classNames: ['cat', 'dog', 'eel'], keyStyle: 'timm' });
  const loaded = await loadWeights(path);
  t.is(loaded.keyStyle, 'timm');
  t.deepEqual(recordedNormalization(loaded), normalization);
  t.deepEqual(recordedClassNames(loaded), ['cat', 'dog', 'eel']);
  t.deepEqual(recordedNormalization({ metadata: {} }), IMAGENET_NORMALIZATION);
  t.is(recordedClassNames({ spec, metadata: { class_names: '["a"]' } }), undefined, 'a list of the wrong length is ignored');
  for (const bad of ['{', '{"mean":[0.5],"std":[0]}', '{"mean":[1,2],"std":[1]}', '{"mean":"x","std":[1]}', JSON.stringify({ mean: new Array(1000).fill(0), std: new Array(1000).fill(1) })]) {
    t.throws(() => recordedNormalization({ metadata: { input_normalization: bad } }, 'w.safetensors'), { code: 'ERR_FORMAT', message: /w\.safetensors: metadata 'input_normalization'/ });
  }
});
