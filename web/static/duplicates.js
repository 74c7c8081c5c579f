// The "Duplicates" view: groups of the same picture in several places (GET /api/duplicates),
// each member with why it is there, and "Keep this one" / "Remove" through the remove API
// (DELETE /api/images/{id}: remembered, undone from the Removed view). Similar shots (bursts)
// are a separate tab, never mixed with duplicates. Groups are computed by a job after each
// ingest; when photos changed since, the view asks for a new pass (POST /api/duplicates/scan)
// and reloads when it is done. Everything from the API is shown as text.

const PAGE = 20;
const POLL_MS = 1500;

const KIND_LABEL = {
  exact: 'Exact copies',
  near: 'Same picture',
  similar: 'Similar shots',
};

/**
 * Wire the view. `deps`: `api(path, opts)`, `h(tag, props, ...)`, `safeUrl(url)`,
 * `baseName(path)`, `formatBytes(n)`, and `onRemoved(ids, names)` called after images were removed
 * (the gallery drops them from the grid and refreshes its counts).
 */
export function initDuplicatesView(deps) {
  const { api, h, safeUrl, baseName, formatBytes, onRemoved } = deps;
  const $ = (id) => document.getElementById(id);
  const dialog = $('duplicates-view');
  const list = $('duplicates-list');
  const empty = $('duplicates-empty');
  const error = $('duplicates-error');
  const status = $('duplicates-status');
  const more = $('duplicates-more');
  const rescan = $('duplicates-scan');
  const tabs = [...dialog.querySelectorAll('[data-dup-kind]')];
  let kind = 'duplicates';
  let nextAfter = null;
  let poll = null;
  let loading = 0;

  const showError = (message) => {
    error.textContent = message;
    error.hidden = !message;
  };

  const folderOf = (path) => {
    const text = String(path ?? '');
    const cut = text.lastIndexOf('/');
    return cut > 0 ? text.slice(0, cut) : text;
  };

  function dropMembers(groupEl, ids) {
    for (const id of ids) groupEl.querySelector(`li[data-image-id="${CSS.escape(String(id))}"]`)?.remove();
    const left = groupEl.querySelectorAll('li[data-image-id]').length;
    if (left < 2) groupEl.remove();
    else groupEl.querySelector('.dup-size').textContent = `${left} images`;
    empty.hidden = list.children.length > 0;
  }

  async function remove(groupEl, members) {
    const names = members.map((m) => baseName(m.image.path));
    const removed = [];
    showError('');
    for (const m of members) {
      try {
        await api(`/api/images/${encodeURIComponent(String(m.image.id))}`, { method: 'DELETE' });
        removed.push(m.image.id);
      } catch (err) {
        if (err.status !== 404) {
          showError(`Could not remove ${baseName(m.image.path)}: ${err.message}`);
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

  function memberRow(group, m, groupEl) {
    const img = m.image;
    const name = baseName(img.path);
    const thumb = safeUrl(img.thumbnail_url);
    const file = safeUrl(img.file_url);
    const keep = h('button', { type: 'button', class: 'button small', text: 'Keep this one' });
    keep.setAttribute('aria-label', `Keep ${name}, remove the others of this group`);
    keep.addEventListener('click', () => {
      const others = group.members.filter(
        (o) => o.image.id !== img.id && groupEl.querySelector(`li[data-image-id="${CSS.escape(String(o.image.id))}"]`),
      );
      const what = others.map((o) => baseName(o.image.path)).join(', ');
      if (!window.confirm(`Keep “${name}” and remove ${others.length} other${others.length === 1 ? '' : 's'} (${what}) from the library? The files stay on disk.`)) return;
      remove(groupEl, others);
    });
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
    el.append(head, members);
    members.append(...group.members.map((m) => memberRow(group, m, el)));
    return el;
  }

  function showJob(page) {
    const job = page.job;
    const running = job && (job.state === 'queued' || job.state === 'running');
    if (running) status.textContent = 'Looking for duplicates…';
    else if (!job) status.textContent = 'Duplicates have not been looked for yet.';
    else if (job.state === 'failed') status.textContent = `The last check failed: ${job.message || 'see the jobs panel'}`;
    else if (page.stale) status.textContent = 'Photos changed since the last check.';
    else status.textContent = 'Up to date.';
    rescan.disabled = Boolean(running);
    return running;
  }

  function follow() {
    clearTimeout(poll);
    poll = setTimeout(async () => {
      if (!dialog.open) return;
      try {
        const page = await api(`/api/duplicates?limit=1&kind=${encodeURIComponent(kind)}`, { ask: false });
        if (showJob(page)) follow();
        else load(true, false);
      } catch (err) {
        showError(err.message);
      }
    }, POLL_MS);
  }

  async function scan(full, ask) {
    showError('');
    try {
      await api('/api/duplicates/scan', { method: 'POST', json: { full }, ask });
      status.textContent = 'Looking for duplicates…';
      rescan.disabled = true;
      follow();
    } catch (err) {
      if (ask) showError(err.message);
    }
  }

  async function load(reset, autoScan = true) {
    const ticket = ++loading;
    if (reset) nextAfter = null;
    showError('');
    more.hidden = true;
    try {
      const params = new URLSearchParams({ limit: String(PAGE), kind });
      if (nextAfter !== null) params.set('after', String(nextAfter));
      const page = await api(`/api/duplicates?${params}`);
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
      showError(err.message);
    }
  }

  for (const tab of tabs) {
    tab.addEventListener('click', () => {
      kind = tab.dataset.dupKind;
      for (const t of tabs) t.setAttribute('aria-pressed', String(t === tab));
      load(true);
    });
  }
  $('duplicates-toggle').addEventListener('click', () => {
    dialog.showModal();
    load(true);
  });
  $('duplicates-close').addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => clearTimeout(poll));
  more.addEventListener('click', () => load(false));
  rescan.addEventListener('click', () => scan(false, true));
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
}
