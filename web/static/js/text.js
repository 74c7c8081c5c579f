// @ts-check
// Words in pictures: why a search result matched (its badge on the tile) and the text read in a
// picture (the detail view). Talks only to the REST API through the `api` function it is given.

/** @typedef {import('./util.js').Item} Item */
/** @typedef {import('./api.js').Api} Api */

/** @type {Record<string, string>} */
const LABELS = {
  text: 'text in picture',
  filename: 'file name',
  caption: 'caption',
  folder: 'folder',
};

/**
 * The keyword reasons of a hit (everything but "semantic"), e.g. ["text in picture", "file name"].
 * @param {Item | null | undefined} item
 * @returns {string[]}
 */
export function matchReasons(item) {
  const match = item && Array.isArray(item.match) ? item.match : [];
  return match.filter((m) => m !== 'semantic').map((m) => LABELS[m] || String(m));
}

/**
 * A short line for a tile and its accessible label: 'text in picture: "receipt"'; '' when the
 * hit was found by its picture alone.
 * @param {Item} item
 */
export function matchSummary(item) {
  const reasons = matchReasons(item);
  if (!reasons.length) return '';
  const words = Array.isArray(item.words) ? item.words.slice(0, 3) : [];
  return reasons.join(' + ') + (words.length ? `: "${words.join('", "')}"` : '');
}

/**
 * The badge a tile carries when a keyword matched (null otherwise).
 * @param {Item} item
 */
export function matchBadge(item) {
  const summary = matchSummary(item);
  if (!summary) return null;
  const badge = document.createElement('span');
  badge.className = 'match-badge';
  badge.setAttribute('aria-hidden', 'true');
  badge.title = summary;
  badge.textContent = matchReasons(item).includes('text in picture') ? 'Aa text' : 'Aa name';
  if (!matchReasons(item).includes('text in picture') && matchReasons(item).includes('caption')) {
    badge.textContent = 'Aa caption';
  }
  return badge;
}

/**
 * @param {string} tag
 * @param {string | null} cls
 * @param {string} [text]
 */
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** @type {Record<string, string>} */
const STATE_NOTES = {
  failed: 'Text could not be read',
  skipped: 'Too small to hold readable text',
};

/**
 * Fill `box` with what was read in and beside a picture: the recognised text (with the query's
 * matched words marked), the caption, and why there is none. `current()` says whether the
 * detail view still shows this item (answers arriving late are dropped).
 * @param {Api} api
 * @param {Item} item
 * @param {HTMLElement} box
 * @param {() => boolean} current
 */
export async function showDetailText(api, item, box, current) {
  box.replaceChildren();
  box.hidden = true;
  /** @type {{ text?: string, caption?: string, ocr_state?: string | null, ocr_error?: string }} */
  let info;
  try {
    info = await api(`/api/images/${encodeURIComponent(String(item.id))}/text`);
  } catch {
    return; // the rest of the detail view says what went wrong
  }
  if (!current()) return;
  const parts = [];
  const reasons = matchSummary(item);
  if (reasons) parts.push(el('p', 'detail-text-why', `Found by its words: ${reasons}`));
  if (info.text) {
    parts.push(el('h3', 'detail-text-title', 'Text in the picture'));
    const pre = el('p', 'detail-text-body');
    const marked = new Set((item.words || []).map((w) => String(w).toLowerCase()));
    for (const piece of String(info.text).split(/(\s+)/)) {
      const bare = piece.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, '');
      if (bare && marked.has(bare)) pre.append(el('mark', null, piece));
      else pre.append(document.createTextNode(piece));
    }
    parts.push(pre);
  } else if (info.ocr_state && STATE_NOTES[info.ocr_state]) {
    const note = STATE_NOTES[info.ocr_state] + (info.ocr_error ? ` (${info.ocr_error})` : '');
    parts.push(el('p', 'detail-text-note', note));
  } else if (info.ocr_state === null || info.ocr_state === undefined) {
    parts.push(el('p', 'detail-text-note', 'Text not read yet (run clipsearch ocr)'));
  }
  if (info.caption) {
    parts.push(el('h3', 'detail-text-title', 'Caption'));
    parts.push(el('p', 'detail-text-body', String(info.caption)));
  }
  if (!parts.length) return;
  box.replaceChildren(...parts);
  box.hidden = false;
}
