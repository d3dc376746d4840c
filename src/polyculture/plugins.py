"""Plugins: user code that registers datasets, model families and metrics.

A plugin is a Python module (``my_package.my_module``), a Python file (``path/to/file.py``) or an
installed package that advertises an entry point in the group ``polyculture.plugins``. Importing
it runs its registration decorators (:func:`polyculture.dataset`, :func:`polyculture.family`,
:func:`polyculture.metric`), and every entry registered meanwhile is attributed to the plugin
(``polyculture datasets`` / ``models`` / ``metrics`` show the origin).

Loading is idempotent: a plugin already loaded in this process is not imported twice (its
decorators would otherwise register duplicate names). A plugin that fails to import raises
:class:`~polyculture.errors.PluginError` naming it and the import error.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from polyculture.errors import PluginError, PolycultureError
from polyculture.registry import registering_as

ENTRY_POINT_GROUP = "polyculture.plugins"

_loaded: dict[str, str] = {}  # resolved plugin key -> origin shown in listings
_entry_points_loaded = False


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve_plugin(spec: str, base: Path | None = None) -> str:
    """The canonical form of a plugin spec: an absolute file path, or the module name.

    File paths are resolved against ``base`` (the study file's folder) when relative.

    Examples
    --------
    >>> resolve_plugin("my_package.plugin")
    'my_package.plugin'
    >>> resolve_plugin("plugins/extra.py", Path("/studies")).replace("\\\\", "/")
    '/studies/plugins/extra.py'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise PluginError(
            f"plugin {spec!r} is not a module name or a file path",
            hint='write plugins = ["my_package.my_module", "path/to/file.py"]',
        )
    spec = spec.strip()
    if not _is_file(spec):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path.resolve())


def load_plugins(specs: Sequence[str], base: Path | None = None) -> list[str]:
    """Import plugins (modules or files) so that their entries register; returns their keys.

    Parameters
    ----------
    specs
        Module names (``my_package.my_module``) or Python files (``path/to/file.py``).
    base
        Folder that relative file paths are relative to (a study file's folder).

    Raises
    ------
    PluginError
        A file that does not exist, or a plugin that raises while importing (including a
        duplicate name it tries to register).

    Examples
    --------
    >>> load_plugins([])
    []
    """
    keys = []
    for spec in specs:
        key = resolve_plugin(spec, base)
        if key not in _loaded:
            _import_plugin(spec, key)
        keys.append(key)
    return keys


def _builtins_registered() -> None:
    """Import the built-ins first, so that none of them is attributed to a plugin."""
    import polyculture.data
    import polyculture.measure.performance
    import polyculture.zoo  # noqa: F401


def _import_plugin(spec: str, key: str) -> None:
    _builtins_registered()
    origin = f"plugin {Path(key).name if _is_file(key) else key}"
    try:
        with registering_as(origin):
            if _is_file(key):
                _import_file(spec, Path(key))
            else:
                importlib.import_module(key)
    except PluginError:
        raise
    except PolycultureError as err:  # e.g. a duplicate or malformed name it registers
        raise PluginError(f"plugin '{spec}' failed to register: {err}") from err
    except Exception as err:
        raise PluginError(
            f"plugin '{spec}' failed to import: {type(err).__name__}: {_first_line(err)}",
            hint="fix the plugin, or install what it imports; --debug shows the traceback",
        ) from err
    _loaded[key] = origin


def _import_file(spec: str, path: Path) -> None:
    if not path.is_file():
        raise PluginError(
            f"plugin file '{spec}' does not exist ({path})",
            hint="paths in a study file are relative to the study file's folder",
        )
    # A stable, unique module name, so that classes defined in the file can be pickled by
    # reference within this process and two files with the same name do not collide.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"polyculture_plugin_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"plugin file '{spec}' cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def load_entry_point_plugins() -> list[str]:
    """Load every installed plugin advertised in the ``polyculture.plugins`` entry-point group.

    Each entry point names a module (imported) or a callable (imported, then called with no
    arguments). Done once per process; returns the entry points' names.
    """
    global _entry_points_loaded
    _builtins_registered()
    names = []
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    if _entry_points_loaded:
        return [point.name for point in found]
    _entry_points_loaded = True
    for point in found:
        key = f"entry point {point.name} = {point.value}"
        names.append(point.name)
        if key in _loaded:
            continue
        origin = f"entry point {point.name} ({point.value})"
        try:
            with registering_as(origin):
                target = point.load()
                if callable(target):
                    target()
        except PolycultureError as err:
            raise PluginError(
                f"plugin entry point '{point.name}' failed to register: {err}"
            ) from err
        except Exception as err:
            raise PluginError(
                f"plugin entry point '{point.name}' ({point.value}) failed to import: "
                f"{type(err).__name__}: {_first_line(err)}",
                hint=f"fix or uninstall the package that provides it (group {ENTRY_POINT_GROUP})",
            ) from err
        _loaded[key] = origin
    return names


def loaded_plugins() -> dict[str, str]:
    """The plugins loaded in this process: key -> origin label."""
    return dict(_loaded)
