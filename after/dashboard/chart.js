// chart.js: two hand-drawn SVG charts: the schedule timeline and the runs' lateness and
// outcomes over time. Each returns an <svg> element sized by its viewBox (it scales with
// the page's width).

import { s } from './dom.js';
import { formatDuration, formatUtc, lateness, runTime } from './model.js';

const PAD = 12;

function hhmm(ms) {
  return new Date(ms).toISOString().slice(11, 16);
}

// One row of the timeline: the tasks due in [now, now + span], as dots on a time axis.
// items: [{id, due, status, job, worker}]
export function timeline(items, now, span, tickEvery, label, W = 600) {
  const height = 64;
  const axisY = 44;
  const x = (t) => PAD + ((t - now) / span) * (W - 2 * PAD);
  const ticks = [];
  const first = Math.ceil(now / tickEvery) * tickEvery;
  for (let t = first; t <= now + span; t += tickEvery) {
    if (x(t) < PAD + 16 || x(t) > W - PAD - 16) continue; // its label would be cut
    ticks.push(s('g', { class: 'tick' },
      s('line', { x1: x(t), x2: x(t), y1: axisY - 3, y2: axisY + 3 }),
      s('text', { x: x(t), y: axisY + 16, 'text-anchor': 'middle' }, hhmm(t))));
  }
  // Stack dots that would overlap, up to four high, then say how many more.
  const stacks = new Map();
  const dots = [];
  for (const item of [...items].sort((a, b) => a.due - b.due)) {
    const column = Math.round(x(item.due) / 9);
    const level = stacks.get(column) || 0;
    stacks.set(column, level + 1);
    if (level > 3) continue;
    const y = axisY - 9 - level * 9;
    dots.push(s('circle', { cx: column * 9, cy: y, r: 4, class: `dot status-${item.status}` },
      s('title', {}, `${item.id} · ${item.job || '?'} on ${item.worker || '?'} · `
        + `${formatUtc(item.due)}Z · ${item.status}`)));
  }
  for (const [column, count] of stacks) {
    if (count > 4) {
      dots.push(s('text', { x: column * 9 + 6, y: axisY - 38, class: 'more' }, `+${count - 4}`));
    }
  }
  return s('svg', { viewBox: `0 0 ${W} ${height}`, class: 'timeline', role: 'img',
    'aria-label': `${label}: ${items.length} task(s) due` },
  s('line', { x1: PAD, x2: W - PAD, y1: axisY, y2: axisY, class: 'axis' }),
  s('line', { x1: PAD, x2: PAD, y1: 4, y2: axisY, class: 'now' }),
  ticks, dots);
}

// Lateness (started - scheduled) of each run as a dot, colored by outcome, over time; and
// under it, the outcomes per slice of time as stacked bars.
export function runsChart(runs, now, W = 1000) {
  const height = 190;
  const top = 14;
  const plotH = 100;
  const barTop = 138;
  const barH = 36;
  const narrow = W < 560;
  const left = narrow ? 52 : 110;
  const times = runs.map(runTime).filter((t) => t > 0);
  const start = times.length ? Math.min(...times) : now - 3600000;
  const end = Math.max(now, start + 60000);
  const x = (t) => left + ((t - start) / (end - start)) * (W - left - PAD);
  const late = runs.map(lateness).filter((v) => v !== null);
  const maxLate = Math.max(1000, ...late.map((v) => Math.max(0, v)));
  // A square-root scale: a few very late runs do not flatten all the others.
  const y = (v) => top + plotH - Math.sqrt(Math.max(0, v) / maxLate) * plotH;
  const parts = [];
  for (const fraction of [0, 0.25, 1]) {
    const v = fraction * maxLate;
    parts.push(s('g', { class: 'tick' },
      s('line', { x1: left, x2: W - PAD, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatDuration(v))));
  }
  if (!narrow) parts.push(s('text', { x: 0, y: top + plotH / 2, class: 'label' }, 'lateness'));
  for (const run of runs) {
    const v = lateness(run);
    if (v === null) continue;
    parts.push(s('circle', { cx: x(runTime(run)), cy: y(v), r: 3.5,
      class: `dot outcome-${run.outcome}` },
    s('title', {}, `${run.task} #${run.number} · ${run.outcome} · late ${formatDuration(v)}`)));
  }
  // Outcomes in slices of about 24 pixels.
  const slices = Math.max(6, Math.round((W - left - PAD) / 24));
  const width = (W - left - PAD) / slices;
  const counts = Array.from({ length: slices }, () => ({}));
  for (const run of runs) {
    const i = Math.min(slices - 1, Math.floor(((runTime(run) - start) / (end - start)) * slices));
    if (i >= 0) counts[i][run.outcome] = (counts[i][run.outcome] || 0) + 1;
  }
  const most = Math.max(1, ...counts.map((c) => Object.values(c).reduce((a, b) => a + b, 0)));
  if (!narrow) {
    parts.push(s('text', { x: 0, y: barTop + barH / 2 + 4, class: 'label' }, 'outcomes'));
  }
  counts.forEach((count, i) => {
    let base = barTop + barH;
    for (const outcome of ['done', 'missed', 'interrupted', 'timeout', 'error']) {
      const n = count[outcome] || 0;
      if (!n) continue;
      const h = (n / most) * barH;
      base -= h;
      parts.push(s('rect', { x: left + i * width + 1, y: base, width: width - 2, height: h,
        class: `bar outcome-${outcome}` }, s('title', {}, `${n} ${outcome}`)));
    }
  });
  parts.push(s('line', { x1: left, x2: W - PAD, y1: barTop + barH, y2: barTop + barH,
    class: 'axis' }));
  const stamp = (t) => (narrow ? `${hhmm(t)}Z` : `${formatUtc(t)}Z`);
  parts.push(s('text', { x: left, y: height - 2, class: 'tick-label' }, stamp(start)));
  parts.push(s('text', { x: W - PAD, y: height - 2, 'text-anchor': 'end', class: 'tick-label' },
    stamp(end)));
  return s('svg', { viewBox: `0 0 ${W} ${height}`, class: 'runs-chart', role: 'img',
    'aria-label': `lateness and outcomes of ${runs.length} recent runs` }, parts);
}
