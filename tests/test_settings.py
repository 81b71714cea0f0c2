"""Settings that cannot mean what was written are one-line errors, before anything starts
(from an audit of scimd as an operator runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scimd.scim.schema import USER_PROPERTIES_SCHEMA
from scimd.settings import SettingsError, load


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("max_results", "-5", "too small"),  # a negative LIMIT: no paging at all on SQLite
        ("max_results", "0", "too small"),  # every list empty: Entra created existing users
        ("default_count", "-1", "too small"),
        ("max_payload", "0", "too small"),
        ("max_payload", "100", "at least 1024"),
        ("max_bulk_operations", "-1", "too small"),
        ("auth_failures_per_minute", "0", "too small"),
        ("database_connections", "0", "too small"),
        ("default_count", "5000", "more than max_results"),
        ("properties_urn", "", "not a schema URN"),
        ("properties_urn", "bizagi", "not a schema URN"),
        ("properties_urn", "urn:x::y", "not a schema URN"),
        ("properties_urn", "urn:x:y:", "not a schema URN"),
        ("properties_urn", "urn:x: y", "not a schema URN"),
        # Filters, paths and attribute lists could not name its properties.
        ("properties_urn", 'urn:x:"y"', "end an attribute path"),
        ("properties_urn", "urn:x:y[1]", "end an attribute path"),
        ("properties_urn", "urn:x:a,b", "end an attribute path"),
        (
            "properties_urn",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "SCIM defines",
        ),
        ("properties_urn", "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER", "SCIM defines"),
        ("forwarded_allow_ips", "localhost", "not an IP address"),
        ("forwarded_allow_ips", "127.0.0.1/8", "has host bits set"),
        ("forwarded_allow_ips", "127.0.0.1 ::1", "not an IP address"),
        ("forwarded_allow_ips", "127.0.0.1,*", "stands alone"),
        ("session_secret", "short", "at least 32"),
        ("access_log", "", "not true or false"),  # ${UNSET} in a compose file: no access log
        # Taken as they were, they made broken Location headers.
        ("public_url", "https://idp.example.com\\admin", "not a base URL"),
        ("public_url", "https://idp example.com", "not a base URL"),
        ("public_url", "https://idp.example.com:", "not a base URL"),
        ("public_url", "https://bücher.example", "in its xn-- form"),
        ("port", "70000", "not a TCP port"),  # was wrapped or refused by the OS after the banner
        ("port", "-1", "not a TCP port"),
        ("keep_alive_timeout", "0", "not a number of seconds"),  # closed every idle connection
        ("database_timeout", "-1", "is negative"),  # 0 already means wait forever
        ("shutdown_timeout", "-1", "is negative"),
        ("log_level", "verbose", "not a log level"),  # a traceback from logging at start
    ],
)
def test_a_setting_out_of_its_range_is_refused(name: str, value: str, said: str) -> None:
    with pytest.raises(SettingsError, match=said) as refused:
        load(**{name: value})
    assert f"--{name.replace('_', '-')}" in str(refused.value)
    assert "\n" not in str(refused.value)  # one line, not a traceback


def test_the_settings_that_were_refused_have_working_neighbours() -> None:
    s = load(max_results="50")  # lowering the largest page alone lowers the default one
    assert (s.max_results, s.default_count) == (50, 50)
    assert load(forwarded_allow_ips="127.0.0.1, 10.0.0.0/8,::1").forwarded_allow_ips
    assert load(forwarded_allow_ips="*").forwarded_allow_ips == "*"
    assert load(forwarded_allow_ips="").forwarded_allow_ips == ""
    assert load(properties_urn="urn:example:hr:1.0:Person").properties_urn
    assert load(properties_urn=USER_PROPERTIES_SCHEMA).properties_urn == USER_PROPERTIES_SCHEMA
    assert len(load(session_secret="k" * 32).session_secret) == 32
    for url in ("https://idp.example.com:8443", "http://[::1]:8000", "http://[fe80::1%25eth0]"):
        assert load(public_url=url).public_url == url


def test_settings_file_values_of_the_wrong_type_are_errors(tmp_path: Path) -> None:
    """A TOML list of proxies, a number for a string setting, a float or a boolean for a
    number were tracebacks after the banner, or were read as something else (port = true
    listened on port 1; 18233.9 on 18233)."""
    conf = tmp_path / "scimd.toml"
    for line, said in (
        ("log_level = 20", "not a string"),
        ("session_secret = 1234567890", "not a string"),
        ("properties_urn = 5", "not a string"),
        ("port = true", "not a whole number"),
        ("port = 18233.9", "not a whole number"),
        ("max_results = true", "not a whole number"),
        ("forwarded_allow_ips = [1, 2]", "as strings"),
    ):
        conf.write_text(line + "\n")
        with pytest.raises(SettingsError, match=said):
            load(str(conf))
    conf.write_text('forwarded_allow_ips = ["127.0.0.1", "10.0.0.2"]\nport = 8001.0\n')
    s = load(str(conf))
    assert (s.forwarded_allow_ips, s.port) == ("127.0.0.1,10.0.0.2", 8001)


def test_a_settings_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    """It was blamed on the command's arguments ("arguments ... must be UTF-8 text")."""
    conf = tmp_path / "scimd.toml"
    conf.write_bytes('log_level = "info" # caf\u00e9\n'.encode("latin-1"))
    with pytest.raises(SettingsError, match=f"settings file {conf} is not UTF-8"):
        load(str(conf))


def test_a_setting_comes_from_the_flag_then_the_environment_then_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's order (flag > environment > settings file > default): a container's
    SCIMD_PORT must override the port baked into its settings file, and a flag both."""
    conf = tmp_path / "scimd.toml"
    conf.write_text("[scimd]\nport = 9000\nmax_results = 500\n")
    monkeypatch.delenv("SCIMD_MAX_RESULTS", raising=False)
    monkeypatch.delenv("SCIMD_DEFAULT_COUNT", raising=False)
    monkeypatch.setenv("SCIMD_PORT", "9100")
    s = load(str(conf))
    assert (s.port, s.max_results) == (9100, 500)  # the environment beats the file
    assert load(str(conf), port=9200).port == 9200  # the flag beats both
    monkeypatch.delenv("SCIMD_PORT")
    assert load(str(conf)).port == 9000  # the file beats the default
