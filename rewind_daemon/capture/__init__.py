"""Capture: what the shell hooks write (rendering them, the spool records),
the daemon that ingests it into the store, its client, and rw doctor."""
