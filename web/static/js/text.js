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

/** @param {unknown[]} words */
const quoted = (words) => words.slice(0, 5).map((w) => `“${String(w)}”`).join(', ');

/**
 * Why a result is here, in words, one phrase per reason: "the words “invoice” read in the
 * picture", "the file name", "looks like what you described: strong". `band` is the server's
 * (strong, fair or weak: decided once, from the relevance, in indexer/relevance.py); `like`
 * names what the picture was compared with.
 * @param {Item} item
 * @param {'text' | 'similar' | 'image' | 'browse'} mode
 * @returns {string[]}
 */
export function reasonsInWords(item, mode) {
  const match = Array.isArray(item.match) ? item.match : ['semantic'];
  const words = Array.isArray(item.words) ? item.words : [];
  /** @type {string[]} */
  const out = [];
  if (match.includes('text')) out.push(words.length ? `the words ${quoted(words)} read in the picture` : 'words read in the picture');
  if (match.includes('filename')) out.push(words.length && !match.includes('text') ? `the file name (${quoted(words)})` : 'the file name');
  if (match.includes('caption')) out.push('its caption');
  if (match.includes('folder')) out.push('the name of its folder');
  if (match.includes('semantic')) {
    const band = typeof item.band === 'string' ? item.band : null;
    const what = mode === 'similar' ? 'looks like the picture you chose' : mode === 'image' ? 'looks like your picture' : 'looks like what you described';
    out.push(band ? `${what}: ${band}` : what);
  }
  return out;
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
 * Why a picture has no text, said once: the server's reason when it gives one (it already says
 * what happened: "too small to hold readable text (96x96)"), else the state's own note.
 * @param {string} ocrState
 * @param {string | undefined} reason
 */
export function stateNote(ocrState, reason) {
  const note = STATE_NOTES[ocrState];
  const why = (reason || '').trim();
  if (!why) return note;
  if (why.toLowerCase().startsWith(note.toLowerCase())) return why.charAt(0).toUpperCase() + why.slice(1);
  return `${note}: ${why}`;
}

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
    info = await api(`/images/${encodeURIComponent(String(item.id))}/text`);
  } catch {
    return; // the rest of the detail view says what went wrong
  }
  if (!current()) return;
  const parts = [];
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
    parts.push(el('p', 'detail-text-note', stateNote(info.ocr_state, info.ocr_error)));
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
