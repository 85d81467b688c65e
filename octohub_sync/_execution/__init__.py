"""Running tasks: admission, the worker pool, the limits per type and key, a task's life from admission
to its answer, and what a handler sees (current_task())."""
