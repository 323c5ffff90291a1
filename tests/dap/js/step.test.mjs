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

// A step looping in the shell itself, one looping over a program, and a program:
// pause ends each (status 130), the shell keeps its directory, exports and
// functions, and the session goes on.
async function pauses(t, shell) {
  const { dir, file } = script([
    'cd "$(dirname "$0")"', 'export STAGE=dev', 'greet() { echo "hi $1 from $STAGE in $PWD"; }',
    'until false; do :; done', 'greet there',
    'until false; do sleep 0.01; done', 'echo "status $?"',
    'sleep 100; echo not-reached', 'greet again', '',
  ].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file, shell, cwd: '/' });
  const pauseAt = async (line) => {
    const ran = within(dc.waitForEvent('continued', T).catch(() => null), 'continued');
    await dc.continueRequest({ threadId: 1 });
    await Promise.race([ran, sleep(500)]);
    await sleep(500);
    // while it runs, the run is not stopped
    await assert.rejects(dc.stackTraceRequest({ threadId: 1 }), /running; pause it first/);
    const began = Date.now();
    const ev = await after(dc, 'stopped', () => dc.pauseRequest({ threadId: 1 }));
    assert.equal(ev.body.reason, 'pause');
    assert.ok(Date.now() - began < 5000, `pause took ${Date.now() - began} ms`);
    const st = await frames(dc);
    assert.equal(st[0].line, line); // stopped before the step after the paused one
    const scopes = await dc.scopesRequest({ frameId: st[1].id });
    const ref = scopes.body.scopes.find((s) => s.name === 'Step').variablesReference;
    const vars = (await dc.variablesRequest({ variablesReference: ref })).body.variables;
    assert.equal(vars.find((v) => v.name === 'exit code').value, '130');
  };
  await pauseAt(5);
  // zsh's shell ends on the interrupt: started again as before the step, and said
  const restarted = /pausing line 4 ended its shell; the shell was started again/;
  if (shell === 'zsh') assert.match(by(dc, 'console'), restarted);
  else assert.doesNotMatch(by(dc, 'console'), restarted);
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.match(by(dc, 'stdout'), new RegExp(`hi there from dev in ${dir}\n`));
  await pauseAt(7);
  assert.equal(await hover(dc, '$STAGE'), 'dev');
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.match(by(dc, 'stdout'), /status 130\n$/);
  await pauseAt(9);
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.doesNotMatch(by(dc, 'stdout'), /not-reached/);
  assert.match(by(dc, 'stdout'), new RegExp(`hi again from dev in ${dir}\n$`));
}

test('pause ends a step wherever it loops, and the session goes on, in bash', (t) => pauses(t, 'bash'));
test('pause ends a step wherever it loops, and the session goes on, in zsh', (t) => pauses(t, 'zsh'));

test('pause between steps stops before the next one, and next goes on from there', async (t) => {
  const lines = Array.from({ length: 600 }, (_, i) => `echo ${i + 1}`);
  const { file } = script(lines.join('\n') + '\n');
  const dc = await client(t);
  await start(dc, { program: file });
  await dc.continueRequest({ threadId: 1 });
  await sleep(300);
  const ev = await after(dc, 'stopped', () => dc.pauseRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'pause');
  const line = (await frames(dc))[0].line;
  assert.ok(line > 1 && line < 600, `stopped at ${line}`);
  const want = lines.slice(0, line - 1).map((l) => l.slice(5) + '\n').join('');
  assert.equal(by(dc, 'stdout'), want); // each step before it ran whole, none after
  const next = await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.equal(next.body.reason, 'step');
  assert.equal((await frames(dc))[0].line, line + 1);
  assert.equal(by(dc, 'stdout'), want + `${line}\n`);
});

// A program that sources a library from its directory.
function withLibrary() {
  const lib = ['# a library', 'export LIB_GREETING=hello', 'greet() { echo "$LIB_GREETING $1"; }',
    'export FROM_LIB=yes', 'echo "lib loaded"', ''].join('\n');
  const { dir, file } = script(['echo start', 'source ./lib.sh', 'greet world', 'echo "from lib: $FROM_LIB"', ''].join('\n'));
  fs.writeFileSync(path.join(dir, 'lib.sh'), lib);
  return { dir, file, lib: fs.realpathSync(path.join(dir, 'lib.sh')), text: lib };
}

async function stepsIn(t, shell) {
  const { dir, file, lib, text } = withLibrary();
  const dc = await client(t);
  await start(dc, { program: file, cwd: dir, shell });
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  const ev = await after(dc, 'stopped', () => dc.stepInRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'step');
  let st = await frames(dc);
  // the sourced script's frame, above the program's frame at its source line
  assert.deepEqual(st.slice(0, 3).map((f) => [f.source.path, f.line]), [[lib, 2], [file, 2], [file, 1]]);
  assert.equal((await dc.sourceRequest({ source: { path: lib }, sourceReference: 0 })).body.content, text);
  const stepScope = async (frameId) => {
    const scopes = await dc.scopesRequest({ frameId });
    const ref = scopes.body.scopes.find((s) => s.name === 'Step').variablesReference;
    const vars = (await dc.variablesRequest({ variablesReference: ref })).body.variables;
    return Object.fromEntries(vars.map((v) => [v.name, v.value]));
  };
  assert.equal((await stepScope(st[0].id)).command, 'export LIB_GREETING=hello');
  assert.equal((await stepScope(st[1].id)).command, 'source ./lib.sh');
  // jumps are to the program's steps: none offered in the sourced script
  assert.deepEqual((await dc.gotoTargetsRequest({ source: { path: lib }, line: 4 })).body.targets, []);
  assert.equal((await dc.gotoTargetsRequest({ source: { path: file }, line: 4 })).body.targets[0].line, 4);
  assert.equal(by(dc, 'stdout'), 'start\n'); // entering runs nothing
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  st = await frames(dc);
  assert.deepEqual([st[0].source.path, st[0].line, st[1].line], [lib, 4, 2]);
  assert.equal(await hover(dc, '$LIB_GREETING'), 'hello'); // in the shell, as sourcing sets it
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.equal(await hover(dc, '${FROM_LIB-unset}'), 'yes');
  // back to before the export, still in the sourced script
  await after(dc, 'stopped', () => dc.stepBackRequest({ threadId: 1 }));
  st = await frames(dc);
  assert.deepEqual([st[0].source.path, st[0].line], [lib, 4]);
  assert.equal(await hover(dc, '${FROM_LIB-unset}'), 'unset');
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  // out: the rest of it, stopping after the step that sources it
  await after(dc, 'stopped', () => dc.stepOutRequest({ threadId: 1 }));
  st = await frames(dc);
  assert.deepEqual([st[0].source.path, st[0].line], [file, 3]);
  assert.match(st[1].name, /lib\.sh line 5/); // the steps run in it are in the history
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(by(dc, 'stdout'), 'start\nlib loaded\nhello world\nfrom lib: yes\n');
}

test('stepIn enters a sourced script: next steps in it, stepBack too, stepOut leaves it, in bash',
  (t) => stepsIn(t, 'bash'));
test('stepIn enters a sourced script: next steps in it, stepBack too, stepOut leaves it, in zsh',
  (t) => stepsIn(t, 'zsh'));

test('a breakpoint in a sourced script stops there, also when the source is stepped over', async (t) => {
  const { dir, file, lib } = withLibrary();
  const dc = await client(t);
  await start(dc, { program: file, cwd: dir }, { lines: [[lib, [{ line: 5 }]]] });
  assert.deepEqual(dc.breakpoints.map((b) => [b.verified, b.line]), [[true, 5]]);
  let ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  assert.deepEqual(ev.body.hitBreakpointIds, [dc.breakpoints[0].id]);
  let st = await frames(dc);
  assert.deepEqual(st.slice(0, 2).map((f) => [f.source.path, f.line]), [[lib, 5], [file, 2]]);
  assert.equal(await hover(dc, '${FROM_LIB-unset}'), 'yes');
  await after(dc, 'stopped', () => dc.stepOutRequest({ threadId: 1 }));
  assert.deepEqual((await frames(dc)).slice(0, 1).map((f) => [f.source.path, f.line]), [[file, 3]]);
  // back to the start, then next over the source line: the breakpoint stops it
  await after(dc, 'stopped', () => dc.restartRequest({}));
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  ev = await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  st = await frames(dc);
  assert.deepEqual([st[0].source.path, st[0].line], [lib, 5]);
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
});

test('stepIn where no sourced script can be entered is next', async (t) => {
  const { dir, file } = withLibrary();
  fs.writeFileSync(file, ['LIB=./lib.sh', 'source "$LIB"', 'source ./lib.sh extra args', 'echo "$FROM_LIB"', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file, cwd: dir });
  for (const line of [2, 3, 4]) {
    await after(dc, 'stopped', () => dc.stepInRequest({ threadId: 1 }));
    const st = await frames(dc);
    assert.deepEqual([st[0].source.path, st[0].line], [file, line]);
  }
  assert.equal(by(dc, 'stdout'), 'lib loaded\nlib loaded\n');
});
