"""What differs by operating system, in one place: how a stop is asked for (signals, console events),
console output that no code page can break, and the Windows bindings."""
