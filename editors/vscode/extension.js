// The few lines that start the debug adapter: `rw dap` on stdio (the rw on
// PATH, or the one the rw.path setting names). A launch configuration with
// "debugServer": PORT uses a running `rw dap --port PORT` instead.
const vscode = require('vscode');

function activate(context) {
  context.subscriptions.push(
    vscode.debug.registerDebugAdapterDescriptorFactory('rw', {
      createDebugAdapterDescriptor() {
        const rw = vscode.workspace.getConfiguration('rw').get('path') || 'rw';
        return new vscode.DebugAdapterExecutable(rw, ['dap']);
      },
    }),
  );
}

function deactivate() {}

module.exports = { activate, deactivate };
