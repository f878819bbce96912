#!/usr/bin/env python3
"""Checks that the modules of shards/src point down (ARCHITECTURE.md).

Each top-level module of the `shards` crate sits in a layer; a file may use
`crate::<module>` only for modules of its own layer or a lower one. Every
reference that points up is printed as `file:line: ...` and the exit code is 1.
A top-level module missing from LAYERS is an error too, so a new module has
to be placed before it can be used.

    python3 scripts/check_layers.py [SRC_DIR]     # default: shards/src
"""

import pathlib
import re
import sys

LAYERS = {
    "broker": 6,
    "net": 5,
    "kafka": 4,
    "shard": 3,
    "cluster": 2,
    "controller": 2,
    "groups": 2,
    "txns": 2,
    "partition": 2,
    "cluster": 2,
    "mesh": 1,
    "disk": 1,
    "io": 0,
    "config": 0,
    "limits": 0,
    "clock": 0,
    "stop": 0,
    "metrics": 0,
}
# The crate root declares the modules and re-exports the public API.
ROOT_FILES = {"lib.rs"}

CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a::X, b::Y}` names several modules at once.
CRATE_GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def module_of(path: pathlib.Path, src: pathlib.Path) -> str:
    rel = path.relative_to(src)
    return rel.parts[0].removesuffix(".rs")


def strip_comments(line: str) -> str:
    return line.split("//", 1)[0]


def check(src: pathlib.Path) -> list[str]:
    problems = []
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if str(rel) in ROOT_FILES:
            continue
        module = module_of(path, src)
        if module not in LAYERS:
            problems.append(f"{path}:1: module `{module}` has no layer in scripts/check_layers.py")
            continue
        layer = LAYERS[module]
        text = path.read_text()
        lines = text.split("\n")
        code = "\n".join(strip_comments(line) for line in lines)
        hits = []
        for match in CRATE_GROUP.finditer(code):
            line_no = code.count("\n", 0, match.start()) + 1
            for item in match.group(1).split(","):
                name = item.strip().split("::", 1)[0].strip()
                if name:
                    hits.append((line_no, name))
        for match in CRATE_PATH.finditer(code):
            line_no = code.count("\n", 0, match.start()) + 1
            hits.append((line_no, match.group(1)))
        for line_no, target in sorted(set(hits)):
            if target == module or target in ("self", "super"):
                continue
            if target not in LAYERS:
                # A crate-root item (none today besides re-exports).
                problems.append(f"{path}:{line_no}: `crate::{target}` is not a layered module")
                continue
            if LAYERS[target] > layer:
                problems.append(
                    f"{path}:{line_no}: `{module}` (L{layer}) uses `crate::{target}` "
                    f"(L{LAYERS[target]}): layers point down only"
                )
    return problems


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "shards" / "src"
    problems = check(src)
    for problem in problems:
        print(problem)
    files = sum(1 for _ in src.rglob("*.rs"))
    if problems:
        print(f"layer check: {len(problems)} upward or unplaced references in {files} files")
        return 1
    print(f"layer check: {files} files, every reference points down or across a layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
