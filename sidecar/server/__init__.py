"""Transport, framing and dispatch: the JSON-RPC machinery, apart from any capability."""
