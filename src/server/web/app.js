// app.js — the steno serve page: live microphone transcription over the /v1/stream
// WebSocket, file transcription over POST /v1/audio/transcriptions, and the API key prompt.
'use strict';

const $ = (id) => document.getElementById(id);
const KEY_STORE = 'steno-api-key';

// Mirrors what the page shows, for headless tests that poll instead of scraping the DOM.
const state = (window.stenoState = { finals: [], partial: null, status: 'Idle', closed: false, stats: null });

let model = 'whisper'; // replaced by GET /v1/models when it answers
let live = null; // the running microphone session, see start()
let partialUtterance = -1; // utterance of the partial line on screen, -1 when none

const apiKey = () => localStorage.getItem(KEY_STORE) || '';
const authHeaders = () => (apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {});
const language = () => $('language').value.trim();

function setStatus(text, kind = 'info', id = 'status') {
  if (id === 'status') state.status = text;
  $(id).textContent = text;
  $(id).className = kind;
}

function setButton(label, disabled) {
  $('mic').textContent = label;
  $('mic').disabled = disabled;
}

// ---- API key and model ------------------------------------------------------------

function askForKey(hint) {
  $('key-box').hidden = false;
  $('key-hint').textContent = hint;
  $('api-key').focus();
}

async function loadModels() {
  try {
    const res = await fetch('/v1/models', { headers: authHeaders() });
    if (res.status === 401) {
      askForKey(apiKey() ? 'The server rejected this API key.' : 'This server needs an API key.');
      return false;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    model = (await res.json()).data?.[0]?.id || model;
    $('model').textContent = `model: ${model}`;
    $('key-hint').textContent = '';
    $('key-box').hidden = !apiKey(); // keep a stored key changeable
  } catch (e) {
    setStatus(`Could not list the models (${e.message}); using "${model}".`, 'warn');
  }
}

// ---- Live microphone --------------------------------------------------------------

async function start() {
  if (live) return;
  if (!navigator.mediaDevices?.getUserMedia) {
    setStatus('The microphone needs a secure page (https or localhost).', 'error');
    return;
  }
  $('finals').replaceChildren();
  showPartial(null);
  Object.assign(state, { finals: [], closed: false, stats: null });
  setButton('Starting…', true);
  let stream, ctx;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      // Raw signal: browser voice processing hurts recognition more than it helps.
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    ctx = new AudioContext(); // native rate; the server resamples
    await ctx.audioWorklet.addModule('worklet.js');
  } catch (e) {
    stream?.getTracks().forEach((t) => t.stop());
    ctx?.close();
    setStatus(`Microphone: ${e.message}`, 'error');
    setButton('Start', false);
    return;
  }
  const node = new AudioWorkletNode(ctx, 'steno-capture', { numberOfOutputs: 1, outputChannelCount: [1] });
  ctx.createMediaStreamSource(stream).connect(node);
  node.connect(ctx.destination); // it outputs silence; being connected keeps it rendered everywhere
  const s = { ctx, stream, node, ws: null, ready: false, pending: [], ended: false, released: false, lastFinal: -1, lastError: '' };
  live = s;
  node.port.onmessage = (e) => (e.data === 'stopped' ? finish(s) : sendAudio(s, e.data));
  s.ws = openSocket(s);
  if (ctx.state === 'suspended') {
    // Autoplay policy without a user gesture (e.g. ?autostart=1): a click unblocks it.
    ctx.resume();
    document.addEventListener('click', () => ctx.resume(), { once: true });
  }
  setButton('Stop', false);
}

function openSocket(s) {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  // Browsers cannot set headers on a WebSocket, so the key travels in the query.
  const query = apiKey() ? `?api_key=${encodeURIComponent(apiKey())}` : '';
  const ws = new WebSocket(`${proto}://${location.host}/v1/stream${query}`);
  setStatus('Connecting…');
  ws.onopen = () => {
    const config = { type: 'config', sample_rate: s.ctx.sampleRate, encoding: 'f32le' };
    if (language()) config.language = language();
    ws.send(JSON.stringify(config));
    setStatus('Connected, waiting for the server…');
  };
  ws.onmessage = (e) => {
    if (typeof e.data !== 'string') return;
    try {
      onEvent(s, JSON.parse(e.data));
    } catch (err) {
      setStatus(`Bad server event: ${err.message}`, 'warn');
    }
  };
  ws.onclose = (e) => onClose(s, e); // onerror carries no detail; the close code does
  return ws;
}

// Audio before "ready" is queued, not dropped, so the first words survive the handshake.
function sendAudio(s, chunk) {
  if (!s.ready) s.pending.push(chunk);
  else if (s.ws.readyState === WebSocket.OPEN) s.ws.send(chunk); // the Float32Array's bytes, little-endian
}

function stop() {
  const s = live;
  if (!s || s.stopping) return;
  s.stopping = true;
  setButton('Stopping…', true);
  s.node.port.postMessage('stop'); // the worklet flushes its last batch, then answers 'stopped'
  setTimeout(() => finish(s), 1000); // in case a suspended context never answers
}

// After the last samples: release the microphone and tell the server we are done.
function finish(s) {
  if (s.ended) return;
  s.ended = true;
  release(s);
  if (s.ws.readyState === WebSocket.CONNECTING) s.ws.close();
  else if (s.ready) sendEnd(s); // otherwise sent right after "ready"
}

function sendEnd(s) {
  if (s.ws.readyState !== WebSocket.OPEN) return;
  s.ws.send(JSON.stringify({ type: 'end' }));
  setStatus('Finishing the last utterance…'); // the server sends it, then closes
}

function release(s) {
  if (s.released) return;
  s.released = true;
  s.stream.getTracks().forEach((t) => t.stop());
  s.node.disconnect();
  s.ctx.close();
}

const CLOSE_TEXT = {
  1000: 'Stream finished.',
  1006: 'Connection lost or refused (1006); is the server up, is the API key right?',
  1003: 'The server does not accept this audio data (1003).',
  1008: 'The server refused the request (1008).',
  1013: 'Server busy (too many streams), try again later.',
};

function onClose(s, e) {
  release(s); // the server may close first, e.g. after an error
  if (live === s) live = null;
  state.closed = true;
  let text = CLOSE_TEXT[e.code] || `Connection closed (code ${e.code}).`;
  if (e.reason) text += ` ${e.reason}`;
  else if (e.code !== 1000 && s.lastError) text += ` ${s.lastError}`;
  setStatus(text, e.code === 1000 ? 'info' : 'error');
  setButton('Start', false);
}

function onEvent(s, ev) {
  switch (ev.type) {
    case 'ready':
      s.ready = true;
      setStatus(`Listening (stream ${ev.stream}, ${ev.sample_rate} Hz).`);
      s.pending.splice(0).forEach((chunk) => sendAudio(s, chunk));
      if (s.ended) sendEnd(s);
      break;
    case 'partial':
      if (ev.utterance > s.lastFinal) showPartial(ev); // a late partial must not undo a final
      break;
    case 'final':
      s.lastFinal = Math.max(s.lastFinal, ev.utterance);
      addFinal(ev);
      break;
    case 'stats':
      state.stats = ev;
      $('stats').textContent =
        `real-time factor ${fixed(ev.real_time_factor, 2)} · audio ${fixed(ev.audio_s, 1)} s · ` +
        `dropped ${ev.dropped_samples ?? 0} samples`;
      break;
    case 'warning':
      setStatus(`Warning: ${ev.message}`, 'warn');
      break;
    case 'error':
      s.lastError = ev.message;
      setStatus(`Error: ${ev.message}`, 'error');
      break;
  }
}

const fixed = (x, digits) => (Number.isFinite(x) ? x.toFixed(digits) : '–');

function addFinal(ev) {
  const text = (ev.text || '').trim();
  if (text) {
    const p = document.createElement('p');
    p.className = 'final';
    p.dataset.utterance = ev.utterance;
    // The time stamp goes in an attribute shown by CSS, so innerText stays the bare text.
    if (Number.isFinite(ev.start) && Number.isFinite(ev.end)) p.dataset.span = `${fixed(ev.start, 1)}–${fixed(ev.end, 1)} s`;
    p.textContent = text; // textContent, never innerHTML: the text is the server's
    $('finals').append(p);
    state.finals.push(text);
  }
  if (partialUtterance <= ev.utterance) showPartial(null);
  $('partial').scrollIntoView({ block: 'nearest' });
}

function showPartial(ev) {
  const [committed, tentative] = $('partial').children;
  const c = ev ? ev.committed.trimStart() : '';
  committed.textContent = c;
  tentative.textContent = !ev ? '' : c ? ev.tentative : ev.tentative.trimStart();
  partialUtterance = ev ? ev.utterance : -1;
  state.partial = ev ? (ev.committed + ev.tentative).trim() || null : null;
}

// ---- File upload ------------------------------------------------------------------

async function upload() {
  const file = $('file').files[0];
  if (!file) return setStatus('Choose an audio file first.', 'warn', 'upload-status');
  const form = new FormData();
  form.append('file', file);
  form.append('model', model);
  form.append('response_format', 'json');
  form.append('stream', 'true');
  if (language()) form.append('language', language());
  const out = $('upload-text');
  out.textContent = '';
  $('transcribe').disabled = true;
  setStatus(`Transcribing ${file.name}…`, 'info', 'upload-status');
  try {
    const res = await fetch('/v1/audio/transcriptions', { method: 'POST', headers: authHeaders(), body: form });
    if (!res.ok) {
      if (res.status === 401) askForKey('This server needs an API key.');
      throw new Error(await errorMessage(res));
    }
    if (!(res.headers.get('content-type') || '').includes('text/event-stream')) {
      out.textContent = ((await res.json()).text || '').trim(); // a server that did not stream
    } else {
      await readEvents(res, (ev) => {
        if (ev.error) throw new Error(ev.error.message || 'transcription failed');
        if (ev.type === 'transcript.text.delta') out.textContent += ev.delta;
        else if (ev.type === 'transcript.text.done') out.textContent = (ev.text ?? out.textContent).trim();
      });
    }
    setStatus('Done.', 'info', 'upload-status');
  } catch (e) {
    setStatus(`Error: ${e.message}`, 'error', 'upload-status');
  } finally {
    $('transcribe').disabled = false;
  }
}

async function errorMessage(res) {
  try {
    return (await res.json()).error?.message || `HTTP ${res.status}`;
  } catch {
    return `HTTP ${res.status} ${res.statusText}`;
  }
}

// Server-sent events: blocks separated by a blank line, payload on "data:" lines.
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    buf += decoder.decode(value, { stream: !done }); // stream: a UTF-8 character may span reads
    const blocks = buf.split(/\r?\n\r?\n/);
    buf = done ? '' : blocks.pop(); // keep the unfinished block for the next read
    for (const block of blocks) {
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data && data !== '[DONE]') onEvent(JSON.parse(data));
    }
    if (done) return;
  }
}

// ---- Wiring -----------------------------------------------------------------------

$('mic').onclick = () => (live ? stop() : start());
$('transcribe').onclick = upload;
$('api-key').value = apiKey();
$('api-key').onchange = () => {
  const key = $('api-key').value.trim();
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
  loadModels();
};

// Autostart waits for the key check: without a valid key the stream would be refused.
loadModels().then((keyOk) => {
  if (keyOk !== false && new URLSearchParams(location.search).get('autostart') === '1') start();
});
