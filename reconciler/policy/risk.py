"""Risk of one tool call: the catalog's level, raised by what the arguments show; and redaction.

A tool's catalog entry gives its base level (GREEN < YELLOW < RED). What the arguments show
raises it, each kind of finding once, with a reason naming the argument's path (``to[0]``,
``filters.env``):

- a secret → RED: any value under a secret-named key (``password``, ``api_key``, ``client_secret``,
  ``cookie``, ``aws_secret_access_key``; read word by word, so ``token_count`` and ``secretary``
  are not), or a string that looks like one under any key (provider key formats, JWTs, bearer
  tokens, private keys, credentials inside a URL, ``password=`` in a connection string);
- a production target → one level up: an environment-like field (``env``, ``stage``, ``cluster``,
  ``namespace``, ``database`` …) naming prod/production/prd/live, a host-like field or any URL
  whose host names prod/production/prd (not ``non-prod``, ``pre-prod``, ``products``); or a
  ``productionImpact`` tool called from a production environment;
- a destructive operation → one level up: an operation-like field (``action``, ``operation``,
  ``method``, ``command`` …) naming delete/drop/truncate/…, a destructive SQL statement under
  ``sql``/``query``/``statement``, or a flag such as ``force``, ``cascade``, ``recursive`` or
  ``delete_*`` set to true. Free text is not read for verbs: a search for "how do I delete my
  account?" is not destructive;
- a bulk operation → one level up: a list of ``_BULK_ITEMS`` or more items (not a vector of
  fractions, which is data), a count-like field (``limit``, ``count``, ``batch_size`` …) of
  ``_BULK_COUNT`` or more or negative (no limit), ``all: true``, a wildcard (``users/*``), or
  arguments too large to read in full.

:func:`assess` runs on every decision, so it is cheap: key names are classified once (cached),
one walk reads every value for every kind, a long list of scalars is checked for secrets with one
regex search over its joined text and otherwise sampled, and the walk stops after
``_MAX_VALUES`` values (a bulk raise: what is not read is not called safe).

:func:`redact` (every stored payload: ``decisions.deciding``, ``decisions.events``,
``oversight.approving``, ``server.opa``) replaces the values :func:`assess` calls secrets, by the
same tests, and all of them however large the arguments. :func:`redact_args` also returns the values it removed,
so that :func:`redact_text` can take them, and secret-like patterns, out of free text that is
stored next to them (a decision's reasons may quote an argument). :func:`clean` removes NULs.
Pure.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import dataclasses
import functools
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LEVELS",
    "REDACTED",
    "Assessment",
    "assess",
    "clean",
    "findings_of",
    "reassess",
    "redact",
    "redact_args",
    "redact_text",
]

LEVELS = ("GREEN", "YELLOW", "RED")
REDACTED = "[REDACTED]"

_BULK_ITEMS = 100  # a list naming this many things is a bulk operation
_BULK_COUNT = 1000  # a limit/count this high is (a page size of 100 is not)
_SAMPLE = 16  # items of a long list read for targets, verbs and wildcards
_MAX_VALUES = 1000  # values assess reads before it calls the arguments bulk and stops
_MIN_KNOWN = 6  # a redacted argument this long or longer is also taken out of text that quotes it

# ---------------------------------------------------------------- long text

#: From this many characters on, text is matched in a process of its own. ``re`` holds the GIL
#: for a whole search (~5-60 ns a character here, by pattern), so one caller's 900 KB argument
#: held every other thread of a server — the event loop answering other tenants included — for
#: up to ~60 ms per pattern; waiting for another process lets go of it. Shorter text is matched
#: here: a search of it holds the GIL for a few milliseconds at most.
_LONG = 65_536


class _Pattern:
    """A compiled pattern: ``re`` in this process for short text, the same pattern in the
    matcher process (:func:`_far`) for long text, with the same answers."""

    __slots__ = ("flags", "pattern", "short")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags
        self.short = re.compile(pattern, flags)

    def search(self, text: str) -> Any:
        return self.short.search(text) if len(text) < _LONG else self._found(text, _far(self, "search", text))

    def match(self, text: str) -> Any:
        return self.short.match(text) if len(text) < _LONG else self._found(text, _far(self, "match", text))

    def fullmatch(self, text: str) -> Any:
        return self.short.fullmatch(text) if len(text) < _LONG else self._found(text, _far(self, "fullmatch", text))

    def finditer(self, text: str) -> Iterator[Any]:
        if len(text) < _LONG:
            return self.short.finditer(text)
        spans, step = _far(self, "finditer", text), 2 * (self.short.groups + 1)
        return (_Found(text, spans, offset, self.short) for offset in range(0, len(spans), step))

    def sub(self, replacement: str, text: str) -> str:
        return self.short.sub(replacement, text) if len(text) < _LONG else _far(self, "sub", text, replacement)  # type: ignore[no-any-return]

    def _found(self, text: str, spans: array.array[int] | None) -> _Found | None:
        return None if spans is None else _Found(text, spans, 0, self.short)


class _Found:
    """A match made in the matcher process, as much of ``re.Match`` as this module reads: the
    matcher sends back only the spans of the match and its groups, as integers (a text dense
    with matches must not cost a large answer), and the groups are cut from the text here."""

    __slots__ = ("_count", "_names", "_offset", "_spans", "_text")

    def __init__(self, text: str, spans: array.array[int], offset: int, pattern: re.Pattern[str]) -> None:
        self._text, self._spans, self._offset = text, spans, offset
        self._count, self._names = pattern.groups + 1, pattern.groupindex

    def span(self, group: int | str = 0) -> tuple[int, int]:
        i = self._offset + 2 * (self._names[group] if isinstance(group, str) else group)
        return self._spans[i], self._spans[i + 1]

    def start(self, group: int | str = 0) -> int:
        return self.span(group)[0]

    def end(self, group: int | str = 0) -> int:
        return self.span(group)[1]

    def group(self, group: int | str = 0) -> str | None:
        start, end = self.span(group)
        return None if start < 0 else self._text[start:end]

    def groups(self) -> tuple[str | None, ...]:
        return tuple(self.group(i) for i in range(1, self._count))


def _match_here(pattern: str, flags: int, method: str, text: str, replacement: str | None) -> Any:
    """What the matcher process runs (and this process, when it has none): a substitution's
    text, or the spans of each match and its groups as one array of integers (-1 for a group
    that did not take part)."""
    compiled = re.compile(pattern, flags)
    if method == "sub":
        return compiled.sub(replacement or "", text)
    count = compiled.groups + 1
    if method == "finditer":
        spans = array.array("q")
        for found in compiled.finditer(text):
            for i in range(count):
                spans.extend(found.span(i))
        return spans
    found = getattr(compiled, method)(text)
    if found is None:
        return None
    return array.array("q", [n for i in range(count) for n in found.span(i)])


class _Matcher:
    """The matcher process: ``python -I -c`` running :func:`_serve` (fresh, not forked from a
    process that may run threads; isolated, so nothing in the working directory or the
    environment is imported), one request at a time over its stdin and stdout, each a length and
    a pickle. It ends when its stdin closes: when this process exits or dies."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {package_root!r}); "
             "from reconciler.policy import risk; risk._serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def ask(self, request: tuple[Any, ...]) -> Any:
        """The answer to ``request``; a matcher that does not answer within
        :data:`_MATCHER_SECONDS` (stopped, say) is killed, which ends the wait with an error."""
        assert self.process.stdin is not None and self.process.stdout is not None
        watchdog = threading.Timer(_MATCHER_SECONDS, self.process.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            _write_frame(self.process.stdin, request)
            return _read_frame(self.process.stdout)
        finally:
            watchdog.cancel()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _write_frame(stream: Any, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "big") + data)
    stream.flush()


def _read_frame(stream: Any) -> Any:
    head = stream.read(8)
    if len(head) != 8:
        raise EOFError("the matcher process is gone")
    size = int.from_bytes(head, "big")
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the matcher process is gone")
    return pickle.loads(data)  # our own child's answer


def _serve() -> None:
    """The matcher process's loop."""
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            request = _read_frame(inbox)
        except EOFError:
            return
        _write_frame(outbox, _match_here(*request))


_matcher: _Matcher | None = None
_matcher_lock = threading.Lock()
_forgotten: list[_Matcher] = []


def _stop_matcher() -> None:
    global _matcher
    with _matcher_lock:
        matcher, _matcher = _matcher, None
    if matcher is not None:
        matcher.close()


def _forget_matcher() -> None:
    """In a forked child: the matcher serves the parent. Its pipes are the parent's: the child's
    copies are pointed at /dev/null, so the matcher still sees its stdin close when the parent
    ends, even while a child (a pool worker, say) lives on."""
    global _matcher, _matcher_lock
    if _matcher is not None:
        _forgotten.append(_matcher)  # kept: never used, never collected (closing would flush)
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_RDWR)
            for stream in (_matcher.process.stdin, _matcher.process.stdout):
                if stream is not None:
                    os.dup2(null, stream.fileno())
            os.close(null)
    _matcher, _matcher_lock = None, threading.Lock()


atexit.register(_stop_matcher)
os.register_at_fork(after_in_child=_forget_matcher)


def _far(pattern: _Pattern, method: str, text: str, replacement: str | None = None) -> Any:
    """``method`` of ``pattern`` on long ``text``, in the matcher process (started on first use),
    as :func:`_match_here` answers. Waiting for it lets go of the GIL. Should the process fail, a
    new one is started once; failing that, text is matched here (the same answer) for a minute
    before the matcher is tried again."""
    global _matcher, _matcher_down_until
    request = (pattern.pattern, pattern.flags, method, text, replacement)
    with _matcher_lock:
        for _ in range(2):
            if time.monotonic() < _matcher_down_until:
                break
            try:
                if _matcher is None:
                    _matcher = _Matcher()
                return _matcher.ask(request)
            except (OSError, EOFError, pickle.UnpicklingError, ValueError):
                if _matcher is not None:
                    with contextlib.suppress(OSError):
                        _matcher.process.kill()
                    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                        _matcher.process.wait(timeout=5)
                    _matcher = None
        else:
            _matcher_down_until = time.monotonic() + _MATCHER_RETRY_SECONDS
    return _match_here(*request)


_MATCHER_RETRY_SECONDS = 60.0
#: A match of a megabyte takes well under a second; a matcher this late is stuck.
_MATCHER_SECONDS = 10.0
_matcher_down_until = 0.0


# ---------------------------------------------------------------- key names, by word


def _vocabulary(words: str) -> frozenset[str]:
    return frozenset(words.split())


_SECRET_WORDS = _vocabulary(
    "password passwords passwd pwd passphrase secret secrets token tokens apikey apikeys cookie cookies"
    " credential credentials auth authorization privatekey otp cvv cvc"
)
_NUMBER_SECRET_WORDS = _vocabulary("password passwords passwd pwd pass passphrase secret otp cvv cvc")
_KEY_QUALIFIERS = _vocabulary("api private secret access signing encryption master session client ssh")
# Tokens that count or page, not authenticate: max_tokens, prompt_tokens, next_page_token.
_NOT_SECRET_QUALIFIERS = _vocabulary("max num input output prompt completion total page next continuation sync")
_ENV_WORDS = _vocabulary("env environment stage tier target cluster namespace workspace database db")
_HOST_WORDS = _vocabulary("host hostname server endpoint domain origin url uri dsn")
_OP_WORDS = _vocabulary("action actions operation op method verb mode command cmd commands script")
_SQL_WORDS = _vocabulary("sql query queries statement statements stmt")
_FLAG_WORDS = _vocabulary("force cascade recursive purge prune overwrite wipe permanent")
_DESTRUCTIVE_VERBS = _vocabulary(
    "delete del remove rm rmdir drop truncate destroy purge wipe erase terminate kill shutdown uninstall"
    " deprovision overwrite mkfs"
)
_OP_VERBS = _DESTRUCTIVE_VERBS | {"force"}  # ``git push --force`` in a command
_COUNT_WORDS = _vocabulary("limit count batch max top rows records results")
_SIZE_QUALIFIERS = _vocabulary("batch page chunk bulk")  # batch_size is a count; size is not

# Key classes, as bits.
_SECRET, _NUMBER_SECRET, _ENV, _HOST, _OP, _SQL, _FLAG, _ALL, _COUNT, _SECRET_NAME = (1 << i for i in range(10))
# _SECRET_NAME: the name itself looks like a secret ({"sk-live-...": true}); the others say
# what the name says of its value.

_CAMEL = _Pattern(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")  # where camelCase splits
_NOT_WORD = _Pattern(r"[^a-z0-9]+")


_CACHED_LENGTH = 64  # longer names and values are read each time: the caches hold short text only


def _words(text: str) -> tuple[str, ...]:
    """``text`` as lower-case words: ``secretAccessKey`` and ``x-api-key`` read as their parts."""
    return _cached_words(text) if len(text) <= _CACHED_LENGTH else _split(text)


def _split(text: str) -> tuple[str, ...]:
    if not text.islower():
        text = _CAMEL.sub(" ", text).lower()
    return tuple(_NOT_WORD.sub(" ", text).split())


_cached_words = functools.lru_cache(maxsize=8192)(_split)


def _leaf_key(key: str) -> str:
    """The name the key patterns read: a key's last dotted part, before any index (so that
    ``{"db.password": ...}`` and ``{"password[0]": ...}`` read as ``password``)."""
    return key.rsplit(".", 1)[-1].split("[", 1)[0]


def _key_class(key: str) -> int:
    """What a key's name says its value is (bits); assessing and redacting both read it."""
    return _cached_class(key) if len(key) <= _CACHED_LENGTH else _classify(key)


def _classify(key: str) -> int:
    named = _SECRET_NAME if _looks_secret(key) else 0
    words = _words(_leaf_key(key))
    if not words:
        return named
    last, before = words[-1], (words[-2] if len(words) > 1 else "")
    bits = 0
    if words == ("pass",) or (before not in _NOT_SECRET_QUALIFIERS and last in _SECRET_WORDS):
        bits |= _SECRET  # "pass" alone, not boarding_pass
    elif last in ("key", "keys") and before in _KEY_QUALIFIERS:
        bits |= _SECRET
    if bits & _SECRET and last in _NUMBER_SECRET_WORDS:
        bits |= _NUMBER_SECRET  # {"password": 12345} is one; {"auth": 1} and {"max_tokens": 4096} are not
    bits |= _ENV if last in _ENV_WORDS else 0
    bits |= _HOST if last in _HOST_WORDS else 0
    bits |= _OP if last in _OP_WORDS else 0
    bits |= _SQL if last in _SQL_WORDS else 0
    if last in _FLAG_WORDS or words[0] in _DESTRUCTIVE_VERBS or last in _DESTRUCTIVE_VERBS:
        bits |= _FLAG  # force, cascade, delete_branch, hard_delete: destructive when true
    bits |= _ALL if last == "all" else 0
    if last in _COUNT_WORDS or (last == "size" and before in _SIZE_QUALIFIERS) or (last, before) == ("page", "per"):
        bits |= _COUNT
    return bits | named


_cached_class = functools.lru_cache(maxsize=8192)(_classify)


# ---------------------------------------------------------------- values

_SECRET_VALUE = _Pattern(
    r"sk-[A-Za-z0-9_-]{16,}"  # OpenAI/Anthropic-style keys
    r"|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub tokens
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab tokens
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*)"
    # JWTs, from where a token starts: searched from every "eyJ" of a long run of token
    # characters, the run was read to its end each time (quadratic in its length)
    r"|(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{10,}+\.[A-Za-z0-9_-]{10,}+\.[A-Za-z0-9_-]{10,}"
    r"|(?:[Bb]earer|BEARER)\s+[A-Za-z0-9._~+/-]{20,}=*"
    r"|(?P<url>://[^\s/:@]+:)[^\s/@]+@"  # scheme://user:password@host
    # password=… in a connection or query string; "password: …" in prose is not taken for one.
    r"|(?P<pair>(?i:password|passwd|pwd)=)[^\s;&'\"]+"
    r"|(?P<param>[?&](?i:access_token|token|api_?key|key|secret|client_secret|sig|signature)=)[^&\s#]+"
)
# Text every match of _SECRET_VALUE holds: one search for these literals runs at C speed (~4 ns a
# character) where the pattern above costs ~50, so only text holding one of them is searched.
_SECRET_MARKER = _Pattern(
    "|".join(
        map(
            re.escape,
            (
                *("sk-", "k_live_", "k_test_", "AKIA", "ASIA", "AIza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
                *("github_pat_", "glpat-", "xox", "-----BEGIN", "eyJ", "earer", "EARER", "://", "="),
            ),
        )
    )
)
_PROD_ENV = _Pattern(r"(?<![a-z0-9])(?<!non[-_.])(?<!pre[-_.])(?:prod|production|prd|live)(?![a-z])", re.I)
_PROD_HOST = _Pattern(r"(?<![a-z0-9])(?<!non[-_.])(?<!pre[-_.])(?:prod|production|prd)(?![a-z])", re.I)
_URL_HOST = _Pattern(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@\s]*@)?([^/?#\s]*)")
_SQL_DESTRUCTIVE = _Pattern(
    r"(?:^|;)\s*(?P<sql>delete\s+from\s+[\w.\"`\[\]]+\s*(?:;|$|where\b|returning\b|using\b)"
    r"|drop\s+(?:table|database|schema|index|view|user|role|column)\b"
    r"|truncate\s+(?:table\b|[\w.\"`\[\]]+\s*(?:;|$|cascade\b|restart\b))"
    r"|alter\s+table\s+\S+\s+drop\b"
    r"|update\s+\S+\s+set\b(?![^;]*\bwhere\b))",  # an UPDATE of every row
    re.I,
)
# A wildcard in an identifier-like value (``users/*``, ``prod-*``, ``*.log``, ``*``): not markdown
# emphasis (``**bold**``) nor arithmetic (``2*3``); a value with spaces is prose.
_WILDCARD = _Pattern(r"(?:^|[/.:_-]|(?<=[A-Za-z0-9]))\*(?:$|[/.:_-])")
_SPACE = _Pattern(r"\s")
_TRUE = frozenset(("true", "yes"))
_SCALARS = frozenset((str, int, float, bool, type(None)))  # JSON's leaves, told apart by type at once
_NUMBERS = frozenset((int, float))


def _is_mapping(value: Any) -> bool:
    # ``isinstance(x, Mapping)`` is a slow ABC check: plain dicts and scalars are told by type.
    return type(value) is dict or (type(value) not in _SCALARS and isinstance(value, Mapping))


#: A payment card number: 13 to 19 digits from the card networks' ranges (3: Amex, Diners,
#: JCB; 4: Visa; 5: Mastercard; 6: Discover, UnionPay), bare or in groups of four split by spaces
#: or dashes. No Luhn check: a mistyped number is still someone's card, and a test number too.
_CARD = _Pattern(r"(?<![0-9])(?:[3-6][0-9]{12,18}|[3-6][0-9]{3}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,7})(?![0-9])")


def _looks_secret(text: str) -> bool:
    return (_SECRET_MARKER.search(text) is not None and _SECRET_VALUE.search(text) is not None) or (
        _CARD.search(text) is not None
    )


def _is_secret(bits: int, value: Any) -> bool:
    if type(value) is str:
        return bool(bits & _SECRET and value) or _looks_secret(value)
    if type(value) is int and 10**12 <= abs(value) < 10**19:
        return _CARD.fullmatch(str(abs(value))) is not None or bool(bits & _NUMBER_SECRET)
    return bool(bits & _NUMBER_SECRET) and type(value) in _NUMBERS


def _may_hold_secret(items: list[Any] | tuple[Any, ...], kinds: set[type], bits: int) -> bool:
    """Whether a list of scalars of ``kinds`` may hold a secret, without a call per item: False is
    certain; True is checked item by item (the joined text can match across two items)."""
    if bits & _NUMBER_SECRET and kinds & _NUMBERS:
        return True
    if int in kinds and any(type(i) is int and 10**12 <= abs(i) < 10**19 for i in items):
        return True  # a card number, perhaps
    if str not in kinds:
        return False
    return bool(bits & _SECRET) or _looks_secret("\0".join(i for i in items if type(i) is str))


def _production(bits: int, value: str) -> bool:
    if bits & _ENV and _PROD_ENV.search(value):
        return True
    if bits & _HOST or "://" in value:
        url = _URL_HOST.match(value)
        if url is not None:
            return _PROD_HOST.search(url.group(1)) is not None
        return bool(bits & _HOST) and _PROD_HOST.search(value) is not None
    return False


def _destructive(bits: int, value: Any) -> str | None:
    """What makes ``value`` under a key of ``bits`` destructive, or None."""
    if bits & _FLAG and (value is True or (type(value) is str and value.lower() in _TRUE)):
        return "set to true"
    if type(value) is not str:
        return None
    if bits & _OP:
        verbs = [w for w in _words(value) if w in _OP_VERBS]
        if verbs:
            return verbs[0]
    if bits & _SQL:
        statement = _SQL_DESTRUCTIVE.search(value)
        if statement is not None:
            return f"{statement.group('sql').split()[0].upper()} statement"
    return None


def _bulk(bits: int, value: Any) -> str | None:
    """What makes the scalar ``value`` under a key of ``bits`` bulk, or None."""
    kind = type(value)
    if bits & _ALL and (value is True or (kind is str and value.lower() in _TRUE)):
        return "asks for all"
    if bits & _COUNT and kind is int:
        if value >= _BULK_COUNT:
            return f"is a bulk count ({value})"
        if value < 0:
            return f"asks for no limit ({value})"
    if kind is str and "*" in value and _WILDCARD.search(value) and not _SPACE.search(value):
        return "is a wildcard"
    return None


# ---------------------------------------------------------------- assessing


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~0.1 µs a field), and
# this is built on every decision; nothing changes one after it is made.
@dataclasses.dataclass(slots=True)
class Assessment:
    level: str
    catalog_level: str
    reasons: tuple[str, ...]
    #: what the arguments alone showed, each kind's reason or None: (secret, target, destructive,
    #: bulk). A replay re-assesses the call from these under another catalog (``reassess``):
    #: the arguments themselves are stored redacted.
    findings: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None)

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "catalogLevel": self.catalog_level, "reasons": list(self.reasons)}

    def findings_dict(self) -> dict[str, str]:
        """The arguments' findings by kind (only those found), as a stored decision keeps them."""
        return {kind: reason for kind, reason in zip(_FINDING_KINDS, self.findings, strict=True) if reason is not None}


_FINDING_KINDS = ("secret", "target", "destructive", "bulk")


@dataclasses.dataclass(slots=True)
class _Findings:
    """The first finding of each kind (the path of a secret or a target, the reason of the others)
    and how many more values assessing reads."""

    secret: str | None = None
    target: str | None = None
    destructive: str | None = None
    bulk: str | None = None
    budget: int = _MAX_VALUES
    partial: bool = False  # some values were not read (a long list sampled, the budget spent)


def assess(
    catalog_level: str, args: Mapping[str, Any], *, production: bool = False, production_impact: bool = False
) -> Assessment:
    """The risk of calling a tool of ``catalog_level`` with ``args``."""
    found = _Findings()
    _scan_mapping(found, args, "")
    if found.budget < 0 and found.bulk is None:
        found.bulk = f"arguments hold more than {_MAX_VALUES} values, not all read"
    if found.secret is None and (found.partial or found.budget < 0) and redact_args(args)[1]:
        # What redaction finds, assessing must too, wherever it is: read every value for secrets.
        found.secret = ""
    if found.secret is not None:
        found.secret = f"argument {found.secret}" if found.secret else "an argument past those read one by one"
    findings = (
        found.secret,
        f"argument {found.target}" if found.target is not None else None,
        found.destructive,
        found.bulk,
    )
    return reassess(catalog_level, findings, production=production, production_impact=production_impact)


def reassess(
    catalog_level: str,
    findings: tuple[str | None, str | None, str | None, str | None],
    *,
    production: bool = False,
    production_impact: bool = False,
) -> Assessment:
    """The risk of a call whose arguments showed ``findings`` (``Assessment.findings``) when its
    tool has ``catalog_level``: what :func:`assess` answers for the same arguments, so a replay
    under another catalog re-assesses a recorded call without its (redacted) arguments."""
    secret, target, destructive, bulk = findings
    rank = LEVELS.index(catalog_level)
    reasons: list[str] = []
    if secret is not None:
        reasons.append(f"{secret} holds a secret-like value: RED")
        rank = 2
    if target is not None:
        reasons.append(f"{target} targets production: raised one level")
    elif production and production_impact:
        reasons.append("production-impacting tool called from a production environment: raised one level")
    if destructive is not None:
        reasons.append(f"{destructive}: raised one level")
    if bulk is not None:
        reasons.append(f"{bulk}: raised one level")
    raises = len(reasons) - (secret is not None)  # each reason but the secret's is one level
    rank = min(rank + raises, 2)
    return Assessment(LEVELS[rank], catalog_level, tuple(reasons), findings)


def findings_of(recorded: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """``Assessment.findings`` from what a stored decision kept (``findings_dict``)."""
    if not isinstance(recorded, dict):
        return (None, None, None, None)
    values = [recorded.get(kind) for kind in _FINDING_KINDS]
    return tuple(v if isinstance(v, str) else None for v in values)  # type: ignore[return-value]


def _scan(found: _Findings, value: Any, path: str, bits: int) -> None:
    if type(value) is dict or (type(value) not in _SCALARS and _is_mapping(value)):
        _scan_mapping(found, value, path)
    elif type(value) is list or type(value) is tuple:
        _scan_list(found, value, path, bits)
    else:
        found.budget -= 1
        _scan_scalar(found, value, path, bits)


def _scan_mapping(found: _Findings, value: Mapping[Any, Any], path: str) -> None:
    for name, item in value.items():
        if found.budget < 0:
            return
        name = name if type(name) is str else str(name)
        bits = _key_class(name)
        if bits & _SECRET_NAME:  # named redacted in what the findings say
            name = REDACTED
            if found.secret is None:
                found.secret = f"{path}.{name}" if path else name
        _scan(found, item, f"{path}.{name}" if path else name, bits)


def _scan_list(found: _Findings, items: list[Any] | tuple[Any, ...], path: str, bits: int) -> None:
    if len(items) < _BULK_ITEMS:
        for i, item in enumerate(items):
            if found.budget < 0:
                return
            _scan(found, item, f"{path}[{i}]", bits)
        return
    kinds = set(map(type, items))
    if found.bulk is None and kinds != {float}:  # a vector of fractions (an embedding) is data
        found.bulk = f"argument {path} lists {len(items)} items"
    if found.secret is None and kinds <= _SCALARS and _may_hold_secret(items, kinds, bits):  # every item
        first = next((i for i, item in enumerate(items) if _is_secret(bits, item)), None)
        found.secret = f"{path}[{first}]" if first is not None else None
    found.partial = True
    for i, item in enumerate(items[:_SAMPLE]):
        _scan(found, item, f"{path}[{i}]", bits)


def _scan_scalar(found: _Findings, value: Any, path: str, bits: int) -> None:
    if found.secret is None and _is_secret(bits, value):
        found.secret = path
    if found.target is None and type(value) is str and _production(bits, value):
        found.target = path
    if found.destructive is None and bits & (_OP | _SQL | _FLAG):
        what = _destructive(bits, value)
        if what is not None:
            found.destructive = f"argument {path} asks for a destructive operation ({what})"
    if found.bulk is None:
        what = _bulk(bits, value)
        if what is not None:
            found.bulk = f"argument {path} {what}"


# ---------------------------------------------------------------- redacting


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secret-like values replaced by ``[REDACTED]``."""
    return _redact(value, _key_class(key) if key else 0, [])


def redact_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """``args`` redacted, and the values taken out (as text) for :func:`redact_text`."""
    taken: list[str] = []
    redacted = _redact(args, 0, taken)
    return redacted, frozenset(taken)


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """``text`` without secrets: every occurrence of the ``known`` secret values, and anything
    secret-like. A URL keeps its scheme, user and host, a ``password=`` pair its name: the reader
    sees what was there, not what it was."""
    spans = _secret_spans(text, known)
    if not spans:
        return text
    spans.sort()
    parts: list[str] = []
    end = 0
    for start, stop in spans:  # one mark per region: replacing one secret must not reveal another
        if start >= end:
            parts += (text[end:start], REDACTED)
        end = max(end, stop)
    parts.append(text[end:])
    return "".join(parts)


def _secret_spans(text: str, known: Iterable[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    if _SECRET_MARKER.search(text):
        for match in _SECRET_VALUE.finditer(text):
            keep = match.group("url") or match.group("pair") or match.group("param") or ""
            spans.append((match.start() + len(keep), match.end() - (match.group("url") is not None)))
    spans.extend(match.span() for match in _CARD.finditer(text))
    for secret in known:
        # A short value ("a", "1") would blank letters out of ordinary words; the patterns above
        # still catch a short secret's usual forms.
        start = text.find(secret) if len(secret) >= _MIN_KNOWN else -1
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    return spans


def _redact(value: Any, bits: int, taken: list[str]) -> Any:
    kind = type(value)
    if kind is str or kind in _NUMBERS:
        # A number is one by its key, or by looking like a card number.
        if (bits or kind is not float) and _is_secret(bits, value):
            taken.append(str(value))
            return REDACTED
        return value
    if kind is dict or (kind not in _SCALARS and _is_mapping(value)):
        redacted = {}
        for k, v in value.items():
            name = k if type(k) is str else str(k)
            bits = _key_class(name)
            child = _redact(v, bits, taken)
            if bits & _SECRET_NAME:  # a key can be a secret too: {"sk-live-...": true}
                taken.append(name)
                name = REDACTED
                while name in redacted or name in value:
                    name += "'"
            redacted[name] = child
        return redacted
    if kind is list or kind is tuple:
        if len(value) >= _BULK_ITEMS:
            kinds = set(map(type, value))
            if kinds <= _SCALARS and not _may_hold_secret(value, kinds, bits):
                return list(value)
        return [_redact(v, bits, taken) for v in value]
    return value


def clean(value: Any) -> Any:
    """``value`` with NUL characters replaced: JSON columns on PostgreSQL cannot store them."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if _is_mapping(value):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value
