"""after.rules.redact: secrets never reach a record or a log."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from after.config import mask_url
from after.rules.redact import (
    MASK,
    SECRET_NAME,
    is_secret_name,
    redact,
    redact_headers,
    redact_text,
    redact_url,
)


@pytest.mark.parametrize("name", [
    "password", "passwd", "pwd", "pass", "token", "access_token", "accessToken", "api_key",
    "apiKey", "API-KEY", "key", "secret", "client_secret", "signature", "sig", "auth",
    "Authorization", "credentials", "session_id", "Cookie", "refresh-token",
])
def test_secret_names(name):
    assert is_secret_name(name) is True


@pytest.mark.parametrize("name", [
    "page", "user", "username", "author", "authors", "monkey", "keyboard", "name", "url",
    "Content-Type", "status", "signal", "passenger", "", 42, None,
])
def test_ordinary_names(name):
    assert is_secret_name(name) is False


def test_secret_name_is_one_compiled_regex():
    assert SECRET_NAME.search("x_api_key") is not None
    assert SECRET_NAME.search("monkey") is None


def test_redact_url_masks_password_and_keeps_user():
    assert redact_url("https://bob:hunter2@db.example.com:5984/tasks") == (
        "https://bob:***@db.example.com:5984/tasks"
    )


def test_redact_url_without_password_is_unchanged():
    url = "http://bob@example.com/a/b?page=2&sort=-date#top"
    assert redact_url(url) == url


@pytest.mark.parametrize(("url", "expected"), [
    ("https://x.io/cb?token=abc&page=2", "https://x.io/cb?token=***&page=2"),
    ("https://x.io/?api_key=k1&API_KEY=k2&q=a%20b", "https://x.io/?api_key=***&API_KEY=***&q=a%20b"),
    ("https://x.io/?X-Amz-Signature=deadbeef&X-Amz-Date=2026",
     "https://x.io/?X-Amz-Signature=***&X-Amz-Date=2026"),
    ("https://x.io/cb#access_token=t0k&state=s", "https://x.io/cb#access_token=***&state=s"),
    ("https://u:p@x.io/?password=p&sig=s", "https://u:***@x.io/?password=***&sig=***"),
    ("https://x.io/?author=ada&key=", "https://x.io/?author=ada&key=***"),
])
def test_redact_url_masks_secret_query_parameters(url, expected):
    assert redact_url(url) == expected


def test_redact_url_never_raises_on_unparseable_url():
    assert redact_url("http://admin:s3cret@[::1/broken") == "http://admin:***@[::1/broken"
    assert redact_url(None) is None


def test_redact_text_masks_every_url_in_a_message():
    message = "ConnectError calling http://admin:s3cret@127.0.0.1:5984/x?token=t and https://a.b/"
    assert redact_text(message) == (
        "ConnectError calling http://admin:***@127.0.0.1:5984/x?token=*** and https://a.b/"
    )
    assert redact_text("no url here: password=1") == "no url here: password=1"


def test_redact_headers():
    headers = {
        "Authorization": "Basic YWRtaW46cGFzcw==",
        "proxy-authorization": "Bearer x",
        "Cookie": "sid=1",
        "Set-Cookie": "sid=2; HttpOnly",
        "X-Auth-Token": "t",
        "X-Api-Key": "k",
        "X-APIKEY": "k",
        "X-Session-Id": "s",
        "X-Client-Secret": "s",
        "X-Password": "p",
        "Content-Type": "application/json",
        "Location": "https://u:p@x.io/next",
    }
    assert redact_headers(headers) == {
        "Authorization": MASK,
        "proxy-authorization": MASK,
        "Cookie": MASK,
        "Set-Cookie": MASK,
        "X-Auth-Token": MASK,
        "X-Api-Key": MASK,
        "X-APIKEY": MASK,
        "X-Session-Id": MASK,
        "X-Client-Secret": MASK,
        "X-Password": MASK,
        "Content-Type": "application/json",
        "Location": "https://u:***@x.io/next",
    }


def test_redact_headers_accepts_pairs_and_none():
    assert redact_headers([("authorization", "x"), ("accept", "*/*")]) == {
        "authorization": MASK, "accept": "*/*",
    }
    assert redact_headers(None) == {}


def test_redact_nested_structures():
    original = {
        "url": "https://admin:pw@h/x?token=t",
        "headers": {"user": "ada", "pass": "pw", "Accept": "text/plain"},
        "items": [{"api_key": 123}, "http://u:p@h/", 7, None, True],
        "credentials": {"user": "ada", "password": "pw"},
        "token": None,
        "count": 3,
    }
    assert redact(original) == {
        "url": "https://admin:***@h/x?token=***",
        "headers": {"user": "ada", "pass": MASK, "Accept": "text/plain"},
        "items": [{"api_key": MASK}, "http://u:***@h/", 7, None, True],
        "credentials": MASK,
        "token": None,
        "count": 3,
    }
    # the input is left alone
    assert original["headers"]["pass"] == "pw"


def test_redact_leaves_non_containers_alone():
    assert redact(3.5) == 3.5
    assert redact("plain") == "plain"
    assert redact(("a", {"secret": "x"})) == ["a", {"secret": MASK}]


def test_redact_url_and_text_mask_every_url_of_a_node_list():
    nodes = "http://admin:s1@n1:5984,http://admin:s2@n2:5984/x?token=t"
    assert redact_url(nodes) == "http://admin:***@n1:5984,http://admin:***@n2:5984/x?token=***"
    assert redact_text(f"cannot reach {nodes} (ConnectError)") == (
        "cannot reach http://admin:***@n1:5984,http://admin:***@n2:5984/x?token=*** "
        "(ConnectError)")


MISTYPED = [
    "{u}:{p}@127.0.0.1:5984",
    "http//{u}:{p}@127.0.0.1:5984",
    "http:/{u}:{p}@127.0.0.1:5984",
    "http:{u}:{p}@127.0.0.1:5984",
    "htp://{u}:{p}@127.0.0.1:5984/tasks",
    "http://{u}:{p}@[::1/broken",
    "http://{u}:{p}@127.0.0.1:notaport",
    " {u}:{p}@host",
    "http://{u}:{p}@host1:5984,http://{u}:{p}@host2:5984",
]


@given(
    template=st.sampled_from(MISTYPED),
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    password=st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc"),
                                   blacklist_characters="@"), min_size=6, max_size=20),
)
def test_a_mistyped_url_never_shows_its_password(template, user, password):
    password = "Zq" + password  # never a piece of the template's own text
    url = template.format(u=user, p=password)
    for shown in (redact_url(url), redact_text(f"bad URL {url!r} given"), mask_url(url)):
        assert password not in shown, shown
