"""Ray runtime helpers: connect to a cluster if one is configured, else start a local Ray.

Starting a local Ray costs 10-20 s on a small machine, so mfray starts it only when a step has work
for it: a small dataset is featurised in this process (:func:`mfray.run.featurize.choose_executor`),
``mfray study status`` never starts Ray, and ``mfray study run`` starts it on the first step that is
not done yet (a finished study re-runs without it).
"""

from __future__ import annotations

import logging
import os
import sys

from mfray.utils.errors import MfrayError

#: ``MFRAY_RAY_DASHBOARD=1``: every local Ray that mfray starts serves the Ray dashboard
DASHBOARD_ENV = "MFRAY_RAY_DASHBOARD"
#: ``MFRAY_RAY_CPUS=N``: a local Ray that mfray starts gets N CPUs (default: this machine's)
CPUS_ENV = "MFRAY_RAY_CPUS"
#: how many times a failed Ray start (or connection) is tried before mfray gives up
RAY_START_ATTEMPTS = 2


class RayStartError(MfrayError):
    """A local Ray could not start, or the cluster in ``RAY_ADDRESS`` could not be reached (after a retry)."""


def dashboard_requested() -> bool:
    """Whether ``$MFRAY_RAY_DASHBOARD`` asks for the Ray dashboard (``1``/``true``/``yes``/``on``)."""
    return os.environ.get(DASHBOARD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ensure_ray(num_cpus: int | None = None, log_to_driver: bool = True, dashboard: bool = False) -> str | None:
    """Initialise Ray once per process; returns the Ray dashboard's URL when one is served, else None.

    Inside ``ray job submit`` (or with ``RAY_ADDRESS`` set) this connects to that cluster; on a
    laptop it starts a local Ray with this machine's CPUs (or ``num_cpus``). Each Ray worker runs
    torch with one thread (Ray's default), which is also what keeps 2-core machines stable.
    ``log_to_driver=False`` keeps workers' own logging (Ray Train's per-epoch reports, Tune's
    trial tables) out of this process's stderr: a study prints its own progress, and errors still
    reach the driver as exceptions.

    Args:
        dashboard: a local Ray serves the Ray dashboard on 127.0.0.1 (port 8265, or the next free
            one): jobs, actors, logs and CPU/memory per worker while this process runs. It also
            serves Ray's State API, which Ray Train V2 queries from inside the cluster (its
            placement-group cleaner watches the train controller through it), so Ray Train runs ask
            for it. ``$MFRAY_RAY_DASHBOARD=1`` turns it on for every local Ray. A Ray already
            started in this process keeps what it was started with.
    """
    import ray

    if ray.is_initialized():
        return _dashboard_url(ray.get_runtime_context())
    _plain_worker_log_prefixes()
    kwargs: dict = {"log_to_driver": log_to_driver, "logging_level": logging.WARNING}
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # a local Ray started for this process keeps Ray 2.60's default token auth; its notice
        # about that default is not something a laptop user needs to act on
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        kwargs["num_cpus"] = num_cpus or _env_cpus() or os.cpu_count() or 1
        kwargs["include_dashboard"] = bool(dashboard or dashboard_requested())
        kwargs["runtime_env"] = {"worker_process_setup_hook": f"{__name__}.worker_setup"}
    return _dashboard_url(_init_with_retry(ray, kwargs, address))


def _env_cpus() -> int | None:
    raw = os.environ.get(CPUS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise MfrayError(f"${CPUS_ENV}={raw!r}: expected a whole number of CPUs of at least 1")
    return int(raw)


def _init_with_retry(ray, kwargs: dict, address: str | None):
    """``ray.init(**kwargs)``, tried :data:`RAY_START_ATTEMPTS` times; then one :class:`RayStartError`.

    A local Ray on a loaded machine can miss Ray's own start-up deadline ("The current node timed out
    during startup"); a second try usually succeeds. What a failed try left behind is shut down first.
    """
    errors: list[str] = []
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            return ray.init(**kwargs)
        except Exception as e:  # Ray raises bare Exception, RuntimeError, ConnectionError, ValueError
            errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            try:
                ray.shutdown()
            except Exception:  # pragma: no cover - best effort: nothing may be running to stop
                pass
            if attempt < RAY_START_ATTEMPTS:
                logging.getLogger(__name__).warning("Ray did not start (%s); trying once more", errors[-1])
    raise RayStartError(_start_failure_message(address, kwargs, errors))


def _start_failure_message(address: str | None, kwargs: dict, errors: list[str]) -> str:
    tries = f"{len(errors)} tries"
    if address:
        what = f"could not connect to the Ray cluster at RAY_ADDRESS={address} ({tries})"
        advice = ("check that the cluster is up (`ray status --address ...` on the head), that the address "
                  "and port are right, and that RAY_AUTH_MODE matches the cluster's (token or disabled); "
                  "unset RAY_ADDRESS to run on a local Ray instead")
    else:
        what = f"could not start a local Ray with {kwargs.get('num_cpus')} CPU(s) ({tries})"
        advice = (f"a loaded or small machine can miss Ray's start-up deadline: try again when it is less "
                  f"busy, start fewer CPUs (${CPUS_ENV}=1), free memory and disk space (Ray's temp folder "
                  f"is {_ray_temp_dir()}), or connect to a running Ray with RAY_ADDRESS=<host:port>")
    return (f"Ray: {what}. Last error: {errors[-1]}. Ray's logs: {_ray_temp_dir()}/session_latest/logs. "
            f"What to try: {advice}.")


def _ray_temp_dir() -> str:
    try:
        from ray._common.utils import get_default_ray_temp_dir  # RAY_TMPDIR, else TMPDIR, else /tmp, + /ray

        return get_default_ray_temp_dir()
    except Exception:  # pragma: no cover - a Ray without that helper
        return "/tmp/ray"


def _dashboard_url(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None)
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def _plain_worker_log_prefixes() -> None:
    """The driver prints each worker's log lines behind a ``(RayTrainWorker pid=...)`` prefix wrapped in
    ANSI colour codes, whatever the stream; in a log file or a pipe those are raw escape sequences.
    Ray reads ``RAY_COLOR_PREFIX`` when it prints (0: no colour): colour stays for a terminal only,
    and ``NO_COLOR`` (no-color.org) turns it off there too. A value the user set wins."""
    if "RAY_COLOR_PREFIX" in os.environ:
        return
    terminal = all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))
    if os.environ.get("NO_COLOR") or not terminal:
        os.environ["RAY_COLOR_PREFIX"] = "0"


def worker_setup() -> None:
    """``worker_process_setup_hook`` of a local Ray started by :func:`ensure_ray`: runs in every worker.

    Ray's State API client (``ray.util.state``), which Ray Train V2's placement-group cleaner calls
    inside the cluster, finds its cluster from ``RAY_ADDRESS`` or else by looking for Ray processes on
    this machine. A local Ray's workers have no ``RAY_ADDRESS``, so with a second Ray on the machine
    (another user's, another mfray command) the lookup raises "Found multiple active Ray instances"
    and the cleaner's thread dies with a traceback in the driver's log, on runs that succeed. Every
    worker is told the address of the cluster it belongs to.
    """
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
