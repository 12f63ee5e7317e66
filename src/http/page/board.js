// dustgate gate board (公示牌): fetches /api/board every few seconds and shows it, Chinese
// first with English under it. Text from the gateway is set as textContent, never as HTML.
'use strict';
(function () {
  const params = new URLSearchParams(location.search);
  const every = Math.max(1, Number(params.get('refresh')) || 5) * 1000;
  const $ = id => document.getElementById(id);
  // Where the value stands against the limit in force.
  const LEVEL = { ok: ['达标', 'within the limit'], near: ['接近限值', 'near the limit'], over: ['超标', 'over the limit'] };
  const CATEGORIES = ['优', '良', '轻度污染', '中度污染', '重度污染', '严重污染'];
  const DECIMALS = { pm25: 0, pm10: 0, noise: 1, temperature: 1, humidity: 0, wind_speed: 1 };
  const WEEK = '日一二三四五六';
  // The gateway's clock minus this screen's, and the site's UTC offset: the board shows site
  // time, whatever the TV's clock says.
  let skew = null, off = 0, failures = 0;

  function fmt(v, d) { return v === null || v === undefined ? '—' : Number(v).toFixed(d); }
  function note(id, zh, en) {
    const n = $(id);
    n.textContent = zh;
    if (en) { const s = document.createElement('small'); s.textContent = en; n.appendChild(s); }
  }
  function pad(n) { return String(n).padStart(2, '0'); }
  function offset(s) {
    const m = /([+-])(\d\d):(\d\d)$/.exec(s || '');
    return m ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) * 60000 : 0;
  }

  function clock() {
    if (skew === null) return;
    const d = new Date(Date.now() + skew + off);
    $('b-time').textContent = pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
    $('b-date').textContent = d.getUTCFullYear() + '年' + (d.getUTCMonth() + 1) + '月' + d.getUTCDate() + '日 星期' + WEEK[d.getUTCDay()];
  }
  // Every second, just after it turns.
  function tick() { clock(); setTimeout(tick, 1005 - (Date.now() % 1000)); }

  function value(b, metric, cell) {
    const v = b.values[metric];
    const c = document.querySelector('[data-cell="' + cell + '"]');
    $('v-' + cell).textContent = v ? fmt(v.value, DECIMALS[metric]) : '—';
    const level = !v ? 'none' : !v.up ? 'off' : v.level;
    c.dataset.level = level;
    if (cell === 'wind') return;
    if (!v) note('n-' + cell, '无数据', 'no data');
    else if (!v.up) note('n-' + cell, '离线', 'offline');
    else if (LEVEL[level] && v.limit) note('n-' + cell, '限值 ' + v.limit.value + ' · ' + LEVEL[level][0], LEVEL[level][1]);
    else note('n-' + cell, '', '');
  }

  function render(b) {
    $('b-name').textContent = b.name || b.site;
    document.title = (b.name || b.site) + ' · 扬尘在线监测公示';
    $('b-permit').textContent = b.permit || '—';
    for (const [m, cell] of [['pm25', 'pm25'], ['pm10', 'pm10'], ['noise', 'noise'], ['temperature', 'temperature'], ['humidity', 'humidity'], ['wind_speed', 'wind']]) {
      value(b, m, cell);
    }
    const w = b.wind;
    const arrow = $('wind-arrow');
    if (w) {
      note('n-wind', (w.from ? w.from.zh + ' ' : '') + w.level + ' 级', (w.from ? w.from.en + ' wind, ' : '') + 'force ' + w.level);
      // Drawn pointing up (north), turned to where the air goes: where it comes from + 180°.
      arrow.classList.toggle('off', w.direction_deg === null);
      if (w.direction_deg !== null) arrow.firstElementChild.setAttribute('transform', 'rotate(' + ((w.direction_deg + 180) % 360) + ')');
    } else {
      note('n-wind', '无数据', 'no data');
      arrow.classList.add('off');
    }
    const a = b.aqi;
    const cat = $('v-aqi-cat');
    $('v-aqi').textContent = a ? a.value : '—';
    cat.className = 'cat' + (a ? ' cat' + (CATEGORIES.indexOf(a.category.zh) + 1) : '');
    cat.textContent = a ? a.category.zh : '—';
    if (a) { const s = document.createElement('small'); s.textContent = a.category.en; cat.appendChild(s); }
    if (!a) note('n-aqi', '数据不足（需近 1 小时 45 分钟）', 'not enough data: 45 minutes of the last hour');
    else if (a.primary) note('n-aqi', '首要污染物 ' + a.primary, 'primary pollutant');
    else note('n-aqi', '近 1 小时均值', 'rolling 1-hour mean');
  }

  async function refresh() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 4000);
    try {
      const r = await fetch('api/board', { signal: ctl.signal, cache: 'no-store' });
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const b = await r.json();
      skew = Date.parse(b.time) - Date.now();
      off = offset(b.time);
      clock();
      render(b);
      failures = 0;
      const st = $('b-status');
      st.className = '';
      st.textContent = '更新于 ' + b.time.slice(11, 19);
    } catch (e) {
      // Two misses in a row: the last values stay, with a word that they are old.
      if (++failures >= 2) {
        const st = $('b-status');
        st.className = 'bad';
        st.textContent = '网关无响应 · Gateway not answering';
      }
    } finally { clearTimeout(timer); }
    setTimeout(refresh, every);
  }

  tick();
  refresh();
})();
