// The guard policy in force (what each tier does) and a playground that runs /v1/guard on a
// text as a question (input rail) or as an answer (output rail).
import { $, h, clear } from './dom.js';
import { describeGuard, explainError } from './guardtext.js';

function dl(pairs) {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]));
}

function action(a) {
  return h('span', { class: `action action-${a}`, text: a });
}

function classifierRow(name, c) {
  const cats = Object.entries(c.categories || {}).map(([k, v]) => `${k} ${v}`).join(', ');
  return h('tr', {}, h('td', { text: name }), h('td', {}, c.enabled ? action(c.action) : 'off'),
    h('td', { text: c.threshold === null ? 'shipped' : String(c.threshold) }),
    h('td', { text: `${c.budget_ms} ms, timeout → ${c.on_timeout}, error → ${c.on_error}` }),
    h('td', { text: cats || '–' }));
}

export class GuardsPanel {
  constructor(api, onPresets) {
    this.api = api;
    this.onPresets = onPresets;
    $('policy-select').addEventListener('change', () => this.show($('policy-select').value));
    $('play-form').addEventListener('submit', (e) => { e.preventDefault(); this.play(); });
  }

  async show(name = '') {
    const view = clear($('policy-view'));
    try {
      const p = await this.api.get(`/v1/admin/policy${name ? `?name=${encodeURIComponent(name)}` : ''}`);
      this.fillSelect(p);
      view.append(this.render(p));
    } catch (err) {
      view.append(h('p', { class: 'error', text: explainError(err).title }));
    }
  }

  fillSelect(p) {
    const select = $('policy-select');
    if (!select.options.length) {
      for (const name of p.presets) {
        select.append(h('option', { value: name, text: p.server_default && name === p.name ? `${name} (in force)` : name }));
      }
      if (![...select.options].some((o) => o.value === p.name)) select.prepend(h('option', { value: '', text: `${p.name} (in force)` }));
      select.value = p.server_default && p.presets.includes(p.name) ? p.name : '';
      this.onPresets(p.presets);
    }
  }

  render(p) {
    const pii = Object.entries((p.rules && p.rules.pii) || {});
    return h('div', { class: 'policy' },
      dl([['Name', h('strong', { text: p.name })], ['Version', h('code', { text: p.version })],
        ['Description', p.description || '–'], ['Refusal', p.refusal],
        ['Withheld answers', p.output.blocked_message]]),
      h('h3', { text: 'Rules (every message, before the model)' }),
      h('p', {}, `Built-in prompt-injection rules: ${p.rules.default_rules === false ? 'off' : 'on (block)'}. Personal data: `,
        pii.length ? pii.map(([k, v]) => h('span', { class: 'pii' }, `${k} `, action(v))) : 'not scanned'),
      h('h3', { text: 'Classifiers (the last question)' }),
      h('table', { class: 'table' }, h('thead', {}, h('tr', {}, ['Guard', 'On a flag', 'Threshold', 'Budget', 'Categories'].map((x) => h('th', { text: x })))),
        h('tbody', {}, Object.entries(p.classifiers).map(([n, c]) => classifierRow(n, c)))),
      h('h3', { text: 'Topics answered without the model' }),
      p.topics.length ? h('ul', {}, p.topics.map((t) => h('li', {}, h('strong', { text: t.name }), ` (${t.examples} examples, threshold ${t.threshold}): `, t.answer)))
        : h('p', { class: 'muted', text: 'None.' }),
      h('h3', { text: 'Answers (output rail)' }),
      h('p', {}, `Safety classifier on each sentence: ${p.output.classify ? 'on' : 'off'}. `,
        p.output.rules.length ? `Rules: ${p.output.rules.map((r) => r.name).join(', ')}.` : 'No output rules.'));
  }

  async play() {
    const out = clear($('play-result'));
    const role = document.querySelector('input[name=play-role]:checked').value;
    const policy = $('policy-select').value || undefined;
    try {
      const r = await this.api.json('POST', '/v1/guard', { body: { input: $('play-text').value, role, policy } });
      const verdict = r.allowed ? (r.action === 'redact' ? 'redacted' : r.topic ? `answered by topic “${r.topic}”` : 'allowed') : 'blocked';
      const blocker = r.verdicts.find((v) => v.action === 'block');
      out.append(h('p', { class: `verdict verdict-${r.allowed ? 'ok' : 'blocked'}` }, h('strong', { text: verdict }),
        blocker ? ` — ${describeGuard(blocker.guard, blocker.category).kind}` : '', ` (${r.ms} ms)`));
      if (r.redacted) out.append(h('p', {}, 'The model would see: ', h('code', { text: r.redacted })));
      if (r.message) out.append(h('p', {}, 'Message: ', r.message));
      out.append(h('table', { class: 'table compact' }, h('thead', {}, h('tr', {}, ['Guard', 'Tier', 'Label', 'Category', 'Score', 'Action', 'ms'].map((x) => h('th', { text: x })))),
        h('tbody', {}, r.verdicts.map((v) => h('tr', {}, h('td', { text: v.guard }), h('td', { text: String(v.tier) }),
          h('td', { text: v.label }), h('td', { text: v.category || '' }), h('td', { class: 'num', text: v.score.toFixed(3) }),
          h('td', {}, action(v.action)), h('td', { class: 'num', text: String(v.ms) }))))));
    } catch (err) {
      out.append(h('p', { class: 'error', text: err.status === 400 ? err.message : explainError(err).title }));
    }
  }
}
