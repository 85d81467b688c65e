"""The way to the hub: the API request, the socket (proxy, TLS), the WebSocket session and its frames, and
the checks that the path still answers. The only package that talks to websocket-client and makes
requests' calls."""
