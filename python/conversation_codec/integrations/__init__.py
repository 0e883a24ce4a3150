"""Adapters that give agent frameworks a conversation-codec memory, one module per framework.

Each module imports its framework, which is an optional extra: `conversation_codec.integrations.openai_agents`
(`pip install "conversation-codec[openai-agents]"`), `.langchain` (`[langchain]`) and `.llama_index`
(`[llama-index]`). Importing `conversation_codec`, or this package, imports no framework.
"""
