"""Sphinx extension of the book: the repository and launch buttons follow `repository.url`.

Set `repository.url` in _config.yml to the book's public repository and every page gets a
Repository button, and every notebook page Binder and Colab buttons (the `launch_buttons` of
_config.yml). Left blank, all of them stay off: Jupyter Book refuses `use_repository_button` without
a URL, and sphinx-book-theme fails on launch buttons without one, so both are decided here instead.
"""

from __future__ import annotations

LAUNCHERS = ("binderhub_url", "colab_url", "jupyterhub_url", "jupyterlite_url", "deepnote_url")


def switch_buttons(theme_options: dict) -> dict:
    """The theme options with the repository and launch buttons on exactly when a URL is set."""
    on = bool(theme_options.get("repository_url", "").strip())
    launch = dict(theme_options.get("launch_buttons") or {})
    if not on:
        launch.update({key: "" for key in LAUNCHERS if key in launch}, thebe=False)
    return {**theme_options, "use_repository_button": on, "launch_buttons": launch}


def _on_config(app, config) -> None:
    config.html_theme_options = switch_buttons(config.html_theme_options)


def setup(app):
    app.connect("config-inited", _on_config, priority=100)  # before the theme reads its options
    return {"parallel_read_safe": True, "parallel_write_safe": True}
