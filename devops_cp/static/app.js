// devops-cp data packs: the pack list, the size warning, and the step modal with live progress.
// No build step, no dependencies. Text goes into the page with textContent only (never innerHTML).
'use strict';

const TOKEN_KEY = 'devops-cp-token';
const $ = (id) => document.getElementById(id);

// --- token: ?token= from the URL the server printed, or typed once; kept per tab ---------------

(function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get('token');
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash); // keep it out of history
  }
})();

const getToken = () => sessionStorage.getItem(TOKEN_KEY) || '';

function askForToken(message) {
  $('token-box').hidden = false;
  if (message) showBanner('error', message);
  $('token-input').focus();
}

// --- formatting (the same units as the CLI: binary, one decimal) ---------------------------------

function fmtSize(n) {
  if (n === null || n === undefined) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(1)} ${units[i]}`;
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '?';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function showBanner(kind, message, hint) {
  const banner = $('banner');
  banner.replaceChildren(el('strong', { text: message }), hint ? el('div', { class: 'hint', text: hint }) : null);
  banner.className = `banner ${kind}`;
  banner.hidden = false;
}

// --- the API ------------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers.Authorization = `Bearer ${getToken()}`;
    headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  } catch (err) {
    return { status: 0, ok: false, data: { error: 'the server cannot be reached', hint: 'is `devops-cp serve` still running?' } };
  }
  let data;
  try { data = await response.json(); } catch (err) { data = { error: `HTTP ${response.status}` }; }
  if (response.status === 401 || (response.status === 403 && data.error === 'wrong token')) {
    askForToken(data.error);
  }
  return { status: response.status, ok: response.ok, data };
}

// --- the pack list ------------------------------------------------------------------------------

let catalog = { packs: [] };

function timesText(times) {
  return Object.entries(times || {}).map(([speed, time]) => `${time} at ${speed}`).join(' · ');
}

// The size of what the selected choices would download: the first choice picks the steps.
function selectedSize(pack, choices) {
  if (pack.choices.length) {
    const first = pack.choices[0];
    const option = first.options.find((o) => o.value === choices[first.id]);
    if (option && option.size_bytes !== undefined) return option;
  }
  return pack;
}

function readChoices(card) {
  const choices = {};
  for (const select of card.querySelectorAll('select[data-choice]')) choices[select.dataset.choice] = select.value;
  return choices;
}

function renderPack(pack) {
  const card = el('article', { class: 'pack card', 'data-pack': pack.id });
  const installed = pack.installed.length ? el('span', { class: 'badge ok', text: `installed: ${pack.installed.join(', ')}` }) : null;
  card.append(
    el('header', {}, el('h3', { text: pack.label }), el('code', { class: 'muted', text: pack.id }), installed),
    pack.description ? el('p', { class: 'description', text: pack.description }) : null,
    el('p', { class: 'muted small', text: `${pack.data_type} → ${pack.data_dir} · updates: ${pack.update_schedule}` }),
  );
  const form = el('div', { class: 'choices' });
  for (const choice of pack.choices) {
    const select = el('select', { 'data-choice': choice.id, 'aria-label': choice.label });
    for (const option of choice.options) {
      let text = option.label;
      if (!option.available) text += ` — not available here: ${option.why_not}`;
      else if (option.note) text += ` — ${option.note}`;
      const node = el('option', { value: option.value, text, disabled: !option.available, title: option.why_not || option.description || '' });
      if (option.default && option.available) node.selected = true;
      select.append(node);
    }
    if (select.selectedOptions.length && select.selectedOptions[0].disabled) {
      const usable = [...select.options].find((o) => !o.disabled);
      if (usable) usable.selected = true;
    }
    form.append(el('label', {}, el('span', { text: choice.label }), select));
  }
  const sizeLine = el('p', { class: 'size' });
  const button = el('button', { type: 'button', class: 'install', text: 'Install' });
  const updateSize = () => {
    const info = selectedSize(pack, readChoices(card));
    sizeLine.replaceChildren();
    if (info.size_bytes) {
      sizeLine.append(el('strong', { text: `~${fmtSize(info.size_bytes)}` }), ` · ${timesText(info.estimated_times)}`);
      if (info.large) sizeLine.append(' ', el('span', { class: 'badge warn', text: 'large download' }));
    } else {
      sizeLine.append(el('span', { class: 'muted', text: 'size unknown' }));
    }
  };
  form.addEventListener('change', updateSize);
  button.addEventListener('click', () => startInstall(pack, card));
  card.append(form, sizeLine, el('div', { class: 'actions' }, button));
  updateSize();
  if (pack.running_job) {
    card.append(el('button', { type: 'button', class: 'link', text: 'running: show progress', onclick: () => openJob(pack.running_job, pack.label) }));
  }
  return card;
}

async function loadPacks() {
  const { ok, data } = await api('GET', '/api/packs');
  const box = $('packs');
  if (!ok) {
    box.replaceChildren(el('p', { class: 'error', text: data.error }));
    return;
  }
  catalog = data;
  $('hardware').textContent = data.gpu.length ? `GPU: ${data.gpu.join(', ')}` : 'no GPU detected';
  box.replaceChildren(...data.packs.map(renderPack));
  $('bundle-dirs').textContent = data.bundle_dirs.length
    ? `Bundles are read from: ${data.bundle_dirs.join(', ')}`
    : 'No bundle directories are configured ([web] bundle_dirs in the config file).';
  for (const error of data.errors) box.append(el('p', { class: 'error small', text: `skipped a bad recipe: ${error}` }));
}

// --- installed packs (the same documents as `status --json` / `check-updates --json`) -----------

async function loadStatus() {
  if (!getToken()) return;
  const [status, updates] = await Promise.all([api('POST', '/audit/data-status'), api('POST', '/audit/data-check-updates')]);
  const box = $('status');
  if (!status.ok) { box.replaceChildren(el('p', { class: 'muted', text: status.data.error })); return; }
  const fresh = new Map((updates.ok ? updates.data.packs : []).map((row) => [row.key, row]));
  if (!status.data.packs.length) { box.replaceChildren(el('p', { class: 'muted', text: 'no packs installed' })); return; }
  const table = el('table', { class: 'status' }, el('tr', {}, ...['pack', 'size', 'fetched', 'freshness', 'where'].map((h) => el('th', { text: h }))));
  for (const p of status.data.packs) {
    const row = fresh.get(p.key);
    const state = row ? (row.stale ? 'stale' : row.reason) : '';
    table.append(el('tr', {}, el('td', { text: p.key }), el('td', { text: p.size_human }), el('td', { text: p.fetched_at }),
      el('td', { class: row && row.stale ? 'warn' : '', text: state }), el('td', { class: 'small', text: p.data_dir })));
  }
  box.replaceChildren(table);
}

// --- the size warning, before a large download -------------------------------------------------

function confirmLarge(title, sizeBytes, times) {
  const dialog = $('confirm-dialog');
  $('confirm-text').textContent = `${title} is a large download: about ${fmtSize(sizeBytes)}. Estimated time:`;
  $('confirm-times').replaceChildren(...Object.entries(times || {}).map(([speed, time]) => el('tr', {}, el('td', { text: speed }), el('td', { text: time }))));
  return new Promise((resolve) => {
    const done = (answer) => {
      $('confirm-yes').onclick = $('confirm-no').onclick = dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    $('confirm-yes').onclick = () => done(true);
    $('confirm-no').onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
  });
}

async function startInstall(pack, card) {
  if (!getToken()) { askForToken('enter the token first'); return; }
  $('banner').hidden = true;
  const choices = readChoices(card);
  const info = selectedSize(pack, choices);
  let confirm = false;
  if (info.large) {
    confirm = await confirmLarge(pack.label, info.size_bytes, info.estimated_times);
    if (!confirm) return;
  }
  let response = await api('POST', '/api/jobs/install', { pack: pack.id, choices, confirm });
  if (response.status === 409 && response.data.confirm_required) { // the server's estimate differs from the list's
    if (!(await confirmLarge(pack.label, response.data.size_bytes, response.data.estimated_times))) return;
    response = await api('POST', '/api/jobs/install', { pack: pack.id, choices, confirm: true });
  }
  if (response.status === 409 && response.data.job_id) {
    openJob(response.data.job_id, `${pack.label} (already running)`);
    return;
  }
  if (!response.ok) { showBanner('error', response.data.error, response.data.hint); return; }
  openJob(response.data.job_id, `Installing ${pack.label}`);
}

// --- sideload: a bundle already on this host, inside a configured bundle directory -------------

async function startSideload(event) {
  event.preventDefault();
  if (!getToken()) { askForToken('enter the token first'); return; }
  const bundle = $('bundle-path').value.trim();
  if (!bundle) return;
  $('banner').hidden = true;
  const response = await api('POST', '/api/jobs/sideload', { bundle });
  if (response.status === 409 && response.data.job_id) { openJob(response.data.job_id, 'Sideload (already running)'); return; }
  if (!response.ok) { showBanner('error', response.data.error, response.data.hint); return; }
  openJob(response.data.job_id, `Sideloading ${bundle}`);
}

// --- the step modal: one progress bar per step, then success or error ---------------------------

let currentStream = null;

function stepRow(event) {
  const id = `step-row-${event.pack}-${event.step}`;
  let row = document.getElementById(id);
  if (!row) {
    const bar = el('div', { class: 'progress-bar' });
    bar.style.width = '0%';
    row = el('div', { id, class: 'step-row', 'data-step': String(event.step) },
      el('div', { class: 'step-title', text: event.label || `step ${event.step + 1}` }),
      el('div', { class: 'progress-track', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' },
        bar, el('span', { class: 'progress-label', text: '0%' })),
      el('div', { class: 'progress-stats muted small', text: 'starting…' }));
    $('job-steps').append(row);
  }
  return row;
}

function setBar(row, percent, label, stats) {
  const bar = row.querySelector('.progress-bar');
  const track = row.querySelector('.progress-track');
  if (percent === null || percent === undefined) {
    track.classList.add('indeterminate');
  } else {
    track.classList.remove('indeterminate');
    bar.style.width = `${percent}%`;
    track.setAttribute('aria-valuenow', String(percent));
  }
  row.querySelector('.progress-label').textContent = label;
  if (stats !== undefined) row.querySelector('.progress-stats').textContent = stats;
}

const handlers = {
  step_started(event) {
    const row = stepRow(event);
    if (event.total) row.querySelector('.progress-label').textContent = `0% (0 B/${fmtSize(event.total)})`;
  },
  progress(event) {
    const row = stepRow(event);
    const label = event.total
      ? `${event.percent}% (${fmtSize(event.downloaded)}/${fmtSize(event.total)})`
      : fmtSize(event.downloaded);
    const eta = event.eta_seconds === null || event.eta_seconds === undefined ? '' : ` · ETA ${fmtDuration(event.eta_seconds)}`;
    setBar(row, event.total ? event.percent : null, label, `${fmtSize(event.speed_bps)}/s${eta}`);
  },
  download_done(event) {
    const row = stepRow(event);
    row.classList.add('done');
    setBar(row, 100, `100% (${fmtSize(event.size)}/${fmtSize(event.size)})`, 'done, verified');
  },
  notice(event) {
    $('job-notices').append(el('li', { class: event.level, text: event.message }));
  },
};

function finishJob(ok, data) {
  const result = $('job-result');
  result.className = `result ${ok ? 'success' : 'error'}`;
  result.replaceChildren(el('strong', { text: `${ok ? '✓' : '✗'} ${data.message}` }));
  if (!ok && data.hint) result.append(el('div', { class: 'hint', text: `hint: ${data.hint}` }));
  for (const warning of data.warnings || []) result.append(el('div', { class: 'hint', text: `note: ${warning}` }));
  result.hidden = false;
  for (const row of document.querySelectorAll('.step-row:not(.done)')) {
    row.classList.add(ok ? 'done' : 'failed');
    if (!ok) row.querySelector('.progress-stats').textContent = 'stopped';
  }
  $('job-title').textContent = `${$('job-title').dataset.title}: ${ok ? 'done' : 'failed'}`;
  loadPacks();
  loadStatus();
}

function openJob(jobId, title) {
  if (currentStream) currentStream.close();
  $('job-title').textContent = title;
  $('job-title').dataset.title = title;
  $('job-steps').replaceChildren();
  $('job-notices').replaceChildren();
  $('job-result').hidden = true;
  const dialog = $('job-dialog');
  dialog.dataset.job = jobId;
  if (!dialog.open) dialog.showModal();

  const stream = new EventSource(`/api/jobs/${encodeURIComponent(jobId)}/events`);
  currentStream = stream;
  for (const [type, handle] of Object.entries(handlers)) {
    stream.addEventListener(type, (e) => handle(JSON.parse(e.data)));
  }
  stream.addEventListener('success', (e) => { stream.close(); finishJob(true, JSON.parse(e.data)); });
  // A server event named "error" carries data; a dropped connection fires "error" without data
  // and EventSource reconnects by itself, resuming after the last event id it saw.
  stream.addEventListener('error', (e) => {
    if (e.data !== undefined) { stream.close(); finishJob(false, JSON.parse(e.data)); return; }
    if (stream.readyState === EventSource.CLOSED) finishJob(false, { message: 'lost the connection to the server', hint: 'reload the page; the job goes on in the server' });
  });
}

// --- start ---------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token-input').value = '';
    $('token-box').hidden = true;
    $('banner').hidden = true;
    loadStatus();
  });
  $('change-token').addEventListener('click', () => askForToken());
  $('sideload-form').addEventListener('submit', startSideload);
  $('refresh-status').addEventListener('click', () => { loadPacks(); loadStatus(); });
  // Closing the modal (button or Escape) stops watching, not the job: the pack offers "running: show progress".
  const stopWatching = () => {
    if (currentStream) currentStream.close();
    currentStream = null;
  };
  $('job-close').addEventListener('click', () => { stopWatching(); $('job-dialog').close(); });
  $('job-dialog').addEventListener('close', stopWatching);
  if (!getToken()) askForToken();
  loadPacks();
  loadStatus();
});
