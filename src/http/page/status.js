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
      delivered: 'Delivered', stray: 'Stray answers', address: 'Address'
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
      delivered: '已送达', stray: '无效应答', address: '地址'
    }
  };
  const params = new URLSearchParams(location.search);
  const every = Math.max(1, Number(params.get('refresh')) || 5) * 1000;
  let lang = pick(params.get('lang')) || pick(stored()) || pick((navigator.languages || [])[0] || navigator.language) || 'en';
  let data = null;

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
      const [status, readings, alerts, compliance, actuators] = await Promise.all([
        get('api/status'), get('api/readings/latest'), get(alertsUrl()),
        get('api/compliance/today', true), get('api/actuators')
      ]);
      data = { status, readings, alerts, compliance, actuators };
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
