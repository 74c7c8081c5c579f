// @ts-check
// The timeline: the library by capture date, grouped by day under month headings (grid.js draws
// them), and the date scrubber: the months that hold pictures (GET /api/v1/images/timeline, with the
// current filters), each a button that starts the grid at that month's cursor. Pictures without a
// date come last, under their own heading.

import { api } from './api.js';
import { els, h } from './dom.js';
import { browseSort } from './pages.js';
import { setJump, state } from './store.js';
import { filtersParams } from './url.js';
import { queryString } from './util.js';

/** What the scrubber asks of the others (app.js wires it): start the grid again. */
export const timelineHooks = { jump: () => {} };

/**
 * The day a picture belongs to, `YYYY-MM-DD` as the camera's clock wrote it (no time zone
 * shift), or 'undated'.
 * @param {unknown} takenAt
 */
export function dayKey(takenAt) {
  const text = typeof takenAt === 'string' ? takenAt : '';
  return /^\d{4}-\d{2}-\d{2}/.test(text) ? text.slice(0, 10) : 'undated';
}

/** @param {string} key `YYYY-MM-DD` or `YYYY-MM` */
const utc = (key) => {
  const [y, m, d] = key.split('-').map(Number);
  return new Date(Date.UTC(y, (m || 1) - 1, d || 1));
};

/**
 * "June 2024"
 * @param {string} month `YYYY-MM`
 */
export const monthLabel = (month) => utc(month).toLocaleDateString(undefined, { month: 'long', year: 'numeric', timeZone: 'UTC' });

/**
 * "Sat, 1 June"
 * @param {string} day `YYYY-MM-DD`
 */
export const dayLabel = (day) => utc(day).toLocaleDateString(undefined, { weekday: 'short', day: 'numeric', month: 'long', timeZone: 'UTC' });

let asked = 0; // a newer request drops the answer of an older one

/** Fill the scrubber for the timeline now shown (hidden for searches). */
export async function loadScrubber() {
  asked += 1;
  const mine = asked;
  if (state.query.mode !== 'browse') {
    els.scrubber.hidden = true;
    return;
  }
  /** @type {any} */
  let data;
  try {
    data = await api(`/images/timeline?${filtersParams(state.filters, queryString({ sort: browseSort() }))}`);
  } catch {
    if (mine === asked) els.scrubber.hidden = true; // the grid says what went wrong
    return;
  }
  if (mine !== asked || state.query.mode !== 'browse') return;
  const months = Array.isArray(data?.months) ? data.months : [];
  /** @type {HTMLElement[]} */
  const entries = [];
  let year = '';
  for (const m of months) {
    const month = String(m?.month ?? '');
    if (!/^\d{4}-\d{2}$/.test(month)) continue;
    if (month.slice(0, 4) !== year) {
      year = month.slice(0, 4);
      entries.push(h('li', { class: 'scrub-year', 'aria-hidden': 'true', text: year }));
    }
    const label = monthLabel(month);
    const key = typeof m.after_key === 'string' ? m.after_key : null;
    const short = utc(month).toLocaleDateString(undefined, { month: 'short', timeZone: 'UTC' });
    entries.push(h('li', {}, h('button', { type: 'button', class: 'scrub-month', 'data-month': month, 'aria-label': label, title: label, onclick: () => jump(key, label) }, short)));
  }
  if (data?.undated) {
    const key = typeof data.undated_after_key === 'string' ? data.undated_after_key : null;
    entries.push(h('li', {}, h('button', { type: 'button', class: 'scrub-month', 'data-month': 'undated', 'aria-label': 'Undated', title: 'Pictures without a date', onclick: () => jump(key, 'Undated') }, 'Undated')));
  }
  els.scrubberList.replaceChildren(...entries);
  els.scrubber.hidden = entries.length < 2;
}

/**
 * Start the grid at a month.
 * @param {string | null} key
 * @param {string} label
 */
function jump(key, label) {
  setJump(key, label);
  timelineHooks.jump();
}
