"""``volsr models``: list, show and export the models in the library."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..engine.text import format_bytes
from .app import _Failure, _Interrupted


@click.group(short_help="List, show, export and import the models in the library.")
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
    row = {
        "name": folder.name, "family": config.family, "task": config.task,
        "z_factor": config.z_factor, "spatial_dims": config.spatial_dims,
        "steps": training.get("steps"), "val_psnr": validation.get("psnr"),
        "val_ssim": validation.get("ssim"), "folder": str(folder),
    }
    if config.lateral_factors != (1, 1):  # as in config.json: only lateral models say so
        row["factors"] = list(config.factors)
    return row


@models.command("list",
                short_help="Name, family, task, factors, steps and validation PSNR per model.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def models_list(as_json: bool):
    """Name, family, task, z-factor (z,y,x factors for lateral models), steps and
    validation PSNR of each model."""
    from ..engine.models import library_dir, library_problem, list_library

    root = library_dir()
    problem = library_problem(root)
    if problem is not None:
        raise _Failure(problem)
    rows = [_model_row(root / name) for name in list_library()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models in {root} yet: train one with 'volsr train'", err=True)
        return
    table = [("NAME", "FAMILY", "TASK", "FACTORS", "STEPS", "VAL PSNR")]
    for row in rows:
        if "error" in row:
            table.append((row["name"], "?", "unreadable", "", "", ""))
            continue
        psnr = row["val_psnr"]
        factor = ",".join(map(str, row.get("factors") or [row["z_factor"]]))  # z, or z,y,x
        table.append((row["name"], row["family"], row["task"], factor,
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


@models.command("export", short_help="Zip a model for a colleague (it unzips into a model folder).")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing archive.")
@click.option("--format", "fmt", type=click.Choice(["zip", "bioimageio"]), default="zip",
              show_default=True, help="zip: the model folder zipped; bioimageio: a BioImage "
              "Model Zoo package (rdf.yaml, test tensors; needs napari-volsr[bioimageio]).")
def models_export(name: str, dest: Path, overwrite: bool, fmt: str):
    """Zip the model folder NAME into DEST.zip (unzips into a loadable model folder)."""
    from ..engine.export import export_zip
    from ..engine.models import ModelError

    try:
        if fmt == "bioimageio":
            from ..engine.bioimageio import export_bioimageio

            path, notes = export_bioimageio(name, dest, overwrite=overwrite)
            for note in notes:
                click.echo(note, err=True)
            click.echo(f"wrote {path}: BioImage Model Zoo package, "
                       f"{format_bytes(path.stat().st_size)}")
            return
        path, n_files = export_zip(name, dest, overwrite=overwrite)
    except ModelError as exc:
        raise _Failure(str(exc)) from None
    except KeyboardInterrupt:
        raise _Interrupted(f"{dest} was not written") from None
    click.echo(f"wrote {path}: {n_files} files, {format_bytes(path.stat().st_size)}")


@models.command("import", short_help="Bring a BioImage Model Zoo package into the library.")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Library name (default: the package's).")
@click.option("--overwrite", is_flag=True, help="Replace a library model of that name.")
def models_import(package: Path, name: str | None, overwrite: bool):
    """Bring a BioImage Model Zoo PACKAGE.zip of a napari-volsr family into the library."""
    from ..engine.bioimageio import import_bioimageio
    from ..engine.models import ModelError

    try:
        folder = import_bioimageio(package, name=name, overwrite=overwrite)
    except ModelError as exc:
        raise _Failure(str(exc)) from None
    click.echo(f"imported {package} as '{folder.name}' ({folder})")
