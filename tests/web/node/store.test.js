// The store (web/static/js/store.js): the relevance cut is the server's unless the user moved
// the slider; pages add up without repeating an image; subscribers hear each change.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { addPage, cutShown, removeItems, setCut, setCutDefault, startRun, state, subscribe } from '../../../web/static/js/store.js';

test('the cut: the user choice, else what the server applied, else its default', () => {
  /** @type {string[]} */
  const heard = [];
  const stop = subscribe((change) => heard.push(change));
  setCutDefault(0.5);
  assert.equal(state.cutOverride, null);
  assert.equal(cutShown(), 0.5);
  startRun();
  addPage({ items: [], consumed: 0, done: true, cut: 0.45 }); // the server says what it applied
  assert.equal(cutShown(), 0.45);
  setCut(0.8);
  assert.equal(state.cutOverride, 0.8);
  assert.equal(cutShown(), 0.8);
  setCut(0.5); // the default itself: nothing to send
  assert.equal(state.cutOverride, null);
  setCut(0); // "show weaker results"
  assert.equal(state.cutOverride, 0);
  assert.equal(cutShown(), 0);
  setCut(null); // "Reset": back to the default, not to 0
  assert.equal(cutShown(), 0.5);
  setCut(7);
  assert.equal(state.cutOverride, 1);
  setCut(Number.NaN);
  assert.equal(state.cutOverride, null);
  addPage({ items: [], consumed: 0, done: true }); // browsing says nothing of a cut
  assert.equal(state.cutApplied, null);
  stop();
  assert.ok(heard.includes('cut') && heard.includes('results'));
});

test('pages add up; an image seen before is not shown twice; removed ones leave', () => {
  const { gen } = startRun();
  const first = addPage({ items: [{ id: 1 }, { id: 2 }], consumed: 2, done: false });
  assert.deepEqual(first, { fresh: [{ id: 1 }, { id: 2 }], start: 0 });
  const second = addPage({ items: [{ id: 2 }, { id: 3 }], consumed: 2, done: false, hidden: 4, hiddenMore: true });
  assert.deepEqual(second, { fresh: [{ id: 3 }], start: 2 });
  assert.equal(state.offset, 4);
  assert.equal(state.hidden, 4);
  assert.equal(state.hiddenMore, true);
  removeItems([2]);
  assert.deepEqual(state.items.map((x) => x.id), [1, 3]);
  const again = startRun();
  assert.equal(again.gen, gen + 1);
  assert.deepEqual(state.items, []);
  assert.equal(state.offset, 0);
  assert.equal(state.hidden, null);
});
