// The symphony dashboard: the daemon's status and history, pushed as
// server-sent events, drawn without any library. Actions ask for the admin
// token once and keep it for the tab (sessionStorage); they send it as a
// bearer header, which a cross-site page cannot do.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const field = (root, name) => root.querySelector(`[data-field="${name}"]`);
const tokenKey = 'symphony.admin-token';

const state = {
  status: null,
  history: {},   // task name -> points, oldest first
  keep: 900,     // seconds of history the daemon keeps
  es: null,
  dead: null,    // {queue, task, letters, selected}
};

// ---- formatting ----
const nf = new Intl.NumberFormat();
function num(n) { return n == null ? '–' : nf.format(n); }
function rate(r) {
  if (r == null) return '–';
  if (r === 0) return '0';
  if (r < 10) return r.toFixed(1);
  return nf.format(Math.round(r));
}
function bytes(n) {
  if (!n) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}
function span(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds}s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m ${seconds % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}
function ago(iso) {
  if (!iso) return '';
  return `${span((Date.now() - Date.parse(iso)) / 1000)} ago`;
}
// The error line that says what went wrong: a Starlark backtrace ends
// with it, after its "Traceback" header and frames.
function errorLine(text) {
  if (!text) return '';
  const lines = text.trim().split('\n').map(l => l.trim()).filter(Boolean);
  return lines[lines.length - 1] || '';
}
function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}
function show(el, on) {
  if (el && el.hidden === on) el.hidden = !on;
}

// ---- connection ----
function connect() {
  const es = new EventSource('events');
  state.es = es;
  es.addEventListener('open', () => {
    setConn('live');
    loadHistory();
  });
  es.addEventListener('status', e => {
    state.status = JSON.parse(e.data);
    render();
  });
  es.addEventListener('sample', e => {
    const latest = JSON.parse(e.data) || {};
    for (const [name, p] of Object.entries(latest)) {
      const s = state.history[name] || (state.history[name] = []);
      if (!s.length || s[s.length - 1].t < p.t) s.push(p);
    }
    trimHistory();
    renderCharts();
  });
  es.addEventListener('error', () => {
    setConn('reconnecting');
    // The browser retries a broken stream by itself; a stream it gave
    // up on (an error answer from a proxy, say) is opened anew.
    if (es.readyState === EventSource.CLOSED) {
      setTimeout(() => { if (state.es === es) connect(); }, 1000);
    }
  });
}

function setConn(s) {
  const el = $('#conn');
  el.dataset.state = s;
  setText($('#conn-text'), s === 'live' ? 'live' : s === 'reconnecting' ? 'reconnecting…' : 'connecting…');
  $('#main').classList.toggle('stale', s !== 'live');
}

async function loadHistory() {
  try {
    const r = await fetch('history', { cache: 'no-store' });
    if (!r.ok) return;
    const h = await r.json();
    state.keep = h.keep_seconds || 900;
    state.history = h.tasks || {};
    render();
    renderCharts();
  } catch (_) { /* the stream's reconnect brings us back here */ }
}

function trimHistory() {
  const from = Date.now() - state.keep * 1000;
  for (const s of Object.values(state.history)) {
    while (s.length && s[0].t < from) s.shift();
  }
}

// ---- rendering ----
function lastPoint(name) {
  const s = state.history[name];
  return s && s.length ? s[s.length - 1] : null;
}

function render() {
  const st = state.status;
  if (!st) return;
  const host = location.host;
  setText($('#where'), `${st.version ? st.version.split(' ')[0] + ' · ' : ''}${st.broker} · ${host}`);
  document.title = `symphony · ${host}`;

  // Totals.
  let sumRate = 0, depth = 0, busy = 0, workers = 0, ack = 0, retry = 0, dead = 0;
  for (const t of st.tasks) {
    const p = lastPoint(t.name);
    sumRate += p ? p.rate : 0;
    depth += t.queue_depth; busy += t.workers.busy; workers += t.workers.now;
    ack += t.messages.ack || 0; retry += t.messages.retry || 0; dead += t.messages.dead || 0;
  }
  setText($('#sum-rate'), rate(sumRate));
  setText($('#sum-depth'), num(depth));
  setText($('#sum-busy'), num(busy));
  setText($('#sum-workers'), `of ${num(workers)} workers`);
  setText($('#sum-ack'), num(ack));
  setText($('#sum-retry'), num(retry));
  setText($('#sum-dead'), num(dead));

  // The last reload, when it failed.
  const lr = st.last_reload;
  const failed = lr && !lr.success;
  show($('#reload-alert'), failed);
  if (failed) {
    setText($('#reload-alert-text'), `${ago(lr.at)} (${lr.trigger}): the daemon keeps running generation ${st.generation}.`);
    setText($('#reload-alert-error'), lr.error || '');
  }

  renderTasks(st);
  renderReloads(st);
  renderDaemon(st);
}

function renderTasks(st) {
  const box = $('#tasks');
  setText($('#task-count'), `${st.tasks.length}`);
  const seen = new Set();
  let prev = null;
  for (const t of st.tasks) {
    seen.add(t.name);
    let el = box.querySelector(`:scope > [data-task="${CSS.escape(t.name)}"]`);
    if (!el) {
      el = $('#task-template').content.firstElementChild.cloneNode(true);
      el.dataset.task = t.name;
      el.querySelector('[data-action="dead"]').addEventListener('click', () => openDead(el.dataset.task));
    }
    // Keep the status's order.
    const want = prev ? prev.nextElementSibling : box.firstElementChild;
    if (want !== el) box.insertBefore(el, want);
    prev = el;
    fillTask(el, t);
  }
  for (const el of [...box.children]) {
    if (!seen.has(el.dataset.task)) el.remove();
  }
  renderCharts();
}

function fillTask(el, t) {
  const p = lastPoint(t.name);
  setText(field(el, 'name'), t.name);
  setText(field(el, 'model'), t.work_model);
  setText(field(el, 'isolation'), t.isolation);
  const throttle = field(el, 'throttle');
  show(throttle, t.throttle_seconds > 0);
  setText(throttle, `throttled ${t.throttle_seconds.toFixed(2).replace(/\.00$/, '')}s`);
  const limit = field(el, 'ratelimit');
  show(limit, !!t.rate_limit);
  setText(limit, t.throttled > 0 ? `limit ${t.rate_limit} · ${t.throttled} throttled` : `limit ${t.rate_limit}`);
  const draining = field(el, 'draining');
  show(draining, t.draining > 0);
  setText(draining, `draining ${t.draining}`);
  setText(field(el, 'route'), `queue ${t.queue} · ${t.patterns.join(', ')}`);
  setText(field(el, 'workers'), num(t.workers.now));
  setText(field(el, 'bounds'), t.workers.min === t.workers.max ? `/${t.workers.max}` : ` ${t.workers.min}–${t.workers.max}`);
  setText(field(el, 'busy'), num(t.workers.busy));
  setText(field(el, 'depth'), num(t.queue_depth));
  setText(field(el, 'rate'), p ? rate(p.rate) : '–');
  setText(field(el, 'ack'), num(t.messages.ack || 0));
  setText(field(el, 'retry'), num(t.messages.retry || 0));
  setText(field(el, 'dead'), num(t.messages.dead || 0));
  const pill = field(el, 'dead-pill');
  setText(pill, num(t.messages.dead || 0));
  pill.classList.toggle('bad', (t.messages.dead || 0) > 0);

  const f = t.last_error;
  const failure = field(el, 'failure');
  show(failure, !!f);
  el.classList.toggle('failing', !!f && Date.now() - Date.parse(f.at) < 5 * 60 * 1000);
  if (f) {
    setText(field(el, 'failure-reason'), `${f.outcome}: ${f.reason}`);
    setText(field(el, 'failure-line'), errorLine(f.error) || f.reason);
    setText(field(el, 'failure-at'), ago(f.at));
    setText(field(el, 'failure-text'), f.error || '(no error text)');
  }
  const scaler = field(el, 'scaler');
  show(scaler, !!t.scaler_error);
  setText(scaler, t.scaler_error ? `scaler: ${errorLine(t.scaler_error)}` : '');

  const procs = field(el, 'procs');
  const list = t.processes || [];
  show(procs, list.length > 0);
  const body = procs.tBodies[0];
  while (body.rows.length > list.length) body.deleteRow(-1);
  list.forEach((pr, i) => {
    const row = body.rows[i] || body.insertRow();
    while (row.cells.length < 4) row.insertCell();
    setText(row.cells[0], String(pr.pid));
    setText(row.cells[1], bytes(pr.rss_bytes));
    setText(row.cells[2], pr.busy ? 'busy' : 'idle');
    setText(row.cells[3], span((Date.now() - Date.parse(pr.started)) / 1000));
  });
}

// Each chart spans the history window, newest at the right: the rate in
// the upper band, the backlog in the lower one, each on its own scale.
function renderCharts() {
  const now = Date.now();
  const from = now - state.keep * 1000;
  for (const el of document.querySelectorAll('#tasks > .task')) {
    const pts = (state.history[el.dataset.task] || []).filter(p => p.t >= from);
    const x = t => ((t - from) / (state.keep * 1000)) * 300;
    const maxRate = Math.max(1, ...pts.map(p => p.rate));
    const maxDepth = Math.max(1, ...pts.map(p => p.depth));
    const yRate = r => 50 - (r / maxRate) * 46;
    const yDepth = d => 100 - (d / maxDepth) * 40;
    let line = '', area = '', depth = '';
    pts.forEach((p, i) => {
      const cmd = i ? 'L' : 'M';
      line += `${cmd}${x(p.t).toFixed(1)},${yRate(p.rate).toFixed(1)}`;
      depth += `${cmd}${x(p.t).toFixed(1)},${yDepth(p.depth).toFixed(1)}`;
    });
    if (pts.length) {
      area = `M${x(pts[0].t).toFixed(1)},50${line.replace(/^M/, 'L')}L${x(pts[pts.length - 1].t).toFixed(1)},50Z`;
    }
    const svg = el.querySelector('svg');
    svg.dataset.points = String(pts.length);
    svg.querySelector('.rate-line').setAttribute('d', line);
    svg.querySelector('.rate-area').setAttribute('d', area);
    svg.querySelector('.depth-line').setAttribute('d', depth);
    const last = pts[pts.length - 1];
    setText(field(el, 'chart-rate'), last ? rate(last.rate) : '–');
    setText(field(el, 'chart-depth'), last ? num(last.depth) : '–');
    setText(field(el, 'chart-max'), pts.length ? `peak ${rate(Math.max(...pts.map(p => p.rate)))}/s · ${num(Math.max(...pts.map(p => p.depth)))} ready` : 'collecting…');
    setText(field(el, 'chart-from'), `${Math.round(state.keep / 60)} min ago`);
  }
}

function renderReloads(st) {
  const ol = $('#reloads');
  const reloads = st.reloads || [];
  const key = JSON.stringify(reloads.map(r => [r.at, r.success]));
  if (ol.dataset.key === key) {
    // Only the ages move.
    ol.querySelectorAll('[data-at]').forEach(s => setText(s, ago(s.dataset.at)));
    return;
  }
  ol.dataset.key = key;
  ol.replaceChildren();
  if (!reloads.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No reload since the daemon started.';
    ol.append(li);
    return;
  }
  reloads.forEach((r, i) => {
    const li = document.createElement('li');
    li.dataset.success = String(r.success);
    const line = document.createElement('div');
    line.className = 'line';
    const badge = document.createElement('span');
    badge.className = `badge ${r.success ? 'ok' : 'bad'}`;
    badge.textContent = r.success ? 'reloaded' : 'failed';
    const what = document.createElement('span');
    what.textContent = r.success
      ? `generation ${r.generation}${r.changed && r.changed.length ? ' · ' + r.changed.join(', ') : ' · nothing changed'}`
      : `kept generation ${r.generation}`;
    const when = document.createElement('span');
    when.className = 'muted small';
    when.dataset.at = r.at;
    when.textContent = ago(r.at);
    const trig = document.createElement('span');
    trig.className = 'muted small';
    trig.textContent = r.trigger;
    line.append(badge, what, trig, when);
    li.append(line);
    if (r.error) {
      const d = document.createElement('details');
      if (i === 0) d.open = true;
      const s = document.createElement('summary');
      s.className = 'bad-text small';
      s.textContent = errorLine(r.error);
      const pre = document.createElement('pre');
      pre.textContent = r.error;
      d.append(s, pre);
      li.append(d);
    }
    ol.append(li);
  });
}

function renderDaemon(st) {
  const rows = [
    ['State', `${st.ready ? 'ready' : 'not ready'}${st.connected ? '' : ', broker disconnected'}`],
    ['Broker', st.broker],
    ['Exchange', st.exchange],
    ['Generation', String(st.generation)],
    ['Up', span((Date.now() - Date.parse(st.started_at)) / 1000)],
    ['Version', st.version || '–'],
    ['Scaling', `every ${st.settings.scaling_interval_seconds}s`],
    ['Shutdown', `${st.settings.shutdown_timeout_seconds}s grace`],
  ];
  const dl = $('#daemon');
  if (dl.children.length !== rows.length * 2) {
    dl.replaceChildren(...rows.flatMap(() => [document.createElement('dt'), document.createElement('dd')]));
  }
  rows.forEach(([k, v], i) => {
    setText(dl.children[i * 2], k);
    setText(dl.children[i * 2 + 1], v);
  });
}

// ---- actions ----
function toast(text, bad) {
  const t = $('#toast');
  t.textContent = text;
  t.classList.toggle('bad', !!bad);
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

// askToken shows the token dialog and resolves with the token, or null
// when the operator cancels.
function askToken(message) {
  const dlg = $('#token-dialog');
  const input = $('#token-input');
  const err = $('#token-error');
  input.value = '';
  show(err, !!message);
  setText(err, message || '');
  return new Promise(resolve => {
    const done = value => {
      dlg.removeEventListener('close', onClose);
      $('#token-form').removeEventListener('submit', onSubmit);
      resolve(value);
    };
    const onSubmit = e => {
      e.preventDefault();
      const v = input.value.trim();
      if (!v) return;
      sessionStorage.setItem(tokenKey, v);
      dlg.close('ok');
      done(v);
    };
    const onClose = () => { if (dlg.returnValue !== 'ok') done(null); };
    $('#token-form').addEventListener('submit', onSubmit);
    dlg.addEventListener('close', onClose);
    dlg.returnValue = '';
    dlg.showModal();
    input.focus();
  });
}

// api calls the admin API, with the token when one is kept, asking for
// it when the daemon wants one. It resolves with the JSON answer or
// throws an Error with the daemon's message.
async function api(method, path, body) {
  let token = sessionStorage.getItem(tokenKey);
  for (let tries = 0; tries < 3; tries++) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401) {
      sessionStorage.removeItem(tokenKey);
      token = await askToken(token ? 'That token was refused.' : '');
      if (!token) throw new Error('cancelled');
      continue;
    }
    if (!r.ok) throw new Error((data && data.error) || `${r.status} ${r.statusText}`);
    return data;
  }
  throw new Error('the token was refused');
}

async function openDead(task) {
  const st = state.status;
  const t = st && st.tasks.find(x => x.name === task);
  if (!t) return;
  state.dead = { task, queue: t.queue, letters: [], selected: null };
  setText($('#dead-title'), `Dead letters of ${task}`);
  const dlg = $('#dead-dialog');
  if (!dlg.open) dlg.showModal();
  await refreshDead();
}

async function refreshDead() {
  const d = state.dead;
  if (!d) return;
  const list = $('#dead-list');
  show($('#dead-detail'), false);
  try {
    const data = await api('GET', `dead?queue=${encodeURIComponent(d.queue)}&limit=200`);
    d.letters = data.letters;
    setText($('#dead-total'), data.total === data.letters.length ? `${num(data.total)} dead letters` : `showing ${num(data.letters.length)} of ${num(data.total)}`);
    $('#dead-replay-all').disabled = $('#dead-purge-all').disabled = data.total === 0;
    list.replaceChildren();
    if (!data.letters.length) {
      const p = document.createElement('div');
      p.className = 'dead-empty';
      p.textContent = 'No dead letters. Nothing has failed for good.';
      list.append(p);
      return;
    }
    for (const l of data.letters) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'dead-item';
      b.dataset.id = l.id;
      const when = document.createElement('span');
      when.className = 'muted small when';
      when.textContent = ago(l.dead_at);
      const key = document.createElement('span');
      key.className = 'key';
      key.textContent = l.routing_key;
      const why = document.createElement('span');
      why.className = 'badge bad';
      why.textContent = `${l.reason} · attempt ${l.attempt}`;
      const err = document.createElement('span');
      err.className = 'err';
      err.textContent = errorLine(l.error);
      b.append(when, key, why, err);
      b.addEventListener('click', () => showDead(l.id));
      list.append(b);
    }
  } catch (e) {
    if (e.message !== 'cancelled') {
      list.replaceChildren(Object.assign(document.createElement('div'), { className: 'dead-empty bad-text', textContent: e.message }));
    }
  }
}

async function showDead(id) {
  const d = state.dead;
  d.selected = id;
  document.querySelectorAll('.dead-item').forEach(b => b.setAttribute('aria-current', String(b.dataset.id === id)));
  try {
    const l = await api('GET', `dead/${id.split('/').map(encodeURIComponent).join('/')}`);
    setText($('#dead-detail-id'), l.id);
    const facts = [
      ['Routing key', l.routing_key], ['Reason', l.reason], ['Attempt', String(l.attempt)],
      ['Dead', `${new Date(l.dead_at).toLocaleString()} (${ago(l.dead_at)})`], ['Message id', l.message_id || '–'],
      ['Content type', l.content_type || '–'], ['Headers', l.headers ? JSON.stringify(l.headers) : '–'],
    ];
    $('#dead-facts').replaceChildren(...facts.flatMap(([k, v]) => [
      Object.assign(document.createElement('dt'), { textContent: k }),
      Object.assign(document.createElement('dd'), { textContent: v }),
    ]));
    setText($('#dead-error'), l.error || '(none)');
    let body = l.body || '';
    if (!l.body_encoding && /json/.test(l.content_type || '')) {
      try { body = JSON.stringify(JSON.parse(body), null, 2); } catch (_) { /* shown as it is */ }
    }
    setText($('#dead-body'), l.body_encoding ? `(${l.size} bytes, base64)\n${body}` : body || '(empty)');
    show($('#dead-detail'), true);
    $('#dead-detail').scrollIntoView({ block: 'nearest' });
  } catch (e) {
    if (e.message !== 'cancelled') toast(e.message, true);
  }
}

async function changeDead(verb, ids) {
  const d = state.dead;
  if (!d) return;
  const what = ids ? '1 dead letter' : `every dead letter of ${d.task}`;
  if (verb === 'purge' && !confirm(`Delete ${what} for good?`)) return;
  try {
    const body = ids ? { ids } : { queue: d.queue };
    const res = await api('POST', `dead/${verb}`, body);
    const n = verb === 'replay' ? res.replayed : res.purged;
    toast(`${verb === 'replay' ? 'Replayed' : 'Purged'} ${n} dead letter${n === 1 ? '' : 's'}`);
    await refreshDead();
  } catch (e) {
    if (e.message !== 'cancelled') toast(e.message, true);
  }
}

async function publish(e) {
  e.preventDefault();
  const out = $('#publish-result');
  const body = { routing_key: $('#publish-key').value.trim() };
  const type = $('#publish-type').value.trim() || 'application/json';
  const raw = $('#publish-payload').value;
  if (raw.trim()) {
    if (/json/.test(type)) {
      try { body.payload = JSON.parse(raw); } catch (err) {
        show(out, true); out.className = 'small bad-text'; out.textContent = `The payload is not valid JSON: ${err.message}`;
        return;
      }
    } else {
      body.payload = raw;
    }
  }
  body.content_type = type;
  const delay = $('#publish-delay').value.trim();
  if (delay) body.delay = delay;
  try {
    const res = await api('POST', 'publish', body);
    show(out, true); out.className = 'small'; out.textContent = `Published message ${res.message_id} to ${res.routing_key}.`;
  } catch (err) {
    if (err.message === 'cancelled') return;
    show(out, true); out.className = 'small bad-text'; out.textContent = err.message;
  }
}

function init() {
  for (const b of document.querySelectorAll('[data-close]')) {
    b.addEventListener('click', () => b.closest('dialog').close());
  }
  $('#dead-replay-all').addEventListener('click', () => changeDead('replay', null));
  $('#dead-purge-all').addEventListener('click', () => changeDead('purge', null));
  $('#dead-replay-one').addEventListener('click', () => changeDead('replay', [state.dead.selected]));
  $('#dead-purge-one').addEventListener('click', () => changeDead('purge', [state.dead.selected]));
  $('#dead-dialog').addEventListener('close', () => { state.dead = null; });
  $('#publish-open').addEventListener('click', () => { show($('#publish-result'), false); $('#publish-dialog').showModal(); });
  $('#publish-form').addEventListener('submit', publish);
  setConn('connecting');
  connect();
  // Ages and the chart's window move on between events too.
  setInterval(() => { if (state.status) { trimHistory(); renderCharts(); } }, 5000);
}

init();
