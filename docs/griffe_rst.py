"""A griffe extension that turns dipkit's reST (Sphinx-style) docstrings into the Markdown that
mkdocstrings renders, before they are parsed.

dipkit's docstrings are written for Sphinx: ``:param x:`` fields (parsed by mkdocstrings'
``docstring_style: sphinx``), ``:math:`…``` and ``.. math::`` (rendered here by
``pymdownx.arithmatex`` as ``\\(…\\)`` and ``\\[…\\]``), ``.. code-block:: LANG`` and ``::``
literal blocks (the algorithm boxes: fenced code blocks here), and cross-reference roles such as
``:class:`~dipkit.problem.Problem``` (code spans here, so that a reference to an object the site
does not render is no broken link). Text that follows the field list (``Reference: …``) is moved in
front of it: the Sphinx parser would otherwise append it to the last parameter.

Loaded by ``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``); it
changes no source file.
"""

from __future__ import annotations

import re

import griffe

__all__ = ["RstToMarkdown", "convert"]

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const|ref|doc|term):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`", re.S)
_FIELD = re.compile(r"^:(?:param|parameter|arg|argument|key|keyword|type|raises?|except|exception|var|ivar|cvar|"
                    r"vartype|returns?|rtype|yields?|ytype)\b[^:]*:")
_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|sourcecode|math)::\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The indented block (deeper than ``base``) from ``start``, dedented; and the index after it."""
    i, body = start, []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
        i -= 1
    while body and not body[0].strip():
        body.pop(0)
    depth = min((_indent(b) for b in body if b.strip()), default=0)
    return [b[depth:] for b in body], i


def _blocks(text: str) -> str:
    """``.. code-block::``, ``.. math::`` and ``::`` literal blocks → fenced code and ``\\[ \\]``."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        m = _DIRECTIVE.match(line)
        pad = line[: _indent(line)]
        if m:
            kind, arg = m.group(2), m.group(3).strip()
            body, i = _block(lines, i + 1, _indent(line))
            if kind == "math":
                body = ([arg] if arg else []) + body
                out += ["", pad + "\\[", *(pad + b for b in body), pad + "\\]", ""]
            else:
                out += ["", pad + "```" + (arg or "text"), *(pad + b for b in body), pad + "```", ""]
            continue
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            body, j = _block(lines, i + 1, _indent(line))
            if body:
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(head + ("" if line.rstrip()[-3:-2] == " " else ":"))
                out += ["", pad + "```text", *(pad + b for b in body), pad + "```", ""]
                i = j
                continue
        if line.lstrip().startswith(">>> ") and (i == 0 or not lines[i - 1].strip()):
            # a doctest block: up to the next blank line
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += ["", pad + "```pycon", *(pad + b[len(pad):] for b in lines[i:j]), pad + "```", ""]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _fields_last(text: str) -> str:
    """Move text that follows the ``:param …:`` field list in front of it."""
    lines = text.split("\n")
    first = next((k for k, ln in enumerate(lines) if _FIELD.match(ln)), None)
    if first is None:
        return text
    fields, after, k = [], [], first
    in_field = False
    while k < len(lines):
        ln = lines[k]
        if _FIELD.match(ln):
            in_field = True
            fields.append(ln)
        elif in_field and (not ln.strip() or ln.startswith((" ", "\t"))):
            fields.append(ln)
        else:
            in_field = False
            after.append(ln)
        k += 1
    # a blank line that ended a field belongs to what follows, not to the field
    while fields and not fields[-1].strip():
        fields.pop()
    before = lines[:first]
    while before and not before[-1].strip():
        before.pop()
    after_text = "\n".join(after).strip("\n")
    parts = ["\n".join(before)] + ([after_text] if after_text else []) + ["\n".join(fields)]
    return "\n\n".join(p for p in parts if p)


def convert(text: str) -> str:
    """A reST docstring as Markdown (fields kept in Sphinx form for the parser)."""
    # math blocks first: their bodies must not meet the inline rewrites below
    text = _blocks(text)
    text = _MATH_ROLE.sub(lambda m: "\\(" + " ".join(m.group(1).split()) + "\\)", text)
    text = _ROLE.sub(lambda m: "`" + m.group(1) + "`", text)
    return _fields_last(text)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring with :func:`convert` as griffe creates the object."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and obj.docstring.value:
            obj.docstring.value = convert(obj.docstring.value)
