"""Online serving: the champion over HTTP, hot reload, and the inference log."""
