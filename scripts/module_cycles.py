#!/usr/bin/env python3
"""Cycles between the top-level modules of a Rust crate (issue 18).

    python3 scripts/module_cycles.py [crate-src-dir ...]   # default: shared/kernel/src shared/core/src infra/local/src functions/api/src

For each crate source directory, every `crate::<module>` path outside
comments and `#[cfg(test)]` modules (inline paths included, `use` lists
too) is an arrow from the top-level module of the file to `<module>`.
Prints the arrows that close each strongly connected component of more
than one module (the cycles), with one file:line per arrow as evidence,
and exits 1 when there is any. `super::` paths stay inside a module and
are not arrows.

Where docs/architecture.md declares a crate's layers (a fenced block whose
first line is `# layers of <crate-src-dir>`, then one `layer: module ...`
line per layer, bottom layer first), every arrow must also point to the
same layer or a lower one: an upward arrow (a "never-arrow") exits 1 too,
and so do a module the block does not place and a module it names that
does not exist, so the document stays true.

A file under `src/<m>/` or `src/<m>.rs` belongs to module `<m>`; `lib.rs`
and `main.rs` are the crate root and not counted (they assemble). A module
the crate root re-exports from crm-kernel (`pub use crm_kernel::{ports, ...}`,
not under a `#[cfg]`) is a module of the crate too, with no files: crm-core's
contexts reach the kernel through those paths (`crate::ports`), so the
arrows to the kernel are checked like any other.
"""

import os
import re
import sys
from collections import defaultdict

DEFAULT_DIRS = ["shared/kernel/src", "shared/core/src", "infra/local/src", "functions/api/src"]

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LAYERS_DOC = os.path.join(ROOT, "docs", "architecture.md")
LAYERS_HEADER = re.compile(r"^#\s*layers of\s+(\S+)")

PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a::x, b::{y, z}}`: the first segment of each item of the list.
USE_LIST = re.compile(r"\buse\s+crate::\{")


def strip_comments(text):
    """Removes // and /* */ comments and string literals' contents."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            # keep line numbers
            out.append("\n" * text[i : j + 1].count("\n"))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_modules(text):
    """Blanks `#[cfg(test)] mod x { ... }` bodies (keeping line breaks)."""
    result = list(text)
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        for k in range(m.start(), j):
            if result[k] != "\n":
                result[k] = " "
    return "".join(result)


def use_list_modules(text, start):
    """The first segments of a `use crate::{...}` list starting at `start` (after `{`)."""
    depth, j, item, items = 1, start, "", []
    while j < len(text) and depth:
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if depth == 1 and c == ",":
            items.append(item)
            item = ""
        elif depth >= 1 and not (depth == 1 and c == "}"):
            item += c
        j += 1
    items.append(item)
    names = []
    for it in items:
        head = it.strip().split("::")[0].strip()
        if re.fullmatch(r"[a-z_][a-z0-9_]*", head) and head not in ("self",):
            names.append(head)
    return names


def test_files(src):
    """Files that are test modules of their own (`#[cfg(test)] mod tests;`)."""
    skip = set()
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            text = open(path, encoding="utf-8").read()
            declared = r"#\[cfg\(test\)\]\s*(#\[path\s*=\s*\"([^\"]+)\"\]\s*)?(pub(\([a-z]+\))?\s+)?mod\s+(\w+)\s*;"
            for m in re.finditer(declared, text):
                if m.group(2):
                    skip.add(os.path.normpath(os.path.join(root, m.group(2))))
                    continue
                name = m.group(5)
                base = root if f in ("mod.rs", "lib.rs", "main.rs") else os.path.join(root, f[:-3])
                for candidate in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                    skip.add(os.path.normpath(candidate))
    return skip


def in_test_folder(path, skip):
    """Whether `path` lies in the folder of a test module (`tests/mod.rs` is
    skipped: so is everything beside and below it)."""
    folder = os.path.dirname(path)
    while folder:
        if os.path.join(folder, "mod.rs") in skip:
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return False


def test_support_modules(src):
    """Top-level modules the crate root compiles only for tests
    (`#[cfg(test)]`, `#[cfg(any(test, feature = ...))]`): test support, not
    part of the design's layers."""
    names = set()
    for root_file in ("lib.rs", "main.rs"):
        path = os.path.join(src, root_file)
        if os.path.exists(path):
            text = open(path, encoding="utf-8").read()
            for m in re.finditer(r"#\[cfg\((test|any\(test[^\]]*)\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+(\w+)\s*;", text):
                names.add(m.group(4))
    return names


def reexported_modules(src):
    """Modules the crate root re-exports from crm-kernel, outside any `#[cfg]`."""
    names = set()
    path = os.path.join(src, "lib.rs")
    if not os.path.exists(path):
        return names
    text = strip_comments(open(path, encoding="utf-8").read())
    for m in re.finditer(r"pub\s+use\s+crm_kernel::(\{[^}]*\}|[a-z_][a-z0-9_]*)\s*;", text):
        before = text[: m.start()].rstrip().splitlines()
        if before and before[-1].strip().startswith("#[cfg"):
            continue
        for name in m.group(1).strip("{}").split(","):
            name = name.strip()
            if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                names.add(name)
    return names


def arrows(src):
    modules = set(reexported_modules(src))
    for entry in os.listdir(src):
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            modules.add(entry[:-3])
        elif os.path.isdir(os.path.join(src, entry)):
            modules.add(entry)
    modules -= test_support_modules(src)
    skip = test_files(src)
    edges = defaultdict(list)  # (from, to) -> [file:line]
    for root, _, files in os.walk(src):
        for f in sorted(files):
            path = os.path.normpath(os.path.join(root, f))
            if not f.endswith(".rs") or path in skip or in_test_folder(path, skip):
                continue
            rel = os.path.relpath(path, src)
            top = rel.split(os.sep)[0]
            top = top[:-3] if top.endswith(".rs") else top
            if top not in modules:
                continue  # lib.rs / main.rs
            text = strip_test_modules(strip_comments(open(path, encoding="utf-8").read()))
            found = []
            for m in PATH.finditer(text):
                found.append((m.group(1), m.start()))
            for m in USE_LIST.finditer(text):
                for name in use_list_modules(text, m.end()):
                    found.append((name, m.start()))
            for target, at in found:
                if target in modules and target != top:
                    line = text.count("\n", 0, at) + 1
                    edges[(top, target)].append(f"{os.path.relpath(path)}:{line}")
    return modules, edges


def components(modules, edges):
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def declared_layers(doc=LAYERS_DOC):
    """{crate src dir (relative to the repository): [(layer, [modules])]},
    bottom layer first, from the `# layers of <dir>` blocks of `doc`."""
    if not os.path.exists(doc):
        return {}
    layers, current, fenced = {}, None, False
    for line in open(doc, encoding="utf-8").read().splitlines():
        if line.strip().startswith("```"):
            fenced, current = not fenced, None
            continue
        if not fenced:
            continue
        m = LAYERS_HEADER.match(line.strip())
        if m:
            current = os.path.normpath(m.group(1))
            layers[current] = []
        elif current and ":" in line and not line.strip().startswith("#"):
            name, names = line.split(":", 1)
            layers[current].append((name.strip(), names.split()))
    return layers


def layer_problems(modules, edges, layers):
    """Upward arrows, unplaced modules and placed modules that do not exist."""
    rank, problems = {}, []
    for i, (name, names) in enumerate(layers):
        for module in names:
            rank[module] = (i, name)
    for module in sorted(modules - rank.keys()):
        problems.append(f"  {module}: in no layer (place it in docs/architecture.md)")
    for module in sorted(rank.keys() - modules):
        problems.append(f"  {module}: placed in layer {rank[module][1]!r} but no such module")
    for (a, b), where in sorted(edges.items()):
        if a in rank and b in rank and rank[a][0] < rank[b][0]:
            problems.append(
                f"  {a} -> {b}  upward, from layer {rank[a][1]!r} to {rank[b][1]!r} "
                f"({len(where)}; e.g. {where[0]})"
            )
    return problems


def main():
    dirs = sys.argv[1:] or DEFAULT_DIRS
    declared = declared_layers()
    cycles = 0
    for src in dirs:
        modules, edges = arrows(src)
        comps = components(modules, edges)
        layers = declared.get(os.path.relpath(os.path.abspath(src), ROOT))
        if layers is not None:
            problems = layer_problems(modules, edges, layers)
            if problems:
                cycles += 1
                print(f"{src}: arrows against its layers (docs/architecture.md):")
                print("\n".join(problems))
            else:
                print(f"{src}: every arrow points down its {len(layers)} layers")
        if not comps:
            print(f"{src}: no cycles between its {len(modules)} top-level modules")
            continue
        for comp in comps:
            cycles += 1
            members = set(comp)
            print(f"{src}: a cycle of {len(comp)} modules: {', '.join(comp)}")
            for (a, b), where in sorted(edges.items()):
                if a in members and b in members:
                    print(f"  {a} -> {b}  ({len(where)}; e.g. {where[0]})")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
