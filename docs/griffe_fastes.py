"""A Griffe extension for the API reference: fastes' docstrings as the site shows them.

- ``ESClassifier``'s docstring is completed when its module is imported (its Parameters
  come from the options' declarations in ``fastes.config``), so it is read from the class.
  So is its ``__init__`` signature (keyword-only, every option the estimator exposes).
- A parameter typed ``{'a', 'b'}, default='b'`` is written as numpydoc's rule for a set of
  values has it, the default first: ``{'b', 'a'}`` (Griffe reads the first value as the
  default).
- Sphinx roles (``:class:`fastes.config.Config```) become plain code spans.

Docs tooling only: nothing in fastes imports it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import griffe

_CHOICES = re.compile(r"^(?P<head>\s*\w+ : )\{(?P<choices>[^}]*)\}, default=(?P<default>\S+)$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")
#: Objects whose docstring is built at import time, by path.
_RUNTIME_DOCSTRINGS = {"fastes.estimator.ESClassifier": ("fastes.estimator", "ESClassifier")}


def _runtime(path: str) -> Any:
    module, name = _RUNTIME_DOCSTRINGS[path]
    return getattr(__import__(module, fromlist=[name]), name)


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _default_first(match: re.Match) -> str:
    choices = match["choices"].split(", ")
    if match["default"] not in choices:
        return match[0]
    choices.remove(match["default"])
    return f"{match['head']}{{{', '.join([match['default'], *choices])}}}"


class FastesDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.path in _RUNTIME_DOCSTRINGS and obj.docstring is not None:
            obj.docstring.value = inspect.cleandoc(_runtime(obj.path).__doc__)
        if obj.docstring is not None:
            obj.docstring.value = _CHOICES.sub(_default_first, _ROLE.sub(r"`\1`", obj.docstring.value))

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        if cls.path in _RUNTIME_DOCSTRINGS and "__init__" in cls.members:
            signature = inspect.signature(_runtime(cls.path).__init__)
            cls.members["__init__"].parameters = griffe.Parameters(*(
                griffe.Parameter(p.name, kind=_KINDS[p.kind],
                                 default=None if p.default is inspect.Parameter.empty else repr(p.default))
                for p in signature.parameters.values()))
