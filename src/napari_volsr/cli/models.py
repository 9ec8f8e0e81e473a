"""``volsr models``: list, show and export the models in the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..engine.text import format_bytes
from .app import _Failure, _Interrupted


@click.group()
def models():
    """List, show and export the models in the library ($NAPARI_VOLSR_MODELS)."""


def _model_row(folder: Path) -> dict:
    from ..engine.models import ModelError, read_model_config

    try:
        config = read_model_config(folder)
    except ModelError as exc:
        return {"name": folder.name, "folder": str(folder), "error": str(exc)}
    training = config.training or {}
    validation = training.get("final_validation") or {}
    return {
        "name": folder.name, "family": config.family, "task": config.task,
        "z_factor": config.z_factor, "spatial_dims": config.spatial_dims,
        "steps": training.get("steps"), "val_psnr": validation.get("psnr"),
        "val_ssim": validation.get("ssim"), "folder": str(folder),
    }


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def models_list(as_json: bool):
    """Name, family, task, z-factor, steps and validation PSNR of each model."""
    from ..engine.models import library_dir, list_library

    root = library_dir()
    rows = [_model_row(root / name) for name in list_library()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models in {root} yet: train one with 'volsr train'", err=True)
        return
    table = [("NAME", "FAMILY", "TASK", "Z", "STEPS", "VAL PSNR")]
    for row in rows:
        if "error" in row:
            table.append((row["name"], "?", "unreadable", "", "", ""))
            continue
        psnr = row["val_psnr"]
        table.append((row["name"], row["family"], row["task"], str(row["z_factor"]),
                      "-" if row["steps"] is None else str(row["steps"]),
                      "-" if psnr is None else f"{psnr:.2f} dB"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@models.command("show")
@click.argument("name")
def models_show(name: str):
    """Print a model's config and training card as JSON."""
    from ..engine.models import ModelError, read_model_config

    try:
        config = read_model_config(name)
    except ModelError as exc:
        raise _Failure(str(exc)) from None
    click.echo(json.dumps(config.model_dump(mode="json"), indent=2))


@models.command("export")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing archive.")
def models_export(name: str, dest: Path, overwrite: bool):
    """Zip the model folder NAME into DEST.zip (unzips into a loadable model folder)."""
    from ..engine.export import export_zip
    from ..engine.models import ModelError

    try:
        path, n_files = export_zip(name, dest, overwrite=overwrite)
    except ModelError as exc:
        raise _Failure(str(exc)) from None
    except KeyboardInterrupt:
        raise _Interrupted(f"{dest} was not written") from None
    click.echo(f"wrote {path}: {n_files} files, {format_bytes(path.stat().st_size)}")
