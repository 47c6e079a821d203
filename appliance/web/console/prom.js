// The Prometheus text format, parsed in the page, and what the operations page computes from
// two scrapes: counter increases, histograms differenced bucket by bucket, and quantiles
// interpolated inside a bucket as Prometheus's histogram_quantile does.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;

function unescape(value) {
  return value.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
}

function number(text) {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

// name -> [{labels, value}]
export function parseProm(text) {
  const out = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = line.match(SAMPLE);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(LABEL)) labels[l[1]] = unescape(l[2]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: number(m[3]) });
  }
  return out;
}

function matches(labels, filter) {
  return Object.entries(filter).every(([k, v]) => labels[k] === v);
}

export function total(parsed, name, filter = {}) {
  return (parsed.get(name) || []).filter((s) => matches(s.labels, filter))
    .reduce((sum, s) => sum + s.value, 0);
}

export function groupBy(parsed, name, label, filter = {}) {
  const out = {};
  for (const s of parsed.get(name) || []) {
    if (!matches(s.labels, filter)) continue;
    const key = s.labels[label] ?? '';
    out[key] = (out[key] || 0) + s.value;
  }
  return out;
}

// {buckets: [[le, cumulative count], ...] ascending, count, sum}, summed over label sets.
export function histogram(parsed, name, filter = {}) {
  const byLe = new Map();
  for (const s of parsed.get(`${name}_bucket`) || []) {
    if (!matches(s.labels, filter)) continue;
    const le = number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  const buckets = [...byLe.entries()].sort((a, b) => a[0] - b[0]);
  return { buckets, count: total(parsed, `${name}_count`, filter),
    sum: total(parsed, `${name}_sum`, filter) };
}

// newer - older, bucket by bucket (a counter reset counts as starting from zero).
export function diffHistogram(newer, older) {
  if (!older) return newer;
  const before = new Map(older.buckets);
  const reset = newer.count < older.count;
  return {
    buckets: newer.buckets.map(([le, c]) => [le, reset ? c : c - (before.get(le) || 0)]),
    count: reset ? newer.count : newer.count - older.count,
    sum: reset ? newer.sum : newer.sum - older.sum,
  };
}

export function quantile(q, hist) {
  const { buckets } = hist;
  if (!buckets.length) return null;
  const count = buckets[buckets.length - 1][1];
  if (!(count > 0)) return null;
  const rank = q * count;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, c] of buckets) {
    if (c >= rank) {
      if (le === Infinity) return prevLe;
      if (c === prevCount) return le;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / (c - prevCount);
    }
    prevLe = le;
    prevCount = c;
  }
  return prevLe;
}

// The increase of a counter between two scrapes (a reset counts from zero).
export function increase(newer, older, name, filter = {}) {
  const now = total(newer, name, filter);
  if (!older) return 0;
  const before = total(older, name, filter);
  return now >= before ? now - before : now;
}
