"""Let OSProfiler find ``otel://`` in every Python process of this environment.

OSProfiler has no plugin registry: ``osprofiler.drivers.base.get_driver`` picks the
``Driver`` subclass whose ``get_name()`` matches the connection string's scheme, among the
subclasses defined so far. A process that never imported ``zaqar_otel`` (Keystone, Nova,
the ``osprofiler`` command) answers "Driver not found for connection string: otel://".

zaqar-otel's wheel puts ``zaqar_otel_discovery.pth`` in site-packages; ``site`` runs its one
line at interpreter start, which imports this module and calls ``install()``. That only
appends a finder to ``sys.meta_path`` (no other import, nothing from OpenTelemetry). The
finder waits for the import of ``osprofiler.drivers`` (the package that defines ``Driver``
and imports OSProfiler's own drivers); once that module has run, it imports
``zaqar_otel.driver``, whose ``OTelDriver`` subclass is then there for ``get_driver``, and
removes itself. A process that never imports OSProfiler's drivers pays one string
comparison per import, and nothing else.

A failure here never breaks the program: OSProfiler's import goes on, and ``otel://`` is
then unknown as before (the exception is kept in ``ERROR``). ``python -S`` (no ``site``)
and ``ZAQAR_OTEL_NO_DISCOVERY=1`` skip it.
"""

import os
import sys

TYPE_CHECKING = False  # typing is not imported at every interpreter start
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any

TRIGGER = "osprofiler.drivers"
DRIVER = "zaqar_otel.driver"
DISABLE_ENV = "ZAQAR_OTEL_NO_DISCOVERY"

ERROR: "BaseException | None" = None  # why importing the driver failed, if it did


def load_driver() -> None:
    """Import ``zaqar_otel.driver`` (defines the ``otel`` driver); never raises."""
    global ERROR
    try:
        __import__(DRIVER)
    except Exception as error:
        ERROR = error


class _ThenLoadDriver:
    """The trigger's own loader, followed by ``load_driver()``."""

    def __init__(self, loader: "Any") -> None:
        self.loader = loader

    def create_module(self, spec: "Any") -> "ModuleType | None":
        create = getattr(self.loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: "ModuleType") -> None:
        module.__loader__ = self.loader  # the module keeps its real loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        load_driver()


class DriverFinder:
    """``sys.meta_path`` finder: loads the driver right after ``osprofiler.drivers``."""

    def find_spec(
        self,
        fullname: str,
        path: "Sequence[str] | None" = None,
        target: "ModuleType | None" = None,
    ) -> "Any":
        if fullname != TRIGGER:
            return None
        uninstall()  # one shot, and no recursion while the real finders look
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenLoadDriver(spec.loader)
                return spec
        return None


_FINDER = DriverFinder()


def install() -> bool:
    """Append the finder (idempotent); False if disabled or OSProfiler's drivers are loaded."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False
    if TRIGGER in sys.modules:  # too late for the finder: load the driver now
        load_driver()
        return False
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return True


def uninstall() -> None:
    """Remove the finder."""
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def active() -> bool:
    """Whether the finder waits for ``osprofiler.drivers`` in this process."""
    return _FINDER in sys.meta_path
