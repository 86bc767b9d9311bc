"""A second evaluation text of another domain than calibration.txt / eval.txt (news): the docstrings of
the Python standard library this interpreter ships (technical English about code), issue 13
acceptance 5. Made here, never committed:

    /work/main/.venv/bin/python -P bench/second_text.py     # -> ~/.cache/ggq-bench/text/stdlib-docs.txt

Docstrings (module, class, function; ast order) of the public top-level stdlib modules in sorted file
order, those of at least MIN_CHARS characters and without doctests, each as one paragraph with its lines
joined, until the text is eval.txt's size. Depends only on the Python version (printed; the file's first line is not a header,
the text is plain prose).
"""
from __future__ import annotations

import ast
import sys
import sysconfig
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script under -P

from bench.reference_files import DATA, REF  # noqa: E402

OUT = REF.parent / "text" / "stdlib-docs.txt"
SIZE = (DATA / "text" / "eval.txt").stat().st_size if (DATA / "text" / "eval.txt").is_file() else 178_457
MIN_CHARS = 200


def docstrings(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_CHARS and ">>>" not in doc:  # prose, not doctests
                yield " ".join(line.strip() for line in doc.splitlines() if line.strip())


def make(out: Path = OUT, size: int = SIZE) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for doc in (d for path in sorted(stdlib.glob("[a-z]*.py")) for d in docstrings(path)):
        if total + len(doc) + 2 > size:
            break
        parts.append(doc)
        total += len(doc) + 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    path = make()
    print(f"{path}: {path.stat().st_size:,} bytes from Python {sys.version.split()[0]}'s stdlib docstrings")
