"""Sphinx extension: drop repeated inline scripts from each page.

sphinx-thebe adds its configuration script on every "env-before-read-docs" event, which
Jupyter Book 1 fires more than once per build, so every
page declared ``const THEBE_JS_URL`` twice and the browser reported a SyntaxError. This
keeps the first of any identical script (same file, same inline body). It edits the
page's list in place: that list is the builder's, to which handlers that run later
(MathJax, on pages with equations) still add their scripts.
"""

def _dedupe(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", script) or "",  # None and "" both mean inline
               getattr(script, "attributes", {}).get("body"))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"][:] = kept

def setup(app):
    app.connect("html-page-context", _dedupe, priority=1)  # first: a later handler may end the event
    return {"parallel_read_safe": True, "parallel_write_safe": True}
