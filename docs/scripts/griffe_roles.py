"""Griffe extension for the API reference: Sphinx roles in docstrings become cross-links.

The library's docstrings use Sphinx roles (``:func:`summarize```, ``:class:`~activa_ppl.mixture.
GaussianMixture```, ``:meth:`InterventionalDataset.tasks```), which ``help()`` and IDEs show
well but mkdocstrings would print as raw text. Once the package is loaded, this extension
rewrites every role in every docstring to an autorefs cross-reference to the object's canonical
path, resolved as Python would read the name in that docstring: relative to the object, then to
its enclosing class and module, then the package, then the one object of that name anywhere in
the package. A link whose target is not rendered on any page shows as plain code (autorefs'
``optional``); a name outside the package (``numpyro.infer.SVI``) or one that resolves nowhere
shows as code. ``~`` shows only the last component, as in Sphinx. Module and class constants
documented by Sphinx ``#:`` comments get those comments as their docstrings, so that they are
rendered and can be linked to.

Loaded by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``);
``tests/test_docs.py`` checks that the built site has no raw role and no link to a missing page.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|data|meth|mod|attr|obj|exc|const):`([^`]+)`")


def _lookup(root: griffe.Object, path: str) -> griffe.Object | None:
    """The object at ``path`` (dotted, starting with ``root``'s name), aliases followed."""
    parts = path.split(".")
    if parts[0] != root.name:
        return None
    obj = root
    for part in parts[1:]:
        try:
            obj = obj.members[part]
        except (KeyError, AttributeError):
            return None
        if obj.is_alias:
            try:
                obj = obj.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
    return obj


def _objects(root: griffe.Object):
    """Every non-alias object under ``root`` (depth first)."""
    yield root
    for member in root.members.values():
        if not member.is_alias:
            yield from _objects(member)


def _comment_docstring(attribute: griffe.Object) -> griffe.Docstring | None:
    """The Sphinx ``#:`` comment lines right above ``attribute`` as its docstring (``None`` if none)."""
    try:
        lines = attribute.lines_collection[attribute.filepath]
    except (KeyError, TypeError, AttributeError):
        return None
    comment = []
    index = (attribute.lineno or 0) - 2  # the line above, 0-based
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    if not comment:
        return None
    return griffe.Docstring("\n".join(comment), lineno=index + 2, parent=attribute)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in the package's docstrings to mkdocs-autorefs cross-references."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        """Rewrite every docstring of ``pkg`` once the whole package is loaded."""
        objects = list(_objects(pkg))
        by_suffix: dict[str, list[griffe.Object]] = {}
        for obj in objects:
            parts = obj.path.split(".")
            for i in range(1, len(parts)):
                by_suffix.setdefault(".".join(parts[i:]), []).append(obj)
        for obj in objects:
            if obj.is_attribute and obj.docstring is None:
                obj.docstring = _comment_docstring(obj)
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = ROLE.sub(lambda m, o=obj: self._link(pkg, o, m[1], by_suffix),
                                               obj.docstring.value)

    @staticmethod
    def _link(pkg: griffe.Module, context: griffe.Object, target: str, by_suffix: dict) -> str:
        short = target.startswith("~")
        name = target.lstrip("~").lstrip(".").removesuffix("()")
        shown = html.escape(name.rsplit(".", 1)[-1] if short else name)
        found = _lookup(pkg, name)
        scope = context
        while found is None and scope is not None:
            found = _lookup(pkg, f"{scope.path}.{name}")
            scope = scope.parent
        if found is None and len(by_suffix.get(name, [])) == 1:
            found = by_suffix[name][0]
        if found is None:
            return f"<code>{shown}</code>"
        return f'<autoref identifier="{found.path}" optional><code>{shown}</code></autoref>'
