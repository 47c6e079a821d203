// The audit log: recent records (no prompt or answer text is ever in them), verification of
// the hash chain, and an export as JSON lines.
import { $, h, clear, fmtTime } from './dom.js';
import { explainError } from './guardtext.js';

function detail(d) {
  return Object.entries(d).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join('  ');
}

export class AuditPanel {
  constructor(api) {
    this.api = api;
    $('audit-refresh').addEventListener('click', () => this.show());
    $('audit-filter').addEventListener('change', () => this.show());
    $('audit-verify').addEventListener('click', () => this.verify());
    $('audit-export').addEventListener('click', () => this.download());
  }

  async show() {
    const body = clear($('audit-table').tBodies[0]);
    const event = $('audit-filter').value;
    try {
      const { data } = await this.api.get(`/v1/admin/audit?limit=200&event=${encodeURIComponent(event)}`);
      for (const r of data) {
        body.append(h('tr', { dataset: { event: r.event } }, h('td', { class: 'num', text: String(r.seq) }),
          h('td', { text: fmtTime(r.ts) }), h('td', {}, h('span', { class: `event ev-${r.event.split('.')[0]}`, text: r.event })),
          h('td', { text: r.actor }), h('td', { class: 'detail', text: detail(r.detail) })));
      }
      if (!data.length) body.append(h('tr', {}, h('td', { colspan: 5, class: 'muted', text: 'No records yet.' })));
    } catch (err) {
      body.append(h('tr', {}, h('td', { colspan: 5, class: 'error', text: explainError(err).title })));
    }
  }

  async verify() {
    const out = $('audit-verify-result');
    out.hidden = false;
    out.className = 'result';
    out.textContent = 'Verifying…';
    try {
      const v = await this.api.get('/v1/admin/audit/verify');
      out.classList.add(v.ok ? 'good' : 'bad');
      out.textContent = v.ok
        ? `The chain is intact: ${v.records} records. Head ${v.head.seq}:${v.head.hash.slice(0, 16)}… (keep it elsewhere to detect a rewrite).`
        : `The chain is BROKEN at record ${v.broken_seq}: ${v.reason}. ${v.records} records verified before it.`;
    } catch (err) {
      out.classList.add('bad');
      out.textContent = explainError(err).title;
    }
  }

  async download() {
    const since = $('audit-since').value;
    const response = await this.api.request('GET', `/v1/admin/audit/export${since ? `?since=${since}` : ''}`);
    const name = (response.headers.get('Content-Disposition') || '').match(/filename="([^"]+)"/);
    const url = URL.createObjectURL(await response.blob());
    const link = h('a', { href: url, download: name ? name[1] : 'audit.jsonl', class: 'offscreen' });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}
