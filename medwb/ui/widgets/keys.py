"""Keyboard shortcuts that belong to a widget, not to JupyterLab: :class:`KeyCatcher`.

Why: in JupyterLab a key pressed after clicking a review widget's image went to JupyterLab's command mode
(``a`` inserted a cell, ``r`` turned the cell into a Raw cell and the queue vanished), because an image cannot
hold focus and JupyterLab listens on the document. KeyCatcher is a tiny anywidget (its JavaScript ships in this
file: nothing is downloaded) that makes the widget box it sits in (its panel: two panels on one page each keep
their own keys) focusable (``tabindex=-1``, so a click anywhere on it focuses it) and marks it
``data-lm-suppress-shortcuts`` (Lumino, JupyterLab's command layer, ignores key events from inside such an
element). Printable keys pressed there, outside text fields, are sent to Python (``key``, ``count``) and stopped;
typing in a comment box is left alone. Works the same in Voilà.
"""
from __future__ import annotations

from collections.abc import Callable

import anywidget
import traitlets

_ESM = r"""
function render({ model, el }) {
  const hint = document.createElement("div");
  hint.className = "medwb-keycatcher";
  hint.textContent = model.get("hint");
  hint.style.cssText = "font-size:0.9em;color:#555;padding:2px 0";
  el.appendChild(hint);
  const onKey = (e) => {
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) {
      return;  // typing a comment or a name: not a shortcut
    }
    if (e.ctrlKey || e.metaKey || e.altKey || e.key.length !== 1) return;
    e.preventDefault();
    e.stopPropagation();
    model.set("key", e.key);
    model.set("count", model.get("count") + 1);
    model.save_changes();
  };
  let scope = null;
  let tries = 0;
  // the view is rendered before it is attached to the page: find its box once it is
  const attach = () => {
    if (!el.isConnected && tries++ < 200) { setTimeout(attach, 50); return; }
    // the box the catcher sits in (its panel, not the whole cell output; the view's own node is in between)
    scope = (el.parentElement && el.parentElement.closest(".widget-box")) || el.parentElement || el;
    scope.setAttribute("data-lm-suppress-shortcuts", "true");
    if (!scope.hasAttribute("tabindex")) scope.tabIndex = -1;
    scope.style.outline = "none";
    scope.addEventListener("keydown", onKey);
  };
  attach();
  model.on("change:hint", () => { hint.textContent = model.get("hint"); });
  return () => { if (scope) scope.removeEventListener("keydown", onKey); };
}
export default { render };
"""


class KeyCatcher(anywidget.AnyWidget):
    """Put it in a panel's box; ``on_key(callback)`` gets every printable key pressed on that panel."""

    _esm = _ESM
    hint = traitlets.Unicode("").tag(sync=True)
    key = traitlets.Unicode("").tag(sync=True)
    count = traitlets.Int(0).tag(sync=True)

    def on_key(self, callback: Callable[[str], None]) -> None:
        self.observe(lambda _: callback(self.key), names="count")
