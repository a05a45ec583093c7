"""The ``llamachain`` command line: parses input, calls the library, prints the result.

Importing this package stays light (click only); llama_cpp, gguf and langchain are imported
inside the commands that need them, so ``llamachain --help`` is instant.
"""

from llamachain.cli.main import cli, main

__all__ = ["cli", "main"]
