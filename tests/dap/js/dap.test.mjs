// The debugger driven by the real DAP client, @vscode/debugadapter-testsupport's
// DebugClient, over stdio and over --port. Run by tests/dap/test_dap.py (one
// scenario per pytest test, by name), with RW_BIN and RW_HOME set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { DebugClient } = require('@vscode/debugadapter-testsupport');

const RW = process.env.RW_BIN;
const T = 15000; // ms to wait for any one event

// Every scenario's files, in one folder removed when the run ends.
const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), 'rw-dap-tests-'));
process.on('exit', () => fs.rmSync(ROOT, { recursive: true, force: true }));

function script(text, name = 'deploy.sh') {
  const dir = fs.mkdtempSync(path.join(ROOT, 'scenario-'));
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return { dir, file };
}

// A client on the adapter's stdio (the default), on a new `rw dap --port 0`
// (port: true; dc.port is where it listens), or on a running one (at: its port).
async function client(t, { port = false, at = null } = {}) {
  let dc;
  let server = null;
  if (port || at) {
    let bound = at;
    if (!bound) {
      server = spawn(RW, ['dap', '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
      bound = await new Promise((resolve, reject) => {
        let err = '';
        server.stderr.on('data', (d) => {
          err += d;
          const m = /listening on 127\.0\.0\.1:(\d+)/.exec(err);
          if (m) resolve(Number(m[1]));
        });
        server.on('exit', (code) => reject(new Error(`rw dap --port exited ${code}: ${err}`)));
      });
    }
    dc = new DebugClient(RW, 'dap', 'rw');
    await dc.start(bound);
    dc.port = bound;
  } else {
    dc = new DebugClient(RW, 'dap', 'rw', { env: process.env });
    await dc.start();
  }
  dc.defaultTimeout = T;
  dc.outputs = [];
  dc.on('output', (e) => dc.outputs.push(e.body));
  // disconnect first (unless the scenario did), then end the server, also when
  // the disconnect failed
  t.after(async () => {
    try {
      if (!dc.ended) await within(dc.stop(), 'disconnect');
    } finally {
      if (server) server.kill();
    }
  });
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

// An event, waited for from before `action` is sent (it may come with the response).
async function after(dc, event, action) {
  const seen = within(dc.waitForEvent(event, T), `${event} event`);
  await action();
  return seen;
}

// initialize, launch, breakpoints, configurationDone: the configuration sequence
// a real editor sends. Returns the first stopped (or terminated) event.
async function start(dc, args, { lines = [], functions = null, filters = null } = {}) {
  const init = within(dc.waitForEvent('initialized', T), 'initialized event');
  const caps = await dc.initializeRequest();
  assert.equal(caps.body.supportsStepBack, true);
  await dc.launchRequest(args);
  await init;
  if (lines.length) {
    const bps = await dc.setBreakpointsRequest({ source: { path: args.program }, breakpoints: lines });
    dc.breakpoints = bps.body.breakpoints;
  }
  if (functions) await dc.setFunctionBreakpointsRequest({ breakpoints: functions });
  if (filters) await dc.setExceptionBreakpointsRequest(filters);
  const stopped = within(dc.waitForEvent('stopped', T), 'stopped event');
  await dc.configurationDoneRequest();
  return stopped;
}

async function top(dc) {
  const st = await dc.stackTraceRequest({ threadId: 1 });
  return st.body.stackFrames;
}

async function variables(dc, scope, frameId = 1) {
  const scopes = await dc.scopesRequest({ frameId });
  const ref = scopes.body.scopes.find((s) => s.name === scope).variablesReference;
  const vars = await dc.variablesRequest({ variablesReference: ref });
  return Object.fromEntries(vars.body.variables.map((v) => [v.name, v]));
}

async function hover(dc, words) {
  const r = await dc.evaluateRequest({ expression: words, context: 'hover', frameId: 1 });
  return r.body.result;
}

const printed = (dc) => dc.outputs.filter((o) => o.category === 'stdout').map((o) => o.output).join('');

// ---------------------------------------------------------------------------

for (const port of [false, true]) {
  test(`stop on entry at the first command ${port ? 'over --port' : 'over stdio'}`, async (t) => {
    const { file } = script('#!/bin/bash\n# setup\n\nexport STAGE=dev\necho "stage $STAGE"\n');
    const dc = await client(t, { port });
    const stopped = await start(dc, { program: file });
    assert.equal(stopped.body.reason, 'entry');
    assert.equal((await dc.threadsRequest()).body.threads.length, 1);
    const frames = await top(dc);
    assert.equal(frames.length, 1);
    assert.equal(frames[0].line, 4);
    assert.equal(frames[0].source.path, file);
    await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
    const ended = after(dc, 'terminated', () => dc.nextRequest({ threadId: 1 }));
    const exited = within(dc.waitForEvent('exited', T), 'exited');
    await ended;
    assert.equal((await exited).body.exitCode, 0);
    assert.match(printed(dc), /stage dev/);
  });
}

// VS Code's configuration sequence as the client itself runs it (hitBreakpoint:
// initialize and launch; on `initialized`, setBreakpoints then configurationDone),
// then the watch console and going back, on either transport.
async function configuredThenBack(t, port) {
  const { dir, file } = script(
    ['cd "$W"', 'export STAGE=dev; echo one > n', 'export STAGE=prod; echo two > n', 'echo "stage $STAGE"', 'echo end', ''].join('\n'),
  );
  const w = path.join(dir, 'work');
  fs.mkdirSync(w);
  const n = () => fs.readFileSync(path.join(w, 'n'), 'utf8');
  const dc = await client(t, { port });
  await dc.hitBreakpoint({ program: file, stopOnEntry: false, env: { W: w }, watch: [w] }, { path: file, line: 4 });
  assert.equal(await hover(dc, '$STAGE'), 'prod');
  assert.equal(n(), 'two\n');
  // a watch expands words and never runs a command
  const watch = (expression) => dc.evaluateRequest({ expression, context: 'watch', frameId: 1 });
  assert.equal((await watch('$STAGE/${#STAGE}')).body.result, 'prod/4');
  await assert.rejects(watch('$(touch made)'), /expand words only/);
  assert.equal(fs.existsSync(path.join(w, 'made')), false);
  // reverse continue: no breakpoint before line 4, so back to the start
  const ev = await after(dc, 'stopped', () => dc.reverseContinueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'entry');
  assert.equal((await top(dc))[0].line, 1);
  assert.equal(await hover(dc, '${STAGE-unset}'), 'unset');
  assert.equal(fs.existsSync(path.join(w, 'n')), false);
  // forwards, then one step back: the environment and the file as before line 3
  for (let i = 0; i < 3; i++) await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.equal((await top(dc))[0].line, 4);
  await after(dc, 'stopped', () => dc.stepBackRequest({ threadId: 1 }));
  assert.equal((await top(dc))[0].line, 3);
  assert.equal(await hover(dc, '$STAGE'), 'dev');
  assert.equal(n(), 'one\n');
  await Promise.all([
    dc.assertStoppedLocation('breakpoint', { path: file, line: 4 }),
    dc.continueRequest({ threadId: 1 }),
  ]);
  const exited = within(dc.waitForEvent('exited', T), 'exited');
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.equal((await exited).body.exitCode, 0);
  assert.equal(printed(dc), 'stage prod\nend\n');
  return dc;
}

test('the configuration sequence, a watch, and going back, over stdio', async (t) => {
  await configuredThenBack(t, false);
});

test('the configuration sequence, a watch, and going back, over --port', async (t) => {
  const first = await configuredThenBack(t, true);
  // one debug session per connection, until the server is stopped: another
  // connection after this one's session ended debugs again
  await within(first.stop(), 'disconnect of the first connection');
  first.ended = true;
  // the server ends that session after answering disconnect: let it finish
  // (its executor's close runs twice and closes its pipes' fd numbers again;
  // a connection made meanwhile may have been given one)
  await new Promise((r) => setTimeout(r, 500));
  const again = await client(t, { at: first.port });
  const { file } = script('echo "second session"\n');
  const stopped = await start(again, { program: file });
  assert.equal(stopped.body.reason, 'entry');
  await after(again, 'terminated', () => again.continueRequest({ threadId: 1 }));
  assert.equal(printed(again), 'second session\n');
  // (before the first client's hook ends the server)
  await within(again.stop(), 'disconnect of the second connection');
  again.ended = true;
});

test('a line breakpoint is moved to the command covering its line', async (t) => {
  const { file } = script(
    ['echo one', 'if true; then', '  echo two', 'fi', '# a comment', '', 'echo three', ''].join('\n'),
  );
  const dc = await client(t);
  await start(dc, { program: file }, { lines: [{ line: 3 }, { line: 5 }] });
  assert.deepEqual(dc.breakpoints.map((b) => [b.verified, b.line]), [[true, 2], [true, 7]]);
  let ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  assert.equal(ev.body.hitBreakpointIds[0], dc.breakpoints[0].id);
  assert.equal((await top(dc))[0].line, 2);
  ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal((await top(dc))[0].line, 7);
  const frames = await top(dc);
  // the call stack reads as the run's history: newest first
  assert.deepEqual(frames.map((f) => f.line), [7, 2, 1]);
  assert.match(printed(dc), /one\ntwo\n/);
});

test('a case and a here-document inside $( ) are each one step of their command', async (t) => {
  const { file } = script(['x=$(case a in', '  a) echo A ;;', 'esac)', 'y=$(cat <<EOF', 'body )', 'EOF', ')', 'echo "$x $y"', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file }, { lines: [{ line: 2 }, { line: 5 }] });
  // breakpoints inside a command are moved to its first line
  assert.deepEqual(dc.breakpoints.map((b) => [b.verified, b.line]), [[true, 1], [true, 4]]);
  assert.equal((await top(dc))[0].line, 1);
  const ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  assert.equal((await top(dc))[0].line, 4);
  assert.equal(await hover(dc, '$x'), 'A');
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.equal((await top(dc))[0].line, 8);
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(printed(dc), 'A body )\n');
});

test('without stopOnEntry the run stops at a breakpoint, also on the first command', async (t) => {
  const { file } = script(['echo one', 'echo two', ''].join('\n'));
  const dc = await client(t);
  const ev = await start(dc, { program: file, stopOnEntry: false }, { lines: [{ line: 1 }] });
  assert.equal(ev.body.reason, 'breakpoint');
  assert.equal((await top(dc))[0].line, 1);
  assert.equal(printed(dc), '');
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(printed(dc), 'one\ntwo\n');
});

test('a conditional breakpoint stops only when its shell test holds', async (t) => {
  const { file } = script(
    ['for s in dev prod; do :; done', 'export STAGE=dev', 'echo a', 'export STAGE=prod', 'echo b', 'echo c', ''].join('\n'),
  );
  const dc = await client(t);
  const cond = '[ "$STAGE" = prod ]';
  await start(dc, { program: file }, { lines: [{ line: 3, condition: cond }, { line: 5, condition: cond }] });
  const ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  assert.equal((await top(dc))[0].line, 5);
});

test('a hit condition counts the times its breakpoint was reached', async (t) => {
  const { file } = script(['echo 1', 'echo 2', 'echo 3', 'echo 4', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file }, { functions: [{ name: 'echo', hitCondition: '>=3' }] });
  await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal((await top(dc))[0].line, 4); // reached at 2, 3 (stop on entry is before 1)
});

test('a line breakpoint with a hit condition counts each time its line is reached, also after going back', async (t) => {
  const { file } = script(['export N=$((N + 1))', 'echo "n=$N"', 'echo end', ''].join('\n'));
  const dc = await client(t);
  // line 2 stops the second time it is reached with its condition holding
  // (a reach where it does not hold is not counted); line 3 every time
  await start(dc, { program: file }, { lines: [{ line: 2, condition: '[ "$N" -ge 2 ]', hitCondition: '2' }, { line: 3 }] });
  const targets = await dc.gotoTargetsRequest({ source: { path: file }, line: 1 });
  const stopsAt = async (action) => {
    const ev = await after(dc, 'stopped', action);
    assert.equal(ev.body.reason, 'breakpoint');
    return (await top(dc))[0].line;
  };
  const again = async () => {
    await after(dc, 'stopped', () => dc.gotoRequest({ threadId: 1, targetId: targets.body.targets[0].id }));
    await dc.evaluateRequest({ expression: 'export N=1', context: 'repl', frameId: 1 });
    return stopsAt(() => dc.continueRequest({ threadId: 1 }));
  };
  assert.equal(await stopsAt(() => dc.continueRequest({ threadId: 1 })), 3); // n=1: not counted
  assert.equal(await again(), 3); // n=2: counted once
  assert.equal(await again(), 2); // n=2: the second time
  assert.equal(await stopsAt(() => dc.continueRequest({ threadId: 1 })), 3);
  assert.equal(await again(), 3); // the third time: ==2 no longer holds
  assert.match(printed(dc), /^n=1\nn=2\nn=2\nn=2\n$/);
});

test('a logpoint prints its message with {$VAR} expanded and does not stop', async (t) => {
  const { file } = script(['export STAGE=prod', 'echo middle', 'echo end', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file }, { lines: [{ line: 2, logMessage: 'stage is {$STAGE} ({${#STAGE}})' }] });
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  const logged = dc.outputs.filter((o) => o.category === 'console' && !o.output.startsWith('rw dap:'));
  assert.deepEqual(logged.map((o) => o.output), ['stage is prod (4)\n']);
});

test('a function breakpoint stops before any command running it', async (t) => {
  const { file } = script(
    ['kubectl() { echo "kubectl $*"; }', 'echo ready', 'FOO=1 kubectl get pods | cat', 'echo done', ''].join('\n'),
  );
  const dc = await client(t);
  await start(dc, { program: file }, { functions: [{ name: 'kubectl' }] });
  const ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  assert.equal((await top(dc))[0].line, 3);
});

test('the failed-command filter stops after a step that exits non-zero', async (t) => {
  const { file } = script(['echo fine', 'ls /nonexistent-rw-dap; echo "said so" >&2; (exit 3)', 'echo "status was $?"', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file }, { filters: { filters: ['failed'] } });
  const ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'exception');
  const info = await dc.exceptionInfoRequest({ threadId: 1 });
  assert.equal(info.body.exceptionId, 'failed');
  assert.match(info.body.description, /line 2 exited with status 3/);
  assert.match(info.body.details.message, /said so/);
  // stopped after the step: the next frame is line 3, the failed step below it
  const frames = await top(dc);
  assert.deepEqual(frames.map((f) => f.line).slice(0, 2), [3, 2]);
  const step = await variables(dc, 'Step', frames[1].id);
  assert.equal(step['exit code'].value, '3');
  const shell = await variables(dc, 'Shell');
  assert.equal(shell['$?'].value, '3');
  // $? reaches the next step as the script would see it
  await after(dc, 'terminated', () => dc.nextRequest({ threadId: 1 }));
  assert.match(printed(dc), /status was 3\n/);
});

test('the output filter stops after a step whose output matches', async (t) => {
  const { file } = script(['echo fine', 'echo "WARN: disk"', 'echo after', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file }, { filters: { filters: [], filterOptions: [{ filterId: 'output', condition: 'WARN|ERROR' }] } });
  const ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'exception');
  assert.equal((await dc.exceptionInfoRequest({ threadId: 1 })).body.exceptionId, 'output');
  assert.deepEqual((await top(dc)).map((f) => f.line).slice(0, 2), [3, 2]);
});

test('variables: the environment with changes marked, the shell, the step', async (t) => {
  const { dir, file } = script(['export RW_DAP_A=1', 'cd /', 'export RW_DAP_A=2 RW_DAP_B=x', 'echo end', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file, cwd: dir, env: { RW_DAP_GONE: null, RW_DAP_SET: 'yes' } });
  for (let i = 0; i < 3; i++) await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  const env = await variables(dc, 'Environment');
  assert.equal(env.RW_DAP_A.value, '2');
  assert.equal(env.RW_DAP_SET.value, 'yes');
  assert.equal(env.RW_DAP_GONE, undefined);
  assert.deepEqual(env.RW_DAP_A.presentationHint.attributes, ['changed']);
  assert.equal(env.RW_DAP_SET.presentationHint, undefined);
  const shell = await variables(dc, 'Shell');
  assert.equal(shell.cwd.value, '/');
  const step = await variables(dc, 'Step');
  assert.equal(step.command.value, 'echo end');
  // an older frame shows the environment before its step
  const frames = await top(dc);
  const older = await variables(dc, 'Environment', frames[1].id);
  assert.equal(older.RW_DAP_A.value, '1');
});

test('$0 is the script and $1... its arguments, also after going back', async (t) => {
  const { dir, file } = script(['cd "$(dirname "$0")"', 'echo "$(basename "$0") $# [$1] [$2]"', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file, args: ['one two', 'x'], cwd: '/' });
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.equal((await variables(dc, 'Shell')).cwd.value, dir);
  await after(dc, 'stopped', () => dc.stepBackRequest({ threadId: 1 }));
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  await after(dc, 'terminated', () => dc.nextRequest({ threadId: 1 }));
  assert.equal(printed(dc), 'deploy.sh 2 [one two] [x]\n');
});

for (const shell of ['bash', 'zsh']) {
  test(`$0 is the script in ${shell}`, async (t) => {
    const { file } = script('echo "$0"\n');
    const dc = await client(t);
    await start(dc, { program: file, shell });
    await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
    assert.equal(printed(dc), `${file}\n`);
  });
}

test('a REPL command runs in the paused shell and its export survives next', async (t) => {
  const { file } = script(['echo start', 'echo "got $FROM_REPL"', 'echo end', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  const r = await dc.evaluateRequest({ expression: 'export FROM_REPL=typed; echo set', context: 'repl', frameId: 1 });
  assert.equal(r.body.result.trim(), 'set');
  assert.equal(await hover(dc, '$FROM_REPL'), 'typed');
  await dc.evaluateRequest({ expression: 'export SPACED="a  b"; ARR=(x y z)', context: 'repl', frameId: 1 });
  assert.equal(await hover(dc, '$SPACED'), 'a  b');
  assert.equal(await hover(dc, '${ARR[@]}'), 'x y z');
  assert.equal(await hover(dc, '${#ARR[@]}'), '3');
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.match(printed(dc), /got typed/);
  // completions for the console: commands, $variables, file names
  await dc.evaluateRequest({ expression: 'rw_dap_greet() { :; }', context: 'repl', frameId: 1 });
  const labels = async (text) => (await dc.completionsRequest({ text, column: text.length + 1, frameId: 1 }))
    .body.targets.map((x) => x.label);
  assert.ok((await labels('rw_dap_gr')).includes('rw_dap_greet'));
  assert.deepEqual(await labels('echo $FROM_RE'), ['$FROM_REPL']);
  const files = await dc.completionsRequest({ text: 'cat /etc/host', column: 14, frameId: 1 });
  assert.ok(files.body.targets.some((x) => x.label === '/etc/hostname' && x.start === 5 && x.length === 9));
  // hovers expand words and never run commands
  for (const sneaky of ['$(touch x)', '`touch x`', '"a" ; touch x', '${A:-$(touch x)}', 'x\\']) {
    await assert.rejects(dc.evaluateRequest({ expression: sneaky, context: 'hover', frameId: 1 }), /expand words only/);
  }
  assert.equal(await hover(dc, 'a; b & c | d'), 'a; b & c | d'); // literal inside the quotes
  assert.equal(await hover(dc, '$((2 * 21))'), '42');
});

test('stepBack restores the environment, functions and the watched files', async (t) => {
  const { dir, file } = script([
    'cd "$W"',
    'export A=1; greet() { echo "hello $1"; }',
    'echo one > f.txt; echo keep > g.txt',
    'export A=2; echo two > f.txt; rm g.txt; mkdir made; unset -f greet',
    'echo end',
    '',
  ].join('\n'));
  const w = path.join(dir, 'work');
  fs.mkdirSync(w);
  const dc = await client(t);
  await start(dc, { program: file, env: { W: w }, watch: [w] }, { lines: [{ line: 5 }] });
  await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(fs.readFileSync(path.join(w, 'f.txt'), 'utf8'), 'two\n');
  assert.equal(fs.existsSync(path.join(w, 'g.txt')), false);
  assert.equal(await hover(dc, '$A'), '2');
  // what stepping back would restore, before doing it
  const scopes = await dc.scopesRequest({ frameId: 1 });
  const cp = scopes.body.scopes.find((s) => s.name === 'Checkpoint');
  assert.equal(cp.expensive, true);
  const would = (await dc.variablesRequest({ variablesReference: cp.variablesReference })).body.variables;
  const said = would.map((v) => `${v.name}: ${v.value}`);
  assert.ok(said.includes('A: 1'), said);
  assert.ok(said.includes('functions and aliases: as before line 4'), said);
  assert.ok(said.some((x) => /^file: modified +.*f\.txt/.test(x)), said);
  assert.ok(said.some((x) => /^file: created +.*g\.txt/.test(x)), said);
  assert.ok(said.some((x) => /^file: deleted +.*made/.test(x)), said);
  const back = await after(dc, 'stopped', () => dc.stepBackRequest({ threadId: 1 }));
  assert.equal(back.body.reason, 'step');
  assert.equal((await top(dc))[0].line, 4);
  assert.equal(await hover(dc, '$A'), '1');
  assert.equal(fs.readFileSync(path.join(w, 'f.txt'), 'utf8'), 'one\n');
  assert.equal(fs.readFileSync(path.join(w, 'g.txt'), 'utf8'), 'keep\n');
  assert.equal(fs.existsSync(path.join(w, 'made')), false);
  const r = await dc.evaluateRequest({ expression: 'greet back', context: 'repl', frameId: 1 });
  assert.match(r.body.result, /hello back/);
  assert.equal((await variables(dc, 'Shell')).cwd.value, w);
  await after(dc, 'stopped', () => dc.stepBackRequest({ threadId: 1 }));
  assert.equal(fs.existsSync(path.join(w, 'f.txt')), false);
  // forwards again: the step runs again, its checkpoint taken anew
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  assert.equal(fs.readFileSync(path.join(w, 'f.txt'), 'utf8'), 'two\n');
  await after(dc, 'stopped', () => dc.stepBackRequest({ threadId: 1 }));
  assert.equal(fs.readFileSync(path.join(w, 'f.txt'), 'utf8'), 'one\n');
});

test('reverseContinue goes back to the previous breakpoint, restoring', async (t) => {
  const { dir, file } = script(['echo 1 > "$W/n"', 'echo 2 > "$W/n"', 'echo 3 > "$W/n"', 'echo 4 > "$W/n"', 'echo end', ''].join('\n'));
  const w = path.join(dir, 'work');
  fs.mkdirSync(w);
  const dc = await client(t);
  await start(dc, { program: file, env: { W: w }, watch: [w] }, { lines: [{ line: 2 }, { line: 5 }] });
  await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal((await top(dc))[0].line, 5);
  assert.equal(fs.readFileSync(path.join(w, 'n'), 'utf8'), '4\n');
  const ev = await after(dc, 'stopped', () => dc.reverseContinueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  assert.equal((await top(dc))[0].line, 2);
  assert.equal(fs.readFileSync(path.join(w, 'n'), 'utf8'), '1\n');
  const start2 = await after(dc, 'stopped', () => dc.reverseContinueRequest({ threadId: 1 }));
  assert.equal(start2.body.reason, 'entry');
  assert.equal(fs.existsSync(path.join(w, 'n')), false);
  await assert.rejects(dc.stepBackRequest({ threadId: 1 }), /nothing to step back/);
});

test('goto skips steps forwards and restores going backwards', async (t) => {
  const { file } = script(['export N=1', 'export N=2', 'export N=3', 'echo "N=$N"', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  let targets = await dc.gotoTargetsRequest({ source: { path: file }, line: 4 });
  let ev = await after(dc, 'stopped', () => dc.gotoRequest({ threadId: 1, targetId: targets.body.targets[0].id }));
  assert.equal(ev.body.reason, 'goto');
  assert.equal((await top(dc))[0].line, 4);
  assert.equal(await hover(dc, '$N'), '1'); // lines 2 and 3 skipped
  targets = await dc.gotoTargetsRequest({ source: { path: file }, line: 1 });
  await after(dc, 'stopped', () => dc.gotoRequest({ threadId: 1, targetId: targets.body.targets[0].id }));
  assert.equal((await top(dc))[0].line, 1);
  assert.equal(await hover(dc, '${N-unset}'), 'unset');
});

test('pause interrupts a long step', async (t) => {
  const { file } = script(['echo start', 'sleep 60', 'echo end', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  const began = Date.now();
  const paused = within(dc.waitForEvent('stopped', T), 'stopped event');
  await dc.continueRequest({ threadId: 1 });
  await new Promise((r) => setTimeout(r, 500));
  // while a step runs: what needs the paused shell is refused, the rest is answered
  for (const ask of [() => dc.stackTraceRequest({ threadId: 1 }), () => dc.nextRequest({ threadId: 1 }),
    () => dc.evaluateRequest({ expression: 'echo hi', context: 'repl' }),
    () => dc.stepBackRequest({ threadId: 1 })]) {
    await assert.rejects(ask(), /running; pause it first/);
  }
  assert.equal((await dc.threadsRequest()).body.threads.length, 1);
  const bp = await dc.setBreakpointsRequest({ source: { path: file }, breakpoints: [{ line: 3 }] });
  assert.equal(bp.body.breakpoints[0].verified, true);
  await dc.pauseRequest({ threadId: 1 });
  const ev = await paused;
  assert.equal(ev.body.reason, 'pause');
  assert.ok(Date.now() - began < 10000);
  assert.equal((await top(dc))[0].line, 3);
});

test('terminate ends the shell and what it started', async (t) => {
  const { dir, file } = script(['sleep 300 & echo $! > "$D/pid"', 'echo end', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file, env: { D: path.dirname(file) } });
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  const pid = Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8'));
  assert.ok(alive(pid));
  const exited = within(dc.waitForEvent('exited', T), 'exited');
  await after(dc, 'terminated', () => dc.terminateRequest({}));
  await exited;
  for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(alive(pid), false);
});

test('a launch that cannot start is an error response, and the adapter stays up', async (t) => {
  const dc = await client(t);
  await dc.initializeRequest();
  await assert.rejects(dc.launchRequest({ program: '/nonexistent/rw-dap.sh' }), /cannot read/);
  await assert.rejects(dc.launchRequest({ program: 42 }), /which script/);
  const { file } = script('if true; then\n  echo never closed\n');
  await assert.rejects(dc.launchRequest({ program: file }), /line 1: .*`fi`/);
  await assert.rejects(dc.nextRequest({ threadId: 1 }), /before launch/);
  const good = script('echo ok\n');
  const init = within(dc.waitForEvent('initialized', T), 'initialized');
  await dc.launchRequest({ program: good.file });
  await init;
});

test('exit typed in the console ends the program as the script would', async (t) => {
  const { file } = script(['echo one', 'echo two', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  const exited = within(dc.waitForEvent('exited', T), 'exited');
  const terminated = within(dc.waitForEvent('terminated', T), 'terminated');
  const r = await dc.evaluateRequest({ expression: 'echo bye; exit 4', context: 'repl', frameId: 1 });
  assert.match(r.body.result, /bye/);
  assert.equal((await exited).body.exitCode, 4);
  await terminated;
  await assert.rejects(dc.nextRequest({ threadId: 1 }), /has ended/);
});

for (const shell of ['bash', 'zsh']) {
  test(`set -e scripts run on past a failure that does not end them, in ${shell}`, async (t) => {
    const { file } = script(['set -e', '[ -f /nonexistent-rw ] && echo yes', 'echo "after $?"', 'false', 'echo never', ''].join('\n'));
    const dc = await client(t);
    await start(dc, { program: file, shell });
    const exited = within(dc.waitForEvent('exited', T), 'exited');
    await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
    assert.equal(printed(dc), 'after 1\n');
    assert.equal((await exited).body.exitCode, 1);
  });
}

for (const shell of ['bash', 'zsh']) {
  test(`under set -e what the debugger runs in the paused shell never ends it, in ${shell}`, async (t) => {
    const { file } = script(['set -e', 'export STAGE=dev', 'echo one', 'echo two', ''].join('\n'));
    const dc = await client(t);
    await start(dc, { program: file, shell }, { lines: [{ line: 3, condition: '[ "$STAGE" = prod ]' }] });
    await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
    const r = await dc.evaluateRequest({ expression: 'false', context: 'repl', frameId: 1 });
    assert.equal(r.body.result, '(exit 1)');
    await assert.rejects(dc.evaluateRequest({ expression: '${STAGE:?unset here}x${NOPE:?is unset}', context: 'hover', frameId: 1 }));
    const none = await dc.completionsRequest({ text: 'zzz-no-such-command', column: 20, frameId: 1 });
    assert.deepEqual(none.body.targets, []);
    await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 })); // the condition is false
    assert.equal(printed(dc), 'one\ntwo\n');
  });
}

test('under set -u a condition or logpoint naming an unset variable leaves the script running', async (t) => {
  const { file } = script(['set -u', 'echo one', 'echo two', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file }, {
    lines: [{ line: 2, condition: '[ "$NOT_SET_HERE" = x ]' }, { line: 3, logMessage: 'it is {$NOT_SET_HERE}' }],
  });
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(printed(dc), 'one\ntwo\n');
  const logged = dc.outputs.filter((o) => o.category === 'console' && o.output.startsWith('it is'));
  assert.equal(logged.length, 1);
});

test('a zsh script runs in zsh', async (t) => {
  const { file } = script(['#!/usr/bin/env zsh', 'typeset -A m; m[k]=v', 'print -r -- "zsh ${ZSH_VERSION%%.*} $m[k]"', ''].join('\n'), 'z.zsh');
  const dc = await client(t);
  await start(dc, { program: file });
  const done = await dc.completionsRequest({ text: 'typese', column: 7, frameId: 1 });
  assert.ok(done.body.targets.some((x) => x.label === 'typeset'));
  const vars = await dc.completionsRequest({ text: 'echo $ZSH_VERS', column: 15, frameId: 1 });
  assert.deepEqual(vars.body.targets.map((x) => x.label), ['$ZSH_VERSION']);
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.match(printed(dc), /zsh \d+ v/);
});

test('terminate while a step runs ends it, with one exited and one terminated', async (t) => {
  const { file } = script(['echo start', 'sleep 60', 'echo end', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  let exits = 0;
  dc.on('exited', () => exits++);
  const terminated = within(dc.waitForEvent('terminated', T), 'terminated');
  await dc.continueRequest({ threadId: 1 });
  await new Promise((r) => setTimeout(r, 300));
  await dc.terminateRequest({});
  await terminated;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(exits, 1);
  assert.doesNotMatch(printed(dc), /end/);
});

test('restart goes back to the start, files and all', async (t) => {
  const { dir, file } = script(['echo 1 > "$W/n"', 'export N=1', 'echo end', ''].join('\n'));
  const w = path.join(dir, 'work');
  fs.mkdirSync(w);
  const dc = await client(t);
  await start(dc, { program: file, env: { W: w }, watch: [w] }, { lines: [{ line: 3 }] });
  await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(await hover(dc, '$N'), '1');
  const ev = await after(dc, 'stopped', () => dc.restartRequest({}));
  assert.equal(ev.body.reason, 'entry');
  assert.equal((await top(dc))[0].line, 1);
  assert.equal(fs.existsSync(path.join(w, 'n')), false);
  assert.equal(await hover(dc, '${N-unset}'), 'unset');
});

test('setVariable changes an export of the paused shell', async (t) => {
  const { file } = script(['export STAGE=dev', 'echo "stage $STAGE"', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  const scopes = await dc.scopesRequest({ frameId: 1 });
  const ref = scopes.body.scopes.find((s) => s.name === 'Environment').variablesReference;
  const r = await dc.setVariableRequest({ variablesReference: ref, name: 'STAGE', value: "prod's" });
  assert.equal(r.body.value, "prod's");
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.match(printed(dc), /stage prod's/);
});

test('each debug run is recorded as a session', async (t) => {
  const { file } = script(['export A=1', 'echo "A is $A"', 'false', ''].join('\n'));
  const dc = await client(t);
  await start(dc, { program: file });
  const said = dc.outputs.map((o) => o.output).join('');
  const sid = /recorded as session (\S+) \(dap-deploy\.sh\)/.exec(said)[1];
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  await after(dc, 'stopped', () => dc.nextRequest({ threadId: 1 }));
  await after(dc, 'stopped', () => dc.stepBackRequest({ threadId: 1 }));
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  const steps = JSON.parse(execFileSync(RW, ['log', sid, '--json'], { encoding: 'utf8' }));
  // what ran, in the order it ran: line 2 twice (run, stepped back, run again)
  assert.deepEqual(steps.map((s) => [s.command, s.exit_code]),
    [['export A=1', 0], ['echo "A is $A"', 0], ['echo "A is $A"', 0], ['false', 1]]);
  const shown = execFileSync(RW, ['show', sid, '2', '--output'], { encoding: 'utf8' });
  assert.match(shown, /A is 1/);
});

test('a recorded session is debugged as a script at a stable path', async (t) => {
  const { dir } = script('');
  const hist = path.join(dir, 'history');
  fs.writeFileSync(hist, ['export STAGE=dev', 'echo "stage $STAGE"', 'rw log',
    'export GITHUB_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB', 'echo end', ''].join('\n'));
  const sid = JSON.parse(execFileSync(RW, ['import', 'bash', hist, '--name', 'hist', '--json'],
    { encoding: 'utf8' })).session;
  const dc = await client(t);
  const init = within(dc.waitForEvent('initialized', T), 'initialized event');
  await dc.initializeRequest();
  await dc.launchRequest({ session: 'hist' });
  await init;
  const st = await dc.threadsRequest();
  assert.equal(st.body.threads.length, 1);
  const stopped = within(dc.waitForEvent('stopped', T), 'stopped event');
  await dc.configurationDoneRequest();
  await stopped;
  const frame = (await top(dc))[0];
  const shown = fs.readFileSync(frame.source.path, 'utf8');
  assert.equal(path.basename(frame.source.path), `${sid}.sh`);
  assert.equal((await dc.sourceRequest({ source: frame.source, sourceReference: 0 })).body.content, shown);
  const lines = shown.split('\n');
  assert.equal(lines[frame.line - 1], 'export STAGE=dev');
  assert.ok(lines.includes('#   rw log')); // rw's own step: shown, not run
  // a breakpoint in the shown script
  const last = lines.indexOf('echo end') + 1;
  const bps = await dc.setBreakpointsRequest({ source: frame.source, breakpoints: [{ line: last }] });
  assert.equal(bps.body.breakpoints[0].verified, true);
  // the step with a redacted value stops the run instead of running
  let ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'exception');
  assert.match(ev.body.description, /holds a value stored redacted/);
  const info = await dc.exceptionInfoRequest({ threadId: 1 });
  assert.equal(info.body.exceptionId, 'not run');
  assert.match(info.body.details.stackTrace, /GITHUB_TOKEN=<redacted>/);
  assert.match(printed(dc), /^stage dev\n$/);
  const targets = await dc.gotoTargetsRequest({ source: frame.source, line: last });
  await after(dc, 'stopped', () => dc.gotoRequest({ threadId: 1, targetId: targets.body.targets[0].id }));
  await after(dc, 'terminated', () => dc.continueRequest({ threadId: 1 }));
  assert.match(printed(dc), /^stage dev\nend\n$/);
  // the run is recorded as a branch of the session it debugged
  const sessions = JSON.parse(execFileSync(RW, ['sessions', '--json'], { encoding: 'utf8' }));
  const run = sessions.find((s) => s.name === 'hist-dap');
  assert.equal(run.parent, sid);
  await assert.rejects(launchAgain(), /no session|nothing/);

  async function launchAgain() {
    const other = await client(t);
    await other.initializeRequest();
    return other.launchRequest({ session: 'no-such-session' });
  }
});

test("a debugged session's own breakpoints (rw breakpoint) stop it too", async (t) => {
  const { dir } = script('');
  const hist = path.join(dir, 'history');
  fs.writeFileSync(hist, ['echo one', 'echo two', 'echo three', 'echo WARN four', 'echo five', ''].join('\n'));
  execFileSync(RW, ['import', 'bash', hist, '--name', 'bp', '--json']);
  execFileSync(RW, ['breakpoint', 'add', 'bp', '--step', '2']);
  execFileSync(RW, ['breakpoint', 'add', 'bp', '--pattern', 'WARN', '--in', 'output']);
  const dc = await client(t);
  await start(dc, { session: 'bp' });
  let ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'breakpoint');
  assert.match(fs.readFileSync((await top(dc))[0].source.path, 'utf8').split('\n')[(await top(dc))[0].line - 1], /echo two/);
  ev = await after(dc, 'stopped', () => dc.continueRequest({ threadId: 1 }));
  assert.equal(ev.body.reason, 'exception');
  assert.match(ev.body.description, /output matches \/WARN\//);
  assert.equal((await dc.exceptionInfoRequest({ threadId: 1 })).body.exceptionId, 'rw breakpoint');
  assert.match(printed(dc), /one\ntwo\nthree\nWARN four\n$/);
});

function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}
