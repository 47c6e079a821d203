// Live status: /ready and /health as they are, and from successive /metrics scrapes the
// token rate, latency percentiles and guard blocks over the last minutes (counters and
// histogram buckets differenced between scrapes, in the page).
import { $, h, clear, fmtNumber, fmtSeconds } from './dom.js';
import { parseProm, histogram, diffHistogram, quantile, increase, total } from './prom.js';
import { drawChart } from './charts.js';
import { describeGuard } from './guardtext.js';

export const POLL_MS = 3000;
const RATE_WINDOW = 60; // s: tokens/s
const LATENCY_WINDOW = 300; // s: TTFT and inter-token percentiles, guard blocks
const KEEP = 310; // s of scrapes kept

async function publicJson(path) {
  const response = await fetch(path, { cache: 'no-store' });
  return response.json(); // /ready answers 503 with a body that says what is not ready
}

function baseline(scrapes, now, window) {
  return scrapes.find((s) => now - s.t <= window + 1) || scrapes[0];
}

// The histogram's observations since the scrape `base` (none when `base` is this scrape).
function windowed(parsed, base, name) {
  if (base.parsed === parsed) return { buckets: [], count: 0, sum: 0 };
  return diffHistogram(histogram(parsed, name), histogram(base.parsed, name));
}

export class StatusPanel {
  constructor(api) {
    this.api = api;
    this.scrapes = []; // {t, parsed}
    this.series = { tps: [], busy: [], queued: [], ttft: [] };
    this.timer = null;
  }

  start() {
    if (this.timer) return;
    this.tick();
    this.timer = setInterval(() => this.tick(), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async tick() {
    const t = Date.now() / 1000;
    const [ready, health, metrics, events] = await Promise.allSettled([
      publicJson('/ready'), publicJson('/health'), this.api.text('/metrics'),
      this.api.get('/v1/admin/audit?event=guard.&limit=6')]);
    if (events.status === 'fulfilled') this.showEvents(events.value.data);
    if (ready.status === 'fulfilled') this.showReady(ready.value);
    else $('st-ready').textContent = 'unreachable';
    if (health.status === 'fulfilled') this.showHealth(t, health.value);
    if (metrics.status === 'fulfilled') this.showMetrics(t, parseProm(metrics.value));
    $('st-updated').textContent = `Updated ${new Date().toLocaleTimeString('en-GB')}; every ${POLL_MS / 1000} s.`;
    this.draw();
  }

  showReady(r) {
    const ok = r.status === 'ready';
    const el = $('st-ready');
    el.textContent = ok ? 'Ready' : r.status || 'not ready';
    el.className = `value ${ok ? 'good' : 'bad'}`;
    $('st-ready-sub').textContent = r.error || r.guards_error || `guards ${r.guards}`;
    $('st-model').textContent = r.model || '–';
    $('st-backend').textContent = r.backend ? r.backend.split(';')[0] : '';
  }

  showHealth(t, hl) {
    $('st-slots').textContent = `${hl.running} / ${hl.slots}`;
    $('st-queue').textContent = `${hl.queued} queued of ${hl.queue_depth}${hl.draining ? ' · draining' : ''}`;
    this.series.busy.push({ t, v: hl.running });
    this.series.queued.push({ t, v: hl.queued });
  }

  showMetrics(t, parsed) {
    const prev = this.scrapes[this.scrapes.length - 1];
    this.scrapes.push({ t, parsed });
    this.scrapes = this.scrapes.filter((s) => t - s.t <= KEEP);
    const tokens = ['appliance_tokens_total', { direction: 'completion' }];
    if (prev) this.series.tps.push({ t, v: increase(parsed, prev.parsed, ...tokens) / (t - prev.t) });
    const rateBase = baseline(this.scrapes, t, RATE_WINDOW);
    const span = t - rateBase.t;
    $('st-tps').textContent = span > 0 ? fmtNumber(increase(parsed, rateBase.parsed, ...tokens) / span) : '–';
    $('st-window').textContent = span > 0 ? `completion tokens, last ${Math.round(span)} s` : 'measuring…';
    const base = baseline(this.scrapes, t, LATENCY_WINDOW);
    const ttft = this.latency(parsed, base, 'appliance_time_to_first_token_seconds', 'st-ttft');
    this.latency(parsed, base, 'appliance_inter_token_latency_seconds', 'st-itl');
    const recent = windowed(parsed, baseline(this.scrapes, t, RATE_WINDOW), 'appliance_time_to_first_token_seconds');
    this.series.ttft.push({ t, v: quantile(0.95, recent) ?? NaN });
    $('st-ttft-sub').textContent = ttft.count ? `p50 · p95 of ${ttft.count} requests` : 'p50 · p95 (no requests yet)';
    this.showBlocks(parsed, base);
  }

  latency(parsed, base, name, id) {
    const hist = windowed(parsed, base, name);
    const p50 = quantile(0.5, hist);
    const p95 = quantile(0.95, hist);
    $(id).textContent = p50 === null ? '–' : `${fmtSeconds(p50)} · ${fmtSeconds(p95)}`;
    return hist;
  }

  showBlocks(parsed, base) {
    const rows = new Map();
    for (const s of parsed.get('appliance_guard_verdicts_total') || []) {
      if (s.labels.action !== 'block') continue;
      const key = `${s.labels.guard}\u0000${s.labels.label}`;
      const filter = { guard: s.labels.guard, label: s.labels.label, action: 'block' };
      const recent = base.parsed === parsed ? 0 : increase(parsed, base.parsed, 'appliance_guard_verdicts_total', filter);
      const row = rows.get(key) || { guard: s.labels.guard, label: s.labels.label, recent: 0, all: 0 };
      row.recent += recent;
      row.all += s.value;
      rows.set(key, row);
    }
    const body = clear($('st-blocks').tBodies[0]);
    const sorted = [...rows.values()].sort((a, b) => b.all - a.all);
    for (const r of sorted) {
      const kind = describeGuard(r.guard, r.label).kind;
      body.append(h('tr', {}, h('td', { text: r.guard }), h('td', {}, h('code', { text: r.label }), ` ${kind}`),
        h('td', { class: 'num', text: String(Math.round(r.recent)) }), h('td', { class: 'num', text: String(Math.round(r.all)) })));
    }
    if (!sorted.length) body.append(h('tr', {}, h('td', { colspan: 4, class: 'muted', text: 'No guard has blocked anything since the server started.' })));
    $('st-blocks').dataset.total = String(total(parsed, 'appliance_guard_verdicts_total', { action: 'block' }));
  }

  showEvents(records) {
    const body = clear($('st-events').tBodies[0]);
    for (const r of records) {
      const d = r.detail;
      body.append(h('tr', {}, h('td', { text: new Date(r.ts * 1000).toLocaleTimeString('en-GB') }),
        h('td', { text: `${d.guard} (${d.direction})` }),
        h('td', { title: describeGuard(d.guard, d.label).kind }, h('code', { text: d.label })),
        h('td', {}, h('span', { class: `action action-${d.action}`, text: d.action }))));
    }
    if (!records.length) body.append(h('tr', {}, h('td', { colspan: 4, class: 'muted', text: 'None recorded yet.' })));
  }

  draw() {
    const cut = (list) => list.filter((p) => Date.now() / 1000 - p.t <= LATENCY_WINDOW);
    for (const k of Object.keys(this.series)) this.series[k] = cut(this.series[k]);
    drawChart($('chart-tps'), [{ points: this.series.tps, cls: 's1' }], { format: (v) => `max ${fmtNumber(v, 0)}/s` });
    drawChart($('chart-slots'), [{ points: this.series.busy, cls: 's1' }, { points: this.series.queued, cls: 's2' }],
      { format: (v) => `max ${fmtNumber(v, 0)}`, min: 1 });
    drawChart($('chart-ttft'), [{ points: this.series.ttft, cls: 's3' }], { format: (v) => `max ${fmtSeconds(v)}` });
  }
}
