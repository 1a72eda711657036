// The breaker dashboard: renders /status.json, then a snapshot from
// /events each second. Every name and every server string is written with
// textContent, never as HTML.
'use strict';

const HISTORY = 120; // two minutes of one-second points
const SVG = 'http://www.w3.org/2000/svg';
const RANK = { open: 0, forced_open: 1, half_open: 2, forced_closed: 3, closed: 4 };
const LABEL = {
  closed: 'closed', open: 'open', half_open: 'half-open',
  forced_open: 'forced open', forced_closed: 'forced closed',
};

// A family with more members than this shows only its open and half-open
// ones until its header is clicked (or a filter is typed).
const COLLAPSE_ABOVE = 20;

const rows = new Map(); // breaker name -> row
const familyRows = new Map(); // family name -> header row
const expanded = new Set(); // families shown in full
let controls = false;

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function spark(kind) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark ' + kind);
  svg.setAttribute('viewBox', '0 0 ' + HISTORY + ' 24');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.appendChild(document.createElementNS(SVG, 'polyline'));
  return svg;
}

function draw(svg, values, max) {
  const top = Math.max(max, ...values, 1e-9);
  const offset = HISTORY - values.length;
  const points = values.map((v, i) => (offset + i) + ',' + (23 - (22 * v) / top).toFixed(1));
  svg.firstChild.setAttribute('points', points.join(' '));
}

function push(list, value) {
  list.push(value);
  if (list.length > HISTORY) list.shift();
}

function seconds(s) {
  if (s === null || s === undefined) return '–';
  if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
  if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + ' ms';
  return s.toFixed(1) + ' s';
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function makeRow(name) {
  const r = { tr: el('tr', 'breaker'), rate: [], errors: [], prev: null, data: null };
  r.tr.dataset.breaker = name;
  const badgeCell = el('td', 'badge-cell');
  r.badge = el('span', 'badge');
  r.stateLabel = el('span', 'state-label');
  badgeCell.append(r.badge, r.stateLabel);
  r.name = el('td', 'name', name);
  r.name.title = name;
  const rateCell = el('td');
  r.rateSpark = spark('rate');
  r.rateValue = el('span', 'spark-value');
  rateCell.append(r.rateSpark, r.rateValue);
  const errorCell = el('td');
  r.errorSpark = spark('errors');
  r.errorValue = el('span', 'spark-value');
  errorCell.append(r.errorSpark, r.errorValue);
  r.p50 = el('td', 'num p50');
  r.p99 = el('td', 'num p99');
  r.rejected = el('td', 'num rejected');
  r.fallback = el('td', 'num fallback');
  r.countdown = el('td', 'num countdown');
  r.transitions = el('td', 'transitions');
  r.controls = el('td', 'controls-col');
  for (const [action, label] of [['force_open', 'force open'], ['force_closed', 'force closed'], ['reset', 'reset']]) {
    const button = el('button', 'control ' + action, label);
    button.type = 'button';
    button.dataset.action = action;
    button.addEventListener('click', () => control(name, action));
    r.controls.append(button);
  }
  r.tr.append(badgeCell, r.name, rateCell, errorCell, r.p50, r.p99, r.rejected,
    r.fallback, r.countdown, r.transitions, r.controls);
  return r;
}

function render(r) {
  const b = r.data;
  const rate = r.rate.length ? r.rate[r.rate.length - 1] : 0;
  const size = Math.round(12 + Math.min(24, 7 * Math.log10(1 + rate)));
  r.tr.dataset.state = b.state;
  r.badge.className = 'badge state-' + b.state;
  r.badge.style.width = size + 'px';
  r.badge.style.height = size + 'px';
  r.badge.title = LABEL[b.state] + ', ' + rate.toFixed(1) + ' calls/s';
  r.stateLabel.textContent = LABEL[b.state];
  draw(r.rateSpark, r.rate, 1);
  r.rateValue.textContent = rate.toFixed(1);
  const errors = r.errors.length ? r.errors[r.errors.length - 1] : 0;
  draw(r.errorSpark, r.errors, 100);
  r.errorValue.textContent = errors.toFixed(0) + ' %';
  r.p50.textContent = seconds(b.p50_seconds);
  r.p99.textContent = seconds(b.p99_seconds);
  r.rejected.textContent = String(b.rejected + b.rate_limited);
  r.fallback.textContent = String(b.fallbacks);
  r.countdown.textContent = b.open_remaining_seconds === null ? '' : b.open_remaining_seconds.toFixed(1) + ' s';
  r.transitions.textContent = b.transitions
    .slice().reverse()
    .map((t) => clock(t.at_ms) + ' ' + LABEL[t.from] + ' → ' + LABEL[t.to] + ' (' + t.cause.replace(/_/g, ' ') + ')')
    .join('; ');
  r.controls.hidden = !controls;
}

function update(snapshot) {
  controls = snapshot.controls;
  $('token-box').hidden = !controls;
  for (const th of document.querySelectorAll('th.controls-col')) th.hidden = !controls;
  const seen = new Set();
  for (const b of snapshot.breakers) {
    let r = rows.get(b.name);
    if (!r) {
      r = makeRow(b.name);
      rows.set(b.name, r);
    }
    seen.add(b.name);
    if (r.prev) {
      const dt = (snapshot.now_ms - r.prev.at) / 1000;
      if (dt > 0) {
        const finished = b.successes + b.failures - r.prev.finished;
        push(r.rate, Math.max(0, (b.calls - r.prev.calls) / dt));
        push(r.errors, finished > 0 ? (100 * (b.failures - r.prev.failures)) / finished : 0);
      }
    }
    r.prev = { at: snapshot.now_ms, calls: b.calls, finished: b.successes + b.failures, failures: b.failures };
    r.data = b;
    render(r);
  }
  for (const name of [...rows.keys()]) {
    if (!seen.has(name)) rows.delete(name);
  }
  layout();
}

function rank(b) {
  return RANK[b.state] ?? 5;
}

// Open and half-open first, keyed families grouped under one header,
// filtered by name.
function layout() {
  const filter = $('filter').value.trim().toLowerCase();
  const groups = new Map();
  let open = 0;
  let halfOpen = 0;
  for (const r of rows.values()) {
    const b = r.data;
    if (b.state === 'open' || b.state === 'forced_open') open += 1;
    if (b.state === 'half_open') halfOpen += 1;
    if (filter && !b.name.toLowerCase().includes(filter)) continue;
    const key = b.family === null ? 'b:' + b.name : 'f:' + b.family;
    let group = groups.get(key);
    if (!group) {
      group = { family: b.family, label: b.family ?? b.name, members: [], rank: 9 };
      groups.set(key, group);
    }
    group.members.push(r);
    group.rank = Math.min(group.rank, rank(b));
  }
  const ordered = [...groups.values()].sort((a, b) => a.rank - b.rank || a.label.localeCompare(b.label));
  const list = [];
  for (const group of ordered) {
    group.members.sort((a, b) => rank(a.data) - rank(b.data) || a.data.name.localeCompare(b.data.name));
    if (group.family !== null) {
      const family = group.family;
      let header = familyRows.get(family);
      if (!header) {
        header = el('tr', 'family');
        header.append(el('td'), el('td'));
        header.lastChild.colSpan = 10;
        header.addEventListener('click', () => {
          if (expanded.has(family)) expanded.delete(family);
          else expanded.add(family);
          layout();
        });
        familyRows.set(family, header);
      }
      const big = group.members.length > COLLAPSE_ABOVE;
      const collapsed = big && !filter && !expanded.has(family);
      const opens = group.members.filter((r) => rank(r.data) <= 2);
      header.dataset.collapsed = String(collapsed);
      header.lastChild.textContent = family + ' — ' + group.members.length + (group.members.length === 1 ? ' key' : ' keys')
        + (opens.length ? ', ' + opens.length + ' open or half-open' : '')
        + (collapsed ? ' (click to show all)' : big && !filter ? ' (click to collapse)' : '');
      list.push(header);
      for (const r of collapsed ? opens : group.members) list.push(r.tr);
      continue;
    }
    for (const r of group.members) list.push(r.tr);
  }
  $('rows').replaceChildren(...list);
  $('empty').hidden = rows.size !== 0;
  $('summary').textContent = rows.size + ' breakers · ' + open + ' open · ' + halfOpen + ' half-open';
}

async function control(name, action) {
  const token = $('token').value;
  const response = await fetch('control', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token },
    body: JSON.stringify({ breaker: name, action }),
  });
  if (!response.ok) {
    $('summary').textContent = action.replace(/_/g, ' ') + ' refused: ' + response.status
      + (response.status === 401 ? ' (enter the control token)' : '');
    return;
  }
  const b = await response.json();
  const r = rows.get(b.name);
  if (r) {
    r.data = b;
    render(r);
    layout();
  }
}

function start() {
  $('filter').addEventListener('input', layout);
  fetch('status.json').then((r) => r.json()).then(update).catch(() => {});
  const events = new EventSource('events');
  events.addEventListener('snapshot', (e) => update(JSON.parse(e.data)));
  events.onerror = () => {
    $('summary').textContent = 'disconnected, retrying…';
  };
}

start();
