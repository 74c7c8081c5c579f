// @ts-check
// Query languages: a language-aware model (NLLB-SigLIP) reads the query as the chosen FLORES-200
// code (`lang`). Pure helpers (no DOM): which code to send, whether a link carries it, the
// languages' names, the code a browser's language maps to.

/** @typedef {import('./store.js').Langs} Langs */

export const LANG_CODE = /^[a-z]{3}_[A-Z][a-z]{3}$/; // a FLORES-200 code: fra_Latn, jpn_Jpan

/**
 * The code to use for `code` (from a link or the picker): a code the model knows, else where
 * the gallery starts; none for a model without languages.
 * @param {unknown} code
 * @param {Langs | false | null} langs
 * @returns {string | null}
 */
export function pickLang(code, langs) {
  if (langs === false) return null; // the model takes no language code: a link's `lang` is dropped
  let next = typeof code === 'string' && LANG_CODE.test(code) ? code : null;
  if (langs && next && !langs.codes.has(next)) next = null; // not a code this model knows
  if (langs && !next) next = langs.start;
  return next;
}

/**
 * The `lang` to send: none for the model's own default (or a model without languages).
 * @param {string | null} lang
 * @param {Langs | false | null} langs
 */
export function langParam(lang, langs) {
  if (!lang) return null;
  if (langs && lang === langs.default) return null;
  return lang;
}

/**
 * Whether links carry `lang`: when it is not the model's default, or when this browser's
 * language made the gallery start elsewhere.
 * @param {string | null} lang
 * @param {Langs | false | null} langs
 */
export function langInUrl(lang, langs) {
  if (!lang || langs === false) return false;
  if (!langs) return true; // not known (yet): keep what the link said
  return lang !== langs.default || langs.start !== langs.default;
}

/**
 * The FLORES-200 code a BCP 47 tag (navigator.language) maps to, when exactly one fits.
 * @param {string} tag
 * @param {Iterable<string>} codes
 * @returns {string | null}
 */
export function floresOf(tag, codes) {
  let want;
  try {
    want = new Intl.Locale(tag).maximize();
  } catch {
    return null;
  }
  const fits = [...codes].filter((code) => {
    const [language, script] = code.split('_');
    try {
      return new Intl.Locale(language).language === want.language && script === want.script;
    } catch {
      return false;
    }
  });
  return fits.length === 1 ? fits[0] : null;
}

/**
 * "French", or "Chinese (Traditional)" where a language comes in several scripts; the code
 * itself where no name is known.
 * @param {string[]} codes
 * @param {string} [locale]
 * @returns {Map<string, string>}
 */
export function languageNames(codes, locale = globalThis.navigator?.language ?? 'en') {
  /** @type {Intl.DisplayNames | null} */
  let names = null;
  try {
    names = new Intl.DisplayNames([locale, 'en'], { type: 'language' });
  } catch {
    /* no Intl.DisplayNames: the codes themselves */
  }
  /** @type {Map<string, number>} */
  const scripts = new Map();
  for (const code of codes) {
    const language = code.split('_')[0];
    scripts.set(language, (scripts.get(language) || 0) + 1);
  }
  /** @type {Map<string, string>} */
  const out = new Map();
  for (const code of codes) {
    const [language, script] = code.split('_');
    let name = null;
    try {
      name = names?.of((scripts.get(language) ?? 0) > 1 ? `${language}-${script}` : language) || null;
    } catch {
      name = null;
    }
    out.set(code, name && name !== language ? name : code);
  }
  return out;
}

/**
 * The model's languages from GET /api/v1/search/languages' answer: false for a model that takes no
 * language code.
 * @param {any} info
 * @param {string} [locale] the browser's language
 * @returns {Langs | false}
 */
export function langsOf(info, locale = globalThis.navigator?.language ?? 'en') {
  const codes = Array.isArray(info?.languages) ? info.languages.filter((/** @type {unknown} */ c) => typeof c === 'string' && LANG_CODE.test(c)) : [];
  if (!info?.language_aware || !codes.length) return false;
  const fallback = codes.includes(info.default) ? info.default : codes[0];
  const names = languageNames(codes, locale);
  const start = floresOf(locale, codes) || fallback;
  return { default: fallback, codes: new Set(codes), names, start };
}
