"""The wire format of docs/protocol.md: messages, frames, signatures and addresses, as values and pure
functions. No sockets, no clock, no threads: everything here is tested without a hub."""
