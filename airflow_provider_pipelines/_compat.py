"""Airflow 3.x compatibility: one place for imports and version gates.

The provider supports Airflow 3.0 and newer. Features that only exist in newer releases
(task state store 3.3+, trigger ``on_kill`` 3.3+, non-blocking async connection lookup 3.3.2+)
are reached through the helpers below and degrade gracefully on older releases.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator, Connection
from packaging.version import Version

if TYPE_CHECKING:
    from airflow.sdk import Context

try:  # Airflow >= 3.1
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:  # Airflow >= 3.1
    from airflow.sdk import BaseNotifier
except ImportError:  # pragma: no cover - Airflow 3.0: airflow.sdk's lazy map names a module that is missing
    from airflow.sdk.bases.notifier import BaseNotifier  # type: ignore[no-redef,attr-defined]

try:  # Airflow >= 3.1
    from airflow.sdk.configuration import conf
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.configuration import conf  # type: ignore[no-redef]

try:  # Airflow >= 3.1
    from airflow.sdk.log import mask_secret as _mask_secret
except ImportError:  # pragma: no cover - Airflow 3.0
    try:
        from airflow.sdk.execution_time.secrets_masker import (  # type: ignore[no-redef]
            mask_secret as _mask_secret,
        )
    except ImportError:
        from airflow.utils.log.secrets_masker import mask_secret as _mask_secret  # type: ignore[no-redef]

try:  # Airflow >= 3.1 (3.3 deprecates the airflow.exceptions spellings)
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )

log = logging.getLogger(__name__)


def _airflow_version() -> Version:
    from airflow import __version__

    return Version(Version(__version__).base_version)


#: The running Airflow release (without pre-release or local parts).
AIRFLOW_VERSION = _airflow_version()
#: True from Airflow 3.1 (``BaseHook``, ``BaseNotifier``, ``conf``, the masker in ``airflow.sdk``).
AIRFLOW_V_3_1_PLUS = AIRFLOW_VERSION >= Version("3.1.0")
#: True from Airflow 3.2 (the connection form comes from the declarative provider info).
AIRFLOW_V_3_2_PLUS = AIRFLOW_VERSION >= Version("3.2.0")
#: True from Airflow 3.3 (the task state store, ``BaseTrigger.on_kill``).
AIRFLOW_V_3_3_PLUS = AIRFLOW_VERSION >= Version("3.3.0")
#: True from Airflow 3.3.2, where ``BaseHook.aget_connection`` masks secrets without a blocking
#: call (``Connection.aextra_dejson`` exists). Older releases look connections up in a thread.
NATIVE_ASYNC_CONNECTION_LOOKUP = hasattr(Connection, "aextra_dejson") and hasattr(BaseHook, "aget_connection")


def mask_secret(value: str | None) -> None:
    """Register ``value`` with Airflow's secrets masker (no-op for empty values)."""
    if value:
        try:
            _mask_secret(value)
        except Exception:  # the masker must never break a hook
            log.debug("secret masker unavailable", exc_info=True)


def redact_secrets(text: str) -> str:
    """``text`` with every secret registered with Airflow's masker replaced by ``***``.

    For text that leaves Airflow's logs (e.g. a message sent to a vendor API). Never raises.
    """
    try:
        from airflow.sdk._shared.secrets_masker import redact
    except ImportError:  # pragma: no cover - other Airflow 3.x layouts
        try:
            from airflow.sdk.execution_time.secrets_masker import redact  # type: ignore[no-redef]
        except ImportError:
            return text
    try:
        return str(redact(text))
    except Exception:
        log.debug("secret masker unavailable", exc_info=True)
        return text


async def amask_secret(value: str | None) -> None:
    """Async :func:`mask_secret`: never a blocking supervisor call inside an event loop."""
    if not value:
        return
    try:
        from airflow.sdk.log import amask_secret as _amask
    except ImportError:  # pragma: no cover - before Airflow 3.3
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(value)
        return
    try:
        await _amask(value)
    except Exception:
        log.debug("secret masker unavailable", exc_info=True)


async def get_async_connection(conn_id: str) -> Connection:
    """Look a connection up without blocking the event loop.

    Airflow 3.3.2+ masks secrets asynchronously (``Connection.aextra_dejson`` exists), so
    ``BaseHook.aget_connection`` is safe. Older 3.x releases either have no
    ``aget_connection`` (3.0) or mask synchronously inside it, which can deadlock
    (apache/airflow#71891): run the sync lookup in a worker thread there.
    """
    if NATIVE_ASYNC_CONNECTION_LOOKUP:
        return await BaseHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)


async def get_async_extra(conn: Connection) -> dict[str, Any]:
    """``conn.extra_dejson`` without a blocking secrets-masker call on 3.3.2+."""
    aextra = getattr(conn, "aextra_dejson", None)
    if aextra is not None:
        return dict(await aextra())
    from asgiref.sync import sync_to_async

    return dict(await sync_to_async(lambda: conn.extra_dejson)())


def task_state_store(context: Context | None) -> Any | None:
    """The task state store accessor (Airflow 3.3+), or ``None`` where it does not exist.

    Unlike XCom it survives task retries, which is what reattaching to a remote run needs.
    """
    if context is None or not AIRFLOW_V_3_3_PLUS:
        return None
    try:
        return context.get("task_state_store")  # type: ignore[call-overload]
    except Exception:
        return None


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "NATIVE_ASYNC_CONNECTION_LOOKUP",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "BaseNotifier",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "Connection",
    "TaskDeferred",
    "amask_secret",
    "conf",
    "get_async_connection",
    "get_async_extra",
    "mask_secret",
    "redact_secrets",
    "task_state_store",
]
