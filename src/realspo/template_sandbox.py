"""Chat templates rendered with a time and an output limit.

A chat template is code shipped with a model (Jinja). transformers already renders it in
Jinja's ``ImmutableSandboxedEnvironment`` (no attribute escapes, ``range`` capped at 100,000
items), but nothing bounds its time or its output: a template with two nested ``range(100000)``
loops runs for hours, and ``"x" * 10**10`` asks for 10 GB. :func:`install` makes
transformers compile every template in :class:`GuardedEnvironment`, the same sandbox with the
same settings, filters and globals (taken from transformers' own environment, so a template
renders exactly as before), plus:

- a deadline (:data:`MAX_SECONDS`) checked on every call, attribute or item lookup and
  output chunk, and, in the main thread, by a timer signal that interrupts any loop;
- a bound on the rendered text (:data:`MAX_CHARS`) and on what ``*``, ``+`` and ``**`` may
  build in between.

A template that breaks a limit, raises (``raise_exception``), or fails in any other way is
reported by :func:`render_guarded` as one :class:`~realspo.errors.ConfigError` line.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from realspo.errors import ConfigError

MAX_SECONDS = 10.0   # a real chat template renders a conversation in well under a millisecond
MAX_CHARS = 1 << 24  # 16 M characters: far more than any context window holds

_deadline = threading.local()


class TemplateLimitError(Exception):
    """A chat template ran past :data:`MAX_SECONDS` or built more than :data:`MAX_CHARS`."""


def _check_time() -> None:
    deadline = getattr(_deadline, "at", None)
    if deadline is not None and time.monotonic() > deadline:
        raise TemplateLimitError(f"ran longer than {MAX_SECONDS:g} s")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _check_arguments(args: tuple, kwargs: dict[str, Any]) -> None:
    """Refuse a call or filter asked for a width or count past :data:`MAX_CHARS`."""
    _check_time()
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_CHARS:
            raise TemplateLimitError(f"asks for a size of {value}, more than {MAX_CHARS}")


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a Jinja filter) with its arguments checked first; ``functools.wraps``
    keeps the attribute that tells Jinja to pass it the context or environment."""
    import functools

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args, kwargs)
        return function(*args, **kwargs)

    return bounded


def _make_environment_class() -> type:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GuardedEnvironment(ImmutableSandboxedEnvironment):
        """transformers' sandbox with a deadline and size limits (see the module docs)."""

        intercepted_binops = frozenset({"*", "+", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_time()
            if operator == "*":
                count = right if isinstance(right, int) else left if isinstance(left, int) else 1
                if max(_size(left), _size(right)) * max(int(count), 0) > MAX_CHARS:
                    raise TemplateLimitError(f"builds a value longer than {MAX_CHARS} items")
            elif operator == "+" and _size(left) + _size(right) > MAX_CHARS:
                raise TemplateLimitError(f"builds a value longer than {MAX_CHARS} items")
            elif (operator == "**" and isinstance(right, int) and isinstance(left, int)
                  and abs(left) > 1 and right > 4096):
                raise TemplateLimitError(f"computes an integer power too large ({left} ** {right})")
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _check_arguments(args, kwargs)  # ("x".ljust(10**10) would allocate first)
            return super().call(__context, __obj, *args, **kwargs)

        def getattr(self, obj: Any, attribute: str) -> Any:
            _check_time()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            _check_time()
            return super().getitem(obj, argument)

    return GuardedEnvironment


def _bounded_concat(chunks: Iterable[str]) -> str:
    """``Environment.concat`` with the output limit and the deadline checked per chunk."""
    parts: list[str] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_CHARS:
            raise TemplateLimitError(f"rendered more than {MAX_CHARS} characters")
        _check_time()
        parts.append(chunk)
    return "".join(parts)


def guarded_compile(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """A replacement for transformers' ``_compile_jinja_template``: the template compiled in
    a :class:`GuardedEnvironment` configured like the environment ``original`` makes."""
    import functools

    environment_class = _make_environment_class()

    @functools.lru_cache(maxsize=32)
    def compile_template(chat_template: str) -> Any:
        # transformers' environment, from an empty template: compiling the real one there
        # would fold its constants (``"x" * 10**10``) with no limit
        base = original("").environment
        env = environment_class(trim_blocks=base.trim_blocks, lstrip_blocks=base.lstrip_blocks,
                                extensions=[type(ext) for ext in base.extensions.values()])
        env.filters.update({name: _bounded_filter(f) for name, f in base.filters.items()})
        env.globals.update(base.globals)
        env.concat = _bounded_concat
        return env.from_string(chat_template)

    compile_template.realspo_guarded = True  # type: ignore[attr-defined]
    compile_template.original = original  # type: ignore[attr-defined]
    return compile_template


def install() -> None:
    """Make transformers compile chat templates in :class:`GuardedEnvironment` (once)."""
    from transformers.utils import chat_template_utils

    current = chat_template_utils._compile_jinja_template
    if not getattr(current, "realspo_guarded", False):
        chat_template_utils._compile_jinja_template = guarded_compile(current)


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Set the deadline the environment checks; in the main thread, also arm a timer signal
    that interrupts a loop that makes no call at all."""
    previous = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + seconds
    timer = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
             and previous is None and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if timer:
        def on_alarm(signum: int, frame: Any) -> None:
            raise TemplateLimitError(f"ran longer than {seconds:g} s")

        old_handler = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds + 0.5)
    try:
        yield
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
        _deadline.at = previous


def render_guarded(render: Callable[[], str], what: str) -> str:
    """``render()`` (a call of ``apply_chat_template``) under the limits; any failure of the
    template is one ConfigError line naming ``what`` (the model or tokenizer)."""
    install()
    try:
        with _time_limit(MAX_SECONDS):
            return render()
    except TemplateLimitError as exc:
        raise ConfigError(f"{what}: its chat template {exc}; refusing to use it") from None
    except RecursionError:
        raise ConfigError(f"{what}: its chat template recurses too deeply") from None
    except MemoryError:
        raise ConfigError(f"{what}: its chat template ran out of memory") from None
    except Exception as exc:  # the template is the model's code: any failure is its own
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ConfigError(f"{what}: its chat template failed ({type(exc).__name__}: {first})") from None
