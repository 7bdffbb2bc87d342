"""MkDocs hooks: the pages that are made from the repository at build time, so they never go stale.

* ``methods/<name>.md`` — one page per registered method, from the method index
  (``src/dipkit/methods/index.json``: module, description, reference, algorithm box) in the order
  of ``dipkit methods`` (``FAMILY_ORDER`` in ``src/dipkit/cli/listing.py``), with the docstrings
  rendered by mkdocstrings and the rows of ``benchmarks/results/*.md`` where the method is the
  best of its table;
* ``results/<stem>.md`` and ``results/*.png`` — the files of ``benchmarks/results/`` as they are,
  the figures shown on the page whose name they start with (else on ``results/index.md``);
* ``results/index.md`` — the list of result files with their status lines;
* ``<!-- include: PATH -->`` on a line of its own in a page is replaced by the file PATH
  (relative to the repository root), as it is;
* a file of ``benchmarks/results/`` named in backticks in any page becomes a link to its page.

The repository is read as files (no ``import dipkit``), so the pages describe this checkout even
when another dipkit is installed. Loaded by ``hooks:`` in ``mkdocs.yml``; no plugin needed.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path


from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))
from griffe_rst import convert  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
RESULTS = ROOT / "benchmarks" / "results"

#: the method that is no registry class: its page is made from its module
AUTO = {"module": "dipkit.run.auto", "description": "the method chosen without a ground truth: a portfolio per task "
        "ranked by held-out misfit, by successive halving (`--combine K` averages the K best)",
        "reference": "Jamieson & Talwalkar, AISTATS 2016 (successive halving)", "algorithm": "successive halving"}


# ----------------------------------------------------------------------------------------------
# the repository, read as files


def method_index() -> dict[str, dict]:
    """name -> entry of ``index.json``, in the order of ``dipkit methods``, ``auto`` last."""
    index = json.loads((SRC / "dipkit" / "methods" / "index.json").read_text("utf-8"))
    tree = ast.parse((SRC / "dipkit" / "cli" / "listing.py").read_text("utf-8"))
    order: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FAMILY_ORDER" for t in node.targets):
            order = ast.literal_eval(node.value)
    names = [n for n in order if n in index] + sorted(n for n in index if n not in order)
    out = {n: index[n] for n in names}
    out["auto"] = AUTO
    return out


def module_file(module: str) -> Path:
    path = SRC / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def method_class(module: str, name: str) -> tuple[str | None, list[str]]:
    """The class registered as ``name`` in ``module`` (its ``name = "…"`` attribute), and the names
    of its bases that are defined in the same module (their docstrings carry shared algorithm boxes)."""
    tree = ast.parse(module_file(module).read_text("utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for cls in classes.values():
        for stmt in cls.body:
            if (isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "name" for t in stmt.targets)
                    and isinstance(stmt.value, ast.Constant) and stmt.value.value == name):
                bases, todo = [], [cls]
                while todo:
                    for b in todo.pop().bases:
                        if isinstance(b, ast.Name) and b.id in classes and b.id not in bases:
                            bases.append(b.id)
                            todo.append(classes[b.id])
                return cls.name, bases[::-1]
    return None, []


def base_docstring(module: str, cls: str) -> str:
    """The docstring of class ``cls`` of ``module`` as Markdown (the converter mkdocstrings uses)."""
    tree = ast.parse(module_file(module).read_text("utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return convert(ast.get_docstring(node, clean=True) or "")


# ----------------------------------------------------------------------------------------------
# benchmark results


def result_files() -> list[Path]:
    return sorted(RESULTS.glob("*.md"))


def title_of(text: str, stem: str) -> str:
    m = re.search(r"^# (.+)$", text, re.M)
    return m.group(1).strip() if m else stem


def status_of(text: str) -> str:
    m = re.search(r"^> \*\*Status[^*]*\*\*:?\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else ""


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(cell: str) -> float | None:
    m = re.match(r"\**(-?\d+(?:\.\d+)?)", cell.replace("−", "-"))
    return float(m.group(1)) if m else None


def tables(text: str):
    """Every Markdown table of ``text``: (header cells, rows of cells), with the heading above it."""
    lines, heading, i = text.split("\n"), "", 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        if (lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1])):
            header, rows, j = _cells(lines[i]), [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(_cells(lines[j]))
                j += 1
            yield heading, header, rows
            i = j
            continue
        i += 1


def wins(name: str) -> list[str]:
    """Bullet lines: where ``name`` is the best row of a results table.

    Two kinds of table count. Those with a ``best network method`` column: the cases whose best
    network method is ``name`` — and, for ``tv``, the cases where TV (α auto) beats it (a negative
    ``Δ vs TV auto``). And those with ``case`` and ``method`` columns, where a method wins a case
    when its row has the highest value in the first numeric column after ``method`` among the
    table's rows for that case (rows whose label is not exactly ``name`` are other methods or
    variants). A case reported from one table of a file is not reported again from the next."""
    out = []
    for path in result_files():
        text = path.read_text("utf-8")
        link = f"[{path.stem}](../results/{path.stem}.md)"
        seen, done = False, set()
        for heading, header, rows in tables(text):
            low = [h.lower() for h in header]
            where = link + (f", “{heading}”" if heading and heading != title_of(text, path.stem) else "")
            best_col = next((k for k, h in enumerate(low) if h.startswith("best network method")), None)
            if best_col is not None and "case" in low:
                ci = low.index("case")
                delta = next((k for k, h in enumerate(low) if h.startswith("δ vs tv auto")), None)
                for r in rows:
                    if len(r) <= best_col:
                        continue
                    extra = "; ".join(f"{header[k]} {r[k]}" for k in range(best_col + 1, len(header))
                                      if k < len(r) and low[k].startswith("δ"))
                    if re.search(rf"\({re.escape(name)}\)", r[best_col]):
                        out.append(f"* {where}: best network method on **{r[ci]}**, {r[best_col]}"
                                   + (f" ({extra})" if extra else ""))
                        done.add(r[ci])
                    elif name == "tv" and delta is not None and (_number(r[delta]) or 0) < 0:
                        tv = next((r[k] for k, h in enumerate(low) if h.startswith("tv (α auto)")), "")
                        out.append(f"* {where}: TV (α auto) beats the best network method on **{r[ci]}**: "
                                   f"{tv} against {r[best_col]} ({extra})")
                        done.add(r[ci])
                continue
            if "case" not in low or "method" not in low:
                continue
            ci, mi = low.index("case"), low.index("method")
            seen = seen or any(len(r) > mi and r[mi] == name for r in rows)
            numeric = [k for k in range(mi + 1, len(header))
                       if any(len(r) > k and _number(r[k]) is not None for r in rows)]
            if not numeric:
                continue
            col = numeric[0]
            best: dict[str, list[str]] = {}
            count: dict[str, int] = {}
            for r in rows:
                if len(r) <= col or _number(r[col]) is None:
                    continue
                count[r[ci]] = count.get(r[ci], 0) + 1
                if r[ci] not in best or _number(r[col]) > _number(best[r[ci]][col]):
                    best[r[ci]] = r
            won = [(case, r[col]) for case, r in best.items()
                   if r[mi] == name and count[case] > 1 and case not in done]
            if won:
                out.append(f"* {where}: highest “{header[col]}” of the table's methods on "
                           + ", ".join(f"**{c}** ({v})" for c, v in won))
                done.update(c for c, _ in won)
        if seen and not any(line.startswith(f"* {link}") for line in out):
            out.append(f"* {link}: in its tables, best on no case")
    return out


# ----------------------------------------------------------------------------------------------
# pages


def method_page(name: str, entry: dict) -> str:
    module = entry["module"]
    cls, bases = method_class(module, name) if name != "auto" else (None, [])
    lines = [f"# `{name}`", "", entry["description"][:1].upper() + entry["description"][1:] + ".", "",
             "| | |", "|---|---|",
             f"| algorithm box | {entry.get('algorithm', '–')} |",
             f"| reference | {entry.get('reference', '–')} |",
             f"| code | `{module}" + (f".{cls}`" if cls else "`") + " |",
             f"| run it | `dipkit reconstruct PROBLEM.npz --method {name} --out runs/{name}` |", ""]
    if name == "auto":
        lines += ["The portfolio, the rounds and the options are described under "
                  "[strategies](../strategies.md#choosing-the-method-without-a-ground-truth-method-auto).", ""]
    else:
        lines += ["Its parameters are set with `--set KEY=VALUE` (`dipkit reconstruct`, `dipkit tune --grid`) or as "
                  "keywords of `dipkit.solve`; the table of every method's main parameters is on the "
                  "[methods page](index.md). The stopping rule, schedule and network are the run's "
                  "([strategies](../strategies.md)).", ""]
    lines += ["## Algorithm and equations", "",
              f"From the docstring of `{module}`" + (" and of the class below." if cls else "."), "",
              f"::: {module}", "    options:", "      members: false", "      show_root_heading: false",
              "      show_root_toc_entry: false", ""]
    for base in bases:
        # written out here rather than by mkdocstrings: two methods share each such base, and one
        # object rendered on two pages is two anchors for one cross-reference target
        lines += [f"### `{base}` (shared base class)", "", base_docstring(module, base), ""]
    if cls:
        lines += ["## Parameters", "", f"::: {module}.{cls}", "    options:", "      members: false",
                  "      heading_level: 3", ""]
    found = wins(name)
    lines += ["## Where it wins in the tables", ""]
    if found:
        lines += ["Made at build time from the tables of [the benchmark results](../results/index.md). Most of them "
                  "predate later changes to the defaults — read each file's status line before quoting a "
                  "number; rows labelled differently (a variant such as `dip-fbp-input`) count as other "
                  "methods.", "", *found, ""]
    else:
        lines += ["No table of [the benchmark results](../results/index.md) has a row for it yet.", ""]
    return "\n".join(lines)


def results_pages() -> dict[str, str]:
    """``results/<stem>.md`` for every result file and ``results/index.md``; figures attached."""
    pngs = sorted(RESULTS.glob("*.png"))
    mds = result_files()
    attached: dict[str, list[Path]] = {}
    loose = []
    for png in pngs:
        owner = max((m for m in mds if png.stem.startswith(m.stem)), key=lambda m: len(m.stem), default=None)
        (attached.setdefault(owner.stem, []) if owner else loose).append(png)
    pages, rows = {}, []
    for md in mds:
        text = md.read_text("utf-8")
        head = f"*Source: `benchmarks/results/{md.name}`" + (
            f" (data: `benchmarks/results/{md.stem}.csv`)" if (RESULTS / f"{md.stem}.csv").exists() else "") + ".*\n\n"
        if not re.search(r"^# ", text, re.M):
            text = f"# {md.stem}\n\n{head}{text}"
        else:
            text = re.sub(r"^(# .+\n)", lambda m: m.group(1) + "\n" + head, text, count=1, flags=re.M)
        figures = attached.get(md.stem, [])
        if figures:
            text += "\n\n## Figures\n\n" + "\n\n".join(f"![{p.stem}]({p.name})" for p in figures) + "\n"
        pages[f"results/{md.stem}.md"] = text
        status = status_of(md.read_text("utf-8"))
        rows.append(f"| [{md.stem}]({md.stem}.md) | {title_of(md.read_text('utf-8'), md.stem).replace('|', '/')} | "
                    f"{status.replace('|', '/') or 'current'} |")
    index = ["# Benchmark results", "",
             "Every file of `benchmarks/results/`, as it is in the repository (copied at build time). All were "
             "measured on a 2-core CPU unless they say otherwise. A *status* line says when a file was made "
             "with older code and how to re-make it.", "",
             "| file | what | status |", "|---|---|---|", *rows, ""]
    if loose:
        index += ["## Figures", ""]
        for p in loose:
            index += [f"`benchmarks/results/{p.name}`", "", f"![{p.stem}]({p.name})", ""]
    pages["results/index.md"] = "\n".join(index)
    return pages


# ----------------------------------------------------------------------------------------------
# mkdocs events


def _fill_nav(nav, section: str, entries: list) -> None:
    for item in nav:
        if isinstance(item, dict) and section in item:
            value = item[section]
            value = value if isinstance(value, list) else [value]
            item[section] = value + entries


def on_config(config, **kwargs):
    methods = [{f"{name}": f"methods/{name}.md"} for name in method_index()]
    results = [{md.stem: f"results/{md.stem}.md"} for md in result_files()]
    _fill_nav(config["nav"], "Methods", methods)
    _fill_nav(config["nav"], "Benchmark results", results)
    return config


def on_files(files, config, **kwargs):
    for name, entry in method_index().items():
        files.append(File.generated(config, f"methods/{name}.md", content=method_page(name, entry)))
    for uri, text in results_pages().items():
        files.append(File.generated(config, uri, content=text))
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files


_INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.M)
_RESULT_REF = re.compile(r"(?<!\[)`benchmarks/results/([\w.-]+\.(?:md|png))`")


def link_results(markdown: str, src_uri: str) -> str:
    """`` `benchmarks/results/X.md` `` (and ``.png``) outside code blocks → a link to its page."""
    up = "../" * src_uri.count("/")
    out, fence = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif not fence:
            def repl(m):
                name = m.group(1)
                if not (RESULTS / name).exists():
                    return m.group(0)
                target = f"results/{name[:-3]}.md" if name.endswith(".md") else f"results/{name}"
                return m.group(0) if target == src_uri else f"[{m.group(0)}]({up}{target})"
            line = _RESULT_REF.sub(repl, line)
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files, **kwargs):
    markdown = _INCLUDE.sub(lambda m: (ROOT / m.group(1)).read_text("utf-8"), markdown)
    return link_results(markdown, page.file.src_uri)
