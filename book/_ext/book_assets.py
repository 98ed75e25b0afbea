"""Sphinx extension of the book: drop duplicated inline scripts from every page.

With Sphinx 7.4, scripts that extensions add after the HTML builder starts (sphinx-thebe's and
sphinx-togglebutton's inline configuration) reach the page twice, once registered as filename None
and once as '' (Sphinx's _JavaScript compares them as different). The second
`const THEBE_JS_URL = ...` is a SyntaxError in every reader's console; this keeps the first copy.
"""

from __future__ import annotations


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        key = (
            js.filename or "",
            tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
