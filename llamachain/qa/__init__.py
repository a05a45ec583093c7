"""Layer 4: grounded question answering over a knowledge base, and its evaluation."""

from llamachain.qa.chain import GroundedQA
from llamachain.qa.config import QAConfig
from llamachain.qa.memory import ConversationMemory
from llamachain.qa.prompt import QAPrompt
from llamachain.qa.result import Citation, QAChunk, QAResult, SourceChunk

__all__ = [
    "Citation",
    "ConversationMemory",
    "GroundedQA",
    "QAChunk",
    "QAConfig",
    "QAPrompt",
    "QAResult",
    "SourceChunk",
]
