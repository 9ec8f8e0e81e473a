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


def balance_docks(panel_native) -> int:
    """Share a dock area's height among the plugin's panels by what each asks for.

    Qt gives a dock added beside another only what is left (often its minimum: a
    Restore panel docked under Train showed two rows at 1366x768); this splits the
    area by the panels' size hints instead. Returns how many docks were sized.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = panel_native.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    window = dock.parentWidget() if dock is not None else None
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return 0
    dock.setProperty("volsr_panel", True)
    area = window.dockWidgetArea(dock)
    docks = [d for d in window.findChildren(QDockWidget)
             if d.property("volsr_panel") and d.isVisible() and not d.isFloating()
             and window.dockWidgetArea(d) == area and not window.tabifiedDockWidgets(d)]
    if len(docks) < 2:
        return 0
    window.resizeDocks(docks, [d.sizeHint().height() for d in docks], Qt.Orientation.Vertical)
    return len(docks)
