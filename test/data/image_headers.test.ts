import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import sharp from 'sharp';
import { checkImageHeaders, imageFormatOf } from '../../src/shared/data/image_headers.js';
import { GdpError } from '../../src/shared/errors.js';
import { writeSolid } from './folder_files.js';

const dir = mkdtempSync(join(tmpdir(), 'gdp-headers-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const badData =
  (...mention: string[]) =>
  (e: unknown) =>
    e instanceof GdpError && e.code === 'BAD_DATA' && mention.every((m) => e.message.includes(m));

test('every format the folder loader reads passes, whatever its extension; a file cut after its header passes too', async () => {
  const files: string[] = [];
  for (const name of ['a.png', 'b.jpg', 'c.webp']) {
    files.push(join(dir, name));
    await writeSolid(files.at(-1)!, 9, 7, [10, 20, 30]);
  }
  const tiff = join(dir, 'd.tif');
  await sharp({ create: { width: 5, height: 5, channels: 3, background: '#808080' } })
    .tiff()
    .toFile(tiff);
  files.push(tiff);
  // A PNG named .jpg: sharp decodes by content.
  const renamed = join(dir, 'e.jpg');
  writeFileSync(renamed, readFileSync(files[0]));
  files.push(renamed);
  // Only decoding finds this one (at first read, as BAD_DATA).
  const truncated = join(dir, 'f.png');
  writeFileSync(truncated, readFileSync(files[0]).subarray(0, 20));
  files.push(truncated);
  assert.deepEqual(
    files.map((f) => imageFormatOf(readFileSync(f).subarray(0, 12))),
    ['PNG', 'JPEG', 'WebP', 'TIFF', 'PNG', 'PNG'],
  );
  checkImageHeaders('folder/train', files);
});

test('a text file, an empty file, another format and a missing file stop the check with BAD_DATA naming the file', () => {
  const text = join(dir, 'broken.png');
  writeFileSync(text, 'this is not an image\n');
  assert.throws(() => checkImageHeaders('folder/train', [text]), badData('folder/train: ', text, 'is not an image', '"this is not ', 'JPEG, PNG, WebP, TIFF'));
  const empty = join(dir, 'empty.jpg');
  writeFileSync(empty, '');
  assert.throws(() => checkImageHeaders('folder/val', [empty]), badData(empty, 'is empty'));
  const gif = join(dir, 'g.png');
  writeFileSync(gif, Buffer.from('GIF89a\x01\x00\x01\x00\x00\x00', 'latin1'));
  assert.throws(() => checkImageHeaders('folder/train', [gif]), badData(gif, 'it starts with "GIF89a'));
  const binary = join(dir, 'h.jpg');
  writeFileSync(binary, Uint8Array.of(0, 1, 2, 0xff));
  assert.throws(() => checkImageHeaders('folder/train', [binary]), badData(binary, 'it starts with 00 01 02 ff'));
  assert.throws(() => checkImageHeaders('folder/train', [join(dir, 'gone.png')]), badData(join(dir, 'gone.png'), 'ENOENT'));
});
