import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { GdpError } from '../../src/shared/errors.js';
import { checkIsModelFile, momentumFileEpoch, MOMENTUM_FORMAT, RESUME_FORMAT, runModelFile, runModelFiles } from '../../src/shared/io/run_file_kinds.js';

test("runModelFiles lists a run folder's model files in the order the run writes them, and nothing else", () => {
  const dir = mkdtempSync(join(tmpdir(), 'gdp-run-files-'));
  try {
    const names = ['finetuned', 'gbn_40', 'train-epoch10', 'pruned', 'gbn_70', 'train-epoch2', 'resume', 'train-epoch2.optim'].map((n) => `${n}.safetensors`);
    for (const n of [...names, 'log.json', 'pruned.safetensors.tmp-12']) writeFileSync(join(dir, n), '');
    assert.deepEqual(
      runModelFiles(dir),
      ['train-epoch2', 'train-epoch10', 'gbn_70', 'gbn_40', 'pruned', 'finetuned'].map((n) => `${n}.safetensors`),
    );
    assert.deepEqual(runModelFiles(join(dir, 'absent')), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('checkIsModelFile refuses a resume point and a momentum file by name, and passes any other metadata', () => {
  const refused = (meta: Record<string, string>, ...mention: string[]) =>
    assert.throws(
      () => checkIsModelFile(meta, 'logs/run/x.optim.safetensors'),
      (e: unknown) => e instanceof GdpError && e.code === 'NOT_A_MODEL' && mention.every((m) => e.message.includes(m)),
    );
  refused({ format: RESUME_FORMAT }, 'logs/run/x.optim.safetensors is a resume point', 'gdp-coord --resume logs/run');
  refused({ format: MOMENTUM_FORMAT }, 'SGD momentum', 'pass the checkpoint itself, logs/run/x.safetensors');
  const others: Record<string, string>[] = [{}, { format: 'gdp' }, { format: 'gdp-checkpoint/1', arch: 'cifar.resnet20' }, { format: 'pt' }];
  for (const meta of others) checkIsModelFile(meta, 'w.safetensors');
});

test('runModelFile and momentumFileEpoch tell the run model files and the epoch momentum by name, and nothing else', () => {
  assert.deepEqual(runModelFile('train-epoch12.safetensors'), { kind: 'epoch', epoch: 12 });
  assert.deepEqual(runModelFile('gbn_40.safetensors'), { kind: 'save_point', percent: 40 });
  assert.deepEqual(runModelFile('pruned.safetensors'), { kind: 'pruned' });
  assert.deepEqual(runModelFile('finetuned.safetensors'), { kind: 'finetuned' });
  for (const other of ['train-epoch12.optim.safetensors', 'resume.safetensors', 'pruned.safetensors.tmp-7', 'gbn_.safetensors', 'my_pruned.safetensors']) {
    assert.equal(runModelFile(other), undefined, other);
  }
  assert.equal(momentumFileEpoch('train-epoch12.optim.safetensors'), 12);
  for (const other of ['train-epoch12.safetensors', 'pruned.optim.safetensors', 'train-epoch12.optim.safetensors.tmp-7']) {
    assert.equal(momentumFileEpoch(other), undefined, other);
  }
});
