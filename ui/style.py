"""A little CSS on top of Gradio's default theme (``app.build_server`` hands it to
``gr.mount_gradio_app``, which sets the page's CSS)."""

CSS = """
.stats { font-size: 0.78rem; opacity: 0.65; min-height: 1.2em; margin-top: -6px; }
.stats p { margin: 0; }
.banner { border: 1px solid #f59e0b; background: #fffbeb; color: #78350f; border-radius: 8px; padding: 4px 14px; }
.banner h3 { margin-top: 6px; }
.model-info { font-size: 0.8rem; opacity: 0.8; }
.history .wrap { flex-direction: column; align-items: stretch; gap: 4px; }
.history label { width: 100%; }
.history label span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.turn-actions button { min-width: 0; }
/* photos in a bubble as thumbnails (the fullscreen button shows them large) */
#chat [data-testid=user] .image-container { max-width: 280px; }
#chat [data-testid=user] .image-frame img { max-height: 220px; width: auto; object-fit: contain; }
"""
