"""The output recorder: `rw record` runs a shell under a pseudo-terminal proxy
(`proxy`), splits what the shell prints by the hooks' OSC 133 marks (`marks`)
and appends each step's output to a per-session spool (`spool`) that the daemon
ingests later. The proxy must be invisible and must never end the shell by its
own fault: when the splitter or the spool fails it degrades to pass-through."""
