"""What the call path caches per plugin (call plans, compiled input checks) is rebuilt when
what it was built from changes: a reload's new schema, a revoke, a grant, a settings change.
And the fast input check is never looser than jsonschema."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.plugins import Permissions
from sidecar.errors import InvalidValue, PermissionDenied, ResourceExhausted
from sidecar.plugins.schema import ToolValidator, compile_fast
from tests.test_plugins import Env, env, migrations_dir, anyio_backend  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio

TEXT = '{ type = "object", properties = { text = { type = "string" } }, required = ["text"] }'
TEXT_AND_N = ('{ type = "object", properties = { text = { type = "string" }, n = { type = "integer", '
              'minimum = 1 } }, required = ["text", "n"], additionalProperties = false }')


async def test_a_reloaded_schema_is_enforced_on_the_next_call(env: Env) -> None:
    async with env.run() as svc:
        src = env.plugin("echo", schema=TEXT)
        await svc.install(src)
        assert (await svc.call("t", "run", {"text": "a"})).output["input"] == {"text": "a"}
        env.plugin("echo", schema=TEXT_AND_N, version="1.0.1")
        (outcome,) = await svc.reload("t")
        assert outcome.ok
        with pytest.raises(InvalidValue, match="'n' is a required property"):
            await svc.call("t", "run", {"text": "a"})
        with pytest.raises(InvalidValue, match="less than the minimum of 1"):
            await svc.call("t", "run", {"text": "a", "n": 0})
        assert (await svc.call("t", "run", {"text": "a", "n": 2})).output["input"] == {"text": "a", "n": 2}


async def test_a_revoke_and_a_grant_take_effect_on_the_next_call(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("kv", extra="[permissions]\nkvQuotaBytes = 100"))
        await svc.grant("t", Permissions(kvQuotaBytes=100))
        assert (await svc.call("t", "run", {"v": 1})).output == {"tool": "run", "input": {"v": 1}}
        await svc.revoke("t")
        with pytest.raises(PermissionDenied, match="key-value"):
            await svc.call("t", "run", {"v": 2})
        await svc.grant("t", Permissions(kvQuotaBytes=100))
        assert (await svc.call("t", "run", {"v": 3})).output == {"tool": "run", "input": {"v": 3}}


async def test_a_settings_change_reaches_the_next_call(env: Env) -> None:
    env.settings["plugins.defaultFuel"] = 5_000_000
    async with env.run() as svc:
        await svc.install(env.plugin("loop"))
        with pytest.raises(ResourceExhausted) as err:
            await svc.call("t", "run", {})
        assert err.value.details is not None and err.value.details["max"] == 5_000_000
        env.settings["plugins.defaultFuel"] = 6_000_000
        svc.settings_changed("plugins.defaultFuel", 6_000_000, 5_000_000)  # as the settings service does
        with pytest.raises(ResourceExhausted) as err:
            await svc.call("t", "run", {})
        assert err.value.details is not None and err.value.details["max"] == 6_000_000


# ---- the fast input check ---------------------------------------------------------------

def test_the_common_schemas_compile_and_unknown_keywords_fall_back_to_jsonschema() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}, "to": {"enum": ["upper", "lower"]}},
              "required": ["text"], "additionalProperties": False}
    fast = compile_fast(schema)
    assert fast is not None and fast({"text": "x", "to": "upper"})
    assert not fast({"text": "x", "to": "middle"}) and not fast({"text": 1}) and not fast({"text": "x", "y": 1})
    patterned = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-z]+$"}}}
    assert compile_fast(patterned) is None
    validator = ToolValidator(patterned)  # jsonschema alone decides, and still refuses
    assert validator.first_error({"id": "abc"}) is None
    assert validator.first_error({"id": "ABC"}) is not None
    assert ToolValidator(schema).first_error({"text": 3}).message == "3 is not of type 'string'"


_leaf = st.one_of(
    st.fixed_dictionaries({}, optional={"type": st.sampled_from(["string", "integer", "number", "boolean", "null",
                                                                  "object", "array"])}),
    st.fixed_dictionaries({"type": st.just("integer")}, optional={"minimum": st.integers(-3, 3),
                                                                  "exclusiveMaximum": st.integers(-3, 3)}),
    st.fixed_dictionaries({"type": st.just("number")}, optional={"maximum": st.floats(-3, 3),
                                                                 "exclusiveMinimum": st.integers(-3, 3)}),
    st.fixed_dictionaries({"type": st.just("string")}, optional={"minLength": st.integers(0, 3),
                                                                 "maxLength": st.integers(0, 3)}),
    st.fixed_dictionaries({"enum": st.lists(st.one_of(st.integers(0, 2), st.booleans(), st.text(max_size=2),
                                                       st.none()), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"const": st.one_of(st.integers(0, 2), st.booleans(), st.none())}),
    st.just(True),
)


def _schemas() -> Any:
    return st.recursive(_leaf, lambda inner: st.one_of(
        st.fixed_dictionaries({"type": st.just("array")}, optional={
            "items": inner, "minItems": st.integers(0, 2), "maxItems": st.integers(0, 3)}),
        st.fixed_dictionaries({"type": st.just("object")}, optional={
            "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
            "required": st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3),
            "additionalProperties": st.one_of(st.booleans(), inner)}),
    ), max_leaves=6)


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-4, 4), st.floats(-4, 4, allow_nan=False),
              st.sampled_from([1.0, 0.0, 2.0]), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=4)),
    max_leaves=8)


@settings(max_examples=1500, deadline=None)
@given(_schemas(), _json)
def test_the_fast_check_never_accepts_what_jsonschema_refuses(schema: Any, instance: Any) -> None:
    fast = compile_fast(schema)
    assert fast is not None, "the generated schemas use only compiled keywords"
    if fast(instance):
        assert jsonschema.Draft202012Validator(schema).is_valid(instance), (schema, instance)
