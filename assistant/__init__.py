"""The assistant engine: everything the web page, the HTTP API and the CLI need, and no UI.

    from assistant import Assistant, Message, Settings

    assistant = Assistant.load(Settings(model="HuggingFaceTB/SmolVLM-256M-Instruct"))
    reply = assistant.reply([], Message.user("What is in this photo?", images=["cat.jpg"]))
    for event in reply:            # Transcribed → Queued… → Token… → Done
        ...
    reply.text, reply.stats        # once it has ended

A message is one type from the page to the store to the model; models are anything that
fulfils :class:`ChatModel` (local Hugging Face weights, or a remote OpenAI-compatible server).
"""

from assistant.conversation import Attachment, AudioAttachment, ImageAttachment, Message
from assistant.core import Assistant, Description, Done, Event, Queued, Reply, ReplyStats, Token, Transcribed
from assistant.errors import AssistantError, GenerationFailed, InvalidParams, MediaError, ModelUnavailable
from assistant.models.base import ChatModel, ChatRequest, ModelInfo, Usage
from assistant.options import GenerationParams
from assistant.settings import Settings
from assistant.speech import Transcriber, Transcript

__all__ = [
    "Assistant",
    "AssistantError",
    "Attachment",
    "AudioAttachment",
    "ChatModel",
    "ChatRequest",
    "Description",
    "Done",
    "Event",
    "GenerationFailed",
    "GenerationParams",
    "ImageAttachment",
    "InvalidParams",
    "MediaError",
    "Message",
    "ModelInfo",
    "ModelUnavailable",
    "Queued",
    "Reply",
    "ReplyStats",
    "Settings",
    "Token",
    "Transcribed",
    "Transcriber",
    "Transcript",
    "Usage",
]
