// Stepping and pausing, driven by the real DAP client (DebugClient): output by
// stream, pause of a step wherever it runs, and stepIn into a sourced script.
// Run by tests/dap/test_dap.py (one scenario per pytest test, by name), with
// RW_BIN and RW_HOME set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const RW = process.env.RW_BIN;
const T = 15000; // ms to wait for any one event

const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), 'rw-dap-step-tests-'));
process.on('exit', () => fs.rmSync(ROOT, { recursive: true, force: true }));

function script(text, name = 'deploy.sh') {
  const dir = fs.mkdtempSync(path.join(ROOT, 'scenario-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return { dir, file };
}

async function client(t) {
  const dc = new DebugClient(RW, 'dap', 'rw', { env: process.env });
  dc.defaultTimeout = T;
  await dc.start();
  dc.outputs = [];
  dc.on('output', (e) => dc.outputs.push(e.body));
  t.after(() => within(dc.stop(), 'disconnect'));
  return dc;
}

function within(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} within ${T} ms`)), T);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function after(dc, event, action) {
  const seen = within(dc.waitForEvent(event, T), `${event} event`);
  await action();
  return seen;
}

async function start(dc, args, { lines = [] } = {}) {
  const init = within(dc.waitForEvent('initialized', T), 'initialized event');
  await dc.initializeRequest();
  await dc.launchRequest(args);
  await init;
  for (const [file, wanted] of lines) {
    const bps = await dc.setBreakpointsRequest({ source: { path: file }, breakpoints: wanted });
    dc.breakpoints = (dc.breakpoints || []).concat(bps.body.breakpoints);
  }
  const stopped = within(dc.waitForEvent('stopped', T), 'stopped event');
  await dc.configurationDoneRequest();
  return stopped;
}

async function frames(dc) {
  return (await dc.stackTraceRequest({ threadId: 1 })).body.stackFrames;
}

async function hover(dc, words) {
  return (await dc.evaluateRequest({ expression: words, context: 'hover', frameId: 1 })).body.result;
}

const by = (dc, category) => dc.outputs.filter((o) => o.category === category).map((o) => o.output).join('');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------

test('stdout and stderr are output events of their own categories', async (t) => {
  const { file } = script(['echo to-out', 'echo to-err >&2; ls /nonexistent-rw-dap', 'echo "both" ; echo "both-err" >&2', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(by(dc, 'stdout'), 'to-out\nboth\n');
  assert.match(by(dc, 'stderr'), /^to-err\nls: .*nonexistent-rw-dap.*\nboth-err\n$/);
});
