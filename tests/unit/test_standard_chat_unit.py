"""LangChain's standard unit suite for chat models (no model file is loaded)."""

from langchain_tests.unit_tests import ChatModelUnitTests

from llamachain import ChatLlama


class TestChatLlamaUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLlama]:
        return ChatLlama

    @property
    def chat_model_params(self) -> dict:
        return {"seed": 0}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        # One ChatLlama serves one model file; per-call `model=` switching is not offered.
        return False
