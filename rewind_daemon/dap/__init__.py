"""`rw dap`: the Debug Adapter Protocol server over the executor."""
