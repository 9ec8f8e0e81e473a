import subprocess
import sys


def test_engine_imports_no_qt_or_napari():
    code = (
        "import importlib, pkgutil, sys\n"
        "import napari_volsr.engine as engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'napari_volsr.engine.'):\n"
        "    importlib.import_module(m.name)\n"
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
