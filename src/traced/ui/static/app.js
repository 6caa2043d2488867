/* traced ui: the sessions list, one session's waterfall, usage. Plain DOM and SVG, no library.
 * Everything that comes from a trace is put into the page as text (textContent / text nodes),
 * never as markup. The same file runs in the static export (data-static="1"), where the session
 * is read from the embedded JSON block instead of the API. */
(function () {
  'use strict';
  var body = document.body;
  var PAGE = body.dataset.page;
  var STATIC = body.dataset.static === '1';
  var app = document.getElementById('app');
  var ROW_H = 22;
  var OVERSCAN = 15;

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        var v = attrs[k];
        if (v == null) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v);
      }
    }
    for (var i = 2; i < arguments.length; i++) {
      var kid = arguments[i];
      if (kid == null) continue;
      e.append(kid);
    }
    return e;
  }
  var SVG = 'http' + '://www.w3.org/2000/svg';  // a namespace name, not a resource
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmtMs(ms) {
    if (ms == null) return '';
    if (ms < 1000) return (Math.round(ms * 10) / 10) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(2) + ' s';
    var s = Math.round(ms / 1000);
    return Math.floor(s / 60) + 'm ' + String(s % 60).padStart(2, '0') + 's';
  }
  function fmtS(s) { return s == null ? '-' : fmtMs(s * 1000); }
  function fmtInt(n) { return n == null ? '-' : Number(n).toLocaleString('en-US'); }
  function fmtWhen(iso) {
    if (!iso) return '-';
    var d = new Date(iso);
    if (isNaN(d)) return iso;
    var p = function (n) { return String(n).padStart(2, '0'); };
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' + p(d.getHours()) + ':' +
      p(d.getMinutes()) + ':' + p(d.getSeconds());
  }
  function outcomeOf(s) { return s.running ? 'running' : (s.outcome || '?'); }
  function badge(outcome) { return el('span', {class: 'badge o-' + outcome.replace(/[^a-z]/g, ''), text: outcome}); }
  function debounce(fn, ms) {
    var t = null;
    return function () { clearTimeout(t); t = setTimeout(fn, ms); };
  }
  function throttle(fn, ms) {
    // at most one call per `ms`, and never starved by a steady stream of triggers (a debounce would be)
    var pending = false;
    return function () {
      if (pending) return;
      pending = true;
      setTimeout(function () { pending = false; fn(); }, ms);
    };
  }
  function getJSON(url) {
    return fetch(url, {credentials: 'same-origin'}).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) throw new Error(data && data.error ? data.error : ('HTTP ' + r.status));
        return data;
      });
    });
  }
  var liveEl = el('span', {class: 'live', id: 'live', text: STATIC ? 'static export' : 'connecting…'});
  function nav() {
    var links = STATIC ? [] : [
      el('a', {href: '/', class: PAGE === 'sessions' ? 'on' : '', text: 'Sessions'}),
      el('a', {href: '/usage', class: PAGE === 'usage' ? 'on' : '', text: 'Usage'})];
    return el('header', {class: 'top'}, el('span', {class: 'brand', text: 'traced'}), ...links, liveEl);
  }
  function live(onChange) {
    if (STATIC || !window.EventSource) return;
    var source = new EventSource('/api/events');
    function mode(live) {
      liveEl.textContent = 'live (' + (live === 'daemon' ? 'daemon' : 'files') + ')';
      liveEl.className = 'live on';
    }
    source.addEventListener('hello', function (ev) {
      mode(JSON.parse(ev.data).live);
      onChange({resync: true});
    });
    source.addEventListener('change', function (ev) {
      var d = JSON.parse(ev.data);
      if (d.live) mode(d.live);  // the feed switched (the daemon came or went)
      onChange(d);
    });
    source.onerror = function () { liveEl.textContent = 'reconnecting…'; liveEl.className = 'live'; };
  }
  function fill(node) {  // replaceChildren, skipping null/undefined (replaceChildren would print "null")
    var kids = [];
    for (var i = 1; i < arguments.length; i++) if (arguments[i] != null) kids.push(arguments[i]);
    node.replaceChildren.apply(node, kids);
  }
  function failure(where, err) {
    where.replaceChildren(el('p', {class: 'error', text: String(err && err.message ? err.message : err)}));
  }

  // ------------------------------------------------------------------ sessions page
  var COLUMNS = [
    ['started_at', 'Started'], ['skill', 'Skill'], ['session_id', 'ID'], ['steps', 'Steps'], ['turns', 'Turns'],
    ['duration_s', 'Duration'], ['outcome', 'Outcome'], ['tool_calls', 'Tools'], ['errors', 'Errors'],
    ['tokens', 'Tokens in/out'], ['cost_usd', 'Cost']];

  function sessionsPage() {
    var PAGE_ROWS = 500;  // a table of 10,000 rows freezes a tab: show the first ones, and more on demand
    var st = {rows: [], key: 'started_at', dir: -1, q: '', last: null, limit: PAGE_ROWS};
    var more = el('button', {type: 'button', id: 'more', class: 'more', onclick: function () {
      st.limit += PAGE_ROWS; draw();
    }});
    var skill = el('select', {id: 'f-skill'}, el('option', {value: '', text: 'all skills'}));
    var outcome = el('select', {id: 'f-outcome'},
      ...['', 'running', 'success', 'failure', 'aborted'].map(function (o) {
        return el('option', {value: o, text: o || 'all outcomes'});
      }));
    var from = el('input', {type: 'date', id: 'f-from', title: 'started on or after'});
    var to = el('input', {type: 'date', id: 'f-to', title: 'started on or before'});
    var q = el('input', {type: 'search', id: 'f-q', placeholder: 'search prompts, summaries, tool names'});
    var count = el('span', {class: 'count', id: 'count'});
    var table = el('table', {class: 'sessions', id: 'sessions'});
    app.replaceChildren(nav(), el('main', null,
      el('div', {class: 'filters'}, skill, outcome, from, to, q, count), table, more));

    function load() {
      var url = '/api/sessions' + (st.q ? '?q=' + encodeURIComponent(st.q) : '');
      return getJSON(url).then(function (d) {
        var text = JSON.stringify(d.sessions);
        if (text === st.last) return;
        st.last = text;
        st.rows = d.sessions;
        var skills = Array.from(new Set(d.sessions.map(function (s) { return s.skill; }))).sort();
        var chosen = skill.value;
        skill.replaceChildren(el('option', {value: '', text: 'all skills'}),
          ...skills.map(function (s) { return el('option', {value: s, text: s}); }));
        skill.value = skills.indexOf(chosen) >= 0 ? chosen : '';
        draw();
      }).catch(function (e) { failure(table, e); });
    }
    function value(s, key) {
      if (key === 'outcome') return outcomeOf(s);
      if (key === 'tokens') return s.usage ? s.usage.input_tokens + s.usage.output_tokens : -1;
      var v = s[key];
      return v == null ? -Infinity : v;
    }
    function draw() {
      var rows = st.rows.filter(function (s) {
        if (skill.value && s.skill !== skill.value) return false;
        if (outcome.value && outcomeOf(s) !== outcome.value) return false;
        var day = s.started_at ? fmtWhen(s.started_at).slice(0, 10) : (s.date || '');  // local, like the inputs
        if (from.value && day < from.value) return false;
        if (to.value && day > to.value) return false;
        return true;
      });
      rows.sort(function (a, b) {
        var x = value(a, st.key), y = value(b, st.key);
        return (x < y ? -1 : x > y ? 1 : 0) * st.dir;
      });
      var maxCost = Math.max.apply(null, rows.map(function (s) { return s.cost_usd || 0; }).concat([0]));
      var maxDur = Math.max.apply(null, rows.map(function (s) { return s.duration_s || 0; }).concat([0]));
      var head = el('tr', null, ...COLUMNS.map(function (c) {
        var mark = st.key === c[0] ? (st.dir > 0 ? ' ▲' : ' ▼') : '';
        return el('th', {'data-key': c[0], text: c[1] + mark, onclick: function () {
          st.dir = st.key === c[0] ? -st.dir : -1; st.key = c[0]; draw();
        }});
      }));
      var body = el('tbody');
      var shown = rows.slice(0, st.limit);
      more.hidden = shown.length === rows.length;
      more.textContent = 'show ' + Math.min(PAGE_ROWS, rows.length - shown.length) + ' more of ' +
        (rows.length - shown.length);
      shown.forEach(function (s) {
        var oc = outcomeOf(s);
        var u = s.usage;
        body.append(el('tr', {'data-session': s.session_id, class: s.running ? 'running' : ''},
          el('td', {text: fmtWhen(s.started_at)}),
          el('td', {text: s.skill}),
          el('td', {class: 'id'}, el('a', {href: '/session/' + encodeURIComponent(s.session_id), text: s.session_id})),
          el('td', {class: 'n', text: s.steps == null ? '-' : String(s.steps)}),
          el('td', {class: 'n', text: s.turns ? String(s.turns) : '-'}),
          el('td', {class: 'n'}, spark(s.duration_s, maxDur), s.running ? '-' : fmtS(s.duration_s)),
          el('td', null, badge(oc)),
          el('td', {class: 'n', text: String(s.tool_calls)}),
          el('td', {class: 'n' + (s.errors ? ' bad' : ''), text: String(s.errors)}),
          el('td', {class: 'n', text: u && u.llm_calls ? fmtInt(u.input_tokens) + '/' + fmtInt(u.output_tokens) : '-'}),
          el('td', {class: 'n'}, spark(s.cost_usd, maxCost), s.cost)));
      });
      table.replaceChildren(el('thead', null, head), body);
      count.textContent = rows.length + ' of ' + st.rows.length + ' sessions';
    }
    function spark(v, max) {
      var s = el('span', {class: 'spark'});
      s.style.width = (max > 0 && v ? Math.max(1, Math.round(40 * v / max)) : 0) + 'px';
      return s;
    }
    [skill, outcome, from, to].forEach(function (c) { c.addEventListener('change', draw); });
    q.addEventListener('input', debounce(function () { st.q = q.value.trim(); load(); }, 250));
    load();
    live(throttle(load, 500));
  }

  // ------------------------------------------------------------------ session page
  function sessionPage() {
    var sid = body.dataset.session;
    var data = null;
    var records = null;
    var zoom = null;  // [t0, t1] seconds, or null: the whole session
    var lastText = null;
    var header = el('section', {class: 'summary', id: 'summary'});
    var axis = el('div', {class: 'axis', id: 'axis'});
    var inner = el('div', {class: 'wf-inner'});
    var wf = el('div', {class: 'wf', id: 'waterfall'}, inner);
    var detail = el('aside', {class: 'detail', id: 'detail'},
      el('p', {class: 'hint', text: 'Click a bar to see its full payload.'}));
    var legend = el('div', {class: 'legend'}, ...['tool', 'skill', 'mcp', 'hook', 'llm', 'failed', 'pending'].map(
      function (k) { return el('span', {class: 'key k-' + k, text: k}); }),
      el('button', {id: 'zoom-reset', type: 'button', text: 'whole session', onclick: function () { zoom = null; draw(); }}));
    app.replaceChildren(nav(), el('main', {class: 'session'}, header, legend,
      el('div', {class: 'split'}, el('div', {class: 'wf-box'}, axis, wf), detail)));

    function load() {
      if (STATIC) {
        var blob = JSON.parse(document.getElementById('traced-data').textContent);
        records = blob.records;
        data = blob.view;
        draw();
        return Promise.resolve();
      }
      return fetch('/api/session/' + encodeURIComponent(sid), {credentials: 'same-origin'}).then(function (r) {
        return r.text().then(function (text) {
          if (!r.ok) throw new Error(JSON.parse(text).error || ('HTTP ' + r.status));
          if (text === lastText) return;  // nothing new: keep the DOM (and what the reader points at)
          lastText = text;
          data = JSON.parse(text);
          draw();
        });
      }).catch(function (e) { failure(header, e); });
    }
    function summary() {
      var s = data.session, t = data.totals, oc = outcomeOf(s);
      var dur = s.running ? 'running' : fmtS(s.duration_s);
      var outcomeBadge = badge(oc);
      outcomeBadge.id = 'outcome';
      fill(header,
        el('h1', null, el('span', {id: 'sid', text: s.session_id}), ' ', outcomeBadge),
        el('div', {class: 'facts'},
          fact('skill', s.skill), fact('started', fmtWhen(s.started_at)), fact('duration', dur, 'duration'),
          fact('steps', String(t.records), 'steps'), fact('tool calls', String(t.tool_calls), 'tool-calls'),
          fact('errors', String(t.errors), 'errors'), fact('LLM calls', String(t.llm_calls)),
          fact('tokens in/out', fmtInt(t.input_tokens) + ' / ' + fmtInt(t.output_tokens)),
          fact('cost', t.cost, 'total-cost')),
        s.summary ? el('p', {class: 'sum', text: s.summary}) : null,
        ...data.problems.map(function (p) { return el('p', {class: 'warn', text: p}); }));
    }
    function fact(label, value, id) {
      return el('span', {class: 'fact'}, el('small', {text: label}), el('b', {id: id ? 'f-' + id : null, text: value}));
    }
    function range() {
      if (zoom) return zoom;
      return [0, Math.max(data.span, 0.001)];
    }
    function draw() {
      summary();
      var r = range();
      var step = niceStep((r[1] - r[0]) / 6);
      var ticks = [];
      for (var t = Math.ceil(r[0] / step) * step; t <= r[1] + 1e-9; t += step) ticks.push(t);
      axis.replaceChildren(el('div', {class: 'label', text: zoom ? 'zoomed: ' + fmtS(r[0]) + ' – ' + fmtS(r[1]) : 'time since start'}),
        el('div', {class: 'track'}, ...ticks.map(function (t) {
          var tick = el('span', {class: pct(t) < 3 ? 'tick first' : 'tick', text: '+' + fmtTick(t, step)});
          tick.style.left = pct(t) + '%';
          return tick;
        })), el('div', {class: 'dur', text: 'duration'}));
      inner.style.height = (data.rows.length * ROW_H) + 'px';
      paint();
    }
    function niceStep(raw) {
      var p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-6))));
      var m = raw / p;
      return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
    }
    function fmtTick(t, step) {
      if (step < 1) return Math.round(t * 1000) + ' ms';
      if (step < 60) return (Math.round(t * 10) / 10) + ' s';
      return Math.floor(t / 60) + 'm' + String(Math.round(t % 60)).padStart(2, '0');
    }
    function pct(t) {
      var r = range();
      return 100 * (t - r[0]) / (r[1] - r[0]);
    }
    function paint() {
      if (!data) return;
      var first = Math.max(0, Math.floor(wf.scrollTop / ROW_H) - OVERSCAN);
      var last = Math.min(data.rows.length, Math.ceil((wf.scrollTop + wf.clientHeight) / ROW_H) + OVERSCAN);
      var kids = [];
      for (var i = first; i < last; i++) kids.push(rowEl(data.rows[i], i));
      inner.replaceChildren(...kids);
    }
    function rowEl(r, i) {
      var row = el('div', {class: 'row r-' + r.k, 'data-kind': r.k, 'data-pos': r.pos == null ? null : String(r.pos),
        'data-index': String(i)});
      row.style.top = (i * ROW_H) + 'px';
      var label = el('div', {class: 'label'});
      label.style.paddingLeft = (6 + 16 * (r.depth || 0)) + 'px';
      var track = el('div', {class: 'track'});
      var dur = el('div', {class: 'dur'});
      if (r.k === 'lane') {
        label.append(el('b', {text: r.label}));
        label.title = 'zoom to this turn';
        label.addEventListener('click', function () { zoomTo(i); });
        r.markers.forEach(function (m) {
          var mk = el('span', {class: 'marker m-' + m.phase + (m.ok === false ? ' fail' : ''),
            'data-pos': String(m.pos), title: m.phase + ' · step ' + m.step + (m.label ? ': ' + m.label : '')});
          mk.style.left = pct(m.t) + '%';
          mk.addEventListener('click', function (ev) { ev.stopPropagation(); show(m.pos); });
          track.append(mk);
        });
      } else {
        var cls = 'bar k-' + r.kind + (r.ok === false ? ' fail' : '') + (r.open ? ' open' : '');
        var bar = el('div', {class: cls});
        var left = pct(r.t), width = pct(r.t + r.d) - left;
        bar.style.left = left + '%';
        bar.style.width = Math.max(width, 0) + '%';
        track.append(bar);
        if (r.agent) label.append(el('span', {class: 'agent', text: r.agent}));
        label.append(el('span', {class: 'name', text: r.name}));
        if (r.k === 'tool') {
          if (r.server) label.append(el('span', {class: 'muted', text: ' @' + r.server}));
          if (r.label) label.append(el('span', {class: 'muted', text: ' ' + r.label}));
          dur.textContent = r.open ? 'pending' : fmtMs(r.ms);
          bar.title = r.name + ' · ' + dur.textContent + (r.error ? ' · ' + r.error : '');
        } else if (r.k === 'llm') {
          var info = fmtInt(r.in) + ' in / ' + fmtInt(r.out) + ' out · ' + r.cost;
          label.append(el('span', {class: 'muted', text: ' ' + info}));
          dur.textContent = r.ms == null ? '' : fmtMs(r.ms);
          bar.title = r.name + ' · ' + info;
        } else {
          dur.textContent = fmtMs(r.ms);
          bar.title = r.name;
        }
        row.addEventListener('click', function () { show(r.pos); });
        row.tabIndex = 0;  // reachable by keyboard: Tab to a row, Enter shows it
        row.setAttribute('role', 'button');
        row.addEventListener('keydown', function (ev) {
          if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); show(r.pos); }
        });
      }
      row.append(label, track, dur);
      return row;
    }
    function zoomTo(i) {
      var lane = data.rows[i], end = data.span;
      for (var j = i + 1; j < data.rows.length; j++) if (data.rows[j].k === 'lane') { end = data.rows[j].t; break; }
      var t1 = lane.t;
      for (var k = i + 1; k < data.rows.length && data.rows[k].k !== 'lane'; k++) {
        t1 = Math.max(t1, data.rows[k].t + data.rows[k].d);
      }
      end = Math.max(end, t1);
      zoom = [lane.t, Math.max(end, lane.t + 0.001)];
      draw();
    }
    var CAP = 100000;
    function textBlock(title, value) {
      var text = JSON.stringify(value, null, 2);
      var pre = el('pre', {text: text.length > CAP ? text.slice(0, CAP) : text});
      var box = el('div', {class: 'payload'}, el('h3', {text: title}), pre);
      if (text.length > CAP) {
        box.append(el('button', {type: 'button', text: 'show all ' + fmtInt(text.length) + ' characters',
          onclick: function (ev) { pre.textContent = text; ev.target.remove(); }}));
      }
      return box;
    }
    function show(pos) {
      if (pos == null) return;
      detail.replaceChildren(el('p', {class: 'hint', text: 'loading step…'}));
      var got = STATIC ? Promise.resolve(pairOf(pos)) : getJSON('/api/session/' + encodeURIComponent(sid) + '/record/' + pos);
      got.then(function (d) {
        var rec = d.record;
        fill(detail, el('h2', {text: 'step ' + rec.step + ' · ' + rec.phase}),
          textBlock(rec.phase, rec), d.paired ? textBlock(d.paired.phase + ' (paired)', d.paired) : null);
      }).catch(function (e) { failure(detail, e); });
    }
    function pairOf(pos) {
      var out = {record: records[pos - 1]};
      var row = data.rows.find(function (r) { return r.pos === pos || r.rpos === pos; });
      if (row && row.k === 'tool' && row.rpos != null && row.rpos !== row.pos) {
        out.paired = records[(row.pos === pos ? row.rpos : row.pos) - 1];
      }
      return out;
    }
    var queued = false;
    wf.addEventListener('scroll', function () {
      if (queued) return;
      queued = true;
      requestAnimationFrame(function () { queued = false; paint(); });
    });
    window.addEventListener('resize', debounce(paint, 100));
    load();
    var reload = throttle(load, 250);
    live(function (notice) {
      // a notice for this session (or a resync) re-reads it; others are not ours. The scroll position stays.
      var mine = data ? data.session.session_id : sid;
      if (notice.resync || notice.session_id === mine || !data) reload();
    });
  }

  // ------------------------------------------------------------------ usage page
  var PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7',
    '#9c755f', '#bab0ac'];

  function usagePage() {
    var since = el('select', {id: 'u-since'}, ...['today', '7d', '30d', '90d'].map(function (w) {
      return el('option', {value: w, text: w === 'today' ? 'today' : 'last ' + w});
    }));
    since.value = '7d';
    var stack = el('select', {id: 'u-stack'}, el('option', {value: 'model', text: 'by model'}),
      el('option', {value: 'skill', text: 'by skill'}));
    var metric = el('select', {id: 'u-metric'}, el('option', {value: 'cost', text: 'cost (USD)'}),
      el('option', {value: 'tokens', text: 'tokens'}));
    var total = el('p', {class: 'total', id: 'usage-total'});
    var chart = el('div', {class: 'chart', id: 'chart'});
    var table = el('table', {class: 'usage', id: 'usage-table'});
    var top = el('ol', {class: 'top', id: 'top'});
    var tools = el('table', {class: 'usage', id: 'tools-table'});
    var current = null;
    app.replaceChildren(nav(), el('main', null, el('div', {class: 'filters'}, since, stack, metric), total, chart,
      el('h2', {text: 'Totals'}), table, el('h2', {text: 'Most expensive sessions'}), top,
      el('h2', {text: 'Tools'}), tools));

    var lastText = null;
    function load() {
      getJSON('/api/usage?since=' + encodeURIComponent(since.value) + '&stack=' + stack.value).then(function (d) {
        var text = JSON.stringify(d);
        if (text === lastText) return;  // a live notice that changed nothing here
        lastText = text;
        current = d; draw();
      }).catch(function (e) { failure(chart, e); });
    }
    function draw() {
      var d = current, t = d.report.total;
      total.replaceChildren('Total ', el('b', {id: 'total-cost', text: t.cost}), ' over ' + t.sessions + ' sessions, ' +
        fmtInt(t.llm_calls) + ' LLM calls, ' + fmtInt(t.input_tokens) + ' tokens in / ' + fmtInt(t.output_tokens) + ' out' +
        (t.unknown_cost_calls ? ' (' + t.unknown_cost_calls + ' calls of unknown cost)' : ''));
      var keys = d.report.rows.filter(function (r) { return r.llm_calls; }).map(function (r) { return r.key; });
      var colour = {};
      keys.forEach(function (k, i) { colour[k] = PALETTE[i % PALETTE.length]; });
      drawChart(d.days, keys, colour);
      table.replaceChildren(el('thead', null, el('tr', null, ...['', stack.value, 'sessions', 'LLM calls', 'tokens in',
        'tokens out', 'cache read', 'cost'].map(function (h) { return el('th', {text: h}); }))),
        el('tbody', null, ...d.report.rows.concat([t]).map(function (r) {
          var sw = el('span', {class: 'swatch'});
          if (colour[r.key]) sw.style.background = colour[r.key];
          return el('tr', {class: r === t ? 'total' : '', 'data-key': r.key}, el('td', null, r === t ? null : sw),
            el('td', {text: r.key}), el('td', {class: 'n', text: String(r.sessions)}),
            el('td', {class: 'n', text: fmtInt(r.llm_calls)}), el('td', {class: 'n', text: fmtInt(r.input_tokens)}),
            el('td', {class: 'n', text: fmtInt(r.output_tokens)}), el('td', {class: 'n', text: fmtInt(r.cache_read_tokens)}),
            el('td', {class: 'n' + (r.cost_usd == null && r.llm_calls ? ' unknown' : ''), text: r.cost}));
        })));
      top.replaceChildren(...d.top.map(function (s) {
        return el('li', {'data-session': s.session_id},
          el('a', {href: '/session/' + encodeURIComponent(s.session_id), text: s.session_id}),
          ' ' + s.skill + ' · ', el('b', {text: s.cost}), ' · ' + fmtInt(s.input_tokens) + ' in / ' +
          fmtInt(s.output_tokens) + ' out');
      }));
      if (!d.top.length) top.append(el('li', {class: 'hint', text: 'no LLM calls in this window'}));
      var tr = d.tools;
      tools.replaceChildren(el('thead', null, el('tr', null, ...['tool', 'sessions', 'calls', 'errors', 'unanswered',
        'p50', 'p95', 'total time'].map(function (h) { return el('th', {text: h}); }))),
        el('tbody', null, ...tr.rows.concat([tr.total]).map(function (r) {
          return el('tr', {class: r === tr.total ? 'total' : '', 'data-key': r.key}, el('td', {text: r.key}),
            el('td', {class: 'n', text: String(r.sessions)}), el('td', {class: 'n', text: fmtInt(r.calls)}),
            el('td', {class: 'n' + (r.errors ? ' bad' : ''), text: fmtInt(r.errors)}),
            el('td', {class: 'n', text: fmtInt(r.unanswered)}), el('td', {class: 'n', text: fmtMs(r.p50_ms)}),
            el('td', {class: 'n', text: fmtMs(r.p95_ms)}), el('td', {class: 'n', text: fmtMs(r.total_ms)}));
        })));
    }
    function drawChart(days, keys, colour) {
      var isCost = metric.value === 'cost';
      var val = function (r) { return isCost ? (r.cost_usd || 0) : r.input_tokens + r.output_tokens; };
      var max = Math.max.apply(null, days.map(function (day) {
        return day.rows.reduce(function (a, r) { return a + val(r); }, 0);
      }).concat([0]));
      var W = 760, H = 220, padL = 64, padB = 34, padT = 18;
      var bw = Math.max(4, Math.min(48, (W - padL) / Math.max(days.length, 1) - 6));
      var s = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, class: 'bars', role: 'img'});
      var scale = max > 0 ? (H - padB - padT) / max : 0;
      for (var g = 0; g <= 4; g++) {
        var y = H - padB - (H - padB - padT) * g / 4;
        s.append(svg('line', {x1: padL, x2: W, y1: y, y2: y, class: 'grid'}));
        var lab = svg('text', {x: padL - 6, y: y + 4, 'text-anchor': 'end', class: 'axis-label'});
        lab.textContent = isCost ? '$' + (max * g / 4).toFixed(max < 1 ? 4 : 2) : fmtInt(Math.round(max * g / 4));
        s.append(lab);
      }
      days.forEach(function (day, i) {
        var x = padL + 3 + i * ((W - padL) / days.length);
        var y = H - padB;
        day.rows.forEach(function (r) {
          var h = val(r) * scale;
          var rect = svg('rect', {x: x, y: y - h, width: bw, height: Math.max(h, 0), fill: colour[r.key] || '#999',
            class: 'seg', 'data-day': day.day, 'data-key': r.key});
          var tip = svg('title');
          tip.textContent = day.day + ' · ' + r.key + ' · ' + (isCost ? r.cost : fmtInt(val(r)) + ' tokens');
          rect.append(tip);
          s.append(rect);
          y -= h;
        });
        if (isCost && day.total.unknown_cost_calls) {
          var q = svg('text', {x: x + bw / 2, y: y - 3, 'text-anchor': 'middle', class: 'unknown-mark'});
          q.textContent = '?';
          var qt = svg('title');
          qt.textContent = day.total.unknown_cost_calls + ' calls of unknown cost not in the bar';
          q.append(qt);
          s.append(q);
        }
        if (days.length <= 31 && (days.length <= 10 || i % Math.ceil(days.length / 10) === 0)) {
          var dl = svg('text', {x: x + bw / 2, y: H - padB + 16, 'text-anchor': 'middle', class: 'axis-label'});
          dl.textContent = day.day.slice(5);
          s.append(dl);
        }
      });
      chart.replaceChildren(s, el('div', {class: 'legend'}, ...keys.map(function (k) {
        var sw = el('span', {class: 'swatch'});
        sw.style.background = colour[k];
        return el('span', {class: 'lk'}, sw, k);
      })));
    }
    since.addEventListener('change', load);
    stack.addEventListener('change', load);
    metric.addEventListener('change', function () { if (current) draw(); });
    load();
    live(throttle(load, 1000));
  }

  if (PAGE === 'session') sessionPage();
  else if (PAGE === 'usage') usagePage();
  else sessionsPage();
})();
