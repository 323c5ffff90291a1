// The few lines that start the debug adapter: `rw dap` on stdio, the rw that
// the rw.path setting names (a leading ~ is the home directory), else the rw
// on PATH. A launch configuration with "debugServer": PORT uses a running
// `rw dap --port PORT` instead (VS Code connects to it without asking here).
const os = require('os');
const path = require('path');
const vscode = require('vscode');

function rwProgram() {
  const configured = String(vscode.workspace.getConfiguration('rw').get('path') || '').trim();
  if (!configured) return 'rw';
  if (configured === '~' || configured.startsWith('~/')) {
    return path.join(os.homedir(), configured.slice(1));
  }
  return configured;
}

function activate(context) {
  context.subscriptions.push(
    vscode.debug.registerDebugAdapterDescriptorFactory('rw', {
      createDebugAdapterDescriptor() {
        return new vscode.DebugAdapterExecutable(rwProgram(), ['dap']);
      },
    }),
  );
}

function deactivate() {}

module.exports = { activate, deactivate, rwProgram };
