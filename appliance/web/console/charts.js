// Small line charts in SVG, drawn by the page itself: one or two series over the last minutes.
const NS = 'http://www.w3.org/2000/svg';
const W = 320;
const H = 96;
const PAD = 4;

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function niceMax(x) {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (x <= m * p) return m * p;
  return 10 * p;
}

// series: [{points: [{t, v}], cls}], span: seconds shown, format: value -> label
export function drawChart(container, series, { span = 300, format = String, min = 0 } = {}) {
  const now = Date.now() / 1000;
  const values = series.flatMap((s) => s.points.map((p) => p.v)).filter((v) => Number.isFinite(v));
  const top = niceMax(Math.max(min, ...values, 0));
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none',
    class: 'chart-svg', role: 'img' });
  for (const f of [0.25, 0.5, 0.75]) {
    root.append(svg('line', { x1: 0, x2: W, y1: PAD + (H - 2 * PAD) * f, y2: PAD + (H - 2 * PAD) * f,
      class: 'grid' }));
  }
  const x = (t) => W - ((now - t) / span) * W;
  const y = (v) => H - PAD - (Math.max(0, v) / top) * (H - 2 * PAD);
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p.v) && now - p.t <= span);
    if (!pts.length) continue;
    const coords = pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    const area = `${x(pts[0].t).toFixed(1)},${H} ${coords.join(' ')} ${x(pts[pts.length - 1].t).toFixed(1)},${H}`;
    root.append(svg('polygon', { points: area, class: `area ${s.cls || ''}` }));
    root.append(svg('polyline', { points: coords.join(' '), class: `line ${s.cls || ''}` }));
  }
  const frame = container.querySelector('.chart-frame') || container;
  frame.replaceChildren(root);
  const scale = container.querySelector('.chart-max');
  if (scale) scale.textContent = format(top);
}
