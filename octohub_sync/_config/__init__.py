"""What the node is told and who it is: settings read once and frozen, the pc_id, the state directory and
the proxy to use. Read at start; nothing here changes while the node runs."""
