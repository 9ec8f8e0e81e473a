"""Size limits for src/napari_volsr: no module over 500 lines, no function over 80 lines."""

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "napari_volsr"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def modules():
    paths = sorted(SOURCE.rglob("*.py"))
    assert paths, f"no modules under {SOURCE}"
    return [(path.relative_to(SOURCE.parent).as_posix(), path.read_text()) for path in paths]


def test_no_module_is_over_the_limit():
    offenders = [f"{name}: {len(text.splitlines())} lines" for name, text in modules()
                 if len(text.splitlines()) > MAX_MODULE_LINES]
    assert not offenders, (f"{len(offenders)} modules over {MAX_MODULE_LINES} lines:\n"
                           + "\n".join(offenders))


def functions(tree, prefix=""):
    """(qualified name, first line, length) of every function and method, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        name = f"{prefix}{getattr(node, 'name', '')}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield name, node.lineno, node.end_lineno - node.lineno + 1  # signature to last line
        yield from functions(node, f"{name}." if hasattr(node, "name") else prefix)


def test_no_function_is_over_the_limit():
    offenders = [f"{name}:{line} {qualname}: {length} lines"
                 for name, text in modules()
                 for qualname, line, length in functions(ast.parse(text, filename=name))
                 if length > MAX_FUNCTION_LINES]
    assert not offenders, (f"{len(offenders)} functions over {MAX_FUNCTION_LINES} lines:\n"
                           + "\n".join(offenders))
