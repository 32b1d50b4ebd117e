"""Recipes and stage configs: overrides, and one-line errors naming the file and key path (CLI exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agentkd.core.config import ConfigError, apply_overrides, explain, load_config, load_recipe
from agentkd.serve.config import ServeConfig


def write(tmp_path, text, name="recipe.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_recipe_loads_sections_and_overrides(tmp_path):
    p = write(tmp_path, "serve:\n  port: 9000\ncollect:\n  tasks: {path: t.json}\n"
              "  teacher: {model: openai/gpt-4o-mini, sampling: {temperature: 0.5}}\n")
    cfgs = load_recipe(p, ["collect.teacher.sampling.max_tokens=64", "serve.host=0.0.0.0"])
    assert cfgs["serve"].port == 9000 and cfgs["serve"].host == "0.0.0.0"
    sampling = cfgs["collect"].teacher.sampling
    assert sampling.temperature == 0.5 and sampling.max_tokens == 64


def test_shared_sections_are_every_stage_s_defaults_and_a_stage_s_own_keys_win(tmp_path):
    p = write(tmp_path, "tools:\n  search: {index: my-index, k: 3}\n  cache: tc.sqlite\nsandbox:\n  memory_mb: 700\n"
              "collect:\n  tasks: {path: t.json}\n  tools:\n    search: {k: 5}\n")
    cfgs = load_recipe(p, ["sandbox.timeout_s=7"])
    c = cfgs["collect"]
    assert (c.tools.search.index, c.tools.search.k, c.tools.cache) == ("my-index", 5, "tc.sqlite")
    assert (c.sandbox.memory_mb, c.sandbox.timeout_s) == (700, 7)
    assert cfgs["tools"].search.k == 3  # the shared section itself is unchanged
    # a stage can switch a shared tool off
    c = load_recipe(p, ["collect.tools.search=null"])["collect"]
    assert c.tools.search is None and c.tools.cache == "tc.sqlite"
    # an error in a shared section names the shared key, not a stage's
    bad = write(tmp_path, "tools:\n  search: {index: x, kk: 3}\ncollect:\n  tasks: {path: t.json}\n", "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_recipe(bad)
    assert str(e.value) == f"{bad}: tools.search.kk: unknown key"


def test_unknown_key_names_file_and_key_path(tmp_path):
    p = write(tmp_path, "collect:\n  tasks: {path: t.json}\n  teacher:\n    sampling:\n      temprature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(p)
    assert str(e.value) == f"{p}: collect.teacher.sampling.temprature: unknown key"


def test_wrong_type_and_unknown_section(tmp_path):
    p = write(tmp_path, "serve:\n  port: lots\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml: serve.port: .*integer.*'lots'"):
        load_recipe(p)
    p2 = write(tmp_path, "colect:\n  x: 1\n", "r2.yaml")
    with pytest.raises(ConfigError, match=r"r2.yaml: colect: unknown section"):
        load_recipe(p2)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_recipe(tmp_path / "nope.yaml")
    p = write(tmp_path, "serve: [unclosed\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml: line \d+: invalid YAML"):
        load_recipe(p)


def test_override_parsing_and_errors():
    out = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=[1, 2]", "d.e=text", "f=null"])
    assert out == {"a": {"b": 2, "c": [1, 2]}, "d": {"e": "text"}, "f": None}
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match=r"a\.b is not a mapping"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])


def test_load_config_section_and_cli_only(tmp_path):
    p = write(tmp_path, "serve:\n  port: 1234\n")
    assert load_config(ServeConfig, p, section="serve").port == 1234
    assert load_config(ServeConfig, overrides=["port=5"]).port == 5
    with pytest.raises(ConfigError, match=r"--set: portt: unknown key"):
        load_config(ServeConfig, overrides=["portt=5"])


def test_every_field_documented():
    from pydantic import BaseModel

    from agentkd.core.config import SECTIONS, section_class

    def paths(cls, prefix):  # every field path, nested configs included, read from pydantic itself
        for name, field in cls.model_fields.items():
            yield prefix + name
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                yield from paths(ann, f"{prefix}{name}.")

    assert {"serve", "sandbox", "tools", "index", "collect"} <= set(SECTIONS)
    for name in SECTIONS:
        rows = explain(section_class(name), prefix=f"{name}.")
        assert [key for key, *_ in rows] == list(paths(section_class(name), f"{name}.")), name  # none left out
        for key, _type, _default, desc in rows:
            assert desc, f"{key} has no description"
    assert any(key == "collect.teacher.sampling.temperature" for key, *_ in explain(section_class("collect"), "collect."))


def _cli(*args):
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "agentkd", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    p = write(tmp_path, "serve:\n  bogus: 1\n")
    r = _cli("recipe", "check", str(p))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {p}: serve.bogus: unknown key"
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_recipe_check_and_explain(tmp_path):
    p = write(tmp_path, "serve:\n  port: 7000\n")
    r = _cli("recipe", "check", str(p), "--set", "serve.port=7001")
    assert r.returncode == 0 and "port: 7001" in r.stdout
    r = _cli("recipe", "explain", "serve")
    assert r.returncode == 0 and "serve.max_tokens_limit" in r.stdout and "Largest max_tokens" in r.stdout
