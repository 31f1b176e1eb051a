"""Embedding models served over HTTP.

:mod:`embeddb.providers.openai` speaks the OpenAI embeddings API (``POST /v1/embeddings``),
which OpenAI, Azure OpenAI and the OpenAI-compatible servers (Infinity, vLLM, Ollama, Text
Embeddings Inference, LiteLLM) all serve. :mod:`embeddb.providers.limits` holds what every HTTP
provider shares: batching limits, rate limits and retries.
"""
