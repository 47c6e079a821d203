// Cache and memory: sizes, clearing the response cache, forgetting a user under every key.
import { $, fmtBytes, fmtNumber } from './dom.js';
import { explainError } from './guardtext.js';

function result(id, ok, text) {
  const out = $(id);
  out.hidden = false;
  out.className = `result ${ok ? 'good' : 'bad'}`;
  out.textContent = text;
}

export class StoragePanel {
  constructor(api) {
    this.api = api;
    $('sg-clear').addEventListener('click', () => this.clearCache());
    $('sg-forget-form').addEventListener('submit', (e) => { e.preventDefault(); this.forget(); });
  }

  async show() {
    try {
      const s = await this.api.get('/v1/admin/storage');
      $('sg-cache').textContent = fmtNumber(s.cache.entries, 0);
      $('sg-cache-sub').textContent = s.cache.enabled ? '' : 'the cache is off';
      $('sg-session').textContent = fmtNumber(s.memory.entries.session || 0, 0);
      $('sg-user').textContent = fmtNumber(s.memory.entries.user || 0, 0);
      $('sg-global').textContent = fmtNumber(s.memory.entries.global || 0, 0);
      $('sg-bytes').textContent = fmtBytes(s.memory.bytes);
      $('sg-db').textContent = fmtBytes(s.database.bytes);
    } catch (err) {
      result('sg-clear-result', false, explainError(err).title);
    }
  }

  async clearCache() {
    if (!window.confirm('Delete every cached answer, for every key?')) return;
    try {
      const r = await this.api.json('DELETE', '/v1/admin/cache');
      result('sg-clear-result', true, `Cleared: ${r.deleted} cached answers deleted.`);
    } catch (err) {
      result('sg-clear-result', false, explainError(err).title);
    }
    await this.show();
  }

  async forget() {
    const user = $('sg-forget-user').value.trim();
    if (!user || !window.confirm(`Delete everything remembered about “${user}”, under every key?`)) return;
    try {
      const r = await this.api.json('DELETE', `/v1/admin/memory?user=${encodeURIComponent(user)}`);
      result('sg-forget-result', true, `Forgotten: ${r.deleted} memories of “${r.user}” deleted.`);
      $('sg-forget-user').value = '';
    } catch (err) {
      result('sg-forget-result', false, err.status === 400 ? err.message : explainError(err).title);
    }
    await this.show();
  }
}
