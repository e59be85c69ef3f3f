"""OpenAI chat messages → the engine's ``(history, user turn, system prompt)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.errors import ApiError
from api.images import ImageFetcher
from api.schemas import ChatMessageIn
from assistant.conversation import Message
from assistant.media.documents import NamedData


@dataclass
class Parts:
    """What one message's content carries, by kind."""

    text: str = ""
    images: list[bytes] = field(default_factory=list)
    videos: list[bytes] = field(default_factory=list)
    documents: list[bytes] = field(default_factory=list)

    def files(self) -> str:
        """'' when the message has only text, else what it has (for an error message)."""
        kinds = [k for k in ("images", "videos", "documents") if getattr(self, k)]
        return " or ".join(kinds)


async def convert(
    messages: list[ChatMessageIn], fetcher: ImageFetcher
) -> tuple[list[Message], Message, str | None]:
    """(history, the user's new message, system prompt or None for the server's default persona)."""
    if not messages:
        raise ApiError(
            400, "messages must contain at least one user message", param="messages", code="empty_messages"
        )
    if messages[-1].role != "user":
        raise ApiError(
            400,
            f"the last message must come from the user, not '{messages[-1].role}'",
            param=f"messages[{len(messages) - 1}].role",
        )
    system: list[str] = []
    chat: list[Message] = []
    for i, message in enumerate(messages):
        parts = await _content(message, i, fetcher)
        if message.role in ("system", "developer"):
            if parts.files():
                raise ApiError(
                    400, f"system messages cannot contain {parts.files()}", param=f"messages[{i}].content"
                )
            system.append(parts.text)
        elif message.role == "assistant":
            if parts.files():
                raise ApiError(
                    400, f"assistant messages cannot contain {parts.files()}", param=f"messages[{i}].content"
                )
            chat.append(Message.assistant(parts.text))
        else:
            chat.append(
                Message.user(parts.text, parts.images, videos=parts.videos, documents=parts.documents)
            )
    last = chat.pop()
    # Over the API a system message is always literal text (routes pass literal_system=True).
    system_prompt = "\n\n".join(system) if system else None
    return chat, last, system_prompt


async def _content(message: ChatMessageIn, i: int, fetcher: ImageFetcher) -> Parts:
    if message.content is None or isinstance(message.content, str):
        return Parts(message.content or "")
    texts: list[str] = []
    parts = Parts()
    for j, part in enumerate(message.content):
        where = f"messages[{i}].content[{j}]"
        if part.text is not None:  # the schema guarantees a part has exactly the field its type names
            texts.append(part.text)
        elif part.image_url is not None:
            parts.images.append(await fetcher.load(part.image_url.url, f"{where}.image_url.url"))
        elif part.video_url is not None:
            parts.videos.append(await fetcher.load(part.video_url.url, f"{where}.video_url.url", "video"))
        elif part.file is not None:
            if part.file.file_data is None:
                raise ApiError(
                    400,
                    f"{where}.file: send the file inline as file_data (a data: URL); this server keeps no uploaded files",
                    param=f"{where}.file.file_data",
                    code="invalid_file",
                )
            data = await fetcher.load(part.file.file_data, f"{where}.file.file_data", "document")
            parts.documents.append(NamedData(data, part.file.filename or "document"))
    parts.text = "\n".join(texts)
    return parts
