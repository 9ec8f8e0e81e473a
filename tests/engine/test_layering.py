import subprocess
import sys


def test_engine_imports_no_qt_or_napari():
    code = (
        "import sys\n"
        "import napari_volsr.engine.io, napari_volsr.engine.predict, napari_volsr.engine.tiling\n"
        "import napari_volsr.engine.restorers, napari_volsr.engine.interp\n"
        "import napari_volsr.cli, napari_volsr._layers\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'superqt', 'vispy'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_package_import_does_not_import_torch():
    code = "import sys, napari_volsr; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
