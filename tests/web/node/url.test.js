// Links and requests (web/static/js/url.js, lang.js): what the address bar says is read into the
// state and written back the same; the filters as the API takes them.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { floresOf, langInUrl, langParam, langsOf, pickLang } from '../../../web/static/js/lang.js';
import { describeFilters, filterCount, filtersBody, filtersParams, readUrl, sameFilters, urlQuery } from '../../../web/static/js/url.js';

/** @typedef {import('../../../web/static/js/store.js').State} State */

const NONE = { folder: '', from: '', to: '', formats: /** @type {string[]} */ ([]), mode: /** @type {import('../../../web/static/js/store.js').SearchMode} */ ('') };

/**
 * A state as urlQuery reads it.
 * @param {Partial<Pick<State, 'cutOverride' | 'sort' | 'filters' | 'lang' | 'langs'>> & { query?: Partial<State['query']> }} over
 * @returns {Pick<State, 'query' | 'cutOverride' | 'sort' | 'filters' | 'lang' | 'langs'>}
 */
function view(over = {}) {
  const query = { mode: /** @type {const} */ ('browse'), q: '', likeId: null, likeName: '', likeThumb: null, likeText: '', imageFile: null, imageKey: null, imageUrl: null, ...over.query };
  return { cutOverride: null, sort: 'relevance', filters: NONE, lang: null, langs: null, ...over, query };
}

test('a link is read: query, cut, sort, filters; what is not valid is left out', () => {
  const wanted = readUrl('?q=+a+red+car+&min=0.7&sort=date_desc&folder=%2Fphotos&from=2024-01-01&to=2024-13&fmt=jpg,png,heic,exe');
  assert.equal(wanted.q, 'a red car');
  assert.equal(wanted.cut, 0.7);
  assert.equal(wanted.sort, 'date_desc');
  assert.deepEqual(wanted.filters, { folder: '/photos', from: '2024-01-01', to: '', formats: ['JPEG', 'PNG', 'HEIF'], mode: '' });
  assert.equal(readUrl('?q=cat&mode=text').filters.mode, 'text');
  assert.equal(readUrl('?q=cat&mode=fuzzy').filters.mode, ''); // not a mode: the server's default
  assert.equal(readUrl('?min=3').cut, 1);
  assert.equal(readUrl('?min=abc').cut, null); // not a number: the server's default
  assert.equal(readUrl('').cut, null);
  assert.equal(readUrl('?sort=sideways').sort, 'relevance');
  assert.equal(readUrl('?like=12&with=%20at%20night').likeText, 'at night');
  assert.equal(readUrl(`?like=12&with=${'x'.repeat(600)}`).likeText.length, 500);
});

test('the cut is in a link only when the user chose one', () => {
  assert.equal(urlQuery(view({ query: { mode: 'text', q: 'cat' } })), 'q=cat');
  assert.equal(urlQuery(view({ query: { mode: 'text', q: 'cat' }, cutOverride: 0 })), 'q=cat&min=0.00');
  assert.equal(urlQuery(view({ query: { mode: 'text', q: 'cat' }, cutOverride: 0.5 })), 'q=cat&min=0.50');
});

test('what is written is read back the same', () => {
  const s = view({
    query: { mode: 'similar', likeId: '42', likeText: 'at night' },
    cutOverride: 0.35,
    sort: 'date_asc',
    filters: { folder: '/p q', from: '2023-02-01', to: '2023-03-01', formats: ['PNG', 'WEBP'], mode: /** @type {const} */ ('semantic') },
  });
  const text = urlQuery(s);
  assert.equal(text, 'like=42&with=at+night&min=0.35&sort=date_asc&folder=%2Fp+q&from=2023-02-01&to=2023-03-01&fmt=PNG%2CWEBP&mode=semantic');
  const back = readUrl(`?${text}`);
  assert.equal(back.like, '42');
  assert.equal(back.likeText, 'at night');
  assert.equal(back.cut, 0.35);
  assert.equal(back.sort, 'date_asc');
  assert.deepEqual(back.filters, s.filters);
});

test('filters: counted, compared, and written for POST and GET', () => {
  const f = { ...NONE, folder: '/photos', from: '2024-01-01', formats: ['JPEG', 'WEBP'] };
  assert.equal(filterCount(NONE), 0);
  assert.equal(filterCount(f), 3);
  assert.equal(filterCount({ ...NONE, to: '2024-01-01' }), 1);
  assert.equal(filterCount({ ...f, mode: 'hybrid' }), 4);
  assert.ok(!sameFilters(f, { ...f, mode: 'text' }));
  assert.equal(filtersBody({ ...NONE, mode: 'text' }), null); // the mode goes beside the filters
  assert.ok(sameFilters(f, { ...f, formats: ['JPEG', 'WEBP'] }));
  assert.ok(!sameFilters(f, { ...f, formats: ['JPEG'] }));
  assert.equal(filtersBody(NONE), null);
  assert.deepEqual(filtersBody(f), { folder: '/photos', date_from: '2024-01-01', formats: ['JPEG', 'WEBP'] });
  assert.equal(filtersParams(f, 'k=40'), 'k=40&folder=%2Fphotos&date_from=2024-01-01&format=JPEG&format=WEBP');
  assert.equal(describeFilters(f), 'in /photos · taken from 2024-01-01 · JPEG, WebP');
  assert.equal(describeFilters({ ...NONE, from: '2024-01-01', to: '2024-02-01', formats: ['HEIF'] }), 'taken 2024-01-01 to 2024-02-01 · HEIC');
});

test('query languages: the code sent, the code in links, the code a browser starts with', () => {
  const langs = langsOf({ language_aware: true, default: 'eng_Latn', languages: ['eng_Latn', 'fra_Latn', 'zho_Hans', 'zho_Hant', 'bad'] }, 'fr-FR');
  assert.ok(langs);
  assert.equal(langs.default, 'eng_Latn');
  assert.equal(langs.start, 'fra_Latn'); // this browser's language
  assert.deepEqual([...langs.codes], ['eng_Latn', 'fra_Latn', 'zho_Hans', 'zho_Hant']);
  assert.notEqual(langs.names.get('zho_Hans'), langs.names.get('zho_Hant')); // two scripts: both said
  assert.equal(langsOf({ language_aware: false, languages: ['eng_Latn'] }), false);
  assert.equal(pickLang('deu_Latn', langs), 'fra_Latn'); // not the model's: where the gallery starts
  assert.equal(pickLang('zho_Hant', langs), 'zho_Hant');
  assert.equal(pickLang('zho_Hant', false), null);
  assert.equal(pickLang('zho_Hant', null), 'zho_Hant'); // not known yet: kept
  assert.equal(pickLang('<script>', null), null);
  assert.equal(langParam('eng_Latn', langs), null); // the model's own: not sent
  assert.equal(langParam('fra_Latn', langs), 'fra_Latn');
  assert.equal(langInUrl('eng_Latn', langs), true); // the browser started elsewhere: said
  assert.equal(langInUrl('eng_Latn', { ...langs, start: 'eng_Latn' }), false);
  assert.equal(floresOf('ja-JP', ['jpn_Jpan', 'eng_Latn']), 'jpn_Jpan');
  assert.equal(floresOf('zh', ['zho_Hans', 'zho_Hant']), 'zho_Hans');
  assert.equal(floresOf('not a tag!', ['eng_Latn']), null);
});
