"""Classify a referrer URL as a marketing touch: its medium, source and search term.

The host lists are data, not code: Matomo's search engines, social networks, AI assistants and
referrer-spam list are vendored in ``data/`` (CC0, see ``data/README.md``); webmail and ad-serving
hosts are lists this project keeps in the same format (``data/webmail.yml``, ``data/ad-hosts.yml``).
They are read once, at the first call, into dictionaries keyed by host, so classifying a referrer
is a handful of dictionary look-ups: one per label of its host.

Matching rules, shared by every list:

- a listed host also covers its subdomains (``tumblr.com`` covers ``psychicbazaar.tumblr.com``), and
  the most specific listed host wins (``mail.google.com`` is webmail although ``google.{}`` is a
  search engine);
- ``{}`` stands for any top-level domain, one label (``google.de``) or a country's second-level
  domain (``google.co.uk``); a leading ``{}.`` means any subdomain;
- ``*`` inside a host's first label matches any characters (``webmail*.orange.fr``);
- ``host/path`` matches only under that path (``x.com/i/grok``), and wins over the bare host;
- when two lists name the same host, the order is paid, AI, email, social, search.
"""

from __future__ import annotations

import functools
import re
import threading
import typing as t
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import yaml

#: Mediums :func:`classify_referrer` gives, most specific list first (the order that breaks a tie
#: when two lists name the same host).
MEDIUMS = ("paid", "ai", "email", "social", "organic", "referral", "internal", "spam")

#: Longest search term kept, as the collector truncates every value.
_MAX_TERM = 255
#: Longest host name (RFC 1035).
_MAX_HOST = 253

#: Second-level labels under which a country's registry sells names (``co.uk``, ``com.au``), so
#: that ``{}`` covers ``google.co.uk`` as it covers ``google.de``.
_SECOND_LEVEL = frozenset(
    {"co", "com", "net", "org", "edu", "gov", "ac", "or", "ne", "go", "gob", "gv", "mil", "nic"}
)
#: First labels that name the same site as the host without them: www, m, and a country
#: (``uk.search-results.com``), as Matomo's own matching drops them.
_ALIASES = re.compile(r"(?:www\d*|w\d+|m|mobile|[a-z]{2})")
_VALID_HOST = re.compile(r"[\w-]+(?:\.[\w-]+)*|[0-9a-f:.]+")


@dataclass(frozen=True)
class Referrer:
    """What a referrer URL says about the visit it brought.

    :param medium: ``"organic"``, ``"social"``, ``"email"``, ``"ai"``, ``"paid"``, ``"referral"``,
        ``"internal"`` or ``"spam"``.
    :param source: lower-case name as analytics tools show it (``"google"``, ``"facebook"``,
        ``"chatgpt"``), else the referring host without ``www.``.
    :param term: the search term, when the referrer URL still carries it.
    """

    medium: str
    source: str
    term: str | None = None


@dataclass(frozen=True)
class _Entry:
    """One site of a list: what it makes of a referrer and where its search term is."""

    medium: str
    source: str
    params: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()

    def term(self, path: str, query: str) -> str | None:
        """Return the search term carried by ``path`` and ``query``, if any."""
        if query and self.params:
            values: dict[str, str] = {}
            for name, value in parse_qsl(query):
                if value.strip():
                    values.setdefault(name, value)
            for name in self.params:
                term = _search_term(values.get(name, ""))
                if term is not None:
                    return term
        target = f"{path}?{query}" if query else path
        for pattern in self.patterns:
            match = pattern.search(target)
            if match:
                term = _search_term(unquote_plus(match.group(1) or ""))
                if term is not None:
                    return term
        return None


def _search_term(value: str) -> str | None:
    """``value`` cleaned, unless empty or a URL (``google.com/url?q=https://...`` is a redirect)."""
    if value.lstrip()[:8].lower().startswith(("http://", "https://")):
        return None
    return _clean(value)


class _Slot(t.NamedTuple):
    """One pattern stored under its host: the path it needs and whether it covers subdomains."""

    path: str
    entry: _Entry
    subdomains: bool


class _Match(t.NamedTuple):
    """A pattern that covers a host: ``level`` labels of the host were dropped to find it;
    ``loose`` when the host is a subdomain of the listed one and the pattern does not say it
    covers subdomains (a search engine's ``docs.google.com``).
    """

    level: int
    entry: _Entry
    loose: bool


class _HostIndex:
    """Host patterns in the lists' syntax, looked up by dictionary, most specific host first."""

    def __init__(self) -> None:
        self.exact: dict[str, list[_Slot]] = {}
        self.any_tld: dict[str, list[_Slot]] = {}
        self.glob: dict[str, list[tuple[re.Pattern[str], _Slot]]] = {}
        #: The mediums of each source name, in the order of the lists that name it.
        self.names: dict[str, list[str]] = {}

    def add(self, pattern: str, entry: _Entry, subdomains: bool = True) -> None:
        """Add one host pattern (``google.{}``, ``x.com/i/grok``, ``webmail*.orange.fr``).

        :param subdomains: whether the pattern covers the subdomains of its host (a leading
            ``{}.`` always does).
        """
        mediums = self.names.setdefault(entry.source, [])
        if entry.medium not in mediums:
            mediums.append(entry.medium)
        host, _, path = pattern.strip().lower().partition("/")
        labels = host.split(".")
        if "{}" in labels[:-1]:  # "{}.bing.com", "images.{}.ask.com": any subdomain
            last = max(i for i, label in enumerate(labels[:-1]) if label == "{}")
            labels, subdomains = labels[last + 1 :], True
        if not labels or not all(labels):
            return
        slot = _Slot(f"/{path}" if path else "", entry, subdomains)
        if "*" in labels[0]:
            regex = re.compile(".*".join(map(re.escape, labels[0].split("*"))))
            self.glob.setdefault(".".join(labels[1:]), []).append((regex, slot))
        elif labels[-1] == "{}":
            self._put(self.any_tld, ".".join(labels[:-1]), slot)
        else:
            self._put(self.exact, ".".join(labels), slot)

    @staticmethod
    def _put(table: dict[str, list[_Slot]], key: str, slot: _Slot) -> None:
        slots = table.setdefault(key, [])
        for i, other in enumerate(slots):
            if other.path == slot.path:  # lists come by priority: the first wins
                if other.entry == slot.entry and slot.subdomains:
                    slots[i] = slot  # "bing.com", then "{}.bing.com"
                return
        slots.append(slot)

    def matches(self, labels: list[str], path: str) -> t.Iterator[_Match]:
        """Yield the patterns covering the host ``labels``, most specific host first (one per
        host: ``images.google.com``, then ``google.com``).
        """
        n = len(labels)
        tld_sizes = (
            (1, 2) if n > 2 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2 else (1,)
        )
        for i in range(n):
            # Dropping "www." or "m." (or a country label: "uk.") names the same site.
            subdomain = i > 1 or (i == 1 and not _ALIASES.fullmatch(labels[0]))
            host = ".".join(labels[i:])
            slots = [*self.exact.get(host, ())]
            for size in tld_sizes:
                if n - i > size:
                    slots += self.any_tld.get(".".join(labels[i:-size]), ())
            if i + 1 < n:
                rest = ".".join(labels[i + 1 :])
                slots += (
                    slot for regex, slot in self.glob.get(rest, ()) if regex.fullmatch(labels[i])
                )
            slot = self._slot(slots, path)
            if slot is not None:
                yield _Match(i, slot.entry, subdomain and not slot.subdomains)

    @staticmethod
    def _slot(slots: list[_Slot], path: str) -> _Slot | None:
        """The slot with the longest path that ``path`` starts with; the first on a tie."""
        best: _Slot | None = None
        for slot in slots:
            if path.startswith(slot.path) and (best is None or len(slot.path) > len(best.path)):
                best = slot
        return best


def _source_name(name: str) -> str:
    """``"Yahoo! Mail"`` -> ``"yahoo mail"``: lower case, no ``!``, single spaces."""
    return " ".join(name.replace("!", " ").split()).lower()


def _read(name: str) -> str:
    return resources.files("flask_utm_tracker").joinpath(f"data/{name}").read_text("utf-8")


def _yaml(name: str) -> t.Any:
    """Parse a data file, with libyaml when PyYAML has it (five times faster)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(_read(name), Loader=loader) or {}


def _add_hosts(index: _HostIndex, medium: str, *files: str) -> None:
    """Add the ``name: [host, ...]`` lists of ``files`` (Matomo's Socials.yml format)."""
    for file in files:
        _add_host_list(index, medium, _yaml(file))


def _add_host_list(index: _HostIndex, medium: str, data: t.Mapping[str, t.Any]) -> None:
    for name, hosts in data.items():
        entry = _Entry(medium, _source_name(str(name)))
        for host in hosts or ():
            index.add(str(host), entry)


def _search_params(
    spec: t.Mapping[str, t.Any],
) -> tuple[tuple[str, ...], tuple[re.Pattern[str], ...]]:
    names: list[str] = []
    patterns: list[re.Pattern[str]] = []
    for param in spec.get("params") or ():
        param = str(param)
        if len(param) > 2 and param.startswith("/") and param.endswith("/"):
            try:
                patterns.append(re.compile(param[1:-1]))
            except re.error:
                continue
        else:
            names.append(param)
    return tuple(names), tuple(patterns)


#: Held while the lists are read: the request threads of a cold worker that all classify at
#: once wait for one reading instead of each reading the lists again.
_LOADING = threading.RLock()


def _index() -> tuple[_HostIndex, frozenset[str]]:
    """Read the lists, once: the host index and the set of spam domains."""
    with _LOADING:
        return _read_index()


@functools.cache
def _read_index() -> tuple[_HostIndex, frozenset[str]]:
    index = _HostIndex()
    _add_hosts(index, "paid", "ad-hosts.yml")
    _add_hosts(index, "ai", "matomo-AIAssistants.yml", "extra-AIAssistants.yml")
    _add_hosts(index, "email", "webmail.yml")
    _add_hosts(index, "social", "matomo-Socials.yml", "extra-Socials.yml")
    for file in ("matomo-SearchEngines.yml", "extra-SearchEngines.yml"):
        engines: dict[str, t.Any] = _yaml(file)
        for name, specs in engines.items():
            for spec in specs or ():
                names, patterns = _search_params(spec)
                entry = _Entry("organic", _source_name(str(name)), names, patterns)
                for host in spec.get("urls") or ():
                    # Search engines list their hosts one by one: docs.google.com is no search.
                    index.add(str(host), entry, subdomains=False)
    spam = frozenset(
        line.strip().lower()
        for line in _read("matomo-referrer-spammers.txt").splitlines()
        if line.strip() and not line.startswith("#")
    )
    return index, spam


#: The GA4 source category of each referrer medium that has one.
_CATEGORY_OF_MEDIUM = {"organic": "search", "social": "social", "ai": "ai"}


def _categories() -> tuple[_HostIndex, dict[str, str]]:
    """The shopping and video hosts, and every category by lower-case name (first list wins)."""
    with _LOADING:
        return _read_categories()


@functools.cache
def _read_categories() -> tuple[_HostIndex, dict[str, str]]:
    data: dict[str, t.Any] = _yaml("source-categories.yml")
    index = _HostIndex()
    names: dict[str, str] = {}
    for category in ("shopping", "video"):
        for name, hosts in (data.get(category) or {}).items():
            names.setdefault(_source_name(str(name)), category)
            for host in hosts or ():
                index.add(str(host), _Entry(category, _source_name(str(name))))
    for category, aliases in (data.get("aliases") or {}).items():
        for alias in aliases or ():
            names.setdefault(_source_name(str(alias)), str(category))
    for source, mediums in _index()[0].names.items():
        for medium in mediums:
            if medium in _CATEGORY_OF_MEDIUM:
                names.setdefault(source, _CATEGORY_OF_MEDIUM[medium])
                break
    return index, names


def source_category(source: str | None) -> str | None:
    """Tell which kind of site a source is, as GA4's channel grouping needs it.

    :param source: a ``utm_source`` value or the source :func:`classify_referrer` gave: a name
        (``"google"``, ``"youtube"``, ``"fb"``) or a host (``"m.facebook.com"``, ``"amazon.de"``).
    :return: ``"shopping"``, ``"video"``, ``"ai"``, ``"social"``, ``"search"`` or None. Each
        source has one category: shopping and video sites win over the social and search lists.
    """
    if not source or not isinstance(source, str):
        return None
    name = " ".join(source.replace("!", " ").split()).lower()
    index, names = _categories()
    category = names.get(name)
    if category is not None or " " in name or "." not in name:
        return category
    try:
        split = _split(f"https://{name}/")
    except (ValueError, UnicodeError):
        return None
    if split is None:
        return None
    labels = split[0].split(".")
    for match in index.matches(labels, "/"):
        return match.entry.medium  # the most specific match
    referrer = classify_referrer(f"https://{name}/")
    return _CATEGORY_OF_MEDIUM.get(referrer.medium) if referrer else None


def _clean(value: str) -> str | None:
    """Make ``value`` safe to store: no control characters or lone surrogates, trimmed, bounded."""
    value = value.encode("utf-8", "replace").decode("utf-8", "replace")
    value = "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in value)
    value = " ".join(value.split())[:_MAX_TERM].strip()
    return value or None


def _normalize_host(value: object) -> str:
    """``"https://WWW.Example.com:443/"`` or ``"Example.com."`` -> ``"www.example.com"``."""
    if not isinstance(value, str):
        return ""
    value = value.strip().lower()
    if "//" in value:
        value = value.split("//", 1)[1]
    value = value.split("/", 1)[0].rsplit("@", 1)[-1]
    if not value.startswith("["):
        value = value.split(":", 1)[0]
    return value.strip("[]").rstrip(".")


def _strings(values: t.Iterable[str]) -> tuple[str, ...]:
    """The strings of ``values`` (a lone string counts as one), hashable for the cache."""
    if isinstance(values, str):
        return (values,)
    return tuple(value for value in values if isinstance(value, str))


@functools.lru_cache(maxsize=64)
def _host_sets(
    site_hosts: tuple[str, ...], excluded: tuple[str, ...]
) -> tuple[frozenset[str], ...]:
    return (
        frozenset(h for h in map(_normalize_host, site_hosts) if h),
        frozenset(h for h in map(_normalize_host, excluded) if h),
    )


def _split(url: str) -> tuple[str, str, str] | None:
    """Return the host, path and query of an http(s) URL, or None."""
    url = url.strip()
    if not url[:8].lower().startswith(("http://", "https://")):
        return None
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    host = host.rstrip(".")
    if not host or len(host) > _MAX_HOST or not _VALID_HOST.fullmatch(host):
        return None
    return host, parts.path, parts.query


def classify_referrer(
    url: str | None, site_hosts: t.Iterable[str] = (), excluded: t.Iterable[str] = ()
) -> Referrer | None:
    """Tell what kind of site ``url`` (a ``Referer`` header, ``document.referrer``) is.

    Never raises on any string, however broken.

    :param url: the referrer URL.
    :param site_hosts: the site's own hosts: a referrer from one of them or a sub-domain of one
        is ``"internal"`` (as the snippet's ``data-site-hosts``).
    :param excluded: hosts that are never a referrer, with their subdomains (payment gateways
        such as ``checkout.stripe.com``, ``paypal.com``): ``"internal"`` too.
    :return: None when ``url`` is empty, not http(s) or unparseable, else a :class:`Referrer`. The
        mediums ``"internal"`` and ``"spam"`` mean the visit is no touch.
    """
    if not url or not isinstance(url, str):
        return None
    sites, skip = _strings(site_hosts), _strings(excluded)
    if len(url) <= _URL_CACHED:
        return _classify_cached(url, sites, skip)
    return _classify(url, sites, skip)


#: Referrer URLs up to this length have their classification cached.
_URL_CACHED = 512


@functools.lru_cache(maxsize=4096)
def _classify_cached(
    url: str, site_hosts: tuple[str, ...], excluded: tuple[str, ...]
) -> Referrer | None:
    """:func:`_classify`, cached: real traffic repeats a few thousand referrers (most search
    engines and social sites send their bare home page), and a :class:`Referrer` is immutable.
    """
    return _classify(url, site_hosts, excluded)


def _classify(url: str, site_hosts: tuple[str, ...], excluded: tuple[str, ...]) -> Referrer | None:
    try:
        split = _split(url)
    except (ValueError, UnicodeError):
        return None
    if split is None:
        return None
    host, path, query = split
    bare = host[4:] if host.startswith("www.") and host.count(".") > 1 else host
    labels = host.split(".")
    suffixes = {".".join(labels[i:]) for i in range(len(labels))}

    own, skipped = _host_sets(site_hosts, excluded)
    if not suffixes.isdisjoint(own) or not suffixes.isdisjoint(skipped):
        return Referrer("internal", bare)

    index, spam = _index()
    if not suffixes.isdisjoint(spam):
        return Referrer("spam", bare)

    # The most specific match wins, except a search engine's with no search term in the URL: it
    # names no subdomain of its hosts (docs.google.com is a referral), and gives way to another
    # list's match of the same site (www.facebook.com is Facebook's search only with ?q=, else
    # the social network facebook.com; suche.web.de stays a search, although web.de is mail).
    fallback: Referrer | None = None
    fallback_level = 0
    for level, entry, loose in index.matches(labels, path or "/"):
        if fallback is not None and not all(
            _ALIASES.fullmatch(label) for label in labels[fallback_level:level]
        ):
            return fallback
        if entry.medium != "organic":
            return Referrer(entry.medium, entry.source)
        term = _term(entry, path, query)
        if term is not None:
            return Referrer(entry.medium, entry.source, term)
        if not loose and fallback is None:
            fallback, fallback_level = Referrer(entry.medium, entry.source), level
    return fallback or Referrer("referral", bare)


def _term(entry: _Entry, path: str, query: str) -> str | None:
    try:
        return entry.term(path, query)
    except (ValueError, UnicodeError):
        return None


def load() -> None:
    """Read the referrer lists now (about 0.1 s), not on the first request that needs them:
    :meth:`~flask_utm_tracker.UTMTracker.init_app` calls it."""
    _index()
    _categories()
