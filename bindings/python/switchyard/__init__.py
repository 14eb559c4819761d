"""switchyard for Python: a client-side load balancer over several HTTP API providers.

Pure ctypes over the switchyard shared library; standard library only.

    import switchyard
    with switchyard.Balancer.from_file("switchyard.toml") as lb:
        r = lb.get("stocks", "quote", params={"symbol": "AAPL"})
        print(r.status, r.provider, r.json())

The library is found from ``SWITCHYARD_LIB``, then beside this package, then in the
source tree's ``target/release`` and ``target/debug``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json as _json
import math
import os
import sys
import threading
import traceback
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

__all__ = [
    "Balancer",
    "Response",
    "Error",
    "InvalidArgument",
    "ConfigError",
    "UnknownService",
    "UnknownEndpoint",
    "QueueFull",
    "Timeout",
    "NoHealthyProvider",
    "AllProvidersFailed",
    "ShuttingDown",
    "ResponseTooLarge",
    "InternalError",
    "QuotaExhausted",
    "version",
    "status_message",
    "MAX_TIMEOUT",
]


# ---------------------------------------------------------------------------------------
# Exceptions: one per error kind, with the C API's status numbers (SY_ERR_*).


class Error(Exception):
    """Every switchyard failure. ``code`` is the C API's ``sy_status``."""

    code = 0

    def __init__(self, message: str, attempts: Optional[List[Dict[str, Any]]] = None):
        super().__init__(message)
        self.message = message
        #: The failed attempts: dicts with provider, kind, status, elapsed_ms, message.
        self.attempts: List[Dict[str, Any]] = attempts or []


class InvalidArgument(Error, ValueError):
    """A missing, malformed or out-of-range argument (SY_ERR_INVALID_ARGUMENT)."""

    code = 1


class ConfigError(Error):
    """The configuration was refused; the message names the key path (SY_ERR_CONFIG)."""

    code = 2


class UnknownService(Error):
    """The request named a service the configuration lacks (SY_ERR_UNKNOWN_SERVICE)."""

    code = 3


class UnknownEndpoint(Error):
    """No provider of the service serves the endpoint (SY_ERR_UNKNOWN_ENDPOINT)."""

    code = 4


class QueueFull(Error):
    """The service already had queue.max_size requests waiting (SY_ERR_QUEUE_FULL)."""

    code = 5


class Timeout(Error, TimeoutError):
    """The request's deadline passed, queued or in flight (SY_ERR_TIMEOUT)."""

    code = 6


class NoHealthyProvider(Error):
    """Nothing could be tried; no network was touched (SY_ERR_NO_HEALTHY_PROVIDER)."""

    code = 7


class AllProvidersFailed(Error):
    """Every allowed attempt failed; ``attempts`` lists them (SY_ERR_ALL_PROVIDERS_FAILED)."""

    code = 8


class ShuttingDown(Error):
    """The balancer is shut down or closing (SY_ERR_SHUTTING_DOWN)."""

    code = 9


class ResponseTooLarge(Error):
    """Every attempt's answer was over max_response_bytes (SY_ERR_RESPONSE_TOO_LARGE)."""

    code = 10


class InternalError(Error):
    """A bug inside switchyard, caught at the boundary (SY_ERR_INTERNAL)."""

    code = 11


class QuotaExhausted(Error):
    """Every eligible provider was out of rate or quota (SY_ERR_QUOTA_EXHAUSTED).

    ``waits`` lists them: dicts with provider, reason (quota, reserve, rate, rate_headers)
    and frees_in_ms (None when never for this priority)."""

    code = 12

    def __init__(self, message: str, attempts: Optional[List[Dict[str, Any]]] = None,
                 waits: Optional[List[Dict[str, Any]]] = None):
        super().__init__(message, attempts)
        #: The providers held back, and when each frees up.
        self.waits: List[Dict[str, Any]] = waits or []


_BY_CODE = {cls.code: cls for cls in Error.__subclasses__()}
_PRIORITIES = {"critical": 0, "high": 1, "normal": 2, "low": 3}


# ---------------------------------------------------------------------------------------
# Finding and describing the native library.


def _library_name() -> str:
    if sys.platform == "darwin":
        return "libswitchyard.dylib"
    if sys.platform == "win32":
        return "switchyard.dll"
    return "libswitchyard.so"


def _candidates() -> List[str]:
    name = _library_name()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))
    paths = []
    env = os.environ.get("SWITCHYARD_LIB")
    if env:
        paths.append(env)
    paths.append(os.path.join(here, name))
    for base in (root, os.getcwd()):
        for profile in ("release", "debug"):
            paths.append(os.path.join(base, "target", profile, name))
    return paths


def _load() -> "tuple[ctypes.CDLL, ctypes.PyDLL]":
    """The library twice over: through CDLL, whose calls release the GIL, for whatever may
    wait; through PyDLL, whose calls keep it, for what returns at once. Releasing the GIL
    costs little alone but, with other threads waiting for it, each release queues the
    caller behind them again: a request makes one such call, not six."""
    tried = []
    for path in _candidates():
        if path in tried:
            continue
        tried.append(path)
        if os.path.isfile(path):
            return ctypes.CDLL(path), ctypes.PyDLL(path)
    raise ImportError(
        "switchyard: the native library was not found; build it with `cargo build --release` "
        "or set SWITCHYARD_LIB. Tried: " + ", ".join(tried)
    )


_lib, _now = _load()

_p = ctypes.c_void_p
_s = ctypes.c_char_p
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_size = ctypes.c_size_t
_CALLBACK = ctypes.CFUNCTYPE(None, _p, _p, _p)
_CIRCUIT_CALLBACK = ctypes.CFUNCTYPE(None, _p, _s, _s, _s, _s)
_EVENT_CALLBACK = ctypes.CFUNCTYPE(None, _p, _s)

#: The longest per-request timeout accepted, in seconds (a day).
MAX_TIMEOUT = 86_400.0


def _sig(name: str, restype, *argtypes, waits: bool = False) -> None:
    """Declares a native function; ``waits`` for one that may block (it releases the GIL)."""
    for lib in (_lib, _now):
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = list(argtypes)
    if not waits:
        # Calls through _lib of a function that returns at once go through _now instead.
        setattr(_lib, name, getattr(_now, name))


_sig("sy_version", _s)
_sig("sy_status_message", _s, _u32)
_sig("sy_error_code", _u32, _p)
_sig("sy_error_message", _s, _p)
_sig("sy_error_attempts_json", _s, _p)
_sig("sy_error_waits_json", _s, _p)
_sig("sy_error_free", None, _p)
_sig("sy_string_free", None, _p)
_sig("sy_balancer_from_file", _u32, _s, ctypes.POINTER(_p), ctypes.POINTER(_p), waits=True)
_sig("sy_balancer_from_str", _u32, _s, _s, ctypes.POINTER(_p), ctypes.POINTER(_p), waits=True)
_sig("sy_balancer_shutdown", _u32, _p, _u64, waits=True)
_sig("sy_balancer_free", None, _p, waits=True)
_sig("sy_call", _u32, _p, _p, ctypes.POINTER(_p), ctypes.POINTER(_p), waits=True)
_sig("sy_submit", _u32, _p, _p, _CALLBACK, _p, ctypes.POINTER(_p), waits=True)
# sy_call_get's signature follows _View's declaration below.
_sig("sy_metrics_json", _u32, _p, ctypes.POINTER(_p), waits=True)
_sig("sy_explain_json", _u32, _p, _p, ctypes.POINTER(_p), ctypes.POINTER(_p), waits=True)
_sig("sy_prometheus", _u32, _p, ctypes.POINTER(_p), waits=True)
_sig("sy_circuit_json", _u32, _p, _s, ctypes.POINTER(_p), waits=True)
_sig("sy_force_open", _u32, _p, _s, ctypes.POINTER(_p), waits=True)
_sig("sy_force_close", _u32, _p, _s, ctypes.POINTER(_p), waits=True)
_sig("sy_reset_circuit", _u32, _p, _s, ctypes.POINTER(_p), waits=True)
_sig("sy_set_strategy", _u32, _p, _s, _s, ctypes.POINTER(_p), waits=True)
_sig("sy_serve_dashboard", _u32, _p, _s, ctypes.POINTER(_p), ctypes.POINTER(_p), waits=True)
_sig("sy_on_circuit_change", _u32, _p, _CIRCUIT_CALLBACK, _p, waits=True)
_sig("sy_on_event", _u32, _p, _EVENT_CALLBACK, _p, waits=True)
_sig("sy_request_new", _p, _s, _s)
_sig("sy_request_set_method", _u32, _p, _s)
_sig("sy_request_add_param", _u32, _p, _s, _s)
_sig("sy_request_add_header", _u32, _p, _s, _s)
_sig("sy_request_set_body", _u32, _p, ctypes.c_char_p, _size)
_sig("sy_request_set_priority", _u32, _p, _u32)
_sig("sy_request_set_timeout_ms", _u32, _p, _u64)
_sig("sy_request_set_idempotent", _u32, _p, ctypes.c_bool)
_sig("sy_request_free", None, _p)
_sig("sy_response_status", ctypes.c_uint16, _p)
_sig("sy_response_body", ctypes.POINTER(ctypes.c_ubyte), _p, ctypes.POINTER(_size))
_sig("sy_response_headers", _s, _p)


class _View(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_uint16),
        ("attempts", ctypes.c_uint32),
        ("latency_us", ctypes.c_uint64),
        ("body", ctypes.c_void_p),
        ("body_len", ctypes.c_size_t),
        ("provider", ctypes.c_char_p),
        ("headers", ctypes.c_char_p),
        ("queue_wait_us", ctypes.c_uint64),
        ("raw_body", ctypes.c_void_p),
        ("raw_body_len", ctypes.c_size_t),
        ("from_cache", ctypes.c_bool),
    ]


_sig("sy_response_view_of", _u32, _p, ctypes.POINTER(_View))
_sig("sy_call_get", _u32, _p, _s, _s, _s, _size, ctypes.POINTER(_p), ctypes.POINTER(_View), ctypes.POINTER(_p), waits=True)
_sig("sy_response_header_count", _size, _p)
_sig("sy_response_header_name", _s, _p, _size)
_sig("sy_response_header_value", _s, _p, _size)
_sig("sy_response_provider", _s, _p)
_sig("sy_response_attempts", _u32, _p)
_sig("sy_response_latency_us", _u64, _p)
_sig("sy_response_queue_wait_us", _u64, _p)
_sig("sy_response_raw_body", ctypes.POINTER(ctypes.c_ubyte), _p, ctypes.POINTER(_size))
_sig("sy_response_from_cache", ctypes.c_bool, _p)
# Bound for completeness; Response.headers already holds every header.
_sig("sy_response_header", _s, _p, _s)
_sig("sy_response_free", None, _p)


def version() -> str:
    """The native library's version."""
    return _lib.sy_version().decode()


def status_message(code: int) -> str:
    """What a C status number means, in a sentence ("success" for 0)."""
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code < 2**32:
        raise InvalidArgument(f"`code` {code!r} is not a status number")
    return _lib.sy_status_message(code).decode()


def _error_from(code: int, raw: Optional[int]) -> Error:
    """Builds the exception for a status and frees the native error."""
    message, attempts, waits = status_message(code), [], []
    if raw:
        try:
            message = _lib.sy_error_message(raw).decode("utf-8", "replace")
            attempts = _json.loads(_lib.sy_error_attempts_json(raw).decode("utf-8", "replace"))
            waits = _json.loads(_lib.sy_error_waits_json(raw).decode("utf-8", "replace"))
        finally:
            _lib.sy_error_free(raw)
    cls = _BY_CODE.get(code, InternalError)
    if cls is QuotaExhausted:
        return QuotaExhausted(message, attempts, waits)
    return cls(message, attempts)


def _check(code: int, raw_error: Optional[int] = None, what: str = "") -> None:
    if code != 0:
        if raw_error is None:
            raise _BY_CODE.get(code, InternalError)(what or status_message(code))
        raise _error_from(code, raw_error)


def _take_string(raw: ctypes.c_void_p) -> str:
    try:
        return ctypes.string_at(raw).decode("utf-8")
    finally:
        _lib.sy_string_free(raw)


def _text(value: Any, name: str) -> bytes:
    """Text for the native side: str or bytes only, never a silent str() of something else."""
    if type(value) is str and "\0" not in value:  # the common case first: every request has some
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(f"`{name}` is not valid text (a lone surrogate)") from None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value)
        if b"\0" in value:
            raise InvalidArgument(f"`{name}` contains a NUL byte")
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"`{name}` must be str or bytes, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidArgument(f"`{name}` contains a NUL character")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"`{name}` is not valid text (a lone surrogate)") from None


def _param_text(value: Any, name: str) -> bytes:
    """A parameter value: text, or a number written as Python writes it; not None or a bool."""
    if type(value) is int:  # not a bool, whose type is bool
        return str(value).encode()
    if isinstance(value, bool) or value is None:
        raise InvalidArgument(f"parameter `{name}` is {value!r}; pass text or a number")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"parameter `{name}` is {value!r}; pass a finite number")
        return str(value).encode()
    return _text(value, f"parameter {name}")


def _param_pairs(params: Any) -> Iterator[tuple]:
    """Each parameter as (name, value) bytes, checked; nothing for None."""
    if params is None:
        return
    for name, value in _mapping(params, "params").items():
        yield _text(name, "parameter name"), _param_text(value, str(name))


def _mapping(value: Any, name: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"`{name}` must be a mapping, not {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------
# Responses.


class Headers(Mapping):
    """A read-only, case-insensitive mapping of header names to values; repeated headers
    are joined with ", "."""

    def __init__(self, pairs: List[tuple]):
        self._items: Dict[str, tuple] = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._items:
                self._items[key] = (self._items[key][0], self._items[key][1] + ", " + value)
            else:
                self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Response:
    """A provider's answer. Everything is copied out of the native response."""

    def __init__(self, raw: int, view: Optional[_View] = None):
        # One native call for everything (or none, given the view): each costs.
        if view is None:
            view = _View()
            _check(_lib.sy_response_view_of(raw, ctypes.byref(view)))
        #: The body.
        self.body: bytes = ctypes.string_at(view.body, view.body_len) if view.body_len else b""
        #: The provider's own body when the endpoint's shape made ``body`` from it, else ``body``.
        self.raw_body: bytes = (
            self.body
            if view.raw_body == view.body
            else ctypes.string_at(view.raw_body, view.raw_body_len) if view.raw_body_len else b""
        )
        #: Whether the answer came from the endpoint's cache (``cache_ttl_ms``).
        self.from_cache: bool = bool(view.from_cache)
        #: The HTTP status code.
        self.status: int = view.status
        #: The name of the provider that answered ("fallback" for a fallback's answer).
        self.provider: str = view.provider.decode()
        #: Attempts it took, this one included.
        self.attempts: int = view.attempts
        #: Seconds from submission to answer.
        self.latency: float = view.latency_us / 1e6
        #: Seconds it waited for a worker or a connection slot.
        self.queue_wait: float = view.queue_wait_us / 1e6
        # Parsed when first read: many callers never look at the headers.
        self._header_text: bytes = view.headers
        self._headers: Optional[Headers] = None

    @property
    def headers(self) -> Headers:
        """Case-insensitive headers."""
        if self._headers is None:
            lines = self._header_text.decode("utf-8", "replace").split("\n")
            self._headers = Headers([tuple(line.split(": ", 1)) for line in lines if ": " in line])
        return self._headers

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} from {self.provider} ({len(self.body)} bytes)>"


def _answer(code: int, out: ctypes.c_void_p, err: ctypes.c_void_p, view: Optional[_View] = None) -> Response:
    """A call's outcome: its Response (the native one freed), or its exception."""
    _check(code, err.value)
    try:
        return Response(out.value, view)
    finally:
        _lib.sy_response_free(out.value)


# ---------------------------------------------------------------------------------------
# The balancer.


class Balancer:
    """A load balancer over the configured services and providers.

    ``Balancer(config_dict)`` takes the configuration as a dict (the TOML/JSON schema);
    see also :meth:`from_file` and :meth:`from_string`. Thread-safe: calls release the
    GIL while they wait, so many threads may use one balancer at once. Close it with
    :meth:`close` or a ``with`` block; any call after that raises :class:`ShuttingDown`.
    """

    def __init__(self, config: Optional[Dict[str, Any]] = None, *, _handle: Optional[int] = None):
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_use = 0
        self._handle: Optional[int] = None
        self._pending: Dict[int, Any] = {}
        # Native callbacks of circuit listeners, alive as long as the balancer.
        self._listeners: List[Any] = []
        if _handle is not None:
            self._handle = _handle
            return
        if not isinstance(config, dict):
            raise InvalidArgument("`config` must be a dict (or use from_file / from_string)")
        self._handle = Balancer._create(_json.dumps(config), "json")

    @staticmethod
    def _create(text: str, fmt: Optional[str]) -> int:
        out, err = _p(), _p()
        code = _lib.sy_balancer_from_str(_text(text, "text"), fmt.encode() if fmt else None, ctypes.byref(out), ctypes.byref(err))
        _check(code, err.value)
        return out.value

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "Balancer":
        """Reads a configuration file: JSON when its name ends in .json, TOML otherwise."""
        out, err = _p(), _p()
        code = _lib.sy_balancer_from_file(_text(os.fspath(path), "path"), ctypes.byref(out), ctypes.byref(err))
        _check(code, err.value)
        return cls(_handle=out.value)

    @classmethod
    def from_string(cls, text: str, format: Optional[str] = "toml") -> "Balancer":
        """Reads configuration text; ``format`` is "toml", "json" or None to detect it."""
        return cls(_handle=cls._create(text, format))

    @contextlib.contextmanager
    def _using(self) -> Iterator[int]:
        """The native handle, counted as in use until the block ends: close() waits for
        every such block, so no call can touch a freed balancer."""
        handle = self._enter()
        try:
            yield handle
        finally:
            self._done_using()

    def _enter(self) -> int:
        """The native handle, counted as in use until :meth:`_done_using`."""
        with self._lock:
            handle = self._handle
            if handle is None:
                raise ShuttingDown("the balancer is closed")
            self._in_use += 1
            return handle

    def _done_using(self) -> None:
        with self._lock:
            self._in_use -= 1
            # Only close() waits, and it has cleared the handle first.
            if self._in_use == 0 and self._handle is None:
                self._idle.notify_all()

    def _build(
        self,
        service: str,
        endpoint: str,
        params: Optional[Dict[str, Any]],
        method: str,
        headers: Optional[Dict[str, Any]],
        body: Union[bytes, str, None],
        priority: Union[str, int],
        timeout: Optional[float],
        idempotent: Optional[bool],
    ) -> int:
        req = _lib.sy_request_new(_text(service, "service"), _text(endpoint, "endpoint"))
        if not req:
            raise InvalidArgument("`service` and `endpoint` must be non-empty text")
        try:
            if method != "GET":  # the default; each native call costs
                _check(_lib.sy_request_set_method(req, _text(method, "method")), what=f"`method` {method!r} is not an HTTP method")
            for name, value in _param_pairs(params):
                code = _lib.sy_request_add_param(req, name, value)
                if code:
                    _check(code)
            for name, value in _mapping(headers, "headers").items() if headers is not None else ():
                key = _text(name, "header name")
                if not isinstance(value, (str, bytes)):
                    raise InvalidArgument(f"header `{name}` must be str or bytes, not {type(value).__name__}")
                code = _lib.sy_request_add_header(req, key, _text(value, f"header {name}"))
                _check(code, what=f"header {name!r} cannot be sent: {status_message(code)}")
            if body is not None:
                if isinstance(body, str):
                    try:
                        data = body.encode("utf-8")
                    except UnicodeEncodeError:
                        raise InvalidArgument("`body` is not valid text (a lone surrogate)") from None
                elif isinstance(body, (bytes, bytearray, memoryview)):
                    data = bytes(body)
                else:
                    raise InvalidArgument(f"`body` must be bytes or str, not {type(body).__name__}")
                _check(_lib.sy_request_set_body(req, data, len(data)))
            if priority != "normal":  # the default needs nothing set
                self._set_priority(req, priority)
            if timeout is not None:
                if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                    raise InvalidArgument(f"`timeout` {timeout!r} is not a number of seconds")
                if not (timeout > 0 and math.isfinite(timeout)):
                    raise InvalidArgument(f"`timeout` {timeout!r} is not a positive number of seconds")
                if timeout > MAX_TIMEOUT:
                    raise InvalidArgument(f"`timeout` {timeout!r} is longer than the longest accepted, {MAX_TIMEOUT:g} s")
                _check(_lib.sy_request_set_timeout_ms(req, max(1, math.ceil(timeout * 1000))), what=f"`timeout` {timeout!r} is out of range")
            if idempotent is not None:
                if not isinstance(idempotent, bool):
                    raise InvalidArgument(f"`idempotent` must be True, False or None, not {idempotent!r}")
                _check(_lib.sy_request_set_idempotent(req, idempotent))
            return req
        except BaseException:
            _lib.sy_request_free(req)
            raise

    @staticmethod
    def _set_priority(req: int, priority: Union[str, int]) -> None:
        if isinstance(priority, bool) or not isinstance(priority, (str, int)):
            raise InvalidArgument(f"`priority` {priority!r} is not one of critical, high, normal, low")
        if isinstance(priority, str):
            level = _PRIORITIES.get(priority.lower())
            if level is None:
                raise InvalidArgument(f"`priority` {priority!r} is not one of critical, high, normal, low")
        else:
            level = priority
        if level != 2:  # normal, the default
            _check(_lib.sy_request_set_priority(req, level), what=f"`priority` {priority!r} is out of range")

    def _build_from(self, service: str, endpoint: str, params: Optional[Dict[str, Any]], kwargs: Dict[str, Any]) -> int:
        """A native request from :meth:`request`'s keyword arguments; any other is refused."""
        method = kwargs.pop("method", "GET")
        req = self._build(
            service, endpoint, params, method, kwargs.pop("headers", None), kwargs.pop("body", None),
            kwargs.pop("priority", "normal"), kwargs.pop("timeout", None), kwargs.pop("idempotent", None),
        )
        if kwargs:
            _lib.sy_request_free(req)
            raise InvalidArgument(f"unknown arguments: {', '.join(kwargs)}")
        return req

    def request(
        self,
        service: str,
        endpoint: str,
        params: Optional[Dict[str, Any]] = None,
        method: str = "GET",
        headers: Optional[Dict[str, Any]] = None,
        body: Union[bytes, str, None] = None,
        priority: Union[str, int] = "normal",
        timeout: Optional[float] = None,
        idempotent: Optional[bool] = None,
    ) -> Response:
        """Sends a request and blocks until its answer (the GIL is released meanwhile).

        ``endpoint`` is an endpoint name or a raw path starting with "/". ``timeout`` is
        the whole request's deadline in seconds. Raises a subclass of :class:`Error`.
        """
        if method == "GET" and headers is None and body is None and priority == "normal" and timeout is None and idempotent is None:
            return self._get(service, endpoint, params)
        req = self._build(service, endpoint, params, method, headers, body, priority, timeout, idempotent)
        out, err = _p(), _p()
        try:
            # Not _using(): this is every request's path, and a generator costs.
            handle = self._enter()
            try:
                code = _lib.sy_call(handle, req, ctypes.byref(out), ctypes.byref(err))
            finally:
                self._done_using()
        finally:
            _lib.sy_request_free(req)
        return _answer(code, out, err)

    def _get(self, service: str, endpoint: str, params: Optional[Dict[str, Any]]) -> Response:
        """The most common request, a plain GET, in one native call: the GIL is held only
        to convert the arguments and the answer, and released once."""
        where = _text(service, "service"), _text(endpoint, "endpoint")
        if not where[0] or not where[1]:
            raise InvalidArgument("`service` and `endpoint` must be non-empty text")
        blob = b"".join(name + b"\0" + value + b"\0" for name, value in _param_pairs(params))
        out, err, view = _p(), _p(), _View()
        handle = self._enter()
        try:
            code = _lib.sy_call_get(handle, where[0], where[1], blob, len(blob), ctypes.byref(out), ctypes.byref(view), ctypes.byref(err))
        finally:
            self._done_using()
        return _answer(code, out, err, view)

    def get(self, service: str, endpoint: str, params: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Response:
        """:meth:`request` with method "GET"."""
        if not kwargs:
            return self._get(service, endpoint, params)
        return self.request(service, endpoint, params, method="GET", **kwargs)

    def submit(self, service: str, endpoint: str, params: Optional[Dict[str, Any]] = None, **kwargs: Any) -> "Future[Response]":
        """Queues a request and returns at once with a Future of its :class:`Response`
        (or its exception). Takes the same arguments as :meth:`request`."""
        req = self._build_from(service, endpoint, params, kwargs)
        future: Future = Future()
        key = id(future)

        def done(_user: int, response: int, error: int) -> None:
            try:
                if response:
                    try:
                        future.set_result(Response(response))
                    finally:
                        _lib.sy_response_free(response)
                else:
                    future.set_exception(_error_from(_lib.sy_error_code(error), error))
            finally:
                with self._lock:
                    self._pending.pop(key, None)

        callback = _CALLBACK(done)
        with self._lock:
            # The native side calls back later, from a worker thread: keep it alive.
            self._pending[key] = callback
        err = _p()
        try:
            with self._using() as handle:
                code = _lib.sy_submit(handle, req, callback, None, ctypes.byref(err))
        except BaseException:
            with self._lock:
                self._pending.pop(key, None)
            raise
        finally:
            _lib.sy_request_free(req)
        if code != 0:
            with self._lock:
                self._pending.pop(key, None)
            _check(code, err.value)
        return future

    def explain(self, service: str, endpoint: str, params: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Dict[str, Any]:
        """The decision for a request as it would be made now, without sending it: a dict
        with ``pick`` (a provider's name or None), ``why``, ``strategy`` and ``candidates``
        (each with tier, circuit, rest, rate and quota left, score and ``skipped``). Takes
        the same arguments as :meth:`request`."""
        req = self._build_from(service, endpoint, params, kwargs)
        out, err = _p(), _p()
        try:
            with self._using() as handle:
                code = _lib.sy_explain_json(handle, req, ctypes.byref(out), ctypes.byref(err))
        finally:
            _lib.sy_request_free(req)
        _check(code, err.value)
        return _json.loads(_take_string(out.value))

    def metrics(self) -> Dict[str, Any]:
        """Every counter, as the documented JSON snapshot."""
        out = _p()
        with self._using() as handle:
            _check(_lib.sy_metrics_json(handle, ctypes.byref(out)))
        return _json.loads(_take_string(out.value))

    def prometheus(self) -> str:
        """Every counter in the Prometheus text format 0.0.4."""
        out = _p()
        with self._using() as handle:
            _check(_lib.sy_prometheus(handle, ctypes.byref(out)))
        return _take_string(out.value)

    def circuit(self, provider: str) -> Dict[str, Any]:
        """A provider's circuit: state, failures, successes, last_failure, next_attempt, ...
        Raises :class:`InvalidArgument` for an unknown provider."""
        out = _p()
        name = _text(provider, "provider")
        with self._using() as handle:
            code = _lib.sy_circuit_json(handle, name, ctypes.byref(out))
        _check(code, what=f"no provider is named {provider!r}")
        return _json.loads(_take_string(out.value))

    def _operate(self, fn: Callable, provider: str) -> None:
        err = _p()
        name = _text(provider, "provider")
        with self._using() as handle:
            code = fn(handle, name, ctypes.byref(err))
        _check(code, err.value)

    def force_open(self, provider: str) -> None:
        """Opens a provider's circuit until :meth:`force_close` or :meth:`reset_circuit`."""
        self._operate(_lib.sy_force_open, provider)

    def force_close(self, provider: str) -> None:
        """Closes a provider's circuit now; it opens again by the usual rules."""
        self._operate(_lib.sy_force_close, provider)

    def reset_circuit(self, provider: str) -> None:
        """Closes a provider's circuit and forgets its counts."""
        self._operate(_lib.sy_reset_circuit, provider)

    def set_strategy(self, service: str, strategy: str) -> None:
        """Switches a service's load-balancing strategy (e.g. "round_robin")."""
        err = _p()
        names = (_text(service, "service"), _text(strategy, "strategy"))
        with self._using() as handle:
            code = _lib.sy_set_strategy(handle, names[0], names[1], ctypes.byref(err))
        _check(code, err.value)

    def serve_dashboard(self, addr: str = "127.0.0.1:0") -> str:
        """Starts the status server (dashboard, /status.json, /metrics, /healthz) on its own
        threads and returns its URL, e.g. "http://127.0.0.1:PORT/". It stops with the balancer."""
        out, err = _p(), _p()
        where = _text(addr, "addr")
        with self._using() as handle:
            code = _lib.sy_serve_dashboard(handle, where, ctypes.byref(out), ctypes.byref(err))
        _check(code, err.value)
        return _take_string(out.value)

    def on_circuit_change(self, listener: Callable[[Dict[str, str]], None]) -> None:
        """Calls ``listener`` with ``{"service", "provider", "from", "to"}`` on every circuit
        state change, one at a time on the balancer's events thread. It may call the
        balancer; an exception it raises is printed to stderr and dropped."""
        if not callable(listener):
            raise InvalidArgument("`listener` is not callable")

        def heard(_user: int, service: bytes, provider: bytes, frm: bytes, to: bytes) -> None:
            event = {
                "service": service.decode("utf-8", "replace"),
                "provider": provider.decode("utf-8", "replace"),
                "from": frm.decode(),
                "to": to.decode(),
            }
            try:
                listener(event)
            except BaseException:  # never into the native thread
                traceback.print_exc()

        callback = _CIRCUIT_CALLBACK(heard)
        with self._lock:
            self._listeners.append(callback)
        with self._using() as handle:
            _check(_lib.sy_on_circuit_change(handle, callback, None))

    def on_event(self, subscriber: Callable[[Dict[str, Any]], None]) -> None:
        """Calls ``subscriber`` with every event as a dict (``type``: ``attempt``,
        ``failover``, ``circuit``, ``rest`` or ``quota``; ``at_unix_ms``; its own keys), one
        at a time on the balancer's events thread. A slow subscriber loses events (counted
        in ``metrics()["events"]["dropped"]``), never slows a request; an exception it
        raises is printed to stderr and dropped."""
        if not callable(subscriber):
            raise InvalidArgument("`subscriber` is not callable")

        def heard(_user: int, text: bytes) -> None:
            try:
                subscriber(_json.loads(text))
            except BaseException:  # never into the native thread
                traceback.print_exc()

        callback = _EVENT_CALLBACK(heard)
        with self._lock:
            self._listeners.append(callback)
        with self._using() as handle:
            _check(_lib.sy_on_event(handle, callback, None))

    def shutdown(self, grace: float = 5.0) -> None:
        """Stops taking requests and lets queued ones finish for up to ``grace`` seconds."""
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not grace >= 0:
            raise InvalidArgument(f"`grace` {grace!r} is not a number of seconds")
        with self._using() as handle:
            _check(_lib.sy_balancer_shutdown(handle, int(min(grace, MAX_TIMEOUT) * 1000)))

    def close(self) -> None:
        """Shuts down (no grace) and frees the native balancer, once every call under way
        on other threads has returned (they end with ShuttingDown). Safe to call twice,
        and from any thread."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            busy = self._in_use > 0
        if busy:
            # Calls in flight end soon with ShuttingDown; new ones are refused already.
            _lib.sy_balancer_shutdown(handle, 0)
            with self._lock:
                while self._in_use > 0:
                    self._idle.wait()
        _lib.sy_balancer_free(handle)

    def __enter__(self) -> "Balancer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
