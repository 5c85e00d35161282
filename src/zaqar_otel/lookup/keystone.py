"""Keystone for ``zaqar-otel call``: ``OS_*`` variables and ``clouds.yaml`` as the ``openstack``
command reads them.

python-openstackclient loads its cloud configuration with openstacksdk's
``openstack.config`` (``--os-cloud``/``OS_CLOUD`` names a cloud of ``clouds.yaml``; the
``OS_*`` variables of an openrc, or ``--os-*`` options, make the ``envvars`` cloud) and
authenticates with keystoneauth1. ``zaqar-otel call`` does the same, so that whatever works
for ``openstack messaging ...`` works for it:

* ``register_arguments`` adds the ``--os-*`` options (with the same environment defaults)
  to the ``call`` command;
* ``from_arguments`` answers None when no Keystone is configured (no cloud named, no auth
  URL, or ``--os-auth-type none``): the call then uses Zaqar's ``noauth`` as before;
  otherwise a keystoneauth1 session and Zaqar's endpoint (``--url`` wins, else the
  catalog's ``messaging`` endpoint for the cloud's interface and region, looked up at the
  first call: inside the profiled block, so that authenticating is in the trace).

A bad configuration (an unknown cloud, a missing password...) is a ``ValueError`` with
openstacksdk's or keystoneauth1's one-line message.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SERVICE_TYPE = "messaging"
NO_AUTH = ("none", "noauth")


@dataclass(frozen=True)
class KeystoneAuth:
    """A keystoneauth1 session of the configured cloud, and where Zaqar is."""

    session: Any
    cloud: Any  # openstack.config.cloud_region.CloudRegion
    url: str | None = None  # --url / $ZAQAR_URL: no catalog lookup

    @property
    def name(self) -> str:
        return str(self.cloud.name)

    def endpoint(self) -> str:
        """Zaqar's URL: ``url``, else the catalog's (authenticates first if needed)."""
        if self.url:
            return self.url.rstrip("/")
        from keystoneauth1 import exceptions as ksa_exceptions

        try:
            found = self.cloud.get_session_endpoint(SERVICE_TYPE)
        except ksa_exceptions.ClientException as error:
            raise ValueError(f"cannot find Zaqar's endpoint in the catalog: {error}") from None
        if not found:
            raise ValueError(
                f"no {SERVICE_TYPE!r} endpoint in the catalog of cloud {self.name!r} "
                f"(interface {self.cloud.get_interface()!r}): pass --url"
            )
        return str(found).rstrip("/")


def register_arguments(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add openstacksdk's ``--os-*`` options (``--os-cloud``, ``--os-auth-url``...) to ``parser``.

    ``argv`` selects the auth plugin's options (``--os-auth-type``). Raises ``ValueError``
    for a cloud that ``clouds.yaml`` does not have.
    """
    import openstack.config
    from openstack import exceptions

    try:
        openstack.config.OpenStackConfig().register_argparse_arguments(
            parser, list(argv), service_keys=[SERVICE_TYPE]
        )
    except exceptions.ConfigException as error:
        raise ValueError(str(error)) from None


def wanted(args: argparse.Namespace) -> bool:
    """Whether the arguments or the environment name a cloud or an auth URL."""
    for name in ("os_cloud", "os_auth_url"):
        if getattr(args, name, None):
            return True
    return any(os.environ.get(name, "").strip() for name in ("OS_CLOUD", "OS_AUTH_URL"))


def from_arguments(args: argparse.Namespace, url: str | None = None) -> KeystoneAuth | None:
    """The session and endpoint of the configured cloud; None for Zaqar's noauth."""
    if not wanted(args):
        return None
    import openstack.config
    from keystoneauth1 import exceptions as ksa_exceptions
    from openstack import exceptions

    try:
        cloud = openstack.config.OpenStackConfig().get_one(argparse=args)
    except (exceptions.ConfigException, ksa_exceptions.ClientException) as error:
        raise ValueError(str(error)) from None
    if str(cloud.config.get("auth_type") or "").lower() in NO_AUTH:
        return None
    return KeystoneAuth(cloud.get_session(), cloud, url)
