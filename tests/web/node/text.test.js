// Why a picture is here, in words, and why it has no text, said once (web/static/js/text.js),
// with node's own test runner (tests/web/test_gallery_units.py runs it under pytest).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { reasonsInWords, stateNote } from '../../../web/static/js/text.js';

test('a reason for having no text is said once, not wrapped in itself', () => {
  // what the issue saw: "Too small to hold readable text (too small to hold readable text (96x96))"
  assert.equal(stateNote('skipped', 'too small to hold readable text (96x96)'), 'Too small to hold readable text (96x96)');
  assert.equal(stateNote('skipped', ''), 'Too small to hold readable text');
  assert.equal(stateNote('failed', 'tesseract timed out after 20 s'), 'Text could not be read: tesseract timed out after 20 s');
});

test('each reason a result matched is a phrase a person reads', () => {
  const words = reasonsInWords({ id: 1, match: ['semantic', 'text'], words: ['invoice'], band: 'fair' }, 'text');
  assert.deepEqual(words, ['the words “invoice” read in the picture', 'looks like what you described: fair']);
  assert.deepEqual(reasonsInWords({ id: 2, match: ['filename'], words: ['harbour'] }, 'text'), ['the file name (“harbour”)']);
  assert.deepEqual(reasonsInWords({ id: 3, match: ['semantic'], band: 'strong' }, 'similar'), ['looks like the picture you chose: strong']);
  assert.deepEqual(reasonsInWords({ id: 4, match: ['caption', 'folder'] }, 'text'), ['its caption', 'the name of its folder']);
});
