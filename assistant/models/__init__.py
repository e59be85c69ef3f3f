"""Chat model backends. Each implements :class:`assistant.models.base.ChatModel`."""
