"""Answer a question with the bundled default model through a LangChain (LCEL) chain.

Run:  .venv/bin/python examples/quickstart.py ["your question"]
Nothing is downloaded: the model (SmolLM2-135M-Instruct, Q4_1) comes from a pip package.
"""

from __future__ import annotations

import sys
import time

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from llamachain import ChatLlama


def main() -> None:
    question = " ".join(sys.argv[1:]) or "What are three good habits for writing clear code?"
    chat = ChatLlama(temperature=0, seed=0, max_tokens=200)
    info = chat.engine.info
    print(
        f"model: {info.name} ({info.architecture}, {info.parameters_label} parameters, "
        f"{info.file_type}, context {chat.engine.n_ctx} tokens)"
    )

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a concise, helpful assistant."), ("user", "{question}")]
    )
    chain = prompt | chat | StrOutputParser()

    print(f"\nQ: {question}\nA: ", end="", flush=True)
    start = time.perf_counter()
    for piece in chain.stream({"question": question}):
        print(piece, end="", flush=True)
    print(f"\n\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
