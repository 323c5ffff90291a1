"""rw on other hosts over the user's own OpenSSH: the bundle rw ships of itself,
the wire between the two rws, the remote side of a guarded run and the local one."""
