"""Document loading and chunking for knowledge bases: files -> sections -> chunks."""
