// @ts-check
// The "Duplicates" view: groups of the same picture in several places (GET /api/v1/duplicates),
// each member with why it is there, and "Keep this one" / "Remove" through the remove API
// (DELETE /api/v1/images/{id}: remembered, undone from the Removed view). Similar shots (bursts)
// are a separate tab, never mixed with duplicates. Groups are computed by a job after each
// ingest; when photos changed since, the view asks for a new pass (POST /api/v1/duplicates/scan)
// and reloads when it is done. "Compare" opens a group side by side: each copy's resolution, file
// size, date, format and folder, the suggested keeper first (the API's rule and order, never
// decided here), and "Keep this one, remove the others" with one confirmation. Everything from
// the API is shown as text.

import { ApiError, api, messageOf } from './api.js';
import { byId, h } from './dom.js';
import { baseName, formatBytes, formatDate, safeUrl } from './util.js';

/**
 * @typedef {object} Member
 * @property {import('./util.js').Item} image
 * @property {string} [reason] why it is in the group
 * @property {string | null} [date] the date the keeper rule compared (taken, else modified)
 */
/**
 * A group of the same picture (GET /api/v1/duplicates).
 * @typedef {object} Group
 * @property {number | string} id
 * @property {string} kind exact | near | similar
 * @property {number} [min_similarity]
 * @property {Member[]} members the suggested keeper first
 * @property {number | string | null} [keeper_id] the suggested keeper (the API's rule)
 */
/**
 * @typedef {object} GroupsPage
 * @property {Group[]} items
 * @property {unknown} [next_after]
 * @property {boolean} [stale] photos changed since the last pass
 * @property {{ state?: string, message?: string } | null} [job] the last pass
 * @property {{ mode?: string, reason?: string }} [thresholds] how "the same picture" was decided
 */

const PAGE = 20;
const POLL_MS = 1500;

/** @type {Record<string, string>} */
const KIND_LABEL = {
  exact: 'Exact copies',
  near: 'Same picture',
  similar: 'Similar shots',
};

/**
 * Wire the view. `onRemoved(ids, names)` is called after images were removed (the gallery drops
 * them from the grid and refreshes its counts).
 * @param {(ids: (number | string)[], names: string[]) => void} onRemoved
 */
export function initDuplicatesView(onRemoved) {
  const dialog = byId('duplicates-view', HTMLDialogElement);
  const list = byId('duplicates-list', HTMLElement);
  const empty = byId('duplicates-empty', HTMLElement);
  const error = byId('duplicates-error', HTMLElement);
  const status = byId('duplicates-status', HTMLElement);
  const more = byId('duplicates-more', HTMLButtonElement);
  const rescan = byId('duplicates-scan', HTMLButtonElement);
  const tabs = /** @type {HTMLElement[]} */ ([...dialog.querySelectorAll('[data-dup-kind]')]);
  let kind = 'duplicates';
  /** @type {unknown} */
  let nextAfter = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let poll;
  let loading = 0;

  /** @param {string} message */
  const showError = (message) => {
    error.textContent = message;
    error.hidden = !message;
  };

  /** @param {unknown} path */
  const folderOf = (path) => {
    const text = String(path ?? '');
    const cut = text.lastIndexOf('/');
    return cut > 0 ? text.slice(0, cut) : text;
  };

  /**
   * @param {HTMLElement} groupEl
   * @param {(number | string)[]} ids
   */
  function dropMembers(groupEl, ids) {
    for (const id of ids) {
      for (const el of groupEl.querySelectorAll(`[data-image-id="${CSS.escape(String(id))}"]`)) el.remove();
    }
    const left = groupEl.querySelectorAll('li[data-image-id]').length;
    if (left < 2) groupEl.remove();
    else {
      const size = groupEl.querySelector('.dup-size');
      if (size) size.textContent = `${left} images`;
    }
    empty.hidden = list.children.length > 0;
  }

  /**
   * @param {HTMLElement} groupEl
   * @param {Member[]} members
   */
  async function remove(groupEl, members) {
    const names = members.map((m) => baseName(m.image.path));
    /** @type {(number | string)[]} */
    const removed = [];
    showError('');
    for (const m of members) {
      try {
        await api(`/images/${encodeURIComponent(String(m.image.id))}`, { method: 'DELETE' });
        removed.push(m.image.id);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404) {
          showError(`Could not remove ${baseName(m.image.path)}: ${messageOf(err)}`);
          break;
        }
        removed.push(m.image.id); // already gone
      }
    }
    dropMembers(groupEl, removed);
    if (removed.length) onRemoved(removed, names.slice(0, removed.length));
    status.textContent = removed.length
      ? `Removed ${removed.length} image${removed.length === 1 ? '' : 's'} from the library (undo from Removed).`
      : status.textContent;
  }

  /**
   * @param {Group} group
   * @param {Member} m
   * @param {HTMLElement} groupEl
   */
  function memberRow(group, m, groupEl) {
    const img = m.image;
    const name = baseName(img.path);
    const thumb = safeUrl(img.thumbnail_url);
    const file = safeUrl(img.file_url);
    const keep = keepButton(group, m, groupEl, 'Keep this one');
    const drop = h('button', { type: 'button', class: 'button ghost small', text: 'Remove' });
    drop.setAttribute('aria-label', `Remove ${name} from the library`);
    drop.addEventListener('click', () => remove(groupEl, [m]));
    const facts = [
      img.width && img.height ? `${img.width}×${img.height}` : null,
      formatBytes(img.size),
      img.format,
    ].filter(Boolean);
    return h(
      'li',
      { class: 'dup-member', 'data-image-id': String(img.id) },
      h(
        'a',
        { href: file || '#', target: '_blank', rel: 'noopener', class: 'dup-thumb', title: `Open ${name}` },
        thumb ? h('img', { src: thumb, alt: name, loading: 'lazy', width: 120, height: 120 }) : null,
      ),
      h('span', { class: 'dup-name', text: name, title: String(img.path) }),
      h('span', { class: 'dup-folder hint', text: folderOf(img.path), title: String(img.path) }),
      h('span', { class: 'dup-facts hint', text: facts.join(' · ') }),
      h('span', { class: 'dup-reason', text: String(m.reason ?? '') }),
      h('div', { class: 'dup-actions' }, keep, drop),
    );
  }

  /**
   * "Keep this one": one confirmation, then the group's other members still shown are removed.
   * @param {Group} group
   * @param {Member} m
   * @param {HTMLElement} groupEl
   * @param {string} text
   */
  function keepButton(group, m, groupEl, text) {
    const name = baseName(m.image.path);
    const keep = h('button', { type: 'button', class: 'button small', text });
    keep.setAttribute('aria-label', `Keep ${name}, remove the others of this group`);
    keep.addEventListener('click', () => {
      const others = group.members.filter(
        (o) => o.image.id !== m.image.id && groupEl.querySelector(`li[data-image-id="${CSS.escape(String(o.image.id))}"]`),
      );
      const what = others.map((o) => baseName(o.image.path)).join(', ');
      if (!window.confirm(`Keep “${name}” and remove ${others.length} other${others.length === 1 ? '' : 's'} (${what}) from the library? The files stay on disk.`)) return;
      remove(groupEl, others);
    });
    return keep;
  }

  /**
   * A member in the compare view: its picture and the facts that tell copies apart.
   * @param {Group} group
   * @param {Member} m
   * @param {HTMLElement} groupEl
   */
  function compareCard(group, m, groupEl) {
    const img = m.image;
    const name = baseName(img.path);
    const thumb = safeUrl(img.thumbnail_url);
    const keeper = String(m.image.id) === String(group.keeper_id);
    /** @type {[string, string | null | undefined][]} */
    const facts = [
      ['Resolution', img.width && img.height ? `${img.width} × ${img.height}` : null],
      ['File size', formatBytes(img.size)],
      ['Date', formatDate(m.date ?? img.taken_at)],
      ['Format', img.format],
      ['Folder', folderOf(img.path)],
    ];
    return h(
      'article',
      { class: `dup-card${keeper ? ' keeper' : ''}`, 'data-image-id': String(img.id), 'aria-label': name },
      thumb ? h('img', { src: thumb, alt: name, loading: 'lazy', width: 200, height: 200 }) : null,
      h('h3', { class: 'dup-name', text: name, title: String(img.path) }),
      keeper ? h('span', { class: 'dup-keeper', text: 'Suggested keeper', title: 'The largest original, then the earliest date' }) : null,
      h('dl', { class: 'dup-facts' }, ...facts.map(([label, value]) => h('div', {}, h('dt', { text: label }), h('dd', { text: value ?? '—' })))),
      keepButton(group, m, groupEl, 'Keep this one, remove the others'),
    );
  }

  /** @param {Group} group */
  function groupRow(group) {
    const el = h('li', { class: `dup-group ${group.kind}`, 'data-group-id': String(group.id), 'data-kind': group.kind });
    const head = h(
      'div',
      { class: 'dup-head' },
      h('span', { class: 'dup-kind', text: KIND_LABEL[group.kind] || String(group.kind) }),
      h('span', { class: 'dup-size hint', text: `${group.members.length} images` }),
      group.kind === 'exact' ? null : h('span', { class: 'hint', text: `similarity ≥ ${Number(group.min_similarity).toFixed(3)}` }),
    );
    const members = h('ul', { class: 'dup-members' });
    const compare = h('div', { class: 'dup-compare', role: 'region', 'aria-label': `Compare the ${group.members.length} images`, hidden: true });
    const toggle = h('button', { type: 'button', class: 'button ghost small dup-compare-toggle', text: 'Compare', 'aria-expanded': 'false' });
    toggle.addEventListener('click', () => {
      const open = compare.hidden;
      if (open) compare.replaceChildren(...group.members.filter((m) => el.querySelector(`li[data-image-id="${CSS.escape(String(m.image.id))}"]`)).map((m) => compareCard(group, m, el)));
      compare.hidden = !open;
      members.hidden = open; // one set of buttons at a time
      toggle.textContent = open ? 'Back to the list' : 'Compare';
      toggle.setAttribute('aria-expanded', String(open));
    });
    head.append(toggle);
    el.append(head, members, compare);
    members.append(...group.members.map((m) => memberRow(group, m, el)));
    return el;
  }

  // How "Same picture" was decided for this library: measured on its own pictures, or exact
  // copies only when its model cannot tell copies from different pictures (the job says which).
  const how = document.createElement('p');
  how.id = 'duplicates-how';
  how.className = 'hint';
  how.hidden = true;
  status.closest('.dup-bar')?.after(how);

  /** @param {GroupsPage['thresholds']} thresholds */
  function showHow(thresholds) {
    const mode = thresholds?.mode;
    if (mode === 'exact-only') {
      how.textContent = 'Only exact copies are grouped: this library\'s model cannot tell copies ' +
        'from different pictures that look alike.';
    } else if (mode === 'measured') {
      how.textContent = '"Same picture" was measured on your own pictures and copies of them.';
    } else {
      how.textContent = '';
    }
    how.title = thresholds?.reason || '';
    how.hidden = !how.textContent;
  }

  /** @param {GroupsPage} page */
  function showJob(page) {
    const job = page.job;
    const running = job && (job.state === 'queued' || job.state === 'running');
    if (running) status.textContent = 'Looking for duplicates…';
    else if (!job) status.textContent = 'Duplicates have not been looked for yet.';
    else if (job.state === 'failed') status.textContent = `The last check failed: ${job.message || 'see the jobs panel'}`;
    else if (page.stale) status.textContent = 'Photos changed since the last check.';
    else status.textContent = 'Up to date.';
    rescan.disabled = Boolean(running);
    showHow(page.thresholds);
    return running;
  }

  function follow() {
    clearTimeout(poll);
    poll = setTimeout(async () => {
      if (!dialog.open) return;
      try {
        /** @type {GroupsPage} */
        const page = await api(`/duplicates?limit=1&kind=${encodeURIComponent(kind)}`, { ask: false });
        if (showJob(page)) follow();
        else load(true, false);
      } catch (err) {
        showError(messageOf(err));
      }
    }, POLL_MS);
  }

  /**
   * Ask for a new pass (`full`: every image again); `ask`: a 401 asks for the token.
   * @param {boolean} full
   * @param {boolean} ask
   */
  async function scan(full, ask) {
    showError('');
    try {
      await api('/duplicates/scan', { method: 'POST', json: { full }, ask });
      status.textContent = 'Looking for duplicates…';
      rescan.disabled = true;
      follow();
    } catch (err) {
      if (ask) showError(messageOf(err));
    }
  }

  /**
   * @param {boolean} reset from the first page
   * @param {boolean} [autoScan] start a pass when the groups are stale
   */
  async function load(reset, autoScan = true) {
    const ticket = ++loading;
    if (reset) nextAfter = null;
    showError('');
    more.hidden = true;
    try {
      const params = new URLSearchParams({ limit: String(PAGE), kind });
      if (nextAfter !== null) params.set('after', String(nextAfter));
      /** @type {GroupsPage} */
      const page = await api(`/duplicates?${params}`);
      if (ticket !== loading) return; // a newer load (another tab) won
      if (reset) list.replaceChildren();
      list.append(...page.items.map(groupRow));
      nextAfter = page.next_after ?? null;
      more.hidden = nextAfter === null;
      empty.hidden = list.children.length > 0;
      empty.textContent = kind === 'similar' ? 'No similar shots found.' : 'No duplicates found.';
      const running = showJob(page);
      if (running) follow();
      else if (reset && autoScan && (page.stale || !page.job)) scan(false, false); // silently, if allowed
    } catch (err) {
      showError(messageOf(err));
    }
  }

  for (const tab of tabs) {
    tab.addEventListener('click', () => {
      kind = tab.dataset.dupKind || 'duplicates';
      for (const t of tabs) t.setAttribute('aria-pressed', String(t === tab));
      load(true);
    });
  }
  byId('duplicates-toggle', HTMLButtonElement).addEventListener('click', () => {
    dialog.showModal();
    load(true);
  });
  byId('duplicates-close', HTMLButtonElement).addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => clearTimeout(poll));
  more.addEventListener('click', () => load(false));
  rescan.addEventListener('click', () => scan(false, true));
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
}
