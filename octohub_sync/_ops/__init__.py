"""What operators see: the node's state (one writer), its counters, the alive and ready answers, the
status server (/livez, /readyz, /metrics, /tasks) and the filter on every log record."""
