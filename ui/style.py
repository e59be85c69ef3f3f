"""A little CSS on top of Gradio's default theme (``app.build_server`` hands it to
``gr.mount_gradio_app``, which sets the page's CSS)."""

CSS = """
.stats { font-size: 0.78rem; opacity: 0.65; min-height: 1.2em; margin-top: -6px; }
.stats p { margin: 0; }
/* the theme's own colours, so it reads in light and dark mode alike (one frame: not the inner block too) */
.banner .banner { border: none; background: none; padding: 0; }
.banner { border: 1px solid var(--border-color-accent); border-left: 6px solid var(--color-accent);
  background: var(--background-fill-secondary); color: var(--body-text-color); border-radius: 8px;
  padding: 4px 14px; }
.banner .prose, .banner p, .banner li, .banner h3 { color: var(--body-text-color); }
.banner code { color: var(--body-text-color); background: var(--background-fill-primary); }
.banner h3 { margin-top: 6px; }
.model-info { font-size: 0.8rem; opacity: 0.8; }
.history .wrap { flex-direction: column; align-items: stretch; gap: 4px; }
.history label { width: 100%; }
.history label span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.turn-actions button { min-width: 0; }
/* photos in a bubble as thumbnails (the fullscreen button shows them large) */
#chat [data-testid=user] .image-container { max-width: 280px; }
#chat [data-testid=user] .image-frame img { max-height: 220px; width: auto; object-fit: contain; }
/* The fullscreen button is the lightbox: the photo as large as the screen allows. */
/* (!important: it must win over the thumbnail sizes below, however specific) */
#chat :fullscreen .image-container { max-width: none !important; height: 100%; }
#chat :fullscreen .image-frame, #chat :fullscreen .image-frame img { max-height: 100vh !important;
  max-width: 100vw !important; height: 100%; width: 100%; object-fit: contain; }
/* Several photos of one message side by side, not stacked: Gradio gives each photo a row of its
   own, so the rows flow (wrapping) and only text rows take a whole line. */
#chat .message-wrap { flex-direction: row; flex-wrap: wrap; justify-content: flex-end;
  align-content: flex-start; column-gap: 6px; }
#chat .message-wrap > * { flex: 0 0 100%; }
/* (each line shrinks to its bubble, on its side, as Gradio's own column layout does) */
#chat .message-wrap > .message-row, #chat .message-wrap > .message-buttons { display: flex;
  flex-direction: column; }
#chat .message-wrap > .user-row, #chat .message-wrap > .message-buttons-right { align-items: flex-end; }
#chat .message-wrap > .bot-row, #chat .message-wrap > .message-buttons-left { align-items: flex-start; }
#chat .message-wrap > .message-row > .flex-wrap { width: auto; max-width: 100%; }
#chat .message-wrap > .message-row.user-row:has(.image-container) { flex: 0 1 auto; max-width: 32%;
  min-width: 96px; margin-bottom: 2px; }
#chat .message-wrap > .message-row:has(.image-container) [data-testid=user] .image-frame img {
  max-height: 160px; }
/* a photo's own download / share buttons: share only works on Spaces, download is in the lightbox */
#chat .message-wrap > .message-row:has(.image-container) + .message-buttons { display: none; }
/* Gradio 6.31 gives every file in the chat (a clip, a document) a Share button, whatever the
   chatbot's buttons are, and it only works on Spaces (ShareError): hidden, by its words and,
   for a page in another language, by its icon */
#chat .message-buttons button[aria-label="Share"],
#chat .message-buttons button:has(path[d^="M23,20a5,5,0,0,0-3.89,1.89"]) { display: none; }
/* (a document's row then holds nothing: its chip is the download link) */
#chat .message-wrap > .message-row:has([data-testid=chatbot-file]) + .message-buttons { display: none; }
/* page.js's short notices (Enter while a reply is written, Esc) */
#page-notice { position: fixed; left: 50%; bottom: 96px; transform: translateX(-50%); z-index: 1000;
  max-width: min(90vw, 560px); padding: 8px 14px; border-radius: 8px; font-size: 0.9rem;
  background: var(--background-fill-primary); color: var(--body-text-color);
  border: 1px solid var(--border-color-primary); box-shadow: var(--shadow-drop-lg);
  opacity: 0; pointer-events: none; transition: opacity 0.2s; }
#page-notice.shown { opacity: 1; }
/* "‹ 2/3 ›": the versions of a message (page.js adds them under its bubble) */
#chat .version-nav { display: inline-flex; align-items: center; gap: 2px; font-size: 0.8rem;
  color: var(--body-text-color); margin: 0 4px; }
#chat .user-row .version-nav { justify-content: flex-end; }
#chat .version-nav button { min-width: 24px; padding: 0 6px; border-radius: 6px; cursor: pointer;
  background: none; border: 1px solid transparent; color: inherit; font-size: 1rem; line-height: 1.3; }
#chat .version-nav button:hover:not(:disabled) { border-color: var(--border-color-primary); }
#chat .version-nav button:disabled { opacity: 0.35; cursor: default; }
/* one of each: the chat's own clear icon duplicates "New chat" */
#chat button[aria-label="Clear"] { display: none; }
"""
