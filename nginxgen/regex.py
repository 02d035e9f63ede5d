"""What an nginx (PCRE) regex can match, worked out on Python's parse of it.

Used by the rules that must know more than the regex text: whether a prefix location can be
taken by a regex location (NG04), what a capture group can contain (alias traversal, CR/LF
injection), whether a loop can backtrack exponentially (ReDoS), and which strings an
Origin/Referer check lets through. Character sets are worked out on a probe alphabet
(printable ASCII plus tab, CR and LF), which is all these questions need.
"""

from __future__ import annotations

import re
import re._constants as C  # Python's sre opcodes (3.11+)
import re._parser as P
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

PROBE = frozenset(chr(c) for c in range(32, 127)) | {"\t", "\n", "\r"}
_DIGITS = frozenset("0123456789")
_WORD = frozenset(c for c in PROBE if c.isalnum() or c == "_")
_SPACE = frozenset(" \t\n\r")
_CATEGORIES = {
    C.CATEGORY_DIGIT: _DIGITS,
    C.CATEGORY_NOT_DIGIT: PROBE - _DIGITS,
    C.CATEGORY_WORD: _WORD,
    C.CATEGORY_NOT_WORD: PROBE - _WORD,
    C.CATEGORY_SPACE: _SPACE,
    C.CATEGORY_NOT_SPACE: PROBE - _SPACE,
    C.CATEGORY_LINEBREAK: frozenset("\n"),
    C.CATEGORY_NOT_LINEBREAK: PROBE - {"\n"},
}
_REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", C.MAX_REPEAT)}
_POSIX = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "xdigit": "0-9a-fA-F",
    "space": r"\s",
    "word": r"\w",
}
# Letters first: an example built from a class reads like a real path or host name.
_PICK = "abcdefghijklmnopqrstuvwxyz0123456789-_./ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LIMIT = 256  # examples per regex: enough to find a counterexample, cheap on 2,000 servers

Items = list[tuple[object, object]]


def to_python(pattern: str) -> str:
    """PCRE syntax nginx configs use that Python spells differently."""
    pattern = re.sub(r"\(\?<([A-Za-z_]\w*)>", r"(?P<\1>", pattern)
    pattern = re.sub(r"\(\?'([A-Za-z_]\w*)'", r"(?P<\1>", pattern)
    pattern = re.sub(r"\[:(\w+):\]", lambda m: _POSIX.get(m.group(1), m.group(0)), pattern)
    return pattern.replace(r"\z", r"\Z")


@lru_cache(maxsize=4096)
def compiled(pattern: str, icase: bool = False) -> re.Pattern[str] | None:
    """The regex as Python compiles it, or None when Python cannot (we then stay silent)."""
    try:
        return re.compile(to_python(pattern), re.I if icase else 0)
    except (re.error, RecursionError, OverflowError):
        return None


@lru_cache(maxsize=4096)
def parse(pattern: str, icase: bool = False) -> P.SubPattern | None:
    try:
        return P.parse(to_python(pattern), re.I if icase else 0)
    except (re.error, RecursionError, OverflowError):
        return None


def _icase(chars: frozenset[str], icase: bool) -> frozenset[str]:
    return chars | {c.swapcase() for c in chars} if icase else chars


def charset(op: object, av: object, icase: bool = False) -> frozenset[str] | None:
    """The characters one single-character node matches, or None for other nodes."""
    if op is C.LITERAL:
        return _icase(frozenset({chr(av)}) & PROBE, icase)  # type: ignore[arg-type]
    if op is C.NOT_LITERAL:
        return PROBE - _icase(frozenset({chr(av)}), icase)  # type: ignore[arg-type]
    if op is C.ANY:
        return PROBE - {"\n"}
    if op is C.IN:
        found: set[str] = set()
        negate = False
        for iop, iav in av:  # type: ignore[attr-defined]
            if iop is C.NEGATE:
                negate = True
            elif iop is C.LITERAL:
                found.add(chr(iav))
            elif iop is C.RANGE:
                found |= {c for c in PROBE if iav[0] <= ord(c) <= iav[1]}
            elif iop is C.CATEGORY:
                found |= _CATEGORIES.get(iav, PROBE)
        chars = _icase(frozenset(found) & PROBE, icase)
        return PROBE - chars if negate else chars
    return None


def _sub(op: object, av: object) -> Items | None:
    """The items inside a group-like node."""
    if op is C.SUBPATTERN:
        return av[3].data  # type: ignore[index,no-any-return]
    if op is getattr(C, "ATOMIC_GROUP", None):
        return av.data  # type: ignore[attr-defined,no-any-return]
    return None


def first(items: Items, icase: bool = False) -> tuple[frozenset[str], bool]:
    """(characters a match can start with, whether it can be empty)."""
    acc: set[str] = set()
    for op, av in items:
        chars, nullable = _first_one(op, av, icase)
        acc |= chars
        if not nullable:
            return frozenset(acc), False
    return frozenset(acc), True


def _first_one(op: object, av: object, icase: bool) -> tuple[frozenset[str], bool]:
    single = charset(op, av, icase)
    if single is not None:
        return single, False
    inner = _sub(op, av)
    if inner is not None:
        return first(inner, icase)
    if op is C.BRANCH:
        parts = [first(alt.data, icase) for alt in av[1]]  # type: ignore[index]
        return frozenset().union(*(p[0] for p in parts)), any(p[1] for p in parts)
    if op in _REPEATS:
        chars, nullable = first(av[2].data, icase)  # type: ignore[index]
        return chars, nullable or av[0] == 0  # type: ignore[index]
    if op is C.GROUPREF:
        return PROBE, True
    return frozenset(), True  # anchors and lookarounds consume nothing


def last(items: Items, icase: bool = False) -> tuple[frozenset[str], bool]:
    """(characters a match can end with, whether it can be empty)."""
    return first([_reversed(op, av) for op, av in reversed(items)], icase)


def _reversed(op: object, av: object) -> tuple[object, object]:
    if op is C.SUBPATTERN:
        sub = P.SubPattern(av[3].state, [_reversed(*i) for i in reversed(av[3].data)])  # type: ignore[index]
        return op, (av[0], av[1], av[2], sub)  # type: ignore[index]
    if op is C.BRANCH:
        alts = [P.SubPattern(a.state, [_reversed(*i) for i in reversed(a.data)]) for a in av[1]]  # type: ignore[index]
        return op, (None, alts)
    if op in _REPEATS:
        sub = P.SubPattern(av[2].state, [_reversed(*i) for i in reversed(av[2].data)])  # type: ignore[index]
        return op, (av[0], av[1], sub)  # type: ignore[index]
    return op, av


def chars(items: Items, icase: bool = False) -> frozenset[str]:
    """Every character a match can contain."""
    acc: set[str] = set()
    for op, av in items:
        single = charset(op, av, icase)
        if single is not None:
            acc |= single
        elif (inner := _sub(op, av)) is not None:
            acc |= chars(inner, icase)
        elif op is C.BRANCH:
            for alt in av[1]:  # type: ignore[index]
                acc |= chars(alt.data, icase)
        elif op in _REPEATS:
            acc |= chars(av[2].data, icase)  # type: ignore[index]
        elif op is C.GROUPREF:
            acc |= PROBE
    return frozenset(acc)


# ---------------------------------------------------------------- capture groups


@dataclass(frozen=True)
class Group:
    index: int
    chars: frozenset[str]  # what the capture can contain
    after_slash: bool  # always starts right after a '/' (or with one)
    starts_slash: bool  # always starts with '/'


@lru_cache(maxsize=4096)
def groups(pattern: str, icase: bool = False) -> dict[str, Group]:
    """Capture groups by number and by name ('1', 'path')."""
    tree = parse(pattern, icase)
    if tree is None:
        return {}
    found: dict[int, Group] = {}
    _walk_groups(tree.data, frozenset(), icase, found)
    out = {str(i): g for i, g in found.items()}
    for name, index in tree.state.groupdict.items():
        if index in found:
            out[name] = found[index]
    return out


def _walk_groups(items: Items, prev: frozenset[str], icase: bool, out: dict[int, Group]) -> None:
    for op, av in items:
        if op is C.SUBPATTERN and av[0] is not None:  # type: ignore[index]
            inner = av[3].data  # type: ignore[index]
            starts, nullable = first(inner, icase)
            own_slash = starts == {"/"} and not nullable
            out[av[0]] = Group(  # type: ignore[index]
                av[0],
                chars(inner, icase),
                prev == {"/"} or own_slash,
                own_slash,  # type: ignore[index]
            )
        inner_items = _sub(op, av)
        if inner_items is not None:
            _walk_groups(inner_items, prev, icase, out)
        elif op is C.BRANCH:
            for alt in av[1]:  # type: ignore[index]
                _walk_groups(alt.data, prev, icase, out)
        elif op in _REPEATS:
            body = av[2].data  # type: ignore[index]
            loop_prev = prev | last(body, icase)[0] if av[1] > 1 else prev  # type: ignore[index]
            _walk_groups(body, loop_prev, icase, out)
        ends, nullable = last([(op, av)], icase)
        prev = ends | prev if nullable else ends


# ---------------------------------------------------------------- examples


@lru_cache(maxsize=4096)
def examples(pattern: str, icase: bool = False, fills: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Strings built to match `pattern` (not guaranteed: callers re-check with search()).

    Each is the plain reading of the regex (letters for classes, '.' for '.', the shortest
    repeat) with at most one wildcard replaced by one of `fills`, when the wildcard's
    characters allow it: enough to ask "can this regex accept evil.test?"."""
    tree = parse(pattern, icase)
    if tree is None:
        return ()
    return tuple(dict.fromkeys(s for s, _ in islice(_gen(tree.data, icase, fills), LIMIT)))


def _gen(items: Items, icase: bool, fills: tuple[str, ...]) -> list[tuple[str, bool]]:
    out = [("", False)]
    for op, av in items:
        options = _gen_one(op, av, icase, fills)
        out = [
            (s + o, m or n) for s, m in out for o, n in options if not (m and n)
        ][:LIMIT]  # fmt: skip
    return out


def _gen_one(op: object, av: object, icase: bool, fills: tuple[str, ...]) -> list[tuple[str, bool]]:
    single = charset(op, av, icase)
    if single is not None:
        pick = "." if op is C.ANY else next((c for c in _PICK if c in single), None)
        plain = [(pick, False)] if pick else ([(min(single), False)] if single else [])
        return plain + [(f, True) for f in fills if len(f) == 1 and f in single and f != pick]
    inner = _sub(op, av)
    if inner is not None:
        return _gen(inner, icase, fills)
    if op is C.BRANCH:
        return [o for alt in av[1] for o in _gen(alt.data, icase, fills)]  # type: ignore[index]
    if op in _REPEATS:
        low, high, sub = av  # type: ignore[misc]
        body = _gen(sub.data, icase, fills)
        options = [("", False)] if low == 0 else []
        options += [(s * max(low, 1), m) for s, m in body if high >= 1]
        if len(sub.data) == 1 and (allowed := charset(*sub.data[0], icase)) is not None:
            options += [
                (f, True) for f in fills if low <= len(f) <= high and set(f) <= allowed
            ]  # fmt: skip
        return options
    return [("", False)]  # anchors, lookarounds, back-references


@lru_cache(maxsize=4096)
def shares_prefix(pattern: str, icase: bool, prefix: str) -> bool:
    """Whether some URI starting with `prefix` matches `pattern` (search semantics, as
    nginx's location regexes). Unreadable regexes count as matching."""
    rx = compiled(pattern, icase)
    if rx is None:
        return True
    tails = ["", "x", "x/", "x/y", "1", "1/", "index.html", "x.php", "x.js", "x.png", "x.css"]
    candidates = [prefix + t for t in tails]
    for ex in examples(pattern, icase):
        candidates += [prefix + ex[i:] for i in range(len(ex) + 1)]
        if ex.startswith(prefix):
            candidates.append(ex)
    return any(rx.search(c) for c in candidates)


# ---------------------------------------------------------------- ReDoS


def _unbounded(op: object, av: object) -> bool:
    return op in _REPEATS and (av[1] is C.MAXREPEAT or av[1] > 16)  # type: ignore[index,operator]


@lru_cache(maxsize=4096)
def redos(pattern: str, icase: bool = False) -> str | None:
    """Why a backtracking engine can take exponential (or heavy polynomial) time on this
    regex, or None. Looks for loops whose iterations can split the same input in several
    ways: a quantified group around another quantifier with nothing that separates them,
    alternatives that can start alike, and two overlapping quantifiers side by side."""
    tree = parse(pattern, icase)
    return _scan(tree.data, icase) if tree is not None else None


def _scan(items: Items, icase: bool) -> str | None:
    for op, av in items:
        if op in _REPEATS:
            body = av[2].data  # type: ignore[index]
            found = _ambiguous_loop(body, icase) if _unbounded(op, av) else None
            found = found or _scan(body, icase)
        elif op is C.BRANCH:
            found = next(
                (p for alt in av[1] if (p := _scan(alt.data, icase))),
                None,  # type: ignore[index]
            )
        elif op is C.SUBPATTERN:
            found = _scan(av[3].data, icase)  # type: ignore[index]
        else:
            found = None  # atomic groups cannot backtrack
        if found:
            return found
    for (op1, av1), (op2, av2) in zip(items, items[1:], strict=False):
        a, b = _edge(op1, av1, tail=True), _edge(op2, av2, tail=False)
        if a and b and chars(a, icase) & chars(b, icase):
            return "two overlapping quantifiers side by side"
    return None


def _edge(op: object, av: object, tail: bool) -> Items | None:
    """The body of the unbounded quantifier that this item ends (or starts) with."""
    if _unbounded(op, av):
        return av[2].data  # type: ignore[index,no-any-return]
    if op is C.SUBPATTERN and av[3].data:  # type: ignore[index]
        inner = av[3].data  # type: ignore[index]
        return _edge(*(inner[-1] if tail else inner[0]), tail=tail)
    return None


def _ambiguous_loop(body: Items, icase: bool) -> str | None:
    unwrapped = body
    while len(unwrapped) == 1 and unwrapped[0][0] is C.SUBPATTERN:
        unwrapped = unwrapped[0][1][3].data  # type: ignore[index]
    if len(unwrapped) == 1 and unwrapped[0][0] is C.BRANCH:
        starts = [first(alt.data, icase)[0] for alt in unwrapped[0][1][1]]  # type: ignore[index]
        for i, a in enumerate(starts):
            if any(a & b for b in starts[i + 1 :]):
                return "a repeated group whose alternatives can match the same text"
    return _inner_quantifier(body, first(body, icase)[0], icase)


def _inner_quantifier(items: Items, follow_end: frozenset[str], icase: bool) -> str | None:
    for k, (op, av) in enumerate(items):
        rest, nullable = first(items[k + 1 :], icase)
        follow = rest | follow_end if nullable else rest
        if _unbounded(op, av):
            if first(av[2].data, icase)[0] & follow:  # type: ignore[index]
                return "a quantifier inside a repeated group, with nothing that separates them"
        elif op is C.SUBPATTERN:
            found = _inner_quantifier(av[3].data, follow, icase)  # type: ignore[index]
            if found:
                return found
        elif op is C.BRANCH:
            for alt in av[1]:  # type: ignore[index]
                found = _inner_quantifier(alt.data, follow, icase)
                if found:
                    return found
    return None
