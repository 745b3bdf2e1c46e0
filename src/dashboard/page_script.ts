import { applyDelta } from './run_history.js';

/**
 * The page's own script, run in the browser after uPlot (a global `uPlot`). It reads its start-up data from the
 * `<script id="gdp-data" type="application/json">` element: `{ live: true }` for the dashboard, which then opens
 * `/events` (with the page's `?token=`) and receives a `view` and then `delta`s; `{ live: false, view }` for
 * report.html. Everything from the data is put in the DOM as text (textContent), never as markup. Plain ES2020,
 * no build step: it is inlined as is, with the compiled source of run_history.ts's applyDelta.
 *
 * DOM hooks that tests read: `#workers tr[data-id]` with `td.state` and `td[data-field=lastHeard]` (`data-value`: ms
 * since the epoch); `#stage` (`#stage-box` is hidden in a report: a finished run has no current stage); `#resumed`;
 * chart boxes `[data-chart]` with `data-points` (points drawn); `#ticks tr[data-tick] td[data-field]` and
 * `#final tr[data-label] td[data-field]`, each cell with the exact number in `data-value`; `#widths-table tr[data-path]`.
 */
export const PAGE_SCRIPT = String.raw`
(function () {
  'use strict';
  var boot = JSON.parse(document.getElementById('gdp-data').textContent);
  var view = boot.view || null;
  var charts = {};
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, text, attrs) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (attrs) for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function pct(x, d) { return x === undefined || x === null ? '-' : (100 * x).toFixed(d === undefined ? 2 : d) + '%'; }
  function rate(x) { return x === undefined || x === null ? '-' : x >= 100 ? x.toFixed(0) : x.toPrecision(3); }
  // Live: how long ago; a report is read long after the run, so it gives the time itself (UTC).
  function heard(t) {
    if (!t) return '-';
    if (!boot.live) return new Date(t).toISOString().slice(0, 19).replace('T', ' ');
    var s = (Date.now() - t) / 1000;
    return s < 0 ? '0 s' : s.toFixed(0) + ' s ago';
  }
  function dur(s) {
    if (s === undefined || s === null || !isFinite(s)) return '-';
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = Math.floor(s % 60);
    return (h ? h + ' h ' : '') + (h || m ? m + ' min ' : '') + r + ' s';
  }
  function cell(tr, text, field, value) {
    var td = el('td', text, field ? { 'data-field': field } : undefined);
    if (value !== undefined) td.setAttribute('data-value', String(value));
    tr.appendChild(td);
    return td;
  }
  function fillTable(id, head, rows) {
    var t = $(id);
    t.textContent = '';
    var hr = el('tr');
    head.forEach(function (h) { hr.appendChild(el('th', h)); });
    var thead = el('thead'); thead.appendChild(hr); t.appendChild(thead);
    var body = el('tbody');
    rows.forEach(function (r) { body.appendChild(r); });
    t.appendChild(body);
  }

  // ---- charts (uPlot) ----
  function chart(name, opts, data) {
    var box = document.querySelector('[data-chart="' + name + '"]');
    var points = data[0].length;
    box.setAttribute('data-points', String(points));
    box.hidden = points === 0;
    if (!points) return;
    if (!charts[name]) {
      var o = Object.assign({ width: 580, height: 220, scales: { x: { time: false } }, axes: [{ incrs: INT }, {}], legend: { live: false } }, opts);
      charts[name] = new uPlot(o, data, box.querySelector('.plot'));
    } else charts[name].setData(data);
  }
  // Steps and epochs are whole numbers: no tick at 1.5.
  var INT = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6];
  var C = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
  function line(label, color, extra) { return Object.assign({ label: label, stroke: color, width: 1.5, spanGaps: true }, extra || {}); }
  function band(label, color) { return { label: label, stroke: color, width: 0.5, dash: [3, 3], spanGaps: true }; }
  var dots = function () { return null; };
  function markers(label, color, size) { return { label: label, stroke: color, fill: color, paths: dots, points: { show: true, size: size, fill: color, stroke: color } }; }

  function drawSteps() {
    var s = view.steps;
    chart('steps', { series: [{ label: 'step' }, line('loss (mean)', C[0]), band('min', C[0]), band('max', C[0])] }, [s.loss.x, s.loss.mean, s.loss.min, s.loss.max]);
    chart('step-acc', { series: [{ label: 'step' }, line('train top-1 (batch, mean)', C[2])], axes: [{ incrs: INT }, { values: function (u, v) { return v.map(function (x) { return (100 * x).toFixed(0) + '%'; }); } }] },
      [s.acc1.x, s.acc1.mean]);
    chart('lr', { series: [{ label: 'step' }, line('learning rate', C[3])] }, [s.lr.x, s.lr.mean]);
  }
  function drawEpochs() {
    var e = view.epochs;
    var x = e.map(function (_, i) { return i + 1; });
    var g = function (k, f) { return e.map(function (r) { return f ? f(r[k]) : r[k]; }); };
    var p100 = function (v) { return 100 * v; };
    chart('epoch-loss', { series: [{ label: 'epoch #' }, line('train loss', C[0]), line('test loss', C[1])] }, [x, g('trainLoss'), g('testLoss')]);
    chart('epoch-acc', { series: [{ label: 'epoch #' }, line('train top-1 %', C[0]), line('test top-1 %', C[1]), line('test top-5 %', C[2])] },
      [x, g('trainAcc', p100), g('acc1', p100), g('acc5', p100)]);
    if (!view.steps.lr.x.length) chart('lr', { series: [{ label: 'epoch #' }, line('learning rate (epoch end)', C[3])] }, [x, g('lr')]);
    var rows = e.map(function (r, i) {
      var tr = el('tr');
      cell(tr, i + 1); cell(tr, r.stage, 'stage'); cell(tr, r.epoch, 'epoch', r.epoch); cell(tr, r.lr, 'lr', r.lr);
      cell(tr, r.trainLoss.toFixed(4), 'trainLoss', r.trainLoss); cell(tr, pct(r.trainAcc), 'trainAcc', r.trainAcc);
      cell(tr, r.testLoss.toFixed(4), 'testLoss', r.testLoss); cell(tr, pct(r.acc1), 'acc1', r.acc1); cell(tr, pct(r.acc5), 'acc5', r.acc5);
      cell(tr, rate(r.imgS), 'imgS', r.imgS);
      return tr;
    });
    fillTable('epochs', ['#', 'stage', 'epoch', 'lr', 'train loss', 'train top-1', 'test loss', 'test top-1', 'test top-5', 'img/s'], rows);
  }
  function drawTrajectory() {
    // uPlot wants ascending x: MACs ratios from all three kinds of points, merged.
    var xs = [];
    var add = function (x) { if (xs.indexOf(x) < 0) xs.push(x); };
    view.ticks.forEach(function (t) { add(t.macsRatio); });
    view.tocks.forEach(function (t) { add(t.macsRatio); });
    view.savePoints.forEach(function (t) { add(t.macsRatio); });
    xs.sort(function (a, b) { return a - b; });
    var col = function (list, yOf) {
      var ys = xs.map(function () { return null; });
      list.forEach(function (p) { ys[xs.indexOf(p.macsRatio)] = yOf(p); });
      return ys;
    };
    var accOfTick = {};
    view.ticks.forEach(function (t) { accOfTick[t.tick] = t.acc1; });
    chart('trajectory', {
      series: [{ label: 'MACs ratio' }, line('Tick: test top-1 % after pruning', C[0], { points: { show: true, size: 6 } }), markers('Tock (test top-1 %)', C[3], 9), markers('save point', C[1], 12)],
      axes: [{ label: 'MACs / baseline' }, { label: 'test top-1 %' }],
    }, [xs.map(function (x) { return x; }), col(view.ticks, function (t) { return 100 * t.acc1; }), col(view.tocks, function (t) { return 100 * t.acc1; }),
      col(view.savePoints, function (s) { return accOfTick[s.tick] === undefined ? null : 100 * accOfTick[s.tick]; })]);
    var saved = {};
    view.savePoints.forEach(function (s) { saved[s.tick] = s; });
    var rows = view.ticks.map(function (t) {
      var tr = el('tr', null, { 'data-tick': t.tick });
      cell(tr, t.tick, 'tick', t.tick); cell(tr, pct(t.macsRatio), 'macsRatio', t.macsRatio); cell(tr, pct(t.paramsRatio), 'paramsRatio', t.paramsRatio);
      cell(tr, t.filtersLeft, 'filtersLeft', t.filtersLeft); cell(tr, t.loss.toFixed(4), 'loss', t.loss); cell(tr, pct(t.acc1), 'acc1', t.acc1);
      cell(tr, saved[t.tick] ? 'saved at ' + pct(saved[t.tick].savePoint, 0) : '', 'savePoint', saved[t.tick] ? saved[t.tick].savePoint : '');
      return tr;
    });
    fillTable('ticks', ['Tick', 'MACs', 'params', 'filters left', 'test loss', 'test top-1', ''], rows);
  }
  function drawWidths() {
    var w = view.widths;
    if (!w) return;
    var idx = w.layers.map(function (_, i) { return i; });
    var bars = uPlot.paths.bars;
    chart('widths', {
      series: [{ label: 'layer' },
        { label: 'baseline', fill: 'rgba(31,119,180,0.35)', stroke: C[0], paths: bars({ size: [0.45, 40], align: -1 }), points: { show: false } },
        { label: w.form === 'melted' ? 'now (melted)' : w.form === 'masked' ? 'now (alive, masked)' : 'now', fill: 'rgba(214,39,40,0.55)', stroke: C[1], paths: bars({ size: [0.45, 40], align: 1 }), points: { show: false } }],
      scales: { x: { time: false, range: [-0.5, Math.max(0.5, idx.length - 0.5)] }, y: { range: function (u, min, max) { return [0, max * 1.05]; } } },
      axes: [{ label: 'layer (module order)', incrs: INT, values: function (u, v) { return v.map(function (i) { return Number.isInteger(i) && w.layers[i] ? w.layers[i].path : ''; }); }, rotate: -60, size: 90 }, { label: 'output channels' }],
    }, [idx, w.layers.map(function (l) { return l.baseline; }), w.layers.map(function (l) { return l.current; })]);
    var rows = w.layers.map(function (l) {
      var tr = el('tr', null, { 'data-path': l.path });
      cell(tr, l.path, 'path'); cell(tr, l.baseline, 'baseline', l.baseline); cell(tr, l.current, 'current', l.current);
      cell(tr, l.baseline ? pct(l.current / l.baseline, 0) : '-');
      return tr;
    });
    fillTable('widths-table', ['layer', 'baseline', 'now', 'kept'], rows);
  }
  function drawFinal() {
    var f = view.final;
    $('final-box').hidden = !f;
    if (!f) return;
    var b = f[0];
    var rows = f.map(function (r) {
      var tr = el('tr', null, { 'data-label': r.label });
      cell(tr, r.label, 'label');
      cell(tr, (r.macs / 1e6).toFixed(2) + 'M (' + (100 * r.macs / b.macs).toFixed(1) + '%)', 'macs', r.macs);
      cell(tr, (r.params / 1e3).toFixed(1) + 'k (' + (100 * r.params / b.params).toFixed(1) + '%)', 'params', r.params);
      cell(tr, r.acc1.toFixed(2) + '%', 'acc1', r.acc1); cell(tr, r.acc5.toFixed(2) + '%', 'acc5', r.acc5);
      cell(tr, r.msPerImageB1.toFixed(2), 'msPerImageB1', r.msPerImageB1); cell(tr, r.msPerImageB64.toFixed(2), 'msPerImageB64', r.msPerImageB64);
      return tr;
    });
    fillTable('final', ['model', 'MACs', 'params', 'top-1', 'top-5', 'ms/img b1', 'ms/img b64'], rows);
  }
  function drawWorkers() {
    var rows = view.workers.map(function (w) {
      var tr = el('tr', null, { 'data-id': w.id, class: w.state });
      cell(tr, w.id, 'id'); cell(tr, w.host, 'host'); cell(tr, w.backend, 'backend'); cell(tr, w.gpu === null ? '-' : w.gpu, 'gpu');
      cell(tr, rate(w.imgS), 'imgS', w.imgS === undefined ? '' : w.imgS);
      cell(tr, w.computeShare === undefined ? '-' : pct(w.computeShare, 0) + ' / ' + pct(1 - w.computeShare, 0), 'share');
      cell(tr, heard(w.lastHeard), 'lastHeard', w.lastHeard === undefined ? '' : w.lastHeard);
      var st = cell(tr, w.state === 'lost' ? 'lost at step ' + w.lostStep + ' (' + w.reason + ')' : 'active since step ' + (w.joinedStep + 1), 'state');
      st.className = 'state';
      return tr;
    });
    fillTable('workers', ['worker', 'host', 'backend', 'GPU', 'img/s', 'compute / exchange', boot.live ? 'last heard' : 'last heard (UTC)', 'state'], rows);
    $('log').textContent = view.log.map(function (l) { return new Date(l.t).toISOString().slice(11, 19) + '  ' + l.text; }).join('\n');
  }
  function drawStage() {
    var s = view.stage;
    var box = $('stage');
    if (!s) { box.textContent = boot.live ? 'waiting for the run to start' : ''; return; }
    box.textContent = s.label + ': ' + s.done + '/' + s.total + ' steps' + (s.etaS !== undefined ? ', about ' + dur(s.etaS) + ' left in it' : '');
    $('stage-bar').value = s.total ? s.done / s.total : 0;
  }
  function render() {
    if (!view) return;
    $('task').textContent = view.task ? view.task : '';
    $('stages').textContent = view.stages.length ? 'stages: ' + view.stages.join(', ') : '';
    $('resumed').hidden = view.resumedAt === undefined;
    $('resumed').textContent = view.resumedAt === undefined ? '' : 'resumed at step ' + view.resumedAt +
      ': the per-step curves, the workers and their log start there; the epochs, Ticks and Tocks before it come from the run\'s logs';
    $('live-box').hidden = !boot.live && !view.workers.length;
    drawWorkers(); drawStage(); drawSteps(); drawEpochs(); drawTrajectory(); drawWidths(); drawFinal();
    document.body.setAttribute('data-rendered', String((Number(document.body.getAttribute('data-rendered')) || 0) + 1));
  }

  // ---- live updates ----
  // run_history.ts's applyDelta itself (its source), the rule the server-side tests check.
  ${applyDelta.toString()}
  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; render(); });
  }
  function connect() {
    var token = new URLSearchParams(location.search).get('token');
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/events' + (token ? '?token=' + encodeURIComponent(token) : '');
    var ws = new WebSocket(url);
    ws.onopen = function () { $('conn').textContent = 'live'; $('conn').className = 'live'; };
    ws.onmessage = function (m) {
      var msg = JSON.parse(m.data);
      if (msg.kind === 'view') view = msg.view;
      else if (msg.kind === 'delta' && view) applyDelta(view, msg.delta);
      schedule();
    };
    ws.onclose = function () { $('conn').textContent = 'disconnected (retrying)'; $('conn').className = 'down'; setTimeout(connect, 2000); };
  }
  // Tests compare what the page holds with the server's history.
  window.gdpView = function () { return view; };
  if (boot.live) connect();
  else { $('conn').textContent = 'report'; render(); }
  setInterval(function () { if (view && boot.live) drawWorkers(); }, 1000);
})();
`;
