"""ElevenLabs Agents (Conversational AI) over its WebSocket.

`wire` builds and parses the messages, `gate` decides which audio survives an interruption,
`urls` finds the conversation URL (a signed one when an API key is set), `agent_tools` turns
the dispatch table into the agent's client tools.
"""
