// The gallery's pure helpers (web/static/js/util.js), with node's own test runner:
// `node --test tests/web/node/` (tests/web/test_gallery_units.py runs it under pytest).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { appliedCut, baseName, clamp, debounce, formatBytes, formatScore, queryString, relevanceOf, safeUrl, wantsPreview } from '../../../web/static/js/util.js';

const PAGE = 'https://photos.example:8000/?q=cat';

test('safeUrl keeps same-origin paths and refuses everything else', () => {
  assert.equal(safeUrl('/api/images/3/thumbnail', PAGE), '/api/images/3/thumbnail');
  assert.equal(safeUrl('api/images/3/file?x=1', PAGE), '/api/images/3/file?x=1');
  assert.equal(safeUrl('https://photos.example:8000/a#frag', PAGE), '/a');
  assert.equal(safeUrl('javascript:alert(1)', PAGE), null);
  assert.equal(safeUrl('data:image/png;base64,AAAA', PAGE), null);
  assert.equal(safeUrl('https://evil.example/a.png', PAGE), null);
  assert.equal(safeUrl('//evil.example/a.png', PAGE), null);
  assert.equal(safeUrl('http://photos.example:8000/a', PAGE), null); // another scheme: another origin
  assert.equal(safeUrl('', PAGE), null);
  assert.equal(safeUrl(42, PAGE), null);
  assert.equal(safeUrl('/a'), null); // no page to be relative to (node)
});

test('baseName reads POSIX and Windows paths', () => {
  assert.equal(baseName('/photos/2024/IMG_1.jpg'), 'IMG_1.jpg');
  assert.equal(baseName('C:\\Users\\me\\cat.png'), 'cat.png');
  assert.equal(baseName('plain.gif'), 'plain.gif');
  assert.equal(baseName('/photos/'), '/photos/');
  assert.equal(baseName(undefined), 'image');
  assert.equal(baseName('<img src=x onerror=alert(1)>.png'), '<img src=x onerror=alert(1)>.png');
});

test('formatBytes picks a unit', () => {
  assert.equal(formatBytes(0), '0 bytes');
  assert.equal(formatBytes(1023), '1023 bytes');
  assert.equal(formatBytes(1536), '1.5 KB');
  assert.equal(formatBytes(20 * 1024 * 1024), '20 MB');
  assert.equal(formatBytes(3 * 1024 ** 5), '3072 TB');
  assert.equal(formatBytes(null), null);
  assert.equal(formatBytes(Number.NaN), null);
  assert.equal(formatBytes('12'), null);
});

test('scores: two decimals, relevance before the raw score', () => {
  assert.equal(formatScore(0.123), '0.12');
  assert.equal(formatScore(undefined), null);
  assert.equal(relevanceOf({ id: 1, score: 0.3, relevance: 0.8 }), 0.8);
  assert.equal(relevanceOf({ id: 1, score: 0.3 }), 0.3);
  assert.equal(clamp(2, 0, 1), 1);
  assert.equal(clamp(-1, 0, 1), 0);
});

test('wantsPreview: formats browsers cannot show, and very large originals', () => {
  assert.equal(wantsPreview({ id: 1, format: 'JPEG', width: 800, height: 600, size: 1000 }), false);
  assert.equal(wantsPreview({ id: 1, format: 'tiff' }), true);
  assert.equal(wantsPreview({ id: 1, format: 'HEIF' }), true);
  assert.equal(wantsPreview({ id: 1, format: 'PNG', width: 6000, height: 10 }), true);
  assert.equal(wantsPreview({ id: 1, format: 'PNG', size: 13 * 1024 * 1024 }), true);
});

test('queryString leaves out what has no value', () => {
  assert.equal(queryString({ q: 'a red car', k: 40, offset: 0, min_relevance: null, sort: undefined, lang: '' }), 'q=a+red+car&k=40&offset=0');
});

test('appliedCut reads the cut a search answer says it applied', () => {
  assert.equal(appliedCut({ min_relevance: 0.5, results: [] }), 0.5);
  assert.equal(appliedCut({ query: { text: 'x', min_relevance: 0.25 }, results: [] }), 0.25);
  assert.equal(appliedCut({ min_relevance: 0.4, query: { min_relevance: 0.9 } }), 0.4); // the top level first
  assert.equal(appliedCut({ min_relevance: 0 }), 0);
  assert.equal(appliedCut({ min_relevance: 7 }), 1);
  assert.equal(appliedCut({ query: { text: 'x' }, results: [] }), null);
  assert.equal(appliedCut({ min_relevance: 'high' }), null);
  assert.equal(appliedCut(null), null);
});

test('debounce calls once, after the pause, with the last arguments; cancel drops it', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  /** @type {number[]} */
  const calls = [];
  const f = debounce((/** @type {number} */ n) => calls.push(n), 250);
  f(1);
  f(2);
  t.mock.timers.tick(249);
  f(3);
  t.mock.timers.tick(249);
  assert.deepEqual(calls, []);
  t.mock.timers.tick(1);
  assert.deepEqual(calls, [3]);
  f(4);
  f.cancel();
  t.mock.timers.tick(1000);
  assert.deepEqual(calls, [3]);
});
