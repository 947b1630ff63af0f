"""Which boot system applies sysctl.d and loads modules, and what that means for the
conntrack keys, as pure functions over the ``writers`` facts (see :mod:`ct_tune.writers`).

systemd-sysctl runs very early and skips net.netfilter keys while nf_conntrack is not
loaded; modules-load.d is how a module is loaded before it (systemd sysctl.d(5),
modules-load.d(5)).  OpenWrt has no systemd: procd runs /etc/init.d/boot (START=10),
whose ``/sbin/kmodloader`` loads the modules listed in /etc/modules.d, then
/etc/init.d/sysctl (START=11) runs ``sysctl -e -p`` on each /etc/sysctl.d/*.conf and
/etc/sysctl.conf (openwrt package/base-files/files/etc/init.d/{boot,sysctl}).  Debian's
sysvinit applies them with ``sysctl --system`` from /etc/init.d/procps after
/etc/init.d/kmod loaded /etc/modules; Alpine's OpenRC ``sysctl`` service likewise, after
its ``modules`` service.  With no evidence of the init, systemd is assumed and said so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ct_tune import drift

_SYSTEMS: dict[str, dict[str, str]] = {
    "systemd": {"applier": "systemd-sysctl", "loader": "modules-load.d",
                "early_fix": "echo nf_conntrack > /etc/modules-load.d/nf_conntrack.conf",
                "reload": "systemctl restart systemd-sysctl",
                "order": "file name across /etc, /run, /usr/local/lib and /usr/lib/sysctl.d, "
                         "/etc/sysctl.conf through 99-sysctl.conf or last"},
    "procd": {"applier": "OpenWrt's /etc/init.d/sysctl", "loader": "/etc/modules.d (kmodloader)",
              "early_fix": "echo nf_conntrack > /etc/modules.d/nf-conntrack",
              "reload": "/etc/init.d/sysctl restart",
              "order": "/etc/sysctl.d/*.conf in name order, then /etc/sysctl.conf "
                       "(no /usr/lib/sysctl.d)"},
    "sysvinit": {"applier": "the procps init script (sysctl --system)", "loader": "/etc/modules",
                 "early_fix": "echo nf_conntrack >> /etc/modules",
                 "reload": "sysctl --system",
                 "order": "sysctl --system's: file name across the sysctl.d directories, "
                          "/etc/sysctl.conf last"},
    "openrc": {"applier": "OpenRC's sysctl service (sysctl --system)",
               "loader": "/etc/modules and modules-load.d (OpenRC's modules service)",
               "early_fix": "echo nf_conntrack >> /etc/modules",
               "reload": "rc-service sysctl restart",
               "order": "sysctl --system's: file name across the sysctl.d directories, "
                        "/etc/sysctl.conf last"},
}


def boot_system(writers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The detected init and how it applies sysctl files; ``assumed`` when not detected."""
    init = (writers or {}).get("init")
    known = init in _SYSTEMS
    name = init if known else "systemd"
    return {"init": name, "assumed": not known, **_SYSTEMS[name],
            "note": "" if known else " (init system not detected: systemd assumed)"}


def early_load_at_boot(persist: Mapping[str, Any] | None, conntrack: Mapping[str, Any],
                       writers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """drift.early_load, with the boot system: on OpenWrt /etc/modules.d loads modules
    before its sysctl script runs, so an entry there makes the keys apply."""
    el = drift.early_load(persist, conntrack)
    if el is None:
        return None
    boot = boot_system(writers)
    by = list(el["by"])
    if boot["init"] == "procd":
        by += [e["file"] for e in (writers or {}).get("modules_d") or []
               if isinstance(e, Mapping) and isinstance(e.get("file"), str)]
    missing = bool(el["configured"]) and el["builtin"] is not True and not by
    return {**el, "by": by, "missing": missing, "boot": boot}
