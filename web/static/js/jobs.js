// @ts-check
// The ingest panel (add a folder, once or watched; rebuild the index), the jobs it follows (a
// badge while any run, progress and problems per job) and the footer's library counts. New
// images refresh the views that cannot lose a scroll position.

import { api, messageOf } from './api.js';
import { h, els } from './dom.js';
import { initFolders } from './folders.js';
import { renderEmpty, run } from './grid.js';
import { setLibraryTotal, state } from './store.js';

/**
 * A job as GET /api/v1/jobs gives it (untrusted text).
 * @typedef {object} Job
 * @property {string | number} id
 * @property {string} [kind] ingest | reindex | duplicates | ...
 * @property {string} [state] queued | running | done | failed
 * @property {number} [total]
 * @property {number} [done]
 * @property {number} [failed]
 * @property {string} [message]
 * @property {string} [created_at]
 * @property {{ path?: unknown, model?: unknown, scan?: { found?: unknown, removed?: unknown, moved?: unknown, library?: { ready?: unknown, failed?: unknown, skipped?: unknown } } }} [params]
 * @property {{ path?: unknown, reason?: unknown }[]} [errors]
 */

const JOB_POLL_MS = 1000;
const JOB_IDLE_POLL_MS = 5000;
const JOB_BACKGROUND_POLL_MS = 10000; // panel closed, nothing running: watched folders may change

/** Hooks: what else changes when jobs finish (app.js wires it). */
export const jobHooks = {
  /** A re-index may have switched the model: its query languages may differ. */
  modelMayHaveChanged: () => {},
};

const jobs = {
  /** @type {Map<string, Job>} */
  byId: new Map(),
  /** @type {Set<string>} */
  active: new Set(),
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  timer: undefined,
  polling: false,
  primed: false,
};

/** Whether any job is queued or running. */
export const jobsRunning = () => jobs.active.size > 0;

const folders = initFolders((job) => {
  if (job && job.id !== undefined) absorbJobs([job]);
});

/** @param {boolean} focus */
export function openPanel(focus) {
  els.panel.hidden = false;
  els.ingestToggle.setAttribute('aria-expanded', 'true');
  if (focus) els.ingestPath.focus();
  pollJobs();
  folders.refresh();
}

function closePanel() {
  els.panel.hidden = true;
  els.ingestToggle.setAttribute('aria-expanded', 'false');
  els.ingestToggle.focus();
}

/** @param {Job} job */
const isActive = (job) => job.state === 'queued' || job.state === 'running';

/**
 * "Add /photos", "Rebuild index ViT-B-32"
 * @param {Job} job
 */
export function jobLabel(job) {
  const kinds = /** @type {Record<string, string>} */ ({ ingest: 'Add', reindex: 'Rebuild index', duplicates: 'Find duplicates' });
  const kind = kinds[String(job.kind)] || String(job.kind ?? 'Job');
  const path = typeof job.params?.path === 'string' ? job.params.path : '';
  const model = typeof job.params?.model === 'string' ? job.params.model : '';
  return { kind, target: path || model };
}

/**
 * "12 of 40 · 1 failed", "Looking for images…", "Up to date: 12 images, nothing new"
 * @param {Job} job
 */
export function jobCounts(job) {
  const total = Number(job.total) || 0;
  const done = Number(job.done) || 0;
  const failed = Number(job.failed) || 0;
  let counts;
  if (total > 0) counts = `${done.toLocaleString()} of ${total.toLocaleString()}`;
  else if (isActive(job)) counts = 'Looking for images…';
  else {
    // nothing to embed: either the folder had no images or they were all seen already; the
    // folder's counts (scan.library: as the library counts its pictures) when the server says
    const found = Number(job.params?.scan?.found) || 0;
    const library = job.params?.scan?.library;
    if (library && typeof library === 'object') counts = upToDate(library);
    else counts = found > 0 ? `Up to date: nothing new among ${found.toLocaleString()} file${found === 1 ? '' : 's'}` : 'No images found';
  }
  if (failed) counts += ` · ${failed.toLocaleString()} failed`;
  return counts;
}

/**
 * "Up to date: 12 pictures · 1 could not be read · 1 skipped": the folder's pictures in the
 * library and its files that are not (the job summary's scan.library, the library's own counts).
 * @param {{ ready?: unknown, failed?: unknown, skipped?: unknown }} library
 */
function upToDate(library) {
  const ready = Number(library.ready) || 0;
  const failed = Number(library.failed) || 0;
  const skipped = Number(library.skipped) || 0;
  let text = `Up to date: ${ready.toLocaleString()} picture${ready === 1 ? '' : 's'}`;
  if (failed) text += ` · ${failed.toLocaleString()} could not be read`;
  if (skipped) text += ` · ${skipped.toLocaleString()} skipped`;
  return text;
}

/**
 * @param {Job} job
 * @param {HTMLElement} li its row (kept, so that an open list of problems stays open)
 */
function renderJob(job, li) {
  const { kind, target } = jobLabel(job);
  const total = Number(job.total) || 0;
  const progress = h('progress', { max: Math.max(total, 1), 'aria-label': `Progress: ${kind} ${target}`.trim() });
  if (total > 0) progress.value = Math.min((Number(job.done) || 0) + (Number(job.failed) || 0), total);
  else if (job.state === 'done') progress.value = 1; // nothing to do, and done
  // else: no value attribute = indeterminate (still scanning)
  const errors = Array.isArray(job.errors) ? job.errors : [];
  const details = li.querySelector('details');
  // a job that finished with some files it could not read is not "done": it is amber, and its
  // problems are listed open, each file with why
  const partial = job.state === 'done' && (Number(job.failed) || 0) > 0;
  const shown = partial ? 'done with problems' : String(job.state);
  const wasOpen = details ? details.open : partial;
  li.dataset.state = partial ? 'partial' : String(job.state);
  progress.classList.toggle('partial', partial);
  const parts = [
    h(
      'div',
      { class: 'job-head' },
      h('span', { class: 'job-kind', text: kind }),
      h('span', { class: 'job-target', title: target, text: target ? `\u200e${target}\u200e` : '' }),
      h('span', { class: `job-state ${partial ? 'partial' : job.state}`, text: shown }),
    ),
    progress,
    h('div', { class: 'job-counts', text: jobCounts(job) }),
    job.state === 'failed' && job.message ? h('div', { class: 'job-message form-error', role: 'note', text: `Failed: ${String(job.message)}` }) : null,
    errors.length
      ? h(
          'details',
          { open: wasOpen || null },
          h('summary', { text: `${errors.length} file${errors.length === 1 ? '' : 's'} could not be added` }),
          h(
            'ul',
            { class: 'job-errors' },
            errors.slice(0, 50).map((e) => h('li', {}, h('code', { text: String(e?.path ?? '') }), ` ${String(e?.reason ?? '')}`)),
          ),
        )
      : null,
  ];
  li.replaceChildren(...parts.filter((x) => x !== null));
}

/** @param {Job[]} list */
function renderJobs(list) {
  const order = [...list].sort((a, b) => String(b.created_at ?? '').localeCompare(String(a.created_at ?? '')));
  const existing = new Map([...els.jobs.children].map((li) => [/** @type {HTMLElement} */ (li).dataset.jobId, li]));
  const rows = order.slice(0, 20).map((job) => {
    const li = /** @type {HTMLElement} */ (existing.get(String(job.id)) || h('li', { class: 'job' }));
    li.dataset.jobId = String(job.id);
    renderJob(job, li);
    return li;
  });
  els.jobs.replaceChildren(...rows);
  els.jobsEmpty.hidden = rows.length > 0;
  const active = list.filter(isActive).length;
  els.jobsBadge.hidden = active === 0;
  els.jobsBadge.textContent = String(active);
  els.jobsBadge.setAttribute('aria-label', `${active} job${active === 1 ? '' : 's'} running`);
}

/**
 * Whether a finished job changed the pictures the grid shows: a re-index, or an ingest that
 * added, moved or removed some (a re-scan that found nothing new leaves the grid as it is).
 * @param {Job} job
 */
function changedImages(job) {
  if (job.kind === 'reindex') return true;
  if (job.kind !== 'ingest') return false; // duplicates, tags, albums, text: same pictures
  const scan = job.params?.scan;
  return Number(job.done) > 0 || Number(scan?.removed) > 0 || Number(scan?.moved) > 0;
}

/**
 * Take in what the server says of some jobs: finished ones refresh the views.
 * @param {Job[]} list
 */
export function absorbJobs(list) {
  let finished = false;
  let imagesChanged = false; // only an ingest or a re-index brings pictures: the grid reloads
  let progressed = false;
  for (const job of list) {
    const id = String(job.id);
    const ended =
      (jobs.active.has(id) && !isActive(job)) ||
      // a job queued by someone else (a watched folder's change) that ran between two polls
      (jobs.primed && !jobs.byId.has(id) && !isActive(job) && Number(job.done) > 0);
    if (ended) {
      finished = true;
      if (changedImages(job)) imagesChanged = true;
    }
    if (isActive(job) && Number(job.done) > Number(jobs.byId.get(id)?.done ?? 0)) progressed = true;
    if (isActive(job)) jobs.active.add(id);
    else jobs.active.delete(id);
    jobs.byId.set(id, job);
  }
  jobs.primed = true;
  renderJobs([...jobs.byId.values()]);
  if (finished) onJobsFinished(imagesChanged);
  else if (progressed && state.query.mode === 'browse' && state.items.length === 0 && !state.loading) run();
  else if (state.items.length === 0 && state.done) renderEmpty();
}

/** @param {boolean} imagesChanged an ingest or a re-index ended (duplicates, tags... did not) */
function onJobsFinished(imagesChanged) {
  refreshHealth();
  jobHooks.modelMayHaveChanged();
  if (!els.panel.hidden) folders.refresh();
  // new images: refresh views that cannot lose a scroll position
  if (imagesChanged && !els.detail.open && (state.items.length === 0 || window.scrollY < 200)) run();
}

/** Ask for the jobs now, then again in a while (sooner while any run or the panel is open). */
export async function pollJobs() {
  clearTimeout(jobs.timer);
  if (jobs.polling) return;
  jobs.polling = true;
  try {
    const data = await api('/jobs', { ask: false }); // background poll: never a prompt
    const list = Array.isArray(data) ? data : Array.isArray(data?.items) ? data.items : [];
    absorbJobs(list);
  } catch (err) {
    if (!els.panel.hidden) {
      els.ingestError.textContent = `Could not load jobs: ${messageOf(err)}`;
      els.ingestError.hidden = false;
    }
  } finally {
    jobs.polling = false;
  }
  const anyActive = jobs.active.size > 0;
  if (anyActive || !els.panel.hidden) {
    jobs.timer = setTimeout(pollJobs, anyActive ? JOB_POLL_MS : JOB_IDLE_POLL_MS);
  } else if (document.visibilityState === 'visible') {
    // watched folders change by themselves: look now and then, so new photos show up
    jobs.timer = setTimeout(pollJobs, JOB_BACKGROUND_POLL_MS);
  }
}

/** The footer: the library's counts, the model and the index (GET /api/v1/health). */
export async function refreshHealth() {
  try {
    const health = await api('/health');
    const images = health?.images || {};
    const index = health?.index || {};
    setLibraryTotal(typeof images.total === 'number' ? images.total : null);
    const parts = [];
    if (typeof images.total === 'number') {
      let text = `${images.total.toLocaleString()} images`;
      const extra = [];
      if (images.pending) extra.push(`${images.pending.toLocaleString()} pending`);
      if (images.failed) extra.push(`${images.failed.toLocaleString()} failed`);
      if (extra.length) text += ` (${extra.join(', ')})`;
      parts.push(text);
    }
    if (health?.model) parts.push(`model ${health.model}${health.device ? ` on ${health.device}` : ''}`);
    if (index.kind) parts.push(`index ${index.kind}${index.version !== undefined && index.version !== null ? ` v${index.version}` : ''}`);
    els.footer.textContent = parts.join(' · ');
  } catch (err) {
    els.footer.textContent = `Server status unavailable: ${messageOf(err)}`;
  }
}

/**
 * Run a panel action (add a folder, rebuild) with its button disabled; its error in the panel.
 * @param {HTMLButtonElement} button
 * @param {() => Promise<void>} action
 */
async function panelAction(button, action) {
  els.ingestError.hidden = true;
  button.disabled = true;
  try {
    await action();
    pollJobs();
  } catch (err) {
    els.ingestError.textContent = messageOf(err);
    els.ingestError.hidden = false;
  } finally {
    button.disabled = false;
  }
}

export function initJobs() {
  els.ingestToggle.addEventListener('click', () => (els.panel.hidden ? openPanel(true) : closePanel()));
  els.panelClose.addEventListener('click', closePanel);
  els.panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      closePanel();
    }
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') pollJobs(); // a hidden tab stops polling
  });
  els.ingestForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const path = els.ingestPath.value.trim();
    if (!path) return;
    panelAction(els.ingestSubmit, async () => {
      const recursive = els.ingestRecursive.checked;
      if (els.ingestWatch.checked) {
        await folders.add(path, recursive); // remembered and kept up to date; its job is followed
      } else {
        const job = await api('/ingest', { method: 'POST', json: { path, recursive } });
        if (job && job.id !== undefined) absorbJobs([job]);
      }
      els.ingestPath.value = '';
    });
  });
  els.reindex.addEventListener('click', () =>
    panelAction(els.reindex, async () => {
      const job = await api('/reindex', { method: 'POST', json: {} });
      if (job && job.id !== undefined) absorbJobs([job]);
    }),
  );
}
