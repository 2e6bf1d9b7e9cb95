"""Ray runtime helpers: connect to a cluster if one is configured, else start a local Ray."""

from __future__ import annotations

import logging
import os


def ensure_ray(num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Initialise Ray once per process.

    Inside ``ray job submit`` (or with ``RAY_ADDRESS`` set) this connects to that cluster; on a
    laptop it starts a local Ray with this machine's CPUs (or ``num_cpus``). Each Ray worker runs
    torch with one thread (Ray's default), which is also what keeps 2-core machines stable.
    ``log_to_driver=False`` keeps workers' own logging (Ray Train's per-epoch reports, Tune's
    trial tables) out of this process's stderr: a study prints its own progress, and errors still
    reach the driver as exceptions.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"log_to_driver": log_to_driver, "logging_level": logging.WARNING}
    if not os.environ.get("RAY_ADDRESS"):
        # a local Ray started for this process keeps Ray 2.60's default token auth; its notice
        # about that default is not something a laptop user needs to act on
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        kwargs["include_dashboard"] = False
    ray.init(**kwargs)
