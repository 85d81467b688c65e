"""``isolation="process"``: a task type's handler in child processes, the parent's pool of them and the
child's loop."""
