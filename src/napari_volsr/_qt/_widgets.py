"""Qt pieces both panels share: the scrolled form, the collapsible boxes, the label column."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy

# One pair of arrows for every collapsible box of the plugin.
COLLAPSED_ICON = "▶"
EXPANDED_ICON = "▼"


def collapsible(title: str, content):
    """A collapsed box titled ``title`` holding ``content`` (a QWidget), flush with the form.

    No indent and no margins: the box's rows line up with the form's, and a closed box
    takes the height of its title only.
    """
    from superqt import QCollapsible

    box = QCollapsible(title, expandedIcon=EXPANDED_ICON, collapsedIcon=COLLAPSED_ICON)
    box.addWidget(content)
    box.layout().setContentsMargins(0, 0, 0, 0)
    box.layout().setSpacing(0)
    box.content().layout().setContentsMargins(0, 0, 0, 0)
    return box


class FormScroll(QScrollArea):
    """A frameless, vertical-only scroll area that asks for its whole form when room allows.

    It asks for the form's own height up to a share of the screen (so a tall screen
    shows the form unscrolled and two docked panels share a short one), and its minimum
    is a few rows: on a laptop screen the form scrolls while the buttons under it stay.
    """

    MIN_ROWS = 3  # the form shows at least about this many rows
    SCREEN_SHARE = 0.3  # and asks for at most this share of the screen's height

    def __init__(self, form):
        super().__init__()
        self.setWidget(form)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        form.installEventFilter(self)

    def eventFilter(self, obj, event):  # noqa: N802 (Qt name)
        """A new form layout (labels aligned, a box opened): the panel asks for sizes again.

        A scroll area otherwise keeps the size it had.
        """
        if event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return False

    def _bar_width(self) -> int:
        """Room for the vertical scroll bar (styled bars may be wider than their hint)."""
        bar = self.verticalScrollBar()
        return max(bar.sizeHint().width(), bar.width() if bar.isVisible() else 0) + 4

    def sizeHint(self):  # noqa: N802 (Qt name)
        """The whole form, up to a share of the screen's height."""
        hint = self.widget().sizeHint()
        screen = self.screen()
        cap = int(screen.availableGeometry().height() * self.SCREEN_SHARE) if screen else 10**6
        return QSize(hint.width() + self._bar_width(), min(hint.height(), cap))

    def minimumSizeHint(self):  # noqa: N802 (Qt name)
        """The form's width, and a few rows."""
        hint = super().minimumSizeHint()
        row = self.fontMetrics().height() + 10
        width = self.widget().minimumSizeHint().width() + self._bar_width()
        return QSize(width, max(hint.height(), self.MIN_ROWS * row))


def scroll_form(panel_layout, form_native) -> FormScroll:
    """Move ``form_native`` (already in ``panel_layout``) into a scroll area at its place."""
    index = panel_layout.indexOf(form_native)
    form_native.layout().addStretch(1)  # room to spare goes under the form, not between rows
    scroll = FormScroll(form_native)  # reparenting takes it out of the panel's layout
    panel_layout.insertWidget(max(index, 0), scroll, 1)
    return scroll


class ShowWatcher(QObject):
    """Calls back when a widget is shown, and when it loses its parent (dock closed)."""

    def __init__(self, on_show, on_orphaned, parent):
        super().__init__(parent)
        self._on_show = on_show
        self._on_orphaned = on_orphaned
        self._shown = False

    def eventFilter(self, obj, event):  # noqa: N802 (Qt name)
        """Call back on show (first docked: share the dock area) and on losing the dock."""
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            self._on_orphaned()
        elif event.type() == QEvent.Type.Show:
            self._on_show()
            if not self._shown:  # once docked: share the dock area with the other panel
                from .panels import balance_docks

                self._shown = bool(balance_docks(obj)) or obj.window() is not obj
        return False


def align_label_column(containers, font_widget) -> None:
    """One label column for the rows of ``containers``, wide enough in the shown font.

    Measured with ``font_widget``'s polished font (napari's stylesheet may set a larger
    one than the application's), and never narrower than a label's own size hint.
    """
    font_widget.ensurePolished()
    metrics = font_widget.fontMetrics()
    rows = [(w, w._labeled_widget()) for c in containers for w in c]
    rows = [(w, row) for w, row in rows if row is not None]
    if not rows:
        return
    width = max(
        max(metrics.horizontalAdvance(w.label) + 6, row._label_widget.native.sizeHint().width())
        for w, row in rows
    )
    for _, row in rows:
        row.label_width = width


def compact(combo) -> None:
    """A drop-down whose long entries (layer, model names) never widen the panel."""
    from qtpy.QtWidgets import QComboBox

    combo.native.setSizeAdjustPolicy(
        QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.native.setMinimumContentsLength(12)


def fit_lines(label) -> None:
    """A word-wrapped status that fills its row and grows to show all its lines.

    Layouts of nested containers do not ask a label for its height at a given width,
    so a long sentence would be cut to one line: the label sets its own minimum.
    """
    native = label.native
    native.setWordWrap(True)
    # Short texts too fill the row, so the label stays in the form's label column.
    native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def fit(*_):
        width = native.width() if native.width() > 50 else 300
        native.setMinimumHeight(max(0, native.heightForWidth(width)))

    set_text = native.setText  # a label has no signal for new text: wrap the setter

    def set_and_fit(text):
        set_text(text)
        fit()

    native.setText = set_and_fit
    native.installEventFilter(_ResizeCallback(fit, native))


class _ResizeCallback(QObject):
    def __init__(self, callback, parent):
        super().__init__(parent)
        self._callback = callback

    def eventFilter(self, obj, event):  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.Resize and event.size().width() != event.oldSize().width():
            self._callback()
        return False
