"""Checkpoints: snapshots of file trees in a content-addressed object store,
system probes (dpkg, pip, services), and the daemon's tree watcher."""
