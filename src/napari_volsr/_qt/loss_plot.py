"""A small live plot of training loss and validation PSNR, drawn with QPainter."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt, QTimer
from qtpy.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor(255, 159, 67)
PSNR_COLOR = QColor(79, 195, 247)
BASELINE_COLOR = QColor(160, 164, 171)
# Redraw at most this often: training may yield hundreds of steps per second.
REDRAW_MS = 250
MIN_HEIGHT = 130
# The caption (what validation compares) wraps over at most this many lines.
CAPTION_LINES = 2
CAPTION_FLAGS = Qt.AlignLeft | Qt.AlignTop | Qt.TextWordWrap
TIP = (
    "Orange: training loss per step (faint) and its moving average, log scale, left axis. "
    "Blue: PSNR on the held-out validation patches (dB, right axis; higher is better). "
    "Dashed grey: the same score of the input (z-factor 1) or of cubic interpolation "
    "(z upsampling) on the same patches; the model helps where blue is above it. Stop when "
    "blue stops rising."
)


def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (what TensorBoard shows)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def _bin(steps: list[int], values: list[float], n_bins: int) -> tuple[list[float], list[float]]:
    """Mean of consecutive runs so a long curve has about one point per pixel."""
    if len(steps) <= n_bins or n_bins < 2:
        return [float(s) for s in steps], list(values)
    size = math.ceil(len(steps) / n_bins)
    xs, ys = [], []
    for i in range(0, len(steps), size):
        chunk = slice(i, i + size)
        xs.append(sum(steps[chunk]) / len(steps[chunk]))
        ys.append(sum(values[chunk]) / len(values[chunk]))
    return xs, ys


class LossPlot(QWidget):
    """Training loss (left axis, log scale) and validation PSNR (right axis) by step.

    ``add_loss`` / ``add_psnr`` store points at once; the repaint is throttled.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loss_steps: list[int] = []
        self.loss_values: list[float] = []
        self.psnr_steps: list[int] = []
        self.psnr_values: list[float] = []
        self.total: int | None = None
        self.baseline: float | None = None  # the interpolation baseline's validation PSNR
        self.baseline_name = "baseline"  # "input" at z-factor 1, "cubic" when upsampling
        self.validation_label: str | None = None  # what the validation PSNR compares
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.update)
        self.setMinimumHeight(MIN_HEIGHT)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setToolTip(TIP)

    def sizeHint(self):  # noqa: N802 (Qt name)
        """A small plot: the form above it gets the room."""
        return QSize(320, 140)

    # ------------------------------------------------------------ data
    def clear(self):
        """Forget all points."""
        self.loss_steps.clear()
        self.loss_values.clear()
        self.psnr_steps.clear()
        self.psnr_values.clear()
        self.total = None
        self.baseline = None
        self.update()

    def set_total(self, total: int | None):
        """Set the step budget, so the x axis spans the whole run."""
        self.total = total
        self._schedule()

    def describe(self, baseline_name: str, validation_label: str | None = None):
        """Name the reference line (``input``, ``cubic``) and say what validation compares.

        ``validation_label`` is the engine's phrase (``TrainProgress.validation_label``,
        e.g. "against the other noisy acquisition"); it is shown under the plot.
        """
        changed = validation_label != self.validation_label
        self.baseline_name = baseline_name
        self.validation_label = validation_label or None
        self.setToolTip(TIP + (f" Validation PSNR: {self.caption()}." if validation_label
                               else ""))
        if changed:
            self.setMinimumHeight(MIN_HEIGHT + self._caption_height(self.width()))
            self.updateGeometry()
        self._schedule()

    def caption(self) -> str:
        """``val PSNR <what it compares>``, or nothing when the engine did not say."""
        return f"val PSNR {self.validation_label}" if self.validation_label else ""

    def add_record(self, record):
        """Take the points a training record (``TrainProgress``) carries."""
        if record.loss is not None:
            self.add_loss(record.step, record.loss)
        if record.validation and "psnr" in record.validation:
            self.add_psnr(record.step, record.validation["psnr"])
        baseline = getattr(record, "baseline_validation", None)
        if baseline and baseline.get("psnr") is not None:
            self.set_baseline(baseline["psnr"])
        label = getattr(record, "validation_label", None)
        if label and label != self.validation_label:
            self.describe(self.baseline_name, label)

    def set_baseline(self, psnr: float | None):
        """The interpolation baseline's validation PSNR: a reference line on the PSNR axis."""
        self.baseline = float(psnr) if psnr is not None and math.isfinite(psnr) else None
        self._schedule()

    def x_max(self) -> int:
        """The step at the right end of the x axis: the step budget, else the last step."""
        last = max(self.loss_steps[-1:] + self.psnr_steps[-1:], default=0)
        return max(self.total or 0, last, 1)

    def add_loss(self, step: int, value: float):
        """Append one training-loss point (non-finite values are skipped)."""
        if math.isfinite(value):
            self.loss_steps.append(int(step))
            self.loss_values.append(float(value))
            self._schedule()

    def add_psnr(self, step: int, value: float):
        """Append (or, at the same step, replace) one validation PSNR point."""
        if not math.isfinite(value):
            return
        if self.psnr_steps and self.psnr_steps[-1] == step:
            self.psnr_values[-1] = float(value)
        else:
            self.psnr_steps.append(int(step))
            self.psnr_values.append(float(value))
        self._schedule()

    def set_history(self, rows: list[dict]):
        """Points from saved history rows (``step``, ``loss``/``g_loss``, ``val_psnr``)."""
        self.clear()
        for row in rows:
            loss = row.get("loss", row.get("g_loss"))
            if loss is not None:
                self.add_loss(row["step"], float(loss))
            if row.get("val_psnr") is not None:
                self.add_psnr(row["step"], float(row["val_psnr"]))

    def _schedule(self):
        if not self._timer.isActive():
            self._timer.start()

    # ------------------------------------------------------------ drawing
    def paintEvent(self, _event):
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        faint = QColor(text)
        faint.setAlpha(60)
        painter.setFont(self._small_font(painter.font()))
        area = self._plot_area(painter.fontMetrics())
        painter.setPen(QPen(faint, 1))
        painter.drawRect(area)
        self._draw_legend(painter, area, text)
        self._draw_caption(painter, area)
        if not self.loss_steps and not self.psnr_steps:
            painter.setPen(text)
            painter.drawText(area, Qt.AlignCenter | Qt.TextWordWrap,
                             "loss and validation PSNR appear here during training")
            painter.end()
            return
        x_max = self.x_max()
        self._draw_steps(painter, area, text, x_max)

        def to_x(step: float) -> float:
            return area.left() + area.width() * step / x_max

        if self.loss_values:
            self._draw_loss(painter, area, to_x)
        if self.psnr_values or self.baseline is not None:
            self._draw_psnr(painter, area, to_x)
        painter.end()

    def _plot_area(self, metrics) -> QRectF:
        """The frame of the curves: room for the legend above, axis labels around."""
        line = metrics.height()
        left = 8 + metrics.horizontalAdvance("0.000e-00")
        right = 8 + metrics.horizontalAdvance("000.0")
        top, bottom = line + 8, line + 6 + self._caption_height(self.width(), metrics)
        return QRectF(left, top, max(10, self.width() - left - right),
                      max(10, self.height() - top - bottom))

    def _draw_legend(self, painter: QPainter, area: QRectF, text: QColor):
        metrics = painter.fontMetrics()
        line = metrics.height()
        x = area.left()
        psnr_label = "val PSNR"
        if self.psnr_values:
            psnr_label += f" {self.psnr_values[-1]:.2f} dB"
        entries = [(LOSS_COLOR, "loss", Qt.SolidLine), (PSNR_COLOR, psnr_label, Qt.SolidLine)]
        if self.baseline is not None:
            entries.append((BASELINE_COLOR, self.baseline_label(), Qt.DashLine))
        for color, label, style in entries:
            painter.setPen(QPen(color, 2, style))
            painter.drawLine(QPointF(x, line / 2 + 2), QPointF(x + 14, line / 2 + 2))
            painter.setPen(text)
            painter.drawText(QPointF(x + 18, line - 1), label)
            x += 18 + metrics.horizontalAdvance(label) + 12

    def baseline_label(self) -> str:
        """The legend's words for the reference line: ``input 19.80 dB``."""
        return (f"{self.baseline_name} {self.baseline:.2f} dB" if self.baseline is not None
                else "")

    def _caption_height(self, width: int, metrics=None) -> int:
        """Room under the step axis for the caption, wrapped (0 without one)."""
        if not self.validation_label:
            return 0
        if metrics is None:
            metrics = QFontMetrics(self._small_font(self.font()))
        box = metrics.boundingRect(0, 0, max(10, width - 8), 1000, CAPTION_FLAGS, self.caption())
        return min(box.height(), CAPTION_LINES * metrics.height()) + 2

    def _draw_caption(self, painter: QPainter, area: QRectF):
        """What the validation PSNR compares, under the step axis (in the PSNR colour)."""
        if not self.validation_label:
            return
        metrics = painter.fontMetrics()
        top = area.bottom() + metrics.height() + 6
        box = QRectF(4, top, self.width() - 8, self.height() - top)
        painter.setPen(PSNR_COLOR)
        painter.drawText(box, CAPTION_FLAGS, self.caption())

    def resizeEvent(self, event):  # noqa: N802 (Qt name)
        """A narrower plot wraps the caption over more lines: ask for their room."""
        super().resizeEvent(event)
        if self.validation_label and event.size().width() != event.oldSize().width():
            self.setMinimumHeight(MIN_HEIGHT + self._caption_height(event.size().width()))

    @staticmethod
    def _small_font(font: QFont) -> QFont:
        """The plot's text: a little smaller than the panel's."""
        small = QFont(font)
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        return small

    @staticmethod
    def _draw_steps(painter: QPainter, area: QRectF, text: QColor, x_max: int):
        """The x axis: 0 at the left, the last step (or the budget) at the right."""
        metrics = painter.fontMetrics()
        line = metrics.height()
        painter.setPen(text)
        painter.drawText(QPointF(area.left(), area.bottom() + line), "0")
        label = f"step {x_max}"
        painter.drawText(QPointF(area.right() - metrics.horizontalAdvance(label),
                                 area.bottom() + line), label)

    def _draw_loss(self, painter: QPainter, area: QRectF, to_x):
        """Raw (faint) and smoothed loss, log scale when all positive; left-axis labels."""
        line = painter.fontMetrics().height()
        positive = all(v > 0 for v in self.loss_values)
        transform = math.log10 if positive else (lambda v: v)
        xs, ys = _bin(self.loss_steps, self.loss_values, int(area.width()))
        ys = [transform(v) for v in ys]
        smooth = _smooth(ys, 0.9 if len(ys) > 20 else 0.0)
        low, high = min(ys), max(ys)
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5

        def to_y(v: float) -> float:
            return area.bottom() - area.height() * (v - low) / (high - low)

        raw = QColor(LOSS_COLOR)
        raw.setAlpha(90)
        noisy = [(to_x(a), to_y(b)) for a, b in zip(xs, ys, strict=True)]
        self._polyline(painter, noisy, raw, 1)
        trend = [(to_x(a), to_y(b)) for a, b in zip(xs, smooth, strict=True)]
        self._polyline(painter, trend, LOSS_COLOR, 2)
        painter.setPen(LOSS_COLOR)
        for value, y in ((high, area.top() + line * 0.8), (low, area.bottom())):
            shown = 10**value if positive else value
            painter.drawText(QPointF(2, y), f"{shown:.3g}")

    def _draw_psnr(self, painter: QPainter, area: QRectF, to_x):
        """Validation PSNR with dots at the (last 200) points, the baseline dashed;
        right-axis labels."""
        line = painter.fontMetrics().height()
        values = self.psnr_values + ([self.baseline] if self.baseline is not None else [])
        low, high = min(values), max(values)
        pad = max(0.5, 0.05 * (high - low))
        low, high = low - pad, high + pad

        def to_y(v: float) -> float:
            return area.bottom() - area.height() * (v - low) / (high - low)

        if self.baseline is not None:
            y = to_y(self.baseline)
            painter.setPen(QPen(BASELINE_COLOR, 1.5, Qt.DashLine))
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            # Above the line, or under it when the line runs along the top (the legend).
            below = y - line < area.top()
            painter.drawText(QPointF(area.left() + 4, y + line if below else y - 3),
                             self.baseline_name)

        pairs = zip(self.psnr_steps, self.psnr_values, strict=True)
        points = [(to_x(s), to_y(v)) for s, v in pairs]
        self._polyline(painter, points, PSNR_COLOR, 2)
        painter.setBrush(PSNR_COLOR)
        painter.setPen(Qt.NoPen)
        for px, py in points[-200:]:
            painter.drawEllipse(QPointF(px, py), 2.5, 2.5)
        painter.setPen(PSNR_COLOR)
        painter.drawText(QPointF(area.right() + 4, area.top() + line * 0.8), f"{high:.1f}")
        painter.drawText(QPointF(area.right() + 4, area.bottom()), f"{low:.1f}")

    @staticmethod
    def _polyline(painter: QPainter, points: list[tuple[float, float]], color: QColor, width: int):
        if not points:
            return
        path = QPainterPath(QPointF(*points[0]))
        for point in points[1:]:
            path.lineTo(QPointF(*point))
        painter.setBrush(Qt.NoBrush)
        painter.setPen(QPen(color, width))
        painter.drawPath(path)
