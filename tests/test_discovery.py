"""OSProfiler finds ``otel://`` in any process where zaqar-otel is installed (the wheel's .pth).

Each check runs in a fresh interpreter of this environment (an editable install under
``nox -s tests``); the last one builds the wheel and installs it into a new virtualenv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIND_OTEL = """
import json, sys
from osprofiler import _utils
from osprofiler.drivers import base
import _zaqar_otel_discovery as discovery
print(json.dumps({
    "otel": [d.__module__ for d in _utils.itersubclasses(base.Driver) if d.get_name() == "otel"],
    "opentelemetry": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    "finder_left": discovery.active(),
    "error": repr(discovery.ERROR) if discovery.ERROR else None,
}))
"""


def python(code: str, exe: str = sys.executable, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ZAQAR_OTEL_"))}
    clean.update(env)
    out = subprocess.run(
        [exe, "-c", code], capture_output=True, text=True, env=clean, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_interpreter_start_only_adds_the_finder():
    found = python(
        "import json, sys, _zaqar_otel_discovery as d; print(json.dumps({'active': d.active(),"
        " 'loaded': sorted(m for m in sys.modules if m.startswith(('zaqar_otel', 'osprofiler',"
        " 'opentelemetry', 'oslo', 'typing')))}))"
    )
    assert found == {"active": True, "loaded": []}


def test_osprofilers_driver_lookup_finds_otel_without_importing_opentelemetry():
    found = python(FIND_OTEL)
    assert found == {
        "otel": ["zaqar_otel.driver"],
        "opentelemetry": [],  # the driver imports OpenTelemetry when it is built, not before
        "finder_left": False,
        "error": None,
    }


def test_get_driver_builds_the_otel_driver():
    code = (
        "import json; from osprofiler.drivers import base; "
        "d = base.get_driver('otel://?query=http://127.0.0.1:1', conn_str='otel://'); "
        "print(json.dumps({'type': type(d).__name__}))"
    )
    assert python(code) == {"type": "OTelDriver"}


def test_switched_off_by_the_environment():
    found = python(FIND_OTEL, ZAQAR_OTEL_NO_DISCOVERY="1")
    assert found["otel"] == [] and found["error"] is None


def test_a_driver_that_fails_to_import_does_not_break_osprofiler():
    code = "import _zaqar_otel_discovery as d; d.DRIVER = 'zaqar_otel_no_such_module'\n" + FIND_OTEL
    found = python(code)
    assert found["otel"] == []
    assert "ModuleNotFoundError" in str(found["error"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="the test extra has the build backend")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [built] = out.glob("zaqar_otel-*.whl")
    return built


def test_the_wheel_has_the_pth_and_the_hook_at_its_root(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"zaqar_otel_discovery.pth", "_zaqar_otel_discovery.py"} <= names
    pth = zipfile.ZipFile(wheel).read("zaqar_otel_discovery.pth").decode()
    assert pth == "import _zaqar_otel_discovery; _zaqar_otel_discovery.install()\n"


def test_pip_install_of_the_wheel_finds_otel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    exe = str(venv / "bin" / "python")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", exe, "install", "--no-deps", "--no-index",
         "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    purelib = subprocess.run(
        [exe, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # zaqar-otel's dependencies from this environment: a path entry, its .pth files not run
    here = next(p for p in sys.path if p.endswith("site-packages"))
    Path(purelib, "zz_dependencies.pth").write_text(here + "\n")
    where = python("import json, zaqar_otel; print(json.dumps({'file': zaqar_otel.__file__}))", exe)
    assert str(where["file"]).startswith(purelib)  # the wheel's zaqar_otel, not this checkout's
    found = python(FIND_OTEL, exe)
    assert found["otel"] == ["zaqar_otel.driver"] and found["error"] is None
