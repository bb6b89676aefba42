"""classify_referrer and source_category: every medium, search terms, internal hosts, spam and
hostile input, on representative real referrers."""

from __future__ import annotations

import threading
import time
import typing as t
from importlib import resources

import pytest
import yaml
from flask_utm_tracker.classify import Referrer, classify_referrer, source_category
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("url", "medium", "source", "term"),
    [
        # Search engines: Matomo's list, "{}" as any TLD, the term from the engine's parameters.
        ("https://www.google.com/", "organic", "google", None),
        ("https://www.google.co.uk/search?q=flask+utm", "organic", "google", "flask utm"),
        ("https://google.de/search?hl=de&q=caf%C3%A9", "organic", "google", "café"),
        ("https://www.bing.com/search?q=utm+tracker", "organic", "bing", "utm tracker"),
        ("https://www.bing.com/images/search?q=cats", "organic", "bing images", "cats"),
        ("https://duckduckgo.com/", "organic", "duckduckgo", None),
        ("https://html.duckduckgo.com/html/?q=flask", "organic", "duckduckgo", "flask"),
        ("https://yandex.ru/search/?text=flask", "organic", "yandex", "flask"),
        ("https://es.search.yahoo.com/search?p=tarot", "organic", "yahoo", "tarot"),
        ("https://www.ecosia.org/search?q=trees", "organic", "ecosia", "trees"),
        ("https://search.brave.com/search?q=brave", "organic", "brave", "brave"),
        # A redirect's destination is no search term.
        ("https://www.google.com/url?q=https://example.com/&sa=U", "organic", "google", None),
        # A regex in the list finds the term in the path.
        ("https://1.cz/s/hledam/", "organic", "1.cz", "hledam"),
        # A search engine names its own hosts only: its other subdomains are plain websites,
        # unless the URL carries a search term.
        ("https://docs.google.com/document/d/1", "referral", "docs.google.com", None),
        ("https://sites.google.com/view/x", "referral", "sites.google.com", None),
        ("https://news.google.com/", "organic", "google news", None),
        # Socials, subdomains included; Facebook is a search engine only with ?q=.
        ("https://www.facebook.com/", "social", "facebook", None),
        ("https://l.facebook.com/l.php?u=https%3A%2F%2Fexample.com", "social", "facebook", None),
        ("https://m.facebook.com/", "social", "facebook", None),
        ("https://www.facebook.com/search/?q=flask", "organic", "facebook", "flask"),
        ("https://t.co/abc", "social", "twitter", None),
        ("https://x.com/someone", "social", "twitter", None),
        ("https://www.linkedin.com/feed/", "social", "linkedin", None),
        ("https://lnkd.in/abc", "social", "linkedin", None),
        ("https://old.reddit.com/r/flask", "social", "reddit", None),
        ("https://someone.tumblr.com/", "social", "tumblr", None),
        ("https://linktr.ee/someone", "social", "linktree", None),
        ("https://t.me/channel/12", "social", "telegram", None),
        # AI assistants, and a path that makes x.com an assistant.
        ("https://chatgpt.com/", "ai", "chatgpt", None),
        ("https://chat.openai.com/c/1", "ai", "chatgpt", None),
        ("https://claude.ai/chat/1", "ai", "claude", None),
        ("https://www.perplexity.ai/search/abc", "ai", "perplexity", None),
        ("https://gemini.google.com/app", "ai", "gemini", None),
        ("https://x.com/i/grok?conversation=1", "ai", "grok", None),
        ("https://www.bing.com/chat?q=hi", "ai", "copilot", None),
        ("https://poe.com/", "ai", "poe", None),
        # Webmail: our list, more specific than a search engine's host.
        ("https://mail.google.com/mail/u/0/", "email", "gmail", None),
        ("https://outlook.live.com/mail/0/inbox", "email", "outlook", None),
        ("https://co106w.col106.mail.live.com/default.aspx", "email", "outlook", None),
        ("https://mail.yahoo.com/d/folders/1", "email", "yahoo mail", None),
        ("https://mail.proton.me/u/0/inbox", "email", "proton mail", None),
        ("https://e.mail.ru/inbox/", "email", "mail.ru", None),
        ("https://deref-gmx.net/mail/client/x/dereferrer/", "email", "gmx", None),
        ("https://lightmailer.gmx.co.uk/", "email", "gmx", None),
        ("https://webmail1m.orange.fr/webmail/fr_FR/read.html", "email", "orange", None),
        ("https://email.ionos.co.uk", "email", "ionos", None),
        ("https://email.seznam.cz/", "email", "seznam email", None),
        ("https://www.icloud.com/mail/", "email", "icloud mail", None),
        # go.mail.ru is the search engine, not the mail.
        ("https://go.mail.ru/search?q=test", "organic", "mailru", "test"),
        # suche.web.de is search, web.de is mail.
        ("https://3c.web.de/mail/client", "email", "web.de", None),
        # Ad-serving hosts.
        ("https://tpc.googlesyndication.com/", "paid", "google", None),
        ("https://ad.doubleclick.net/ddm/clk/1", "paid", "google", None),
        ("https://www.googleadservices.com/pagead/aclk?sa=L", "paid", "google", None),
        ("https://adservice.google.co.uk/", "paid", "google", None),
        ("https://www.google.com/aclk?sa=l&q=shoes", "paid", "google", None),
        ("https://www.bing.com/aclk?ld=1", "paid", "bing", None),
        ("https://trc.taboola.com/", "paid", "taboola", None),
        # Any other site: its host without "www.".
        ("https://news.ycombinator.com/item?id=1", "social", "hacker news", None),
        ("https://www.example.org/blog/post", "referral", "example.org", None),
        ("http://blog.example.org:8080/x", "referral", "blog.example.org", None),
        ("https://WWW.Example.ORG./", "referral", "example.org", None),
        ("https://www.com/", "referral", "www.com", None),
        ("https://127.0.0.1:5000/", "referral", "127.0.0.1", None),
        ("https://google.evil.com/search?q=x", "referral", "google.evil.com", None),
        # Referrer spam (Matomo's list), subdomains included.
        ("http://0n-line.tv/", "spam", "0n-line.tv", None),
        ("https://www.0n-line.tv/page", "spam", "0n-line.tv", None),
    ],
)
def test_classify(url: str, medium: str, source: str, term: str | None) -> None:
    assert classify_referrer(url) == Referrer(medium, source, term)


@pytest.mark.parametrize(
    ("url", "medium"),
    [
        ("https://shop.example.com/", "internal"),
        ("https://SHOP.example.com:443/cart", "internal"),
        ("https://example.com/", "referral"),  # a parent domain is another site
        ("https://blog.shop.example.com/", "internal"),  # sub-domains are the site, as in JS
        ("https://checkout.stripe.com/pay/cs_1", "internal"),
        ("https://www.paypal.com/checkoutnow", "internal"),
        ("https://paypal.com/", "internal"),
        ("https://notpaypal.com/", "referral"),
        ("https://stripe.com/", "referral"),
        # Excluding wins over every list.
        ("https://accounts.google.com/", "internal"),
    ],
)
def test_internal(url: str, medium: str) -> None:
    site = ["shop.example.com"]
    excluded = ["checkout.stripe.com", "paypal.com", "accounts.google.com"]
    result = classify_referrer(url, site_hosts=site, excluded=excluded)
    assert result is not None
    assert result.medium == medium


def test_internal_hosts_normalised() -> None:
    result = classify_referrer("https://www.example.com/", site_hosts=["WWW.Example.com:5000"])
    assert result == Referrer("internal", "example.com")
    result = classify_referrer("https://a.pay.example/", excluded=iter(["https://Pay.Example/"]))
    assert result is not None and result.medium == "internal"
    # One host given as a string, and junk in the lists, are taken in stride.
    result = classify_referrer("https://example.com/", site_hosts="example.com")
    assert result is not None and result.medium == "internal"
    junk: list[t.Any] = [None, 3, ["x"], "", "example.com"]
    result = classify_referrer("https://example.com/", site_hosts=junk, excluded=junk)
    assert result is not None and result.medium == "internal"


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "   ",
        "example.com",
        "/relative/path",
        "ftp://example.com/",
        "android-app://com.google.android.gm/",
        "javascript:alert(1)",
        "data:text/html,hi",
        "https://",
        "https:///path",
        "http://[::1",
        "https://exa mple.com/",
        "https://exa\x00mple.com/",
        "https://\ud800.com/",
        "https://" + "a" * 300 + ".com/",
        "https://..../",
        "https://user:pass@/",
    ],
)
def test_not_a_referrer(url: str | None) -> None:
    assert classify_referrer(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://www.google.com/search?q=\x00\ud800" + "x" * 10_000,
        "https://www.google.com/search?q=%ED%A0%80%00%FF%" + "%" * 5000,
        "https://1.cz/s/%ZZ%" + "/" * 5000,
        "https://www.google.com/" + "é" * 10_000,
        "https://www.example.com/?" + "&".join(["a=b"] * 5000),
        "http://[::1]:80/",
        "http://[v1.x]/",
        "https://example.com:99999/",
        "https://example.com:port/",
        "https://münchen.de/",
        "https://xn--mnchen-3ya.de/",
        "\ud800\udfff\x00",
        "https://\u202egoogle.com/",
        "HTTPS://WWW.GOOGLE.COM/SEARCH?Q=X",
        "https://" + "a." * 200 + "com",
    ],
)
def test_hostile_never_raises(url: str) -> None:
    result = classify_referrer(url)
    if result is not None:
        assert result.medium in {"organic", "social", "email", "ai", "paid", "referral", "spam"}
        for text in (result.source, result.term or ""):
            text.encode("utf-8")  # storable: no lone surrogates
            assert "\x00" not in text
            assert len(text) <= 255


def test_term_is_cleaned() -> None:
    result = classify_referrer("https://www.google.com/search?q=%00a%20%20b%0A" + "c" * 400)
    assert result is not None
    assert result.term is not None
    assert result.term.startswith("a b c")
    assert len(result.term) == 255


def test_term_from_the_first_listed_parameter() -> None:
    # Google's params are ["q"]: other parameters carry no term.
    assert classify_referrer("https://www.google.com/search?oq=x") == Referrer("organic", "google")
    result = classify_referrer("https://www.google.com/search?q=&q=second")
    assert result == Referrer("organic", "google", "second")


def test_cold_threads_read_the_lists_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold worker's request threads that all classify at once wait for one reading of the
    lists rather than each reading them (sixteen times the work at start-up)."""
    from flask_utm_tracker import classify

    read: list[str] = []
    real = classify._yaml

    def counting(name: str) -> t.Any:
        read.append(name)
        time.sleep(0.01)  # a slow disk: every thread arrives while the first one reads
        return real(name)

    monkeypatch.setattr(classify, "_yaml", counting)
    classify._read_index.cache_clear()
    classify._read_categories.cache_clear()
    start = threading.Barrier(16)
    results: list[Referrer | None] = []

    def classify_one() -> None:
        start.wait()
        results.append(classify_referrer("https://mail.google.com/"))

    try:
        threads = [threading.Thread(target=classify_one) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 16
        assert set(results) == {classify_referrer("https://mail.google.com/")}
        assert read and len(read) == len(set(read)), read  # each file read once
    finally:
        classify._read_index.cache_clear()
        classify._read_categories.cache_clear()


@pytest.mark.parametrize(
    ("source", "category"),
    [
        ("google", "search"),
        ("Google", "search"),
        ("bing", "search"),
        ("yahoo", "search"),
        ("duckduckgo", "search"),
        ("google.co.uk", "search"),
        ("www.google.com", "search"),
        ("facebook", "social"),
        ("m.facebook.com", "social"),
        ("fb", "social"),
        ("ig", "social"),
        ("instagram", "social"),
        ("linkedin", "social"),
        ("t.co", "social"),
        ("tiktok", "social"),
        ("youtube", "video"),
        ("m.youtube.com", "video"),
        ("yt", "video"),
        ("vimeo", "video"),
        ("twitch.tv", "video"),
        ("amazon", "shopping"),
        ("amazon.co.uk", "shopping"),
        ("google shopping", "shopping"),
        ("igshopping", "shopping"),
        ("ebay.de", "shopping"),
        ("chatgpt", "ai"),
        ("chatgpt.com", "ai"),
        ("perplexity", "ai"),
        ("newsletter", None),
        ("docs.google.com", None),
        ("example.com", None),
        ("", None),
        (None, None),
        ("\ud800.\x00", None),
    ],
)
def test_source_category(source: str | None, category: str | None) -> None:
    assert source_category(source) == category


_HOSTY = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_{}*[]:@%é\u0000\ud800 ", max_size=40
)


@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(
            "{}://{}{}".format,
            st.sampled_from(["http", "https", "HTTP", "ftp", "", "https:"]),
            _HOSTY,
            st.text(max_size=200),
        ),
    )
)
@settings(max_examples=400, deadline=None)
def test_never_raises_on_any_string(url: str) -> None:
    result = classify_referrer(url, site_hosts=("example.com",), excluded=("paypal.com",))
    assert result is None or isinstance(result, Referrer)
    if result is not None:
        result.source.encode("utf-8")
        (result.term or "").encode("utf-8")


@given(st.text(max_size=100))
@settings(max_examples=200, deadline=None)
def test_source_category_never_raises(source: str) -> None:
    assert source_category(source) in {None, "search", "social", "video", "shopping", "ai"}


def _hosts(name: str) -> list[str]:
    text = resources.files("flask_utm_tracker").joinpath(f"data/{name}").read_text("utf-8")
    data = yaml.safe_load(text)
    if name.endswith("SearchEngines.yml"):
        return [host for specs in data.values() for spec in specs for host in spec["urls"]]
    return [host for hosts in data.values() for host in hosts or ()]


def _example_url(pattern: str) -> str:
    """A URL the pattern covers: ``{}`` becomes a TLD or a subdomain, ``*`` some letters."""
    host, _, path = pattern.partition("/")
    labels = host.split(".")
    labels = [label.replace("*", "x") for label in labels[:-1]] + [labels[-1]]
    labels = ["sub" if label == "{}" else label for label in labels[:-1]] + [labels[-1]]
    host = ".".join(labels).replace("{}", "de")
    return f"https://{host}/{path}"


@pytest.mark.parametrize(
    ("name", "medium"),
    [
        ("webmail.yml", "email"),
        ("ad-hosts.yml", "paid"),
        ("extra-AIAssistants.yml", "ai"),
        ("extra-Socials.yml", "social"),
        ("extra-SearchEngines.yml", "organic"),
        ("matomo-AIAssistants.yml", "ai"),
    ],
)
def test_every_listed_host_gets_its_medium(name: str, medium: str) -> None:
    """No host of a list is shadowed by another list (a misspelt or misplaced entry)."""
    wrong = {}
    for pattern in _hosts(name):
        result = classify_referrer(_example_url(pattern))
        if result is None or result.medium != medium:
            wrong[pattern] = result
    assert not wrong


def test_matomo_lists_load_whole() -> None:
    """Each host of the vendored social and search lists is recognised (app ids aside)."""
    for name, medium in (("matomo-Socials.yml", "social"), ("matomo-SearchEngines.yml", "")):
        for pattern in _hosts(name):
            if pattern.startswith(("com.", "org.", "android-app")):
                continue  # Android app ids, for android-app:// referrers (not http)
            result = classify_referrer(_example_url(pattern))
            assert result is not None
            assert result.medium != "referral", pattern
            assert not medium or result.medium == medium, pattern
