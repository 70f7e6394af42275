"""The built-in audit checks, one module each, each registered like a third-party check."""
