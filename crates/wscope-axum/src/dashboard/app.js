// wscope dashboard: the live summary and charts from the SSE stream, the server-paged connection
// table, the recently closed list and the admin actions. Plain browser JavaScript, no build step;
// every text from the server goes into the page through textContent, never as HTML.
(() => {
  'use strict';

  // Where the data comes from, relative to the page (so a proxy may serve it under a prefix).
  // In cluster mode (the admin /health names a cluster state) a switch in the header picks the
  // cluster: its summary is polled from /api/cluster/stats (rates from the change between polls),
  // its connections and actions go through /api/cluster/*; the recently closed list stays this
  // instance's. Everything below reads the URLs from `scope`.
  const SCOPES = {
    instance: {
      name: 'instance',
      label: 'this instance',
      stream: 'api/stats/stream',
      connections: 'api/connections',
      closed: 'api/closed',
      admin: 'api/admin',
    },
    cluster: {
      name: 'cluster',
      label: 'the cluster',
      stats: 'api/cluster/stats',
      connections: 'api/cluster/connections',
      closed: 'api/closed',
      admin: 'api/cluster/admin',
    },
  };
  let scope = SCOPES.instance;

  const TOKEN_KEY = 'wscope.adminToken';
  const CHART_SECONDS = 10 * 60; // how much history the charts keep
  const REFRESH_MS = 2000; // connection table and closed list, while the tab is visible
  const CLOSED_ROWS = 25;

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- formatting -------------------------------------------------------------------------
  const fmtCount = (n) => (n == null ? '–' : Math.round(n).toLocaleString('en-US'));
  function fmtBytes(n) {
    if (n == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }
  function fmtDuration(ms) {
    if (ms == null) return '–';
    if (ms < 1000) return Math.round(ms) + ' ms';
    let s = Math.floor(ms / 1000);
    if (s < 60) return (ms / 1000).toFixed(s < 10 ? 1 : 0) + ' s';
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    return m + 'm ' + s + 's';
  }
  const plural = (n, word) => fmtCount(n) + ' ' + word + (n === 1 ? '' : 's');
  const fmtRate = (n) => (n == null ? '–' : n < 10 ? n.toFixed(1) : fmtCount(n));
  const fmtClock = (unixSecs) => new Date(unixSecs * 1000).toLocaleTimeString([], { hour12: false });
  const fmtTime = (unixMs) => (unixMs ? new Date(unixMs).toLocaleTimeString([], { hour12: false }) : '–');

  // ---- notices ----------------------------------------------------------------------------
  let noticeTimer = null;
  function notice(text, isError) {
    const el = $('notice');
    el.textContent = text;
    el.classList.toggle('error', !!isError);
    el.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { el.hidden = true; }, isError ? 15000 : 6000);
  }

  // A blocked script or style would break the page quietly: say so (and count, for the tests).
  let cspViolations = 0;
  document.addEventListener('securitypolicyviolation', (e) => {
    cspViolations++;
    document.body.dataset.cspViolations = String(cspViolations);
    notice('Blocked by the page\'s security policy: ' + e.violatedDirective + ' ' + e.blockedURI, true);
  });

  // ---- the token and every API call --------------------------------------------------------
  // The page and its assets load without a token; every API route wants it when the server has
  // one. A 401 opens the token dialog once (concurrent calls wait for the same answer) and the
  // call is retried with the new token. Cancelling stops asking until "Enter token" is pressed.
  let tokenRequest = null;
  let tokenDeclined = false;

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
  }
  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    } catch { /* storage disabled: the token lives as long as the dialog's answer */ }
    $('token-forget').hidden = !token;
  }

  function askToken(why) {
    if (tokenRequest) return tokenRequest;
    const dialog = $('token-dialog');
    const input = $('token-input');
    $('token-why').textContent = why;
    input.value = '';
    tokenRequest = new Promise((resolve) => {
      const done = (token) => {
        $('token-form').onsubmit = null;
        $('token-cancel').onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        tokenRequest = null;
        resolve(token);
      };
      $('token-form').onsubmit = (e) => {
        e.preventDefault();
        const token = input.value.trim();
        if (token) done(token);
      };
      $('token-cancel').onclick = () => done(null);
      dialog.onclose = () => done(null); // Escape
    });
    dialog.showModal();
    input.focus();
    return tokenRequest;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options = {}) {
    for (;;) {
      const headers = new Headers(options.headers || {});
      const token = storedToken();
      if (token) headers.set('Authorization', 'Bearer ' + token);
      const res = await fetch(path, { ...options, headers, cache: 'no-store', credentials: 'omit' });
      if (res.status !== 401) return res;
      if (tokenDeclined) {
        $('token-enter').hidden = false;
        throw new ApiError(401, 'unauthorized: press "Enter token"');
      }
      const answer = await askToken(token ? 'That token was refused: enter the current one.'
        : 'This server requires its admin token.');
      if (!answer) {
        tokenDeclined = true;
        $('token-enter').hidden = false;
        throw new ApiError(401, 'unauthorized: press "Enter token"');
      }
      storeToken(answer);
    }
  }

  async function apiJson(path, options) {
    const res = await api(path, options);
    let body = null;
    try { body = await res.json(); } catch { /* not JSON: reported below by status */ }
    if (!res.ok) {
      const why = body && body.error ? body.error : res.status + ' ' + res.statusText;
      throw new ApiError(res.status, why);
    }
    return body;
  }

  const postAdmin = (action) => apiJson(scope.admin, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(action),
  });

  // ---- the live stream (SSE over fetch, so that it can carry the token) ----------------------
  let latest = null; // the last LiveStats event
  let lastEventId = null;

  function setLive(state, text) {
    const el = $('live');
    el.dataset.state = state;
    el.textContent = text;
  }

  // Reads `text/event-stream` from a response body, calling onEvent(type, data, id) per event.
  async function readEvents(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let type = '', data = [], id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) onEvent(type || 'message', data.join('\n'), id);
          type = ''; data = [];
          continue;
        }
        if (line.startsWith(':')) continue; // comment (keep-alive)
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
        else if (field === 'id') id = val;
      }
    }
  }

  async function stream() {
    let backoff = 1000;
    for (;;) {
      try {
        const headers = { Accept: 'text/event-stream' };
        if (lastEventId) headers['Last-Event-ID'] = lastEventId;
        const res = await api(scope.stream, { headers });
        if (!res.ok) {
          let why = res.status + ' ' + res.statusText;
          try { why = (await res.json()).error || why; } catch { /* keep the status */ }
          throw new ApiError(res.status, why);
        }
        setLive('live', 'live');
        backoff = 1000;
        await readEvents(res.body, (type, data, id) => {
          if (id) lastEventId = id;
          if (type !== 'stats' || scope !== SCOPES.instance) return;
          try { onStats(JSON.parse(data)); } catch (e) { console.error('bad stats event', e); }
        });
        setLive('down', 'stream ended; reconnecting…');
      } catch (e) {
        setLive('down', 'live stream: ' + e.message);
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  function onStats(s) {
    latest = s;
    const states = s.connectionsByState || {};
    $('open-count').textContent = fmtCount(states.OPEN);
    $('total').textContent = fmtCount(s.totalConnections);
    $('ever').textContent = fmtCount(s.totalConnectionsEver);
    $('closed-total').textContent = fmtCount(s.totalConnectionsClosed);
    $('avg-age').textContent = fmtDuration(s.averageAge);
    $('avg-idle').textContent = fmtDuration(s.averageIdleTime);
    $('avg-rtt').textContent = s.averageRttMs == null ? '–' : s.averageRttMs + ' ms';
    const traffic = s.traffic || {};
    $('queued').textContent = fmtBytes(traffic.queuedBytes);
    $('held').textContent = fmtBytes(traffic.memoryBytes);
    for (const st of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) {
      $('state-' + st).textContent = fmtCount(states[st]);
    }
    const r = s.rates || {};
    $('rate-messages').textContent = fmtRate(r.messagesIn) + ' / ' + fmtRate(r.messagesOut);
    $('rate-bytes').textContent = fmtBytes(r.bytesIn) + ' / ' + fmtBytes(r.bytesOut);
    $('rate-conns').textContent = fmtRate(r.opened) + ' / ' + fmtRate(r.closed);
    $('rate-refused').textContent = fmtRate(r.refused);
    $('instance').textContent = s.instanceId || '';
    $('uptime').textContent = 'up ' + fmtDuration(s.uptime) + (s.shutDown ? ' · shutting down' : '');
    charts.push(s);
  }

  // ---- charts -----------------------------------------------------------------------------
  const charts = (() => {
    // Columns: time (s), open, messages in/s, out/s, bytes in/s, out/s.
    const cols = [[], [], [], [], [], []];
    const plots = [];
    const haveUplot = typeof window.uPlot === 'function';
    // Whole-number tick steps (1, 2, 5, 10, …): no "0.2 connections" or "0.5 B".
    const WHOLE_STEPS = [];
    for (let p = 1; p <= 1e12; p *= 10) WHOLE_STEPS.push(p, 2 * p, 5 * p);

    // The legend shows the latest point unless the cursor is on the chart (uPlot's own legend
    // reads "Time --" until something is hovered).
    function showLatest(u) {
      const n = u.data[0].length;
      if (n && u.cursor.idx == null) u.setLegend({ idx: n - 1 });
    }

    function make(el, series, fmt) {
      const opts = {
        width: Math.max(el.clientWidth, 280),
        height: 200,
        legend: { show: true },
        hooks: { setCursor: [showLatest] },
        cursor: { drag: { x: false, y: false } },
        scales: {
          // At least the last minute, so that a fresh page's first points do not fill the width.
          x: {
            time: true,
            range: (u, min, max) => {
              const hi = max == null ? Date.now() / 1000 : max;
              return [Math.min(min == null ? hi : min, hi - 60), hi];
            },
          },
          y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
        },
        axes: [
          // One row of wall-clock times (uPlot's default adds a date row that crowds a narrow chart).
          { space: 70, values: (u, ticks) => ticks.map(fmtClock) },
          { size: 64, incrs: WHOLE_STEPS, values: (u, ticks) => ticks.map(fmt) },
        ],
        series: [
          { label: 'time', value: (u, v) => (v == null ? '–' : fmtClock(v)) },
          ...series.map((s) => ({ ...s, value: (u, v) => (v == null ? '–' : fmt(v)), width: 2 })),
        ],
      };
      return new window.uPlot(opts, [[]].concat(series.map(() => [])), el);
    }

    if (haveUplot) {
      plots.push({ plot: make($('chart-open'), [{ label: 'open', stroke: '#2563eb', fill: 'rgba(37,99,235,.08)' }], fmtCount), cols: [1] });
      plots.push({ plot: make($('chart-messages'), [
        { label: 'in', stroke: '#2563eb' }, { label: 'out', stroke: '#d97706', dash: [6, 4] }], fmtRate), cols: [2, 3] });
      plots.push({ plot: make($('chart-bytes'), [
        { label: 'in', stroke: '#2563eb' }, { label: 'out', stroke: '#d97706', dash: [6, 4] }], fmtBytes), cols: [4, 5] });
      const resize = () => {
        for (const p of plots) {
          const el = p.plot.root.parentElement;
          p.plot.setSize({ width: Math.max(el.clientWidth, 280), height: 200 });
        }
      };
      new ResizeObserver(resize).observe($('charts'));
    } else {
      for (const id of ['chart-open', 'chart-messages', 'chart-bytes']) {
        $(id).textContent = 'The chart library did not load.';
      }
    }

    function push(s) {
      const r = s.rates || {};
      const row = [s.time / 1000, (s.connectionsByState || {}).OPEN || 0,
        r.messagesIn || 0, r.messagesOut || 0, r.bytesIn || 0, r.bytesOut || 0];
      row.forEach((v, i) => cols[i].push(v));
      while (cols[0].length && cols[0][0] < row[0] - CHART_SECONDS) cols.forEach((c) => c.shift());
      // Drawn on the next event once visible; from two points on (uPlot's time axis has no
      // width to lay out with one).
      if (document.hidden || cols[0].length < 2) return;
      for (const p of plots) {
        p.plot.setData([cols[0], ...p.cols.map((i) => cols[i])]);
        showLatest(p.plot);
      }
    }
    // Starts the charts over (the view changed to other figures).
    function reset() {
      cols.forEach((c) => { c.length = 0; });
      for (const p of plots) p.plot.setData([[], ...p.cols.map(() => [])]);
    }
    return { push, reset };
  })();

  // ---- the cluster view ----------------------------------------------------------------------
  let clusterPrev = null; // the previous poll's event, for the rates

  // A live-stream-like event from a cluster stats answer, with rates against the previous poll.
  function clusterEvent(c, time) {
    const t = c.traffic || {};
    const refused = Object.values(c.refused || {}).reduce((n, v) => n + v, 0);
    const ev = {
      time,
      instanceId: c.cluster + ' · ' + plural(c.instancesCounted, 'instance'),
      totalConnections: c.totalConnections,
      totalConnectionsEver: c.totalConnectionsEver,
      totalConnectionsClosed: c.totalConnectionsClosed,
      averageAge: c.averageAge,
      averageIdleTime: c.averageIdleTime,
      averageRttMs: c.averageRttMs,
      connectionsByState: c.connectionsByState,
      traffic: t,
      refusedTotal: refused,
      rates: {},
    };
    const p = clusterPrev;
    if (p && time > p.time) {
      const secs = (time - p.time) / 1000;
      const rate = (now, then) => Math.max(0, (now || 0) - (then || 0)) / secs;
      ev.rates = {
        messagesIn: rate(t.messagesIn, p.traffic.messagesIn),
        messagesOut: rate(t.messagesOut, p.traffic.messagesOut),
        bytesIn: rate(t.bytesIn, p.traffic.bytesIn),
        bytesOut: rate(t.bytesOut, p.traffic.bytesOut),
        opened: rate(c.totalConnectionsEver, p.totalConnectionsEver),
        closed: rate(c.totalConnectionsClosed, p.totalConnectionsClosed),
        refused: rate(refused, p.refusedTotal),
      };
    }
    clusterPrev = ev;
    return ev;
  }

  function renderInstances(c) {
    const frag = document.createDocumentFragment();
    for (const i of c.instances || []) {
      const tr = document.createElement('tr');
      const states = i.connectionsByState || {};
      tr.append(
        cell(i.instanceId, 'mono'),
        cell(i.status + (i.answered ? '' : ' (no answer)'), 'status-' + i.status),
        cell(fmtCount(i.totalConnections), 'num'),
        cell(fmtCount(states.OPEN), 'num'),
        cell(fmtCount(i.totalConnectionsEver), 'num'),
        cell(fmtDuration(i.lastHeardMs) + ' ago', 'num'),
        cell(i.version || ''),
        cell(i.mainAddr || '–', 'mono'),
        cell(i.adminAddr || '–', 'mono'),
      );
      frag.append(tr);
    }
    $('instance-rows').replaceChildren(frag);
    const late = (c.unanswered || []).length;
    $('instances-info').textContent = plural(c.instancesCounted, 'instance') + ' counted'
      + (late ? ' · no answer from ' + c.unanswered.join(', ') : '');
  }

  async function pollCluster() {
    try {
      const c = await apiJson(SCOPES.cluster.stats);
      if (scope !== SCOPES.cluster) return;
      setLive('live', 'cluster: live');
      onStats(clusterEvent(c, Date.now()));
      $('uptime').textContent = '';
      renderInstances(c);
    } catch (e) {
      if (scope === SCOPES.cluster) setLive('down', 'cluster: ' + e.message);
    }
  }

  async function clusterLoop() {
    for (;;) {
      if (scope === SCOPES.cluster && !document.hidden) await pollCluster();
      await sleep(REFRESH_MS);
    }
  }

  function setScope(name) {
    scope = SCOPES[name] || SCOPES.instance;
    $('scope').textContent = scope.label;
    $('instances').hidden = scope !== SCOPES.cluster;
    $('closed-scope').hidden = scope !== SCOPES.cluster;
    clusterPrev = null;
    latest = null;
    charts.reset();
    if (scope === SCOPES.cluster) {
      pollCluster();
    } else {
      setLive('connecting', 'waiting for the next event…');
    }
    firstPage();
    loadClosed();
  }

  // Offers the cluster view when this instance is in cluster mode: its cluster routes answer
  // anything but 404 (503 while the cluster is out of reach). Asked through the API, with the
  // token, rather than read from /health, which need not say it to a caller without the token.
  async function detectCluster() {
    try {
      const res = await api(SCOPES.cluster.stats);
      if (res.status === 404) return;
      // The switch names the view: the badge would say it a second time.
      $('scope').hidden = true;
      $('scope-pick').hidden = false;
      $('scope-select').addEventListener('change', (e) => setScope(e.target.value));
    } catch { /* no cluster view */ }
  }

  // ---- the connection table ------------------------------------------------------------------
  // The server sorts, filters and pages: the page holds one page of rows, never the whole list.
  const table = {
    limit: 50,
    sort: 'age',
    order: 'desc',
    filter: {},
    cursors: [null], // cursors[i] fetches page i
    page: 0,
    total: null,
    next: null,
    loading: false,
    again: false,
  };
  const FIELDS = ['id', 'state', 'remoteAddress', 'path', 'userAgent', 'user', 'tags', 'age', 'idleTime',
    'messagesIn', 'messagesOut', 'bytesIn', 'bytesOut', 'queuedBytes', 'memoryBytes', 'rttMs', 'upstream'];

  function filterFromForm() {
    const form = $('filters');
    const filter = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      const v = el.value.trim();
      if (v) filter[el.name] = v;
    }
    return filter;
  }

  function describeFilter(filter) {
    const parts = Object.entries(filter).map(([k, v]) => k + '=' + v);
    return parts.length ? parts.join(', ') : 'no filter';
  }

  function connectionsUrl() {
    const q = new URLSearchParams();
    q.set('limit', String(table.limit));
    q.set('sort', table.sort);
    q.set('order', table.order);
    const cursor = table.cursors[table.page];
    if (cursor != null) q.set('cursor', cursor);
    for (const [k, v] of Object.entries(table.filter)) q.set(k, v);
    q.set('fields', FIELDS.join(','));
    return scope.connections + '?' + q.toString();
  }

  async function loadConnections() {
    if (table.loading) { table.again = true; return; }
    table.loading = true;
    try {
      const answer = await apiJson(connectionsUrl());
      const rows = answer.connections || [];
      if (!rows.length && table.page > 0) {
        // The page emptied (connections left): go back one.
        table.page--; table.cursors.length = table.page + 1;
        table.again = true;
        return;
      }
      table.total = answer.total;
      table.next = answer.next == null ? null : answer.next;
      table.cursors.length = table.page + 1;
      if (table.next != null) table.cursors.push(table.next);
      renderConnections(rows);
    } catch (e) {
      notice('Connections: ' + e.message, true);
    } finally {
      table.loading = false;
      if (table.again) { table.again = false; loadConnections(); }
    }
  }

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function renderConnections(rows) {
    const frag = document.createDocumentFragment();
    for (const c of rows) {
      const tr = document.createElement('tr');
      tr.dataset.id = c.id;
      tr.append(
        cell(c.id, 'mono'),
        cell(c.state, 'state-' + c.state),
        cell(c.remoteAddress || '–', 'mono'),
        // Behind wscope proxy, where the connection is relayed to.
        cell((c.path || '') + (c.upstream ? ' → ' + c.upstream : ''), 'mono'),
        cell(c.userAgent || '', 'ua'),
        cell([c.user, ...(c.tags || [])].filter(Boolean).join(' · ')),
        cell(fmtDuration(c.age), 'num'),
        cell(fmtDuration(c.idleTime), 'num'),
        cell(fmtCount(c.messagesIn) + ' / ' + fmtCount(c.messagesOut), 'num'),
        cell(fmtBytes(c.bytesIn) + ' / ' + fmtBytes(c.bytesOut), 'num'),
        cell(fmtBytes(c.queuedBytes), 'num'),
        cell(fmtBytes(c.memoryBytes), 'num'),
        cell(c.rttMs == null ? '–' : c.rttMs + ' ms', 'num'),
      );
      const td = document.createElement('td');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'danger close-one';
      button.textContent = 'Close';
      button.dataset.id = c.id;
      td.append(button);
      tr.append(td);
      frag.append(tr);
    }
    $('conn-rows').replaceChildren(frag);
    $('conn-empty').hidden = rows.length > 0;
    const first = table.page * table.limit;
    $('page-info').textContent = rows.length
      ? (first + 1).toLocaleString('en-US') + '–' + (first + rows.length).toLocaleString('en-US')
        + ' of ' + fmtCount(table.total)
      : '0 of ' + fmtCount(table.total);
    $('page-prev').disabled = table.page === 0;
    $('page-next').disabled = table.next == null;
    for (const b of document.querySelectorAll('thead button[data-sort]')) {
      if (b.dataset.sort === table.sort) {
        b.setAttribute('aria-sort', table.order === 'asc' ? 'ascending' : 'descending');
      } else {
        b.removeAttribute('aria-sort');
      }
    }
  }

  function firstPage() {
    table.page = 0;
    table.cursors = [null];
    loadConnections();
  }

  // ---- recently closed ----------------------------------------------------------------------
  async function loadClosed() {
    try {
      const answer = await apiJson(scope.closed + '?limit=' + CLOSED_ROWS);
      const frag = document.createDocumentFragment();
      for (const c of answer.connections || []) {
        const tr = document.createElement('tr');
        tr.append(
          cell(fmtTime(c.closedAt)),
          cell(c.id, 'mono'),
          cell(c.remoteAddress || '–', 'mono'),
          cell(c.path || '', 'mono'),
          cell(c.closedBy),
          cell(c.code == null ? '–' : String(c.code), 'num'),
          cell(c.reason || '', 'reason'),
          cell(fmtDuration(c.lifetime), 'num'),
          cell(fmtCount(c.messagesIn) + ' / ' + fmtCount(c.messagesOut), 'num'),
        );
        frag.append(tr);
      }
      $('closed-rows').replaceChildren(frag);
      $('closed-info').textContent = 'latest ' + (answer.connections || []).length + ' of '
        + fmtCount(answer.total) + ' kept';
    } catch (e) {
      notice('Recently closed: ' + e.message, true);
    }
  }

  // ---- actions ----------------------------------------------------------------------------
  function closeFields() {
    const out = {};
    const code = $('close-code').value.trim();
    if (code) out.code = Number(code);
    const reason = $('close-reason').value.trim();
    if (reason) out.reason = reason;
    return out;
  }

  // A figure of an action's answer: the answer's own, or in the cluster view the sum over the
  // instances' answers (the cluster answer sums `closed` and `sent` itself).
  function summed(answer, key) {
    if (answer[key] != null || !Array.isArray(answer.instances)) return answer[key];
    return answer.instances.reduce((n, i) => n + ((i.answer || {})[key] || 0), 0);
  }

  async function act(what, action, describe) {
    try {
      const answer = await postAdmin(action);
      const silent = (answer.unanswered || []).length;
      notice(describe(answer) + (silent ? ' No answer from ' + answer.unanswered.join(', ') + '.' : ''));
    } catch (e) {
      notice(what + ': ' + e.message, true);
    }
    loadConnections();
    loadClosed();
  }

  function closeOne(id) {
    if (!confirm('Close connection ' + id + '?')) return;
    act('Close', { action: 'close', id, ...closeFields() },
      (a) => (a.success ? 'Closed ' + id + '.' : id + ' was already closing.'));
  }

  function closeMatching() {
    const filter = table.filter;
    if (!Object.keys(filter).length) {
      notice('Set a filter first (or use "Close all").', true);
      return;
    }
    const what = table.total == null ? 'connections' : plural(table.total, 'connection');
    if (!confirm('Close the ' + what + ' matching ' + describeFilter(filter) + '?')) return;
    act('Close matching', { action: 'close_matching', filter, ...closeFields() },
      (a) => 'Closed ' + fmtCount(summed(a, 'closed') || 0) + ' matching connections.');
  }

  function closeAll() {
    const now = latest ? ' (' + fmtCount(latest.totalConnections) + ' now)' : '';
    if (!confirm('Close all connections' + now + '?')) return;
    act('Close all', { action: 'close_all', ...closeFields() },
      (a) => 'Closed ' + fmtCount(summed(a, 'closed') || 0) + ' connections.');
  }

  function cleanup() {
    if (!confirm('Remove the stale (CLOSED) entries now?')) return;
    act('Clean up', { action: 'cleanup' }, (a) => 'Removed ' + fmtCount(summed(a, 'cleaned')) + ' stale entries.');
  }

  // ---- wiring -----------------------------------------------------------------------------
  function wire() {
    $('filters').addEventListener('submit', (e) => {
      e.preventDefault();
      table.filter = filterFromForm();
      firstPage();
    });
    $('filter-reset').addEventListener('click', () => {
      $('filters').reset();
      table.filter = {};
      firstPage();
    });
    $('page-prev').addEventListener('click', () => {
      if (table.page > 0) { table.page--; loadConnections(); }
    });
    $('page-next').addEventListener('click', () => {
      if (table.next != null) { table.page++; loadConnections(); }
    });
    $('page-size').addEventListener('change', (e) => {
      table.limit = Number(e.target.value);
      firstPage();
    });
    $('refresh').addEventListener('click', () => { loadConnections(); loadClosed(); });
    for (const b of document.querySelectorAll('thead button[data-sort]')) {
      b.addEventListener('click', () => {
        if (table.sort === b.dataset.sort) {
          table.order = table.order === 'asc' ? 'desc' : 'asc';
        } else {
          table.sort = b.dataset.sort;
          table.order = 'desc';
        }
        firstPage();
      });
    }
    $('conn-rows').addEventListener('click', (e) => {
      const button = e.target.closest('button.close-one');
      if (button) closeOne(button.dataset.id);
    });
    $('close-matching').addEventListener('click', closeMatching);
    $('close-all').addEventListener('click', closeAll);
    $('cleanup').addEventListener('click', cleanup);
    $('token-enter').addEventListener('click', async () => {
      const token = await askToken('Enter the admin token.');
      if (!token) return;
      tokenDeclined = false;
      $('token-enter').hidden = true;
      storeToken(token);
      loadConnections();
      loadClosed();
    });
    $('token-forget').addEventListener('click', () => {
      storeToken(null);
      notice('Token forgotten; the next call will ask for it.');
    });
    $('token-forget').hidden = !storedToken();
  }

  // ---- proxy upstreams ----------------------------------------------------------------------
  // Behind wscope proxy, GET /api/upstreams lists each route and upstream; elsewhere it lists none
  // and the panel stays hidden.
  async function loadUpstreams() {
    try {
      const answer = await apiJson('api/upstreams');
      const routes = answer.routes || [];
      $('upstreams').hidden = routes.length === 0;
      const frag = document.createDocumentFragment();
      for (const r of routes) {
        const tr = document.createElement('tr');
        const f = r.connectFailures || {};
        tr.append(
          cell(r.route + (r.retired ? ' (retired, draining)' : ''), 'mono'),
          cell(r.upstream, 'mono'),
          cell(fmtCount(r.activeConnections), 'num'),
          cell(fmtCount(r.totalConnections), 'num'),
          cell(fmtCount(f.unreachable || 0), 'num'),
          cell(fmtCount(f.timeout || 0), 'num'),
          cell(fmtCount(f.refused || 0), 'num'),
          cell(fmtCount(f.invalid || 0), 'num'),
        );
        frag.append(tr);
      }
      $('upstream-rows').replaceChildren(frag);
    } catch (e) {
      $('upstreams').hidden = true;
    }
  }

  async function refreshLoop() {
    for (;;) {
      await sleep(REFRESH_MS);
      if (document.hidden || !$('auto-refresh').checked) continue;
      await Promise.all([loadConnections(), loadClosed(), loadUpstreams()]);
    }
  }

  wire();
  $('scope').textContent = scope.label;
  detectCluster();
  clusterLoop();
  stream();
  loadConnections();
  loadClosed();
  loadUpstreams();
  refreshLoop();
})();
