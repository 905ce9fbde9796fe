"""Where findings go: local files (here), Log Analytics (later)."""
