"""Generation engines behind one protocol (template, vLLM, Hugging Face, OpenAI-compatible)."""
