// A small Markdown renderer for a safe subset, escaping first: it builds DOM nodes and every
// piece of text becomes a text node, so no input can turn into markup. Supported: paragraphs
// (single newlines are line breaks), headings, **strong**, *emphasis* and _emphasis_,
// `code`, fenced code blocks, bulleted and numbered lists, block quotes, and links whose
// address is http(s); any other link is shown as its text.
import { h } from './dom.js';

const INLINE = new RegExp([
  '(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)', // 1, 2: code span
  '\\[([^\\]\\n]+)\\]\\(([^()\\s]+)\\)', // 3, 4: link
  '\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*', // 5: strong
  '(?<![\\w*])\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*(?![\\w*])', // 6: emphasis
  '(?<![\\w_])_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?![\\w_])', // 7: emphasis
].join('|'), 'g');

export function safeHref(href) {
  try {
    const url = new URL(href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

export function renderInline(text) {
  const out = [];
  let last = 0;
  // matchAll works on a copy of the pattern: the recursive calls below cannot move its place
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(...lineBreaks(text.slice(last, m.index)));
    if (m[1] !== undefined) out.push(h('code', { text: m[2] }));
    else if (m[3] !== undefined) {
      const href = safeHref(m[4]);
      out.push(href ? h('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow' },
        renderInline(m[3])) : m[0]);
    } else if (m[5] !== undefined) out.push(h('strong', {}, renderInline(m[5])));
    else out.push(h('em', {}, renderInline(m[6] ?? m[7])));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(...lineBreaks(text.slice(last)));
  return out;
}

function lineBreaks(text) {
  const parts = text.split('\n');
  return parts.flatMap((p, i) => (i ? [h('br'), p] : [p])).filter((x) => x !== '');
}

const FENCE = /^\s{0,3}(```|~~~)\s*([\w+-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBER = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

function list(lines, i, pattern, tag) {
  const first = lines[i].match(pattern);
  const el = h(tag, tag === 'ol' && first[1] !== '1' ? { start: Number(first[1]) } : {});
  while (i < lines.length) {
    const m = lines[i].match(pattern);
    if (!m) {
      // an indented line continues the item before it
      if (/^\s{2,}\S/.test(lines[i]) && el.lastChild) {
        el.lastChild.append(h('br'), ...renderInline(lines[i].trim()));
        i += 1;
        continue;
      }
      break;
    }
    el.append(h('li', {}, renderInline(tag === 'ol' ? m[2] : m[1])));
    i += 1;
  }
  return [el, i];
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBER.test(line)
    || QUOTE.test(line) || RULE.test(line);
}

export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) { i += 1; continue; }
    if ((m = line.match(FENCE))) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(m[1])) { body.push(lines[i]); i += 1; }
      i += 1;
      frag.append(h('pre', {}, h('code', { 'data-lang': m[2] || null, text: body.join('\n') })));
    } else if (RULE.test(line)) {
      frag.append(h('hr'));
      i += 1;
    } else if ((m = line.match(HEADING))) {
      frag.append(h(`h${Math.min(6, m[1].length + 2)}`, {}, renderInline(m[2])));
      i += 1;
    } else if (BULLET.test(line)) {
      let el;
      [el, i] = list(lines, i, BULLET, 'ul');
      frag.append(el);
    } else if (NUMBER.test(line)) {
      let el;
      [el, i] = list(lines, i, NUMBER, 'ol');
      frag.append(el);
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = lines[i].match(QUOTE))) { body.push(m[1]); i += 1; }
      frag.append(h('blockquote', {}, renderMarkdown(body.join('\n'))));
    } else {
      const body = [line];
      i += 1;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) { body.push(lines[i]); i += 1; }
      frag.append(h('p', {}, renderInline(body.join('\n'))));
    }
  }
  return frag;
}
