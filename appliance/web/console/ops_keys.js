// API keys: the list, a new key (its secret shown once), revocation.
import { $, h, clear, copyText, fmtTime } from './dom.js';
import { explainError } from './guardtext.js';

function limits(k) {
  const parts = [];
  if (k.rpm) parts.push(`${k.rpm} req/min`);
  if (k.tpm) parts.push(`${k.tpm} tok/min`);
  if (k.max_concurrent) parts.push(`${k.max_concurrent} at once`);
  if (k.priority) parts.push(`priority ${k.priority}`);
  return parts.join(', ') || 'none';
}

function optionalInt(id) {
  const v = $(id).value.trim();
  return v === '' ? null : Number(v);
}

export class KeysPanel {
  constructor(api, me) {
    this.api = api;
    this.me = me;
    $('key-form').addEventListener('submit', (e) => { e.preventDefault(); this.create(); });
    $('key-secret-copy').addEventListener('click', (e) => copyText($('key-secret-value').textContent, e.target));
  }

  setPresets(presets) {
    const select = $('key-policy');
    for (const p of presets) {
      if (![...select.options].some((o) => o.value === p)) select.append(h('option', { value: p, text: p }));
    }
  }

  async show() {
    if ($('key-policy').options.length < 2) {
      this.api.get('/v1/admin/policy').then((p) => this.setPresets(p.presets), () => {});
    }
    const body = clear($('keys-table').tBodies[0]);
    try {
      const { data } = await this.api.get('/v1/admin/keys');
      for (const k of [...data].reverse()) body.append(this.row(k));
      if (!data.length) body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted', text: 'No keys yet: the appliance is in open access.' })));
    } catch (err) {
      body.append(h('tr', {}, h('td', { colspan: 8, class: 'error', text: explainError(err).title })));
    }
  }

  row(k) {
    const revoke = k.state === 'active' ? h('button', { type: 'button', class: 'small danger', text: 'Revoke',
      dataset: { key: k.name }, onclick: () => this.revoke(k.name) }) : null;
    return h('tr', { class: `state-${k.state}`, dataset: { name: k.name } },
      h('td', {}, h('strong', { text: k.name }), k.name === this.me.name ? h('span', { class: 'tag', text: 'you' }) : null),
      h('td', {}, h('code', { text: k.key || '' })),
      h('td', {}, k.scopes.map((s) => h('span', { class: `scope scope-${s}`, text: s }))),
      h('td', { text: limits(k) }), h('td', { text: k.policy || 'server default' }),
      h('td', { text: fmtTime(k.created_at) }),
      h('td', {}, h('span', { class: `state ${k.state}`, text: k.state }),
        k.expires_at && k.state === 'active' ? h('span', { class: 'muted', text: ` until ${fmtTime(k.expires_at)}` }) : null),
      h('td', { class: 'actions' }, revoke));
  }

  async create() {
    const error = $('key-error');
    error.hidden = true;
    $('key-secret').hidden = true;
    const scopes = [...document.querySelectorAll('#key-form input[name=scope]:checked')].map((c) => c.value);
    const expires = $('key-expires').value;
    const body = { name: $('key-name').value.trim(), scopes, rpm: optionalInt('key-rpm'),
      tpm: optionalInt('key-tpm'), max_concurrent: optionalInt('key-concurrent'),
      priority: optionalInt('key-priority') || 0, policy: $('key-policy').value || null,
      expires_at: expires ? Math.floor(new Date(`${expires}T23:59:59`).getTime() / 1000) : null };
    try {
      const created = await this.api.json('POST', '/v1/admin/keys', { body });
      $('key-secret-value').textContent = created.secret;
      $('key-secret').hidden = false;
      $('key-form').reset();
      await this.show();
    } catch (err) {
      error.textContent = err.status === 400 ? err.message : explainError(err).title;
      error.hidden = false;
    }
  }

  async revoke(name) {
    const own = name === this.me.name ? ' This is the key you are signed in with.' : '';
    if (!window.confirm(`Revoke the key “${name}”? Programs using it stop working at once.${own}`)) return;
    try {
      await this.api.request('DELETE', `/v1/admin/keys/${encodeURIComponent(name)}`);
    } catch (err) {
      window.alert(explainError(err).title);
    }
    await this.show();
  }
}
