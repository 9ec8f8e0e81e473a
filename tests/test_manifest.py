import subprocess
import sys
from pathlib import Path

import napari_volsr


def test_npe2_validate_passes():
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-volsr"],
                         capture_output=True, text=True)
    # The exit status is npe2's verdict; its wording is not ours to pin down.
    assert out.returncode == 0, out.stdout + out.stderr


def test_manifest_is_package_data():
    assert (Path(napari_volsr.__file__).parent / "napari.yaml").is_file()


def test_every_manifest_command_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-volsr")
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        obj = __import__(module, fromlist=[attr])
        assert callable(getattr(obj, attr)), command.id
