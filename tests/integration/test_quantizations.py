"""Every precision of the default model loads and generates through the LangChain classes.

F16, Q8_0, Q4_0 and Q4_K_M are made from the shipped Q4_1 file with llama.cpp's quantizer
(once per session); on CPUs that advertise AMX a default llama.cpp build segfaults on all the
quantized ones -- our build must not.
"""

import pytest

from llamachain import ChatLlama, LlamaLLM
from llamachain.models import quantized_variant, read_model_info


@pytest.mark.parametrize("qtype", ["f16", "q8_0", "q4_0", "q4_1", "q4_k_m"])
def test_each_quantization_loads_and_generates(qtype, variants_home):
    path = quantized_variant(qtype, variants_home)
    info = read_model_info(path)
    assert info.file_type.lower() == qtype
    chat = ChatLlama(model=str(path), n_ctx=512, temperature=0, seed=0, max_tokens=12)
    msg = chat.invoke("What is the capital of France?")
    assert msg.content.strip()
    assert msg.usage_metadata["output_tokens"] > 0
    llm = LlamaLLM(model=str(path), n_ctx=512, temperature=0, seed=0, max_tokens=8)
    assert llm.invoke("The capital of France is").strip()
    chat.close()
    llm.close()
