"""Where rows come from: captured snapshots (and, later, live Resource Graph)."""
