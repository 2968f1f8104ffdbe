"""Config loading, validation and the UI state file. Never touches the real user config."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import tomli_w

from backend.config import (
    CONFIG_ENV,
    Config,
    EvictConfig,
    RetentionConfig,
    UiConfig,
    WatchConfig,
    config_to_dict,
    default_cache_dir,
    default_config_path,
    default_repo_path,
    load_config,
    load_state,
    parse_config,
    save_state,
    state_path,
)
from backend.errors import ConfigError
from backend.units import Duration


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every platform directory and $SNAPDECK_CONFIG away from the real user's files.

    platformdirs reads the environment when called, so setting it here is enough.
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in [
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    # Fail loudly rather than read a real config on a platform that ignores XDG_*.
    assert default_config_path().is_relative_to(tmp_path)
    assert state_path().is_relative_to(tmp_path)
    yield tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path / "config.toml", text), env={})[0]


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


# --- precedence ---------------------------------------------------------------------------------


def test_defaults_when_there_is_no_file() -> None:
    assert load_config(env={}) == (Config(), None)


def test_platform_paths_follow_xdg(isolated_dirs: Path) -> None:
    assert default_config_path() == isolated_dirs / "config" / "snapdeck" / "config.toml"
    assert default_repo_path() == isolated_dirs / "data" / "snapdeck" / "repo"
    assert default_cache_dir() == isolated_dirs / "cache" / "snapdeck"
    assert state_path() == isolated_dirs / "state" / "snapdeck" / "state.toml"
    assert Config().repository.repo_path() == default_repo_path()


def test_user_config_file_is_used_when_present() -> None:
    path = write(default_config_path(), "[ui]\ntheme = 'user'\n")
    config, used = load_config(env={})
    assert (config.ui.theme, used) == ("user", path)


def test_env_var_beats_user_file(tmp_path: Path) -> None:
    write(default_config_path(), "[ui]\ntheme = 'user'\n")
    env_file = write(tmp_path / "env.toml", "[ui]\ntheme = 'env'\n")
    config, used = load_config(env={CONFIG_ENV: str(env_file)})
    assert (config.ui.theme, used) == ("env", env_file)


def test_env_var_is_read_from_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = write(tmp_path / "env.toml", "[ui]\ntheme = 'env'\n")
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert load_config()[0].ui.theme == "env"


def test_explicit_path_beats_env_var_and_user_file(tmp_path: Path) -> None:
    write(default_config_path(), "[ui]\ntheme = 'user'\n")
    env_file = write(tmp_path / "env.toml", "[ui]\ntheme = 'env'\n")
    explicit = write(tmp_path / "explicit.toml", "[ui]\ntheme = 'explicit'\n")
    config, used = load_config(explicit, env={CONFIG_ENV: str(env_file)})
    assert (config.ui.theme, used) == ("explicit", explicit)


def test_empty_env_var_is_ignored() -> None:
    assert load_config(env={CONFIG_ENV: ""}) == (Config(), None)


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"^config file .*nope\.toml not found$"):
        load_config(missing, env={})


def test_env_var_path_must_exist(tmp_path: Path) -> None:
    write(default_config_path(), "")
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml not found \(named by \$SNAPDECK_CONFIG\)"):
        load_config(env={CONFIG_ENV: str(missing)})


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == Config()


def test_partial_section_keeps_other_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[watch]\nquiet_ms = 50\n[watch.retention]\nkeep_daily = 0\n")
    assert config.watch == WatchConfig(quiet_ms=50, retention=RetentionConfig(keep_daily=0))
    assert config.ui == UiConfig()


# --- unknown sections and keys ------------------------------------------------------------------


def test_unknown_key_suggests_nearest(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[watch]\nquiet_m = 3\n")
    expected = "unknown key [watch] quiet_m (did you mean quiet_ms?)"
    assert message == f"{tmp_path / 'config.toml'}: {expected}"


def test_unknown_key_in_sub_table(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[watch.retention]\nkeep_hour = 3\n")
    assert message.endswith("unknown key [watch.retention] keep_hour (did you mean keep_hourly?)")


def test_unknown_key_without_close_match_lists_keys(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[ui]\nzzz = 1\n")
    assert message.endswith(
        "unknown key [ui] zzz (expected one of: theme, animation, cursor_blink, show_hidden)"
    )


def test_unknown_section_suggests_nearest(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[wach]\nquiet_ms = 3\n")
    assert message.endswith("unknown section [wach] (did you mean [watch]?)")


def test_top_level_key_suggests_its_section(tmp_path: Path) -> None:
    message = error_for(tmp_path, "theme = 'x'\n")
    assert message.endswith("unknown top-level key theme (did you mean [ui] theme?)")


def test_odd_key_names_are_quoted(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[ui]\n"the me\\n" = 1\n')
    assert 'unknown key [ui] "the me\\n"' in message


def test_section_must_be_a_table(tmp_path: Path) -> None:
    assert error_for(tmp_path, "ui = 3\n").endswith("ui must be a table [ui], got 3")
    message = error_for(tmp_path, "[watch]\nretention = 5\n")
    assert message.endswith("[watch] retention must be a table [watch.retention], got 5")


# --- types and ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[watch]\nquiet_ms = 'fast'", "[watch] quiet_ms must be an integer ≥ 0, got 'fast'"),
        ("[watch]\nquiet_ms = true", "[watch] quiet_ms must be an integer ≥ 0, got true"),
        ("[watch]\nquiet_ms = 1.5", "[watch] quiet_ms must be an integer ≥ 0, got 1.5"),
        ("[watch]\nquiet_ms = -1", "[watch] quiet_ms must be an integer ≥ 0, got -1"),
        ("[watch]\nenabled = 1", "[watch] enabled must be true or false, got 1"),
        ("[watch]\nenabled = 'yes'", "[watch] enabled must be true or false, got 'yes'"),
        (
            "[watch]\nmin_interval_s = false",
            "[watch] min_interval_s must be a number ≥ 0, got false",
        ),
        ("[watch]\nmin_interval_s = nan", "[watch] min_interval_s must be a number ≥ 0, got nan"),
        ("[watch]\nmin_interval_s = -0.5", "[watch] min_interval_s must be a number ≥ 0, got -0.5"),
        ("[watch]\nignore = '*.tmp'", "[watch] ignore must be a list of strings, got '*.tmp'"),
        ("[snapshot]\nexclude = [1]", "[snapshot] exclude must be a list of strings, got [1]"),
        (
            "[snapshot]\ncompression_level = 0",
            "[snapshot] compression_level must be an integer from 1 to 19, got 0",
        ),
        (
            "[snapshot]\ncompression_level = 20",
            "[snapshot] compression_level must be an integer from 1 to 19, got 20",
        ),
        ("[snapshot]\nthreads = -2", "[snapshot] threads must be an integer ≥ 0, got -2"),
        (
            "[ui]\nanimation = 'fast'",
            '[ui] animation must be one of "none", "basic" or "full", got \'fast\'',
        ),
        ("[ui]\ntheme = ''", "[ui] theme must be a non-empty string, got ''"),
        ("[s3]\nregion = 1", "[s3] region must be a string, got 1"),
        (
            "[evict]\nmax_size = 'abc'",
            '[evict] max_size must be a size greater than zero like "500M" or "2GiB", '
            "or \"\" for no size budget, got 'abc'",
        ),
        ("[evict]\nmax_size = '0'", "[evict] max_size must be a size greater than zero"),
        ("[evict]\nmax_size = 1024", "[evict] max_size must be a size greater than zero"),
        (
            "[evict]\nmax_age = '7 days'",
            '[evict] max_age must be a duration greater than zero like "7d", "12h" or "1y6m", '
            "or \"\" for no age limit, got '7 days'",
        ),
        ("[evict]\nmax_age = '0d'", "[evict] max_age must be a duration greater than zero"),
        ("[evict]\nsweep_interval_s = 0", "[evict] sweep_interval_s must be an integer ≥ 1"),
        (
            "[watch.retention]\nkeep_within = '1hour'",
            '[watch.retention] keep_within must be a duration like "7d", "12h" or "1y6m", '
            "or \"\" for off, got '1hour'",
        ),
        (
            "[watch.retention]\nkeep_daily = -1",
            "[watch.retention] keep_daily must be an integer ≥ 0",
        ),
        ("[keymap]\nquit = 3", '[keymap] quit must be keys like "ctrl+s" or "ctrl+s,f2"'),
        ("[keymap]\nquit = ''", '[keymap] quit must be keys like "ctrl+s"'),
        ("[keymap]\nquit = 'a,,b'", '[keymap] quit must be keys like "ctrl+s"'),
        (
            "[repository]\npassword_file = 'p'\npassword_command = 'pass show x'",
            "[repository] set password_file or password_command, not both",
        ),
    ],
)
def test_invalid_values(tmp_path: Path, text: str, message: str) -> None:
    assert error_for(tmp_path, text + "\n").startswith(f"{tmp_path / 'config.toml'}: {message}")


def test_long_values_are_shortened(tmp_path: Path) -> None:
    message = error_for(tmp_path, f"[watch]\nquiet_ms = '{'x' * 200}'\n")
    assert message.endswith("...")
    assert len(message) < len(str(tmp_path)) + 120


def test_integers_are_accepted_where_floats_are_expected(tmp_path: Path) -> None:
    config = load_text(tmp_path, "[watch]\nmin_interval_s = 3\n")
    assert config.watch.min_interval_s == 3.0
    assert isinstance(config.watch.min_interval_s, float)


def test_values_are_converted(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [snapshot]
        exclude = ["*.tmp", "build/"]
        compression_level = 19
        threads = 4
        [watch.retention]
        keep_within = ""
        [evict]
        max_size = "1.5GiB"
        max_age = "1y6m"
        [ui]
        animation = "full"
        [keymap]
        quit = "ctrl+q"
        save = ["ctrl+s", "f2, f3"]
        """,
    )
    assert config.snapshot.exclude == ("*.tmp", "build/")
    assert config.snapshot.worker_threads == 4
    assert config.watch.retention.within is None
    assert config.evict.max_size_bytes == 1536 * 1024**2
    assert config.evict.max_age_duration == Duration(years=1, months=6)
    assert config.ui.animation == "full"
    assert dict(config.keymap) == {"quit": "ctrl+q", "save": "ctrl+s,f2,f3"}


def test_default_helpers() -> None:
    config = Config()
    assert config.watch.retention.within == Duration(hours=1)
    assert config.evict.max_size_bytes == 1024**3  # seed 000: 1 GiB and 7 days
    assert config.evict.max_age_duration == Duration(days=7)
    assert not config.evict.sweep_in_watch  # nothing is evicted unless asked
    off = EvictConfig(max_size="", max_age="")
    assert off.max_size_bytes is None
    assert off.max_age_duration is None
    assert config.snapshot.worker_threads >= 1


def test_config_is_immutable_and_hashable() -> None:
    config = Config()
    with pytest.raises(FrozenInstanceError):
        config.ui = UiConfig(theme="x")  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.keymap["quit"] = "q"  # type: ignore[index]
    assert hash(config) == hash(Config())


def test_repository_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "conf" / "snap.toml",
        "[repository]\npath = 'repo'\npassword_file = '~/secret'\n",
    )
    config, _ = load_config(path, env={})
    assert config.repository.path == str(tmp_path / "conf" / "repo")
    assert config.repository.password_file == str(tmp_path / "home" / "secret")
    assert config.repository.repo_path() == tmp_path / "conf" / "repo"


def test_absolute_repository_path_is_kept(tmp_path: Path) -> None:
    config = load_text(tmp_path, f"[repository]\npath = '{tmp_path / 'elsewhere'}'\n")
    assert config.repository.path == str(tmp_path / "elsewhere")


# --- file errors --------------------------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[ui]\ntheme = 'x'\nanimation = = 'none'\n")
    assert message == f"{tmp_path / 'config.toml'}:3:13: invalid TOML: Invalid value"


def test_toml_error_at_end_of_file_names_last_line(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[ui]\ntheme = 'x'\nanimation = \"no")
    assert message == (
        f"{tmp_path / 'config.toml'}:3: invalid TOML: Unterminated string at the end of the file"
    )


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[ui]\ntheme = 'x'\ntheme = 'y'\n")
    assert message.startswith(f"{tmp_path / 'config.toml'}:3:")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[ui]\ntheme = '\xff'\n")
    with pytest.raises(ConfigError, match=r"config\.toml:2: not UTF-8 text$"):
        load_config(path, env={})


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf[ui]\ntheme = 'x'\n")
    assert load_config(path, env={})[0].ui.theme == "x"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read config file "):
        load_config(tmp_path, env={})


# --- config_to_dict -----------------------------------------------------------------------------


def test_config_to_dict_round_trips(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        [snapshot]
        exclude = ["*.o"]
        [watch]
        min_interval_s = 0.5
        [watch.retention]
        keep_hourly = 0
        [evict]
        max_size = "2GiB"
        [keymap]
        quit = "ctrl+q"
        """,
    )
    data = config_to_dict(config)
    assert data["snapshot"]["exclude"] == ["*.o"]
    assert data["watch"]["retention"]["keep_hourly"] == 0
    assert data["keymap"] == {"quit": "ctrl+q"}
    assert list(data) == ["repository", "snapshot", "watch", "evict", "s3", "ui", "keymap"]
    text = tomli_w.dumps(data)
    assert load_text(tmp_path, text) == config
    assert parse_config(data) == config


def test_parse_config_default_source_name() -> None:
    with pytest.raises(ConfigError, match=r"^config: unknown key \[evict\] max_sise"):
        parse_config({"evict": {"max_sise": "1G"}})
    assert parse_config({"evict": {"max_size": "1G"}}).evict == EvictConfig(max_size="1G")


# --- UI state -----------------------------------------------------------------------------------


def test_state_round_trip() -> None:
    state = {"theme": "snapdeck-light", "last_screen": "timeline", "recent": ["/a", "/b"]}
    assert load_state() == {}
    assert save_state(state) is True
    assert load_state() == state
    assert state_path().exists()
    assert [p.name for p in state_path().parent.iterdir()] == ["state.toml"]  # no temp left


def test_state_is_replaced_not_merged() -> None:
    save_state({"a": 1, "b": 2})
    save_state({"a": 3})
    assert load_state() == {"a": 3}


@pytest.mark.parametrize("content", [b"not = [valid", b"\xff\xfe", b"= 3"])
def test_corrupt_state_is_ignored(content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    state_path().parent.mkdir(parents=True)
    state_path().write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="backend.config"):
        assert load_state() == {}
    assert "ignoring unreadable state file" in caplog.text
    assert save_state({"theme": "x"}) is True
    assert load_state() == {"theme": "x"}


def test_state_that_cannot_be_written_is_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    assert save_state({"theme": "x"}, blocker / "state.toml") is False
    assert load_state(blocker / "state.toml") == {}


def test_state_with_unserialisable_value_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        save_state({"theme": None})
    assert not state_path().exists()
