"""The timeline: sessions and steps queried, travelled (back, branch, rewind),
re-run by the executor (replay, breakpoints), compared, exported and imported."""
