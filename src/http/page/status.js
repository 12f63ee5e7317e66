// dustgate status page: fetches the gateway's JSON API every few seconds and renders it.
// Text from the gateway (device ids, alert messages) is set as textContent, never as HTML.
'use strict';
(function () {
  const T = {
    en: {
      gw_time: 'gateway time', updated: 'updated', alerts: 'Open alerts', readings: 'Latest values',
      devices: 'Devices', compliance: 'Six 100% today', actuators: 'Dust suppression', gateway: 'Gateway',
      device: 'Device', metric: 'Metric', value: 'Value', limit: 'Limit in force', time: 'Time', bus: 'Bus',
      state: 'State', last: 'Last reading', polls: 'Polls', errors: 'Errors', item: 'Item', percent: 'Percent',
      checked: 'Checked', violations: 'Violations', actuator: 'Actuator', mode: 'Mode',
      queue: 'Store depth', lag: 'Uplink lag', written: 'Written points', dropped: 'Dropped points',
      dead_letter: 'Dead-letter points', brokers: 'MQTT brokers', version: 'Version',
      not_configured: 'Not configured ([compliance] in site.toml).', no_alerts: 'No open alerts.',
      no_actuators: 'No actuators configured.', no_readings: 'No readings yet.', no_devices: 'No devices.',
      up: 'up', down: 'down', unknown: 'unknown', on: 'on', off: 'off', pushed: 'MQTT',
      auto: 'auto', manual: 'manual', guard: 'guard', 'link-lost': 'link lost', stopping: 'stopping',
      info: 'info', warning: 'warning', critical: 'critical',
      above: 'limit', below: 'minimum', outside: 'range', since: 'since', points: 'points', connected: 'connected',
      each: 'each reading', mean: 'mean', leq: 'Leq', max: 'max', min_: 'min', h_: 'h',
      c_devices: 'Devices up', c_alerts: 'Open alerts', c_queue: 'Store depth', c_lag: 'Uplink lag',
      err: 'The gateway is not answering ({0}); showing the last data received.',
      dest_missing: 'InfluxDB destination missing since {0}: nothing is written, points are held in the store ({1}). Create the database or bucket (InfluxDB 1.x: or set create_database = true). Server said: {2}',
      enclosure: 'Enclosure', cover: 'Cover', wash: 'Vehicle wash', hardening: 'Road hardening',
      wet_work: 'Wet work', sealed_transport: 'Sealed transport',
      stations: 'HJ 212 stations', listener: 'Listener', site: 'Site', drift: 'Clock drift',
      frames: 'Frames', rejected: 'Refused', idle: 'not connected', no_stations: 'No station has sent yet.',
      platforms: 'HJ 212 platforms (reporting)', platform: 'Platform', last_ack: 'Last answer',
      backlog: 'Backlog (frames)', oldest: 'Oldest waiting', resent: 'Resent', expired: 'Expired',
      delivered: 'Delivered', stray: 'Stray answers', address: 'Address',
      m_pm25: 'PM2.5', m_pm10: 'PM10', m_tsp: 'TSP', m_noise: 'Noise', m_wind_speed: 'Wind',
      lv_ok: 'under the limit', lv_near: 'near the limit', lv_over: 'over the limit', lv_none: 'no limit',
      no_data: 'no data', offline: 'offline', force: 'force', wind_word: 'wind',
      wind_to: 'arrow: where the wind blows to', equipment: 'Equipment', until: 'until', board: 'Gate board',
      charts: 'Last 24 hours (per-minute means)', no_history: 'No history yet (kept in memory since the gateway started).',
      chart_legend: 'Line: per-minute mean · dashed red: limit in force · ▼ alert opened (red: still open, amber: closed)'
    },
    zh: {
      gw_time: '网关时间', updated: '更新于', alerts: '当前告警', readings: '最新数据',
      devices: '设备', compliance: '今日六个百分百', actuators: '降尘设备', gateway: '网关',
      device: '设备', metric: '指标', value: '数值', limit: '执行限值', time: '时间', bus: '总线',
      state: '状态', last: '最后数据', polls: '轮询', errors: '错误', item: '项目', percent: '达标率',
      checked: '检查数', violations: '违规', actuator: '设备', mode: '模式',
      queue: '缓存数据', lag: '上传延迟', written: '已写入', dropped: '已丢弃',
      dead_letter: '被拒数据', brokers: 'MQTT 服务器', version: '版本',
      not_configured: '未配置（site.toml 中的 [compliance]）。', no_alerts: '当前无告警。',
      no_actuators: '未配置联动设备。', no_readings: '暂无数据。', no_devices: '无设备。',
      up: '在线', down: '离线', unknown: '未知', on: '开', off: '关', pushed: 'MQTT',
      auto: '自动', manual: '手动', guard: '保护停机', 'link-lost': '通信中断', stopping: '停止中',
      info: '提示', warning: '警告', critical: '严重',
      above: '限值', below: '下限', outside: '范围', since: '自', points: '条', connected: '已连接',
      each: '实测值', mean: '均值', leq: '等效声级', max: '最大值', min_: '分钟', h_: '小时',
      c_devices: '在线设备', c_alerts: '当前告警', c_queue: '缓存数据', c_lag: '上传延迟',
      err: '网关无响应（{0}），显示的是最后收到的数据。',
      dest_missing: 'InfluxDB 数据库不存在（自 {0}）：数据未写入，暂存在本地（{1}）。请创建数据库或 bucket（InfluxDB 1.x 也可设置 create_database = true）。服务器回复：{2}',
      enclosure: '围挡', cover: '覆盖', wash: '冲洗', hardening: '路面硬化',
      wet_work: '湿法作业', sealed_transport: '密闭运输',
      stations: 'HJ 212 监测站', listener: '监听', site: '工地', drift: '时钟偏差',
      frames: '数据包', rejected: '拒收', idle: '未连接', no_stations: '尚无监测站上报。',
      platforms: 'HJ 212 上报平台', platform: '平台', last_ack: '最后应答',
      backlog: '待补传（包）', oldest: '最早待传', resent: '重发', expired: '过期',
      delivered: '已送达', stray: '无效应答', address: '地址',
      m_pm25: 'PM2.5', m_pm10: 'PM10', m_tsp: 'TSP', m_noise: '噪声', m_wind_speed: '风速',
      lv_ok: '达标', lv_near: '接近限值', lv_over: '超标', lv_none: '无限值',
      no_data: '无数据', offline: '离线', force: '级', wind_word: '',
      wind_to: '箭头指向风的去向', equipment: '降尘设备', until: '至', board: '公示牌',
      charts: '近 24 小时（每分钟均值）', no_history: '暂无历史数据（网关启动后在内存中保存）。',
      chart_legend: '实线：每分钟均值 · 红色虚线：执行限值 · ▼ 告警开始（红色：未解除，黄色：已解除）'
    }
  };
  const params = new URLSearchParams(location.search);
  const every = Math.max(1, Number(params.get('refresh')) || 5) * 1000;
  let lang = pick(params.get('lang')) || pick(stored()) || pick((navigator.languages || [])[0] || navigator.language) || 'en';
  let data = null;
  let historyAt = -Infinity;

  function pick(l) { return !l ? null : (/^zh/i.test(l) ? 'zh' : (/^en/i.test(l) ? 'en' : null)); }
  function stored() { try { return localStorage.getItem('dustgate.lang'); } catch (e) { return null; } }
  function t(k) { return T[lang][k] !== undefined ? T[lang][k] : k; }
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text, attrs) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
    return e;
  }
  function row(attrs, cells, cls) {
    const tr = el('tr', cls, null, attrs);
    for (const c of cells) tr.appendChild(c instanceof Node ? c : el('td', null, c));
    return tr;
  }
  function td(child, cls) { const d = el('td', cls); d.appendChild(child); return d; }
  function fill(id, rows, empty, cols) {
    const body = $(id);
    body.replaceChildren(...rows);
    if (!rows.length) body.appendChild(row({}, [el('td', 'muted', t(empty), { colspan: cols })]));
  }
  function num(v) { return v === null || v === undefined ? '—' : String(Math.round(v * 100) / 100); }
  // Times come as RFC 3339 in the site's offset: the clock time, and the date when not today.
  function when(s) {
    if (!s) return '—';
    const today = data && data.status.time ? data.status.time.slice(0, 10) : '';
    return (s.slice(0, 10) === today ? '' : s.slice(5, 10) + ' ') + s.slice(11, 19);
  }
  function dur(s) { return s % 3600 === 0 ? (s / 3600) + t('h_') : Math.round(s / 60) + t('min_'); }
  function limitText(l) {
    if (!l) return '—';
    const v = l.kind === 'outside' ? num(l.low) + '–' + num(l.value) : num(l.value);
    const how = l.window_s ? (lang === 'zh' ? dur(l.window_s) + t(l.aggregate) : dur(l.window_s) + ' ' + t(l.aggregate)) : t('each');
    return lang === 'zh' ? t(l.kind) + ' ' + v + '（' + l.rule + '，' + how + '）' : t(l.kind) + ' ' + v + ' (' + l.rule + ', ' + how + ')';
  }
  function badge(key, cls) { return el('span', 'badge ' + (cls || key), t(key)); }

  // SVG is drawn here, element by element: no library, and text only ever as textContent.
  const SVG = 'http://www.w3.org/2000/svg';
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function one(v) { return v === null || v === undefined ? '—' : String(Math.round(v * 10) / 10); }
  function nameOf(x, m) { return x && x.label ? x.label[lang] : t('m_' + m); }
  // The site's UTC offset (ms), from the gateway's RFC 3339 time.
  function offset(s) {
    const m = /([+-])(\d\d):(\d\d)$/.exec(s || '');
    return m ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) * 60000 : 0;
  }
  function hhmm(ms) {
    const d = new Date(ms + offset(data.status.time));
    return String(d.getUTCHours()).padStart(2, '0') + ':' + String(d.getUTCMinutes()).padStart(2, '0');
  }

  // The main values, each in the colour of where it stands against the limit in force.
  const TILES = ['pm25', 'pm10', 'tsp', 'noise', 'wind_speed'];
  function tiles() {
    const b = data.board || { values: {} };
    $('tiles').replaceChildren(...TILES.map(m => {
      const v = b.values[m];
      const lvl = v && v.up ? v.level : 'none';
      const tile = el('div', 'tile ' + lvl, null, { 'data-tile': m, 'data-level': lvl });
      const val = el('div', 't-val');
      val.append(el('b', null, v ? one(v.value) : '—'), el('span', 't-unit', v ? v.unit : ''));
      tile.append(el('div', 't-name', nameOf(v, m)), val);
      let note = !v ? t('no_data') : !v.up ? t('offline') : t('lv_' + v.level);
      if (v && v.limit) note += ' · ' + t(v.limit.kind) + ' ' + num(v.limit.value);
      if (m === 'wind_speed' && b.wind) {
        const w = b.wind;
        const words = (w.from ? w.from[lang] + (lang === 'zh' ? ' ' : ' ' + t('wind_word') + ', ') : '') +
          (lang === 'zh' ? w.level + ' ' + t('force') : t('force') + ' ' + w.level);
        tile.append(el('div', 't-wind', words));
        if (w.direction_deg !== null) {
          // Drawn pointing north, turned to where the air goes: the direction it comes from + 180°.
          const svg = sv('svg', { viewBox: '-12 -12 24 24', class: 'arrow', 'data-to': (w.direction_deg + 180) % 360 });
          svg.append(sv('path', { d: 'M0,-11 L7,8 L0,4 L-7,8 Z', transform: 'rotate(' + ((w.direction_deg + 180) % 360) + ')' }));
          tile.append(svg);
          note = t('wind_to') + (v && v.limit ? ' · ' + note : '');
        }
      }
      tile.append(el('div', 't-note', note), el('div', 't-dev', v ? v.device : ''));
      return tile;
    }));
    const eq = data.actuators;
    $('equipment-section').hidden = !eq.length;
    $('equipment').replaceChildren(...eq.map(a => {
      const st = a.on === null ? 'unknown' : a.on ? 'on' : 'off';
      const c = el('span', 'chip ' + st + ' m-' + a.mode, null, { 'data-actuator': a.id, 'data-on': st, 'data-mode': a.mode });
      c.append(el('b', null, a.id), ' ', t(st), ' · ', t(a.mode) + (a.manual_until ? ' ' + t('until') + ' ' + when(a.manual_until) : ''));
      return c;
    }));
  }

  // One chart: per-minute means as polylines (broken where minutes are missing), the limit in
  // force as a dashed line, a marker where each alert of the window opened.
  function chart(s, from, to) {
    const W = 640, H = 170, L = 42, R = 10, T = 12, B = 22;
    const pts = s.points.filter(p => p[0] >= from && p[0] <= to);
    const lim = s.limit;
    const edges = lim ? (lim.low === null || lim.low === undefined ? [lim.value] : [lim.low, lim.value]) : [];
    const vals = pts.map(p => p[1]).concat(edges);
    // From 0 (or below, for a temperature) to a round number above the highest value.
    const nice = v => { const p = Math.pow(10, Math.floor(Math.log10(v))); return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].find(m => m * p >= v) * p; };
    const top = vals.length ? Math.max(...vals) : 0, bottom = Math.min(0, ...vals);
    const hi = top > 0 ? nice(top * 1.05) : 1, lo = bottom < 0 ? -nice(-bottom * 1.05) : 0;
    const x = ms => L + (ms - from) / (to - from) * (W - L - R);
    const y = v => T + (hi - v) / (hi - lo) * (H - T - B);
    const svg = sv('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'chart', role: 'img', 'data-device': s.device, 'data-metric': s.metric });
    svg.append(sv('rect', { class: 'frame', x: L, y: T, width: W - L - R, height: H - T - B }));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      svg.append(sv('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        sv('text', { x: L - 4, y: y(v) + 3, 'text-anchor': 'end' }, one(v)));
    }
    // Every 6 hours of site time.
    const step = 6 * 3600000, off = offset(data.status.time);
    for (let k = Math.ceil((from + off) / step) * step - off; k <= to; k += step) {
      svg.append(sv('line', { class: 'grid', x1: x(k), x2: x(k), y1: T, y2: H - B }),
        sv('text', { x: x(k), y: H - 6, 'text-anchor': 'middle' }, hhmm(k)));
    }
    for (const a of s.alerts) {
      const x0 = x(Math.max(a.opened_ms, from)), x1 = x(Math.min(a.closed_ms === null ? to : a.closed_ms, to));
      const g = sv('g', { class: 'alert ' + (a.open ? 'open' : 'closed'), 'data-alert': a.alert_id, 'data-rule': a.rule });
      g.append(sv('title', {}, a.rule + ' · ' + t(a.severity) + ' · ' + hhmm(a.opened_ms) + (a.closed_ms === null ? '' : '–' + hhmm(a.closed_ms))));
      // An open alert is shaded to now; a closed one is only marked: its close is known to
      // the page only as "seen closed", up to a few seconds late, or later for replayed data.
      if (a.open) g.append(sv('rect', { class: 'span', x: x0, y: T, width: Math.max(1, x1 - x0), height: H - T - B }));
      if (a.opened_ms >= from) g.append(sv('path', { class: 'mark', d: 'M' + (x0 - 5) + ',' + T + ' h10 l-5,9 z' }));
      svg.append(g);
    }
    for (const v of edges) {
      svg.append(sv('line', { class: 'limit', 'data-value': v, x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        sv('text', { class: 'limit-label', x: L + 4, y: y(v) - 3 }, t(lim.kind) + ' ' + num(v)));
    }
    let run = [];
    const flush = () => {
      if (run.length > 1) svg.append(sv('polyline', { class: 'series', points: run.join(' ') }));
      else if (run.length === 1) { const c = run[0].split(','); svg.append(sv('circle', { class: 'dot', cx: c[0], cy: c[1], r: 2 })); }
      run = [];
    };
    let prev = null;
    for (const p of pts) {
      if (prev !== null && p[0] - prev > 120000) flush();
      run.push(x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1));
      prev = p[0];
    }
    flush();
    const fig = el('figure', 'chart-card', null, { 'data-device': s.device, 'data-metric': s.metric });
    fig.append(el('figcaption', null, nameOf(s, s.metric) + (s.unit ? ' (' + s.unit + ')' : '') + ' · ' + s.device), svg);
    return fig;
  }

  function charts() {
    const h = data.history;
    const list = h ? h.series.filter(s => s.points.length) : [];
    $('charts').replaceChildren(...list.map(s => chart(s, h.from_ms, h.to_ms)));
    if (!list.length) $('charts').appendChild(el('p', 'muted', t('no_history')));
  }

  function labels() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    for (const e of document.querySelectorAll('[data-t]')) e.textContent = t(e.dataset.t);
    $('lang-zh').classList.toggle('on', lang === 'zh');
    $('lang-en').classList.toggle('on', lang === 'en');
  }

  function render() {
    labels();
    if (!data) return;
    const s = data.status;
    $('site-name').textContent = s.name || s.site;
    $('site-id').textContent = s.site;
    document.title = (s.name || s.site) + ' · dustgate';
    $('gw-time').textContent = s.time ? s.time.slice(0, 10) + ' ' + s.time.slice(11, 19) + ' ' + s.time.slice(-6) : '—';
    $('updated').textContent = s.time ? s.time.slice(11, 19) : '—';
    const up = s.devices.filter(d => d.state === 'up').length;
    // A missing InfluxDB database or bucket: red, with the server's words, until it is there.
    const w = s.writer || {};
    const missing = !!w.destination_missing;
    const ue = $('uplink-error');
    ue.hidden = !missing;
    ue.textContent = missing ? t('dest_missing').replace('{0}', when(w.missing_since))
      .replace('{1}', s.queue.points + ' ' + t('points')).replace('{2}', w.last_error || '—') : '';
    const cards = [
      ['c_devices', up + '/' + s.devices.length, up < s.devices.length],
      ['c_alerts', s.open_alerts, s.open_alerts > 0],
      ['c_queue', s.queue.points + ' ' + t('points'), missing],
      ['c_lag', num(s.uplink_lag_s) + ' s', s.uplink_lag_s > 60]
    ].map(([k, v, bad]) => {
      const c = el('div', 'card' + (bad ? ' bad' : ''), null, { 'data-card': k.slice(2) });
      c.append(el('span', 'muted', t(k)), el('b', null, v));
      return c;
    });
    $('summary').replaceChildren(...cards);
    tiles();
    charts();

    const alerts = data.alerts.slice().sort((a, b) => String(b.since).localeCompare(String(a.since)));
    const list = $('alerts');
    list.replaceChildren(...alerts.map(a => {
      const li = el('li', null, null, { 'data-alert': a.alert_id, 'data-rule': a.rule, 'data-device': a.device, 'data-severity': a.severity });
      li.append(badge(a.severity), ' ', el('span', 'msg', a.message), el('span', 'since', t('since') + ' ' + when(a.since)));
      return li;
    }));
    if (!alerts.length) list.appendChild(el('li', 'muted', t('no_alerts')));

    fill('readings', data.readings.map(r => {
      const name = r.label ? r.label[lang] : r.metric;
      // Switches (unit 0/1) read as on/off.
      const v = r.unit === '0/1' ? t(r.value ? 'on' : 'off') : num(r.value) + (r.unit ? ' ' + r.unit : '');
      return row({ 'data-device': r.device, 'data-metric': r.metric }, [
        // "pH" keeps its case; "temperature" becomes "Temperature".
        r.device, /[A-Z]/.test(name) ? name : name.charAt(0).toUpperCase() + name.slice(1),
        el('td', 'num v', v), limitText(r.limit), when(r.time)
      // Red with an open alert; amber when only this reading is above a level that is judged
      // on a mean (one reading over a 24-h limit is not an exceedance).
      ], r.alert_open ? 'over' : r.over ? 'high' : '');
    }), 'no_readings', 5);

    const hjDevices = new Set((s.hj212 || []).flatMap(l => l.stations.map(x => x.device)));
    fill('devices', s.devices.map(d => row({ 'data-device': d.id, 'data-state': d.state }, [
      d.id, d.bus || (hjDevices.has(d.id) ? 'HJ 212' : t('pushed')), td(badge(d.state)), when(d.last_ok),
      el('td', 'num', d.polls === null ? '—' : d.polls), el('td', 'num', d.poll_errors === null ? '—' : d.poll_errors)
    ])), 'no_devices', 6);

    // HJ 212 listeners: a hub lists its stations (thousands: the ones connected first).
    const ls = s.hj212 || [];
    $('hj212-section').hidden = !ls.length;
    const st = [];
    for (const l of ls) for (const x of l.stations) st.push([l, x]);
    st.sort((a, b) => (b[1].connected - a[1].connected) || String(a[1].mn).localeCompare(String(b[1].mn)));
    fill('stations', st.slice(0, 500).map(([l, x]) => {
      const refused = Object.entries(x.rejected || {}).map(([k, n]) => k + ' ' + n).join(', ') || '0';
      return row({ 'data-mn': x.mn, 'data-device': x.device }, [
        l.name, x.mn, x.device, x.site, td(badge(x.connected ? 'connected' : 'idle', x.connected ? 'connected' : 'unknown')),
        when(x.last_frame), el('td', 'num', x.drift_s === null || x.drift_s === undefined ? '—' : num(x.drift_s) + ' s'),
        el('td', 'num', x.frames), refused
      ], x.drift_s !== null && Math.abs(x.drift_s) > 300 ? 'high' : '');
    }), 'no_stations', 9);

    // HJ 212 platforms this gateway reports to: the link, and what waits to be resent (补传).
    const ups = s.hj212_upstreams || [];
    $('upstream-section').hidden = !ups.length;
    fill('upstreams', ups.map(u => row({ 'data-upstream': u.name }, [
      u.name, u.address + ' (' + u.version + ')',
      td(badge(u.connected ? 'connected' : 'idle', u.connected ? 'connected' : 'down')), when(u.last_ack),
      el('td', 'num', u.backlog_frames), when(u.backlog_oldest), el('td', 'num', u.delivered),
      el('td', 'num', u.resent), el('td', 'num', u.expired), el('td', 'num', u.rejected_answers)
    ], u.failed || u.expired > 0 ? 'over' : u.backlog_frames > 0 ? 'high' : '')), 'no_readings', 10);

    const c = data.compliance;
    $('compliance').hidden = !c;
    $('compliance-off').hidden = !!c;
    if (c) {
      fill('compliance-items', c.items.map(i => row({ 'data-item': i.item }, [
        t(i.item), el('td', 'num', i.percent === null ? '—' : num(i.percent) + ' %'),
        el('td', 'num', num(i.checked)), el('td', 'num', i.violations)
      ], i.violations > 0 ? 'over' : '')), 'no_readings', 4);
    }

    fill('actuators', data.actuators.map(a => row({ 'data-actuator': a.id }, [
      a.id, a.device, td(a.on === null ? badge('unknown') : badge(a.on ? 'on' : 'off')), td(badge(a.mode))
    ])), 'no_actuators', 4);

    $('g-queue').textContent = s.queue.points + ' ' + t('points') + ' · ' + s.queue.bytes + ' B';
    $('g-lag').textContent = num(s.uplink_lag_s) + ' s';
    $('g-written').textContent = s.written_points;
    $('g-dropped').textContent = s.queue.dropped;
    $('g-dead').textContent = s.dead_letter_points;
    $('g-brokers').textContent = s.brokers.length ? s.brokers.map(b => b.name + (b.connected ? ' ✓' : ' ✗')).join(' · ') : '—';
    $('g-version').textContent = s.version;
  }

  async function get(path, optional) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 4000);
    try {
      const r = await fetch(path, { signal: ctl.signal, cache: 'no-store' });
      if (optional && r.status === 404) return null;
      if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
      return await r.json();
    } finally { clearTimeout(timer); }
  }

  // Alert messages are rendered by the gateway in the reader's language.
  function alertsUrl() { return 'api/alerts?state=open&lang=' + (lang === 'zh' ? 'zh-CN' : 'en'); }

  async function refresh() {
    try {
      // The charts' minutes change once a minute: their history is fetched every 30 s.
      const due = Date.now() - historyAt >= 30000;
      const [status, readings, alerts, compliance, actuators, board, hist] = await Promise.all([
        get('api/status'), get('api/readings/latest'), get(alertsUrl()),
        get('api/compliance/today', true), get('api/actuators'), get('api/board'),
        due ? get('api/history') : Promise.resolve(data && data.history)
      ]);
      if (due) historyAt = Date.now();
      data = { status, readings, alerts, compliance, actuators, board, history: hist };
      $('error').hidden = true;
      render();
    } catch (e) {
      const b = $('error');
      b.textContent = t('err').replace('{0}', e && e.name === 'AbortError' ? 'timeout' : String(e && e.message || e));
      b.hidden = false;
    }
    setTimeout(refresh, every);
  }

  function setLang(l) {
    lang = l;
    try { localStorage.setItem('dustgate.lang', l === 'zh' ? 'zh-CN' : 'en'); } catch (e) { /* private mode */ }
    const p = new URLSearchParams(location.search);
    p.set('lang', l === 'zh' ? 'zh-CN' : 'en');
    history.replaceState(null, '', '?' + p.toString());
    render();
    // The open alerts' messages again, in the new language (the next refresh would too).
    get(alertsUrl()).then(a => { if (data) { data.alerts = a; render(); } }).catch(() => {});
  }

  for (const a of document.querySelectorAll('#lang a')) {
    a.addEventListener('click', ev => { ev.preventDefault(); setLang(pick(a.dataset.lang)); });
  }
  labels();
  refresh();
})();
