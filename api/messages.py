"""OpenAI chat messages → the engine's ``(history, user turn, system prompt)``."""

from __future__ import annotations

from api.errors import ApiError
from api.images import ImageFetcher
from api.schemas import ChatMessageIn
from assistant.conversation import Message


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
        text, images = await _content(message, i, fetcher)
        if message.role in ("system", "developer"):
            if images:
                raise ApiError(400, "system messages cannot contain images", param=f"messages[{i}].content")
            system.append(text)
        else:
            if message.role == "assistant" and images:
                raise ApiError(
                    400, "assistant messages cannot contain images", param=f"messages[{i}].content"
                )
            chat.append(Message("user" if message.role == "user" else "assistant", text).with_images(images))
    last = chat.pop()
    # Over the API a system message is always literal text (routes pass literal_system=True).
    system_prompt = "\n\n".join(system) if system else None
    return chat, last, system_prompt


async def _content(message: ChatMessageIn, i: int, fetcher: ImageFetcher) -> tuple[str, list[bytes]]:
    if message.content is None or isinstance(message.content, str):
        return message.content or "", []
    texts, images = [], []
    for j, part in enumerate(message.content):
        if part.text is not None:  # the schema guarantees a part has exactly the field its type names
            texts.append(part.text)
        elif part.image_url is not None:
            images.append(await fetcher.load(part.image_url.url, f"messages[{i}].content[{j}].image_url.url"))
    return "\n".join(texts), images
