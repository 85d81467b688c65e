"""The node's life: frames from the hub routed and carried out, the watchdog that alone reconnects, the
clock-driven work, recycling, the order of a stop, and the wiring of all the parts."""
