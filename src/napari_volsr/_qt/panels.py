"""What one panel does to the others docked in the same viewer."""

from __future__ import annotations


def refresh_restore_panels(viewer) -> int:
    """Re-read the model library in every Restore panel docked in ``viewer``."""
    window = getattr(viewer, "window", None)
    widgets = []
    try:
        widgets = list(window.dock_widgets.values())
    except Exception:  # older napari: wrapper dock widgets
        try:
            widgets = [dock.widget() for dock in window._dock_widgets.values()]
        except Exception:
            return 0
    refreshed = 0
    for widget in widgets:
        widget = getattr(widget, "_magic_widget", widget)
        refresh = getattr(widget, "refresh_models", None)
        if callable(refresh):
            try:
                refresh()
                refreshed += 1
            except RuntimeError:  # a panel whose Qt side is already gone
                continue
    return refreshed
