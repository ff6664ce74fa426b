"""Serving: an OpenAI-compatible server with per-request steering, and the playground page."""
