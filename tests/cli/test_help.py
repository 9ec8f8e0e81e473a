"""Every ``volsr`` command's --help, rendered as a user sees it, and the README's commands."""

import re
from pathlib import Path

import click
import pytest
from helpers import run_cli

from napari_volsr.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands(group=cli, path=()):
    yield path, group
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands())


def _blocks(doc: str) -> list[list[str]]:
    """The paragraphs a docstring marks with click's ``\\b``: kept line by line."""
    blocks, lines = [], doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "\b":
            block = []
            for following in lines[i + 1:]:
                if not following.strip():
                    break
                block.append(following.strip())
            blocks.append(block)
    return blocks


@pytest.mark.parametrize(("path", "command"), COMMANDS,
                         ids=[" ".join(p) or "volsr" for p, _ in COMMANDS])
def test_help_reads_as_written(path, command, capsys):
    code, stdout, stderr = run_cli(capsys, *path, "--help")
    assert code == 0 and stderr == ""
    lines = [line.strip() for line in stdout.splitlines()]
    assert stdout.startswith(f"Usage: volsr {' '.join(path)}".replace("  ", " "))
    summary = command.help.strip().splitlines()[0]
    assert summary in " ".join(stdout.split())
    assert "\b" not in stdout
    kept = set()
    for block in _blocks(command.help):  # a \b block keeps its lines
        start = lines.index(block[0])
        assert lines[start : start + len(block)] == block, stdout
        kept.update(block)
    wide = [line for line in stdout.splitlines() if len(line) > 80 and line.strip() not in kept]
    assert wide == []  # click wraps the rest for an 80-column terminal
    listing = stdout.partition("Commands:")[2]
    assert "..." not in listing, listing  # no summary cut short in a group's list
    if path == ("train",):
        return  # cli/train.py is another helper's: its options are checked there
    for param in command.params:  # every option says what it does
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"


def test_restore_help_says_what_the_output_type_is(capsys):
    _, stdout, _ = run_cli(capsys, "restore", "--help")
    text = " ".join(stdout.split())
    assert "The output keeps the input's data type" in text
    assert "[default: auto]" in text and "float32 keeps every value" in text
    assert "never wrapped" in text


def test_train_sources_are_listed_one_per_line(capsys):
    _, stdout, _ = run_cli(capsys, "train", "--help")
    lines = [line.strip() for line in stdout.splitlines()]
    for source in ("paired", "synthetic", "isotropic"):
        assert any(line.startswith(f"{source} ") for line in lines), stdout


def test_readme_commands_are_separate_lines():
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    for line in "".join(commands).splitlines():
        code = line.split("#", 1)[0]
        assert not re.search(r"volsr [^|]*\|\s*volsr", code), line  # not shell pipes
