#!/usr/bin/env node
// Headless Chromium running spice-html5, driven by line-delimited JSON, for interop tests.
//
//     node driver.mjs            (needs `npm ci` in this folder: puppeteer-core)
//
// The browser is Debian's /usr/bin/chromium (override with $SPICE_HTML5_CHROMIUM or the
// "executable" field of "launch"/"open").  puppeteer-core never downloads a browser.
//
// Protocol (the same style as ../gtk_harness.py)
// ---------------------------------------------
// stdout: one JSON object per line, flushed.  Every object has "event" and "t" (CLOCK_MONOTONIC
// seconds, comparable with Python's time.monotonic()).
//
// Unsolicited events:
//   ready                 the driver is up {node, puppeteer}
//   launched              Chromium started {version, pid, user_data_dir}
//   console               {type, text, url, line}: console.* of the page (spice-html5 logs here)
//   pageerror             {message, stack}: an uncaught exception in the page
//   dialog                {type, message}: alert()/prompt() (spice-html5 alerts on unmapped
//                         keys, prompts for a password on "Permission denied."); dismissed
//   requestfailed         {url, error}; http-error {url, status}: the page's own requests
//   websocket-created     {url}
//   websocket-handshake   {url, status, protocol}: the server's answer; protocol is its
//                         Sec-WebSocket-Protocol header
//   websocket-closed      {url}; websocket-error {url, message}
//   page-crashed, browser-disconnected
//   error                 {message, stack?}: also the reply to a failed command
//
// stdin: one JSON command per line; each gets exactly one reply carrying "cmd" and the command's
// "id" when given: the event named below, "ok", or "error" {message}.  Commands are handled one
// at a time, in order.  Every wait is bounded ("timeout" in seconds).
//   ping                              -> ok {launched}
//   launch {executable?, args?}       -> launched (also done by the first "open")
//   open {url, timeout=30, viewport?: {width, height}}
//                                     -> opened {url, title}; navigates the (single) page
//   wait_canvas {timeout=10, surface=0, inputs=false}
//                                     -> canvas-ready {width, height, inputs_ready, mouse_mode}
//                                        once canvas#spice_surface_N has a nonzero size (and,
//                                        with inputs, the inputs channel is "ready")
//   canvas {surface=0}                -> canvas {width, height, rgba_b64}: getImageData of the
//                                        whole canvas, R,G,B,A bytes, row-major
//   state                             -> state {canvases, inputs_state, mouse_mode, messages}
//   click {x, y, button="left", count=1}, move {x, y}, down {button}, up {button},
//   wheel {x, y, dy}                  -> ok; x, y are canvas pixels
//   type {text, delay=0, shift=true}  -> ok; puppeteer keyboard on the focused canvas
//   key {key}, key_down {key}, key_up {key}
//                                     -> ok; puppeteer key names ("Enter", "Shift", "KeyA", "a")
//   screenshot {path}                 -> saved {path}: a PNG of the page, for people
//   quit                              -> ok, then Chromium is closed and the driver exits 0
// Input commands first wait (up to "timeout", default 10 s) until spice-html5's inputs channel
// is ready, since it drops input silently before that.
//
// Exit codes: 0 after quit, stdin EOF, SIGTERM/SIGINT/SIGHUP; 1 on an internal failure.

import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const PUPPETEER_VERSION = require('puppeteer-core/package.json').version;

const DEFAULT_CHROMIUM = process.env.SPICE_HTML5_CHROMIUM || '/usr/bin/chromium';
// What Chromium needs to run as root in a container, and to stay off the network.
const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--force-color-profile=srgb',
];
const DEFAULT_VIEWPORT = { width: 1280, height: 1024 };
const PROTOCOL_TIMEOUT_MS = 60_000;
const CLOSE_TIMEOUT_MS = 5_000;
const BUTTONS = new Set(['left', 'middle', 'right', 'back', 'forward']);
// US-layout characters typed with Shift held (spice-html5 sends scancodes from keyCode, which
// is the same for "a" and "A", so the Shift key must really be pressed).
const SHIFTED = new Set('~!@#$%^&*()_+{}|:"<>?ABCDEFGHIJKLMNOPQRSTUVWXYZ');

let browser = null;
let page = null;
let userDataDir = null;
let shuttingDown = false;

function now() {
  return Math.round(Number(process.hrtime.bigint()) / 1e3) / 1e6;
}

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, t: now(), ...fields }) + '\n');
}

function seconds(value, dflt) {
  const v = value === undefined || value === null ? dflt : Number(value);
  if (!Number.isFinite(v) || v < 0) throw new TypeError(`bad timeout ${value}`);
  return v;
}

function int(value, name) {
  const v = Number(value);
  if (!Number.isInteger(v)) throw new TypeError(`${name} must be an integer, got ${value}`);
  return v;
}

async function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms / 1000}s`)), ms);
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

// -- browser and page --------------------------------------------------------------------------

async function launch(cmd = {}) {
  if (browser) return;
  userDataDir = mkdtempSync(join(tmpdir(), 'spice-html5-chromium-'));
  const extra = Array.isArray(cmd.args) ? cmd.args.map(String) : [];
  try {
    browser = await puppeteer.launch({
      executablePath: cmd.executable || DEFAULT_CHROMIUM,
      headless: true, // puppeteer adds --headless=new; CHROMIUM_ARGS says so too
      pipe: true, // no debugging port; Chromium also quits when the pipe closes
      userDataDir,
      args: [...CHROMIUM_ARGS, ...extra],
      defaultViewport: DEFAULT_VIEWPORT,
      protocolTimeout: PROTOCOL_TIMEOUT_MS,
      timeout: 30_000,
      // our own handlers close Chromium, report, then exit
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
  } catch (err) {
    rmSync(userDataDir, { recursive: true, force: true, maxRetries: 3 });
    userDataDir = null;
    throw err;
  }
  browser.on('disconnected', () => {
    if (!shuttingDown) emit('browser-disconnected');
    browser = null;
    page = null;
  });
  const proc = browser.process();
  emit('launched', {
    version: await browser.version(),
    pid: proc ? proc.pid : null,
    user_data_dir: userDataDir,
  });
}

async function newPage() {
  const p = await browser.newPage();
  p.on('console', (msg) => {
    const loc = msg.location() || {};
    emit('console', {
      type: msg.type(),
      text: msg.text(),
      url: loc.url || null,
      line: loc.lineNumber ?? null,
    });
  });
  p.on('pageerror', (err) => {
    emit('pageerror', {
      message: err && err.message !== undefined ? err.message : String(err),
      stack: err && err.stack ? String(err.stack) : null,
    });
  });
  p.on('dialog', async (dialog) => {
    emit('dialog', { type: dialog.type(), message: dialog.message() });
    try {
      await dialog.dismiss();
    } catch (err) {
      emit('error', { message: `dismissing dialog: ${err.message}` });
    }
  });
  p.on('requestfailed', (req) => {
    emit('requestfailed', { url: req.url(), error: req.failure()?.errorText ?? null });
  });
  p.on('response', (res) => {
    if (res.status() >= 400) emit('http-error', { url: res.url(), status: res.status() });
  });
  p.on('error', (err) => emit('page-crashed', { message: err.message }));
  // WebSocket traffic is not in puppeteer's API; a CDP session of our own sees it.
  const cdp = await p.createCDPSession();
  const sockets = new Map();
  cdp.on('Network.webSocketCreated', (e) => {
    sockets.set(e.requestId, e.url);
    emit('websocket-created', { url: e.url });
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const headers = e.response.headers || {};
    const protocol = Object.entries(headers).find(
      ([k]) => k.toLowerCase() === 'sec-websocket-protocol',
    );
    emit('websocket-handshake', {
      url: sockets.get(e.requestId) ?? null,
      status: e.response.status,
      protocol: protocol ? protocol[1] : null,
    });
  });
  cdp.on('Network.webSocketFrameError', (e) => {
    emit('websocket-error', { url: sockets.get(e.requestId) ?? null, message: e.errorMessage });
  });
  cdp.on('Network.webSocketClosed', (e) => {
    emit('websocket-closed', { url: sockets.get(e.requestId) ?? null });
    sockets.delete(e.requestId);
  });
  await cdp.send('Network.enable');
  return p;
}

function requirePage() {
  if (!page) throw new Error('no page: send "open" first');
  return page;
}

function surfaceId(cmd) {
  return `spice_surface_${int(cmd.surface ?? 0, 'surface')}`;
}

// Runs in the page: what spice-html5 shows about canvas `id` and its connection.  spice-html5
// keeps its SpiceMainConn in a module variable, but hangs it on the primary canvas as `.sc`.
function pageCanvasInfo(id) {
  const c = document.getElementById(id);
  if (!c) return null;
  const sc = c.sc;
  const r = c.getBoundingClientRect();
  return {
    width: c.width,
    height: c.height,
    // canvas pixel (0, 0) in viewport CSS pixels: inside spice.css's 1px border
    left: r.left + c.clientLeft,
    top: r.top + c.clientTop,
    cssWidth: c.clientWidth,
    cssHeight: c.clientHeight,
    viewportWidth: window.innerWidth,
    viewportHeight: window.innerHeight,
    inputsReady: !!(sc && sc.inputs && sc.inputs.state === 'ready'),
    mouseMode: sc ? (sc.mouse_mode ?? null) : null,
  };
}

async function canvasInfo(cmd) {
  return requirePage().evaluate(pageCanvasInfo, surfaceId(cmd));
}

async function waitCanvas(cmd, { inputs }) {
  const p = requirePage();
  const timeout = seconds(cmd.timeout, 10);
  const id = surfaceId(cmd);
  try {
    await p.waitForFunction(
      (cid, wantInputs) => {
        const c = document.getElementById(cid);
        if (!c || c.width <= 0 || c.height <= 0) return false;
        return !wantInputs || !!(c.sc && c.sc.inputs && c.sc.inputs.state === 'ready');
      },
      { timeout: timeout * 1000, polling: 50 },
      id,
      inputs,
    );
  } catch (err) {
    const info = await canvasInfo(cmd).catch(() => null);
    const what = inputs ? `${id} with a ready inputs channel` : `${id} with a nonzero size`;
    throw new Error(`no ${what} within ${timeout}s (now: ${JSON.stringify(info)}): ${err.message}`);
  }
  return canvasInfo(cmd);
}

// Canvas (x, y) in viewport coordinates; grows the viewport when the point is outside it
// (mouse events outside the viewport reach nothing).
async function canvasPoint(cmd) {
  const x = int(cmd.x, 'x');
  const y = int(cmd.y, 'y');
  let info = await waitCanvas(cmd, { inputs: true });
  if (x < 0 || y < 0 || x >= info.width || y >= info.height) {
    throw new RangeError(`(${x}, ${y}) is outside the ${info.width}x${info.height} canvas`);
  }
  if (info.cssWidth !== info.width || info.cssHeight !== info.height) {
    throw new Error(
      `canvas is scaled (${info.width}x${info.height} shown at ${info.cssWidth}x${info.cssHeight})`,
    );
  }
  const px = info.left + x;
  const py = info.top + y;
  if (px >= info.viewportWidth || py >= info.viewportHeight || px < 0 || py < 0) {
    await page.setViewport({
      width: Math.max(info.viewportWidth, Math.ceil(info.left + info.width) + 16),
      height: Math.max(info.viewportHeight, Math.ceil(info.top + info.height) + 16),
    });
    info = await canvasInfo(cmd);
  }
  return { x: info.left + x, y: info.top + y };
}

function button(cmd) {
  const b = cmd.button ?? 'left';
  if (!BUTTONS.has(b)) throw new TypeError(`unknown button ${b}`);
  return b;
}

// Keys go to the canvas: spice-html5 listens for keydown/keyup there (and blurs it on
// mouseout), so focus it before every keyboard command.
async function focusCanvas(cmd) {
  await waitCanvas(cmd, { inputs: true });
  const focused = await page.evaluate((id) => {
    const c = document.getElementById(id);
    c.focus();
    return document.activeElement === c;
  }, surfaceId(cmd));
  if (!focused) throw new Error('could not focus the spice-html5 canvas');
}

// -- commands ----------------------------------------------------------------------------------

const commands = {
  async ping() {
    return { launched: browser !== null };
  },

  async launch(cmd) {
    await launch(cmd);
    return { event: 'ok' };
  },

  async open(cmd) {
    if (typeof cmd.url !== 'string') throw new TypeError('open needs a string "url"');
    const timeout = seconds(cmd.timeout, 30);
    await launch(cmd);
    if (!page) page = await newPage();
    if (cmd.viewport) {
      await page.setViewport({
        width: int(cmd.viewport.width, 'viewport.width'),
        height: int(cmd.viewport.height, 'viewport.height'),
      });
    }
    const res = await page.goto(cmd.url, { waitUntil: 'load', timeout: timeout * 1000 });
    if (res && res.status() >= 400) throw new Error(`GET ${cmd.url}: HTTP ${res.status()}`);
    return { event: 'opened', url: page.url(), title: await page.title() };
  },

  async wait_canvas(cmd) {
    const info = await waitCanvas(cmd, { inputs: !!cmd.inputs });
    return {
      event: 'canvas-ready',
      width: info.width,
      height: info.height,
      inputs_ready: info.inputsReady,
      mouse_mode: info.mouseMode,
    };
  },

  async canvas(cmd) {
    const out = await requirePage().evaluate((id) => {
      const c = document.getElementById(id);
      if (!c) return { missing: true };
      if (c.width <= 0 || c.height <= 0) return { width: c.width, height: c.height, empty: true };
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      let b64;
      if (typeof bytes.toBase64 === 'function') {
        b64 = bytes.toBase64();
      } else {
        const parts = [];
        for (let i = 0; i < bytes.length; i += 0x8000) {
          parts.push(String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000)));
        }
        b64 = btoa(parts.join(''));
      }
      return { width: c.width, height: c.height, b64 };
    }, surfaceId(cmd));
    if (out.missing) throw new Error(`no canvas #${surfaceId(cmd)}`);
    if (out.empty) throw new Error(`canvas #${surfaceId(cmd)} is ${out.width}x${out.height}`);
    return { event: 'canvas', width: out.width, height: out.height, rgba_b64: out.b64 };
  },

  async state() {
    const st = await requirePage().evaluate(() => {
      const canvases = [...document.querySelectorAll('canvas[id^="spice_surface_"]')].map(
        (c) => ({ id: c.id, width: c.width, height: c.height }),
      );
      const primary = document.getElementById('spice_surface_0');
      const sc = primary ? primary.sc : undefined;
      const messages = document.getElementById('message-div');
      return {
        canvases,
        inputs_state: sc && sc.inputs ? sc.inputs.state : null,
        mouse_mode: sc ? (sc.mouse_mode ?? null) : null,
        messages: messages ? messages.innerText : null,
      };
    });
    return { event: 'state', ...st };
  },

  async click(cmd) {
    const pt = await canvasPoint(cmd);
    await page.mouse.click(pt.x, pt.y, {
      button: button(cmd),
      count: int(cmd.count ?? 1, 'count'),
    });
  },

  async move(cmd) {
    const pt = await canvasPoint(cmd);
    await page.mouse.move(pt.x, pt.y);
  },

  async down(cmd) {
    await waitCanvas(cmd, { inputs: true });
    await page.mouse.down({ button: button(cmd) });
  },

  async up(cmd) {
    await waitCanvas(cmd, { inputs: true });
    await page.mouse.up({ button: button(cmd) });
  },

  async wheel(cmd) {
    const pt = await canvasPoint(cmd);
    await page.mouse.move(pt.x, pt.y);
    await page.mouse.wheel({ deltaY: Number(cmd.dy ?? 100) });
  },

  async type(cmd) {
    if (typeof cmd.text !== 'string') throw new TypeError('type needs a string "text"');
    await focusCanvas(cmd);
    const delay = Number(cmd.delay ?? 0);
    const shift = cmd.shift ?? true;
    for (const ch of cmd.text) {
      const shifted = shift && SHIFTED.has(ch);
      if (shifted) await page.keyboard.down('Shift');
      await page.keyboard.press(ch, { delay });
      if (shifted) await page.keyboard.up('Shift');
    }
  },

  async key(cmd) {
    if (typeof cmd.key !== 'string') throw new TypeError('key needs a string "key"');
    await focusCanvas(cmd);
    await page.keyboard.press(cmd.key, { delay: Number(cmd.delay ?? 0) });
  },

  async key_down(cmd) {
    await focusCanvas(cmd);
    await page.keyboard.down(String(cmd.key));
  },

  async key_up(cmd) {
    await focusCanvas(cmd);
    await page.keyboard.up(String(cmd.key));
  },

  // Drop a file on the page as a user's drag-and-drop would: spice_auto.html listens for
  // 'drop' on #spice-area and hands e.dataTransfer.files to file_xfer_start (filexfer.js; a
  // File without a type is skipped there as a directory, so one is always given).
  async drop_file(cmd) {
    if (typeof cmd.name !== 'string') throw new TypeError('drop_file needs a string "name"');
    await waitCanvas(cmd, { inputs: false });
    const dropped = await requirePage().evaluate(
      (name, b64, type) => {
        const sc = window.spice_connection;
        if (!sc || !sc.agent_connected) return false;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type }));
        const area = document.getElementById('spice-area');
        area.dispatchEvent(
          new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }),
        );
        return true;
      },
      cmd.name,
      String(cmd.data_b64 ?? ''),
      String(cmd.type ?? 'application/octet-stream'),
    );
    if (!dropped) throw new Error('the page has no connection with an agent yet');
  },

  async screenshot(cmd) {
    if (typeof cmd.path !== 'string') throw new TypeError('screenshot needs a string "path"');
    await requirePage().screenshot({ path: cmd.path, fullPage: true });
    return { event: 'saved', path: cmd.path };
  },

  async quit() {
    shuttingDown = true;
    return {};
  },
};

async function handleLine(line) {
  let id;
  let name = '?';
  try {
    const cmd = JSON.parse(line);
    if (cmd === null || typeof cmd !== 'object' || typeof cmd.cmd !== 'string') {
      throw new TypeError("command must be a JSON object with a string 'cmd'");
    }
    id = cmd.id;
    name = cmd.cmd;
    const handler = Object.hasOwn(commands, name) ? commands[name] : undefined;
    if (!handler) throw new TypeError(`unknown command ${JSON.stringify(name)}`);
    // a last bound for commands whose own waits are bounded already
    const limitMs = (seconds(cmd.timeout, 30) + 30) * 1000;
    const reply = (await withTimeout(handler(cmd), limitMs, name)) || {};
    const event = reply.event || 'ok';
    delete reply.event;
    emit(event, { ...reply, cmd: name, ...(id !== undefined ? { id } : {}) });
  } catch (err) {
    const fields = { cmd: name, message: `${err?.name ?? 'Error'}: ${err?.message ?? err}` };
    if (!(err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError)) {
      fields.stack = err?.stack ? String(err.stack) : undefined;
    }
    if (id !== undefined) fields.id = id;
    emit('error', fields);
  }
  if (shuttingDown) await shutdown(0);
}

async function shutdown(code) {
  shuttingDown = true;
  const b = browser;
  browser = null;
  page = null;
  if (b) {
    try {
      await withTimeout(b.close(), CLOSE_TIMEOUT_MS, 'closing Chromium');
    } catch (err) {
      emit('error', { message: err.message });
    }
    const proc = b.process();
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      try {
        process.kill(-proc.pid, 'SIGKILL'); // puppeteer starts it as a process group leader
      } catch {
        proc.kill('SIGKILL');
      }
    }
  }
  if (userDataDir) {
    rmSync(userDataDir, { recursive: true, force: true, maxRetries: 3 });
    userDataDir = null;
  }
  process.exit(code);
}

// -- main --------------------------------------------------------------------------------------

function main() {
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    process.on(sig, () => {
      emit('signal', { signal: sig });
      shutdown(0);
    });
  }
  process.on('unhandledRejection', (err) => {
    emit('error', { message: `unhandled rejection: ${err?.message ?? err}` });
  });
  process.stdout.on('error', () => shutdown(0)); // the reader is gone

  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    if (!line.trim()) return;
    chain = chain.then(() => (shuttingDown ? undefined : handleLine(line)));
  });
  rl.on('close', () => {
    chain = chain.then(() => {
      if (!shuttingDown) emit('stdin-eof');
      return shutdown(0);
    });
  });
  emit('ready', { node: process.version, puppeteer: PUPPETEER_VERSION });
}

try {
  main();
} catch (err) {
  emit('error', { message: String(err?.message ?? err), stack: String(err?.stack ?? '') });
  process.exit(1);
}
