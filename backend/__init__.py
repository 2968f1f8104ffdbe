"""snapdeck's backend: a library that knows nothing about the UI."""
