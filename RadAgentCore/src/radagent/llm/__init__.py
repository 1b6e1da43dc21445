"""Chat LLMs for the planning agents: a thin HTTP transport (:mod:`radagent.llm.client`), reply
validation against JSON schemas (:mod:`radagent.llm.replies`) and prompts built by pure functions
(:mod:`radagent.llm.prompts`)."""
